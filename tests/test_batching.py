"""The inference thread: requests gathered into shared translate calls, grouped by settings,
each answered with exactly its own lines; a full queue refused; a failure reaches only the
request that caused it; closing finishes what waits. A stand-in translator records its calls."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from tinytrans.batching import Batcher, Closed, QueueFull, by_settings, Request
from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.translate import LineOptions, Translation


class RecordingTranslator:
    """Translates a line to its upper case; records each call's lines; can be held or fail."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.prefixes: list[list[str] | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: str | None = None

    def translate(self, lines, cfg, options=LineOptions(), prefixes=None, languages=None):
        lines = list(lines)
        self.gate.wait(10)
        self.calls.append(lines)
        self.prefixes.append(prefixes)
        if self.fail_on is not None and self.fail_on in lines:
            raise UserError(f"cannot translate {self.fail_on}")
        return [Translation(line.upper(), [(0.0, line.upper())]) for line in lines]


@pytest.fixture
def translator() -> RecordingTranslator:
    return RecordingTranslator()


def held(translator: RecordingTranslator, first: str = "hold",
         **settings) -> tuple[Batcher, Future]:
    """A batcher whose thread is busy with a first request (`first`, whose future comes too),
    held until translator.gate is set: what is submitted next waits in the queue together."""
    translator.gate.clear()
    batcher = Batcher(translator, **settings)
    future = batcher.submit([first], SearchConfig())
    time.sleep(0.1)  # the thread has taken it, and waits at the gate
    return batcher, future


def texts(future) -> list[str]:
    return [t.text for t in future.result(timeout=10).translations]


def test_requests_waiting_together_share_one_call(translator):
    batcher, first = held(translator, "a", max_wait=0.05)
    others = [batcher.submit([f"line {i}", f"more {i}"], SearchConfig()) for i in range(5)]
    translator.gate.set()
    assert texts(first) == ["A"]
    for i, future in enumerate(others):
        assert texts(future) == [f"LINE {i}", f"MORE {i}"]
    assert len(translator.calls) == 2  # the first alone, then the five together
    batcher.close()


def test_prefixes_travel_with_their_lines_in_a_shared_call(translator):
    batcher, _ = held(translator, max_wait=0.05)
    plain = batcher.submit(["a", "b"], SearchConfig())
    started = batcher.submit(["c", "d"], SearchConfig(), prefixes=["C is", ""])
    translator.gate.set()
    assert (texts(plain), texts(started)) == (["A", "B"], ["C", "D"])
    assert translator.calls[1] == ["a", "b", "c", "d"]
    assert translator.prefixes == [None, ["", "", "C is", ""]]  # the held line had none
    batcher.close()


def test_a_lone_client_does_not_wait_for_company(translator):
    batcher = Batcher(translator, max_wait=2.0)
    start = time.monotonic()
    for i in range(3):  # one request after the other, as one client sends them
        assert texts(batcher.submit([f"x{i}"], SearchConfig())) == [f"X{i}"]
    assert time.monotonic() - start < 1.5  # not 3 x 2 s
    batcher.close()


def test_requests_in_company_wait_for_more(translator):
    batcher, first = held(translator, "a", max_wait=1.0)
    together = [batcher.submit([x], SearchConfig()) for x in "bc"]
    translator.gate.set()
    assert [texts(f) for f in (first, *together)] == [["A"], ["B"], ["C"]]  # b and c shared
    early = batcher.submit(["d"], SearchConfig())
    time.sleep(0.1)  # well within max_wait: the thread still waits for company
    late = batcher.submit(["e"], SearchConfig())
    assert (texts(early), texts(late)) == (["D"], ["E"])
    assert translator.calls[-1] == ["d", "e"]
    batcher.close()


def test_requests_with_other_settings_do_not_share_a_call(translator):
    batcher, _ = held(translator, max_wait=0.05)
    beam2 = batcher.submit(["x"], SearchConfig(beam=2))
    beam5 = batcher.submit(["y"], SearchConfig(beam=5))
    aligned = batcher.submit(["z"], SearchConfig(beam=5), LineOptions(alignment=True))
    translator.gate.set()
    assert (texts(beam2), texts(beam5), texts(aligned)) == (["X"], ["Y"], ["Z"])
    assert sorted(translator.calls[1:]) == [["x"], ["y"], ["z"]]
    batcher.close()


def test_by_settings_keeps_arrival_order():
    a, b, c = (Request([x], SearchConfig(beam=k), LineOptions()) for x, k in
               (("a", 1), ("b", 2), ("c", 1)))
    assert by_settings([a, b, c]) == [[a, c], [b]]


def test_a_full_queue_is_refused(translator):
    batcher, _ = held(translator, max_wait=0.0, queue_size=2)  # two more fill the queue
    batcher.submit(["1"], SearchConfig())
    batcher.submit(["2"], SearchConfig())
    with pytest.raises(QueueFull):
        batcher.submit(["3"], SearchConfig())
    translator.gate.set()
    batcher.close()


def test_a_failure_reaches_only_its_request_and_the_thread_goes_on(translator):
    errors = []
    translator.fail_on = "bad"
    batcher, _ = held(translator, max_wait=0.05, on_error=errors.append)
    # the next three wait together, and share a call that fails
    before = batcher.submit(["good", "fine"], SearchConfig())
    failed = batcher.submit(["bad"], SearchConfig())
    after = batcher.submit(["also good"], SearchConfig())
    translator.gate.set()
    with pytest.raises(UserError, match="cannot translate bad"):
        failed.result(timeout=10)
    assert texts(before) == ["GOOD", "FINE"] and texts(after) == ["ALSO GOOD"]
    assert ["good", "fine", "bad", "also good"] in translator.calls  # they were batched
    assert texts(batcher.submit(["later"], SearchConfig())) == ["LATER"]
    assert len(errors) == 1
    batcher.close()


def test_a_failing_error_logger_does_not_stop_the_thread(translator):
    def broken_logger(error):
        raise RuntimeError("the log is full")
    translator.fail_on = "bad"
    batcher = Batcher(translator, max_wait=0.0, on_error=broken_logger)
    with pytest.raises(UserError):
        batcher.submit(["bad"], SearchConfig()).result(timeout=10)
    assert texts(batcher.submit(["good"], SearchConfig())) == ["GOOD"]
    batcher.close()


def test_a_cancelled_request_is_not_translated(translator):
    batcher, _ = held(translator, max_wait=0.0)
    gone = batcher.submit(["gone"], SearchConfig())
    assert gone.cancel()  # its client timed out while it waited
    translator.gate.set()
    assert texts(batcher.submit(["kept"], SearchConfig())) == ["KEPT"]
    assert not any("gone" in call for call in translator.calls)
    batcher.close()


def test_closing_finishes_what_waits_and_refuses_more(translator):
    translator.gate.clear()
    batcher = Batcher(translator, max_wait=0.0)
    waiting = [batcher.submit([str(i)], SearchConfig()) for i in range(4)]
    translator.gate.set()
    batcher.close()
    assert [texts(f) for f in waiting] == [["0"], ["1"], ["2"], ["3"]]
    with pytest.raises(Closed):
        batcher.submit(["late"], SearchConfig())
    assert not batcher.thread.is_alive()
    batcher.close()  # twice is fine

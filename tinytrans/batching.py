"""Many clients, one model: requests wait in a queue, one inference thread decodes them in batches.

A server that translated each request as it came would run a batch of one sentence per request,
and the model would sit mostly idle between matrix products too small to fill the CPU. Instead
the inference thread takes the first waiting request, then whatever else arrives within a few
milliseconds (up to a token budget), and translates all of their lines in one call of the
Translator, which sorts them by length into batches. Throughput then grows with the number of
clients; a lone client waits at most `max_wait` longer.

Requests that must be searched differently (another beam, n-best, alignments) cannot share a
batch: a gathered group is split by its settings, each part translated in one call. Attention
requests are translated one sentence at a time (attention.sentence_attention), in the same
thread, since the model is never run from two threads at once.

Results go back through concurrent.futures.Future, which an asyncio server awaits with
asyncio.wrap_future. A request whose future was cancelled (its client timed out) is skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from tinytrans.config import SearchConfig
from tinytrans.errors import UserError
from tinytrans.lines import LineOptions, LineTranslator, Translation

DEFAULT_MAX_WAIT = 0.005  # seconds the thread waits for more requests after the first
DEFAULT_BATCH_WORDS = 2000  # whitespace words gathered into one call, at most
DEFAULT_QUEUE = 256  # requests waiting, at most; beyond that, the server says 429


class QueueFull(Exception):
    """More requests are waiting than the queue holds: the client should retry later."""


class Closed(Exception):
    """The batcher is shutting down and takes no new requests."""


@dataclass
class Request:
    lines: list[str]
    cfg: SearchConfig
    options: LineOptions
    attention: bool = False  # also the attention weights of each line's translation
    future: Future = field(default_factory=Future)

    @property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)

    @property
    def settings(self) -> tuple:
        """What must be equal for two requests to share a translate call."""
        o = self.options  # a Glossary holds a dict, which cannot be hashed: its identity is
        return (self.cfg, o.split_sentences, o.alignment, id(o.glossary), self.attention)


@dataclass(frozen=True)
class Result:
    translations: list[Translation]
    attention: list[dict] | None  # per line: SentenceAttention.to_json(), with attention=True


class Batcher:
    """The queue and the one thread that runs the model."""

    def __init__(self, translator: LineTranslator, max_wait: float = DEFAULT_MAX_WAIT,
                 batch_words: int = DEFAULT_BATCH_WORDS, queue_size: int = DEFAULT_QUEUE,
                 on_error: Callable[[BaseException], None] | None = None):
        self.translator = translator
        self.max_wait, self.batch_words = max_wait, batch_words
        self.waiting: queue.Queue[Request | None] = queue.Queue(maxsize=queue_size)
        self.on_error = on_error or (lambda error: None)
        self.closed = False
        self.batches = 0  # calls of the translator so far: how much batching happened
        self.thread = threading.Thread(target=self._run, name="tinytrans-inference", daemon=True)
        self.thread.start()

    def submit(self, lines: list[str], cfg: SearchConfig, options: LineOptions = LineOptions(),
               attention: bool = False) -> Future:
        """Queue the lines; the future's result is a Result. Raises QueueFull or Closed."""
        if self.closed:
            raise Closed("the server is shutting down")
        request = Request(lines, cfg, options, attention)
        try:
            self.waiting.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} requests are waiting") from None
        return request.future

    def close(self) -> None:
        """Take no more requests, finish those waiting, and stop the thread."""
        self.closed = True
        self.waiting.put(None)  # blocks only while the queue is full: it is being drained
        self.thread.join()

    # -----------------------------------------------------------------------------------------
    # The inference thread

    def _run(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            gathered, stop = self._gather(first)
            for group in by_settings(gathered):
                self._translate(group)
            if stop:
                return

    def _gather(self, first: Request) -> tuple[list[Request], bool]:
        """The first request and those arriving within max_wait, up to batch_words words."""
        gathered, words = [first], first.words
        deadline = time.monotonic() + self.max_wait
        while words < self.batch_words:
            remaining = deadline - time.monotonic()
            try:
                request = self.waiting.get(timeout=max(remaining, 0)) if remaining > 0 \
                    else self.waiting.get_nowait()
            except queue.Empty:
                break
            if request is None:  # closing: translate what was gathered, then stop
                return gathered, True
            gathered.append(request)
            words += request.words
        return gathered, False

    def _translate(self, group: list[Request]) -> None:
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            lines = [line for r in live for line in r.lines]
            head = live[0]
            translations = list(self.translator.translate(lines, head.cfg, options=head.options))
            self.batches += 1
            start = 0
            for request in live:
                mine = translations[start: start + len(request.lines)]
                start += len(request.lines)
                attention = [self._attention(line, request.cfg) for line in request.lines] \
                    if request.attention else None
                request.future.set_result(Result(mine, attention))
        except BaseException as error:  # noqa: BLE001 (the thread must survive any request)
            self.on_error(error)
            for request in live:
                if not request.future.done():
                    request.future.set_exception(error)

    def _attention(self, line: str, cfg: SearchConfig) -> dict | None:
        if not hasattr(self.translator, "model"):
            raise UserError("attention: this engine shows no attention; serve with --engine torch")
        from tinytrans.attention import sentence_attention  # PyTorch's engine only

        if not line.strip():
            return None
        return sentence_attention(self.translator, line, cfg).to_json()


def by_settings(requests: list[Request]) -> list[list[Request]]:
    """Requests grouped by the settings they must share, in arrival order."""
    groups: dict[tuple, list[Request]] = {}
    for request in requests:
        groups.setdefault(request.settings, []).append(request)
    return list(groups.values())

"""Many clients, one model: requests wait in a queue, one inference thread decodes them in batches.

A server that translated each request as it came would run a batch of one sentence per request,
and the model would sit mostly idle between matrix products too small to fill the CPU. Instead
the inference thread takes the first waiting request, then whatever else arrives within a few
milliseconds (up to a token budget), and translates all of their lines in one call of the
Translator, which sorts them by length into batches. Throughput then grows with the number of
clients. The thread waits those milliseconds only while requests come in company (its last
gathering took more than one): a lone client, one request after the other, never waits for
others who are not there (with one client, 5 ms of waiting was a sixth of each request's time).

Requests that must be searched differently (another beam, n-best, alignments) cannot share a
batch: a gathered group is split by its settings, each part translated in one call. Should a
call fail, each of its requests is translated again alone, so that only the request that caused
the failure gets it. A request for attention is translated in the batch, then each of its lines
once more alone while the weights are recorded (attention.sentence_attention), in the same
thread: the model is never run from two threads at once.

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

from tinytrans.config import SearchConfig, ServeConfig
from tinytrans.errors import UserError
from tinytrans.lines import Languages, LineOptions, LineTranslator, Translation

DEFAULT_BATCH_WORDS = 2000  # whitespace words gathered into one call, at most


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
    prefixes: list[str] | None = None  # per line: what its translation begins with
    languages: list[Languages] | None = None  # per line: its languages (None: the model's)
    markup: bool = False  # each "line" is an HTML document (LineTranslator.translate_markup)
    # a whole file's work (serve's /translate_file), run alone in the inference thread: the
    # future's result is what it returns
    job: Callable[[LineTranslator], bytes] | None = None
    future: Future = field(default_factory=Future)

    @property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)

    @property
    def settings(self) -> tuple:
        """What must be equal for two requests to share a translate call."""
        if self.job is not None:
            return ("job", id(self))  # shares its call with no one
        o = self.options  # a Glossary holds a dict, which cannot be hashed: its identity is
        return (self.cfg, o.split_sentences, o.alignment, id(o.glossary), o.glossary_method,
                self.attention, self.markup)


@dataclass(frozen=True)
class Result:
    translations: list[Translation]
    attention: list[dict] | None  # per line: SentenceAttention.to_json(), with attention=True


class Batcher:
    """The queue and the one thread that runs the model."""

    def __init__(self, translator: LineTranslator, max_wait: float = ServeConfig.max_wait,
                 batch_words: int = DEFAULT_BATCH_WORDS, queue_size: int = ServeConfig.queue,
                 on_error: Callable[[BaseException], None] | None = None):
        self.translator = translator
        self.max_wait, self.batch_words = max_wait, batch_words
        self.waiting: queue.Queue[Request | None] = queue.Queue(maxsize=queue_size)
        self.on_error = on_error or (lambda error: None)
        self.closed = False
        self.lock = threading.Lock()  # submit and close: nothing is queued after the end mark
        self.batches = 0  # calls of the translator so far: how much batching happened
        self.translating = 0  # requests being translated now
        self.in_company = False  # the last gathering took more than one request: wait for more
        self.thread = threading.Thread(target=self._run, name="tinytrans-inference", daemon=True)
        self.thread.start()

    def submit(self, lines: list[str], cfg: SearchConfig, options: LineOptions = LineOptions(),
               attention: bool = False, prefixes: list[str] | None = None,
               languages: list[Languages] | None = None, markup: bool = False) -> Future:
        """Queue the lines (and, maybe, a prefix and the languages of each line: requests of
        several directions share a batch); the future's result is a Result. Raises QueueFull or
        Closed."""
        return self._queue(Request(lines, cfg, options, attention, prefixes, languages, markup))

    def submit_job(self, job: Callable[[LineTranslator], bytes], cfg: SearchConfig) -> Future:
        """Queue a whole file's work, run in the inference thread (the model is never run from
        two threads); the future's result is what `job` returns. Raises QueueFull or Closed."""
        return self._queue(Request([], cfg, LineOptions(), job=job))

    def _queue(self, request: Request) -> Future:
        with self.lock:
            if self.closed:
                raise Closed("the server is shutting down")
            try:
                self.waiting.put_nowait(request)
            except queue.Full:
                raise QueueFull(f"{self.waiting.maxsize} requests are waiting") from None
        return request.future

    def close(self) -> None:
        """Take no more requests, finish those waiting, and stop the thread. Idempotent."""
        with self.lock:
            if self.closed:
                return
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
        """The first request and those waiting, or arriving within max_wait when requests come in
        company, up to batch_words words."""
        gathered, words = [first], first.words
        deadline = time.monotonic() + (self.max_wait if self.in_company else 0.0)
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
        self.in_company = len(gathered) > 1
        return gathered, False

    def _translate(self, group: list[Request]) -> None:
        live = [r for r in group if r.future.set_running_or_notify_cancel()]
        self.translating = len(live)
        try:
            self._answer(live)
        finally:
            self.translating = 0

    def _answer(self, live: list[Request]) -> None:
        if not live:
            return
        if len(live) == 1:
            self._translate_alone(live[0])
            return
        try:
            answers = self._answers(live)
        except BaseException:  # noqa: BLE001 (the thread must survive any request)
            for request in live:  # find who caused it: each alone, the others get theirs
                self._translate_alone(request)
            return
        for request, answer in zip(live, answers):
            request.future.set_result(answer)

    def _translate_alone(self, request: Request) -> None:
        try:
            request.future.set_result(self._answers([request])[0])
        except BaseException as error:  # noqa: BLE001
            request.future.set_exception(error)
            self._report(error)

    def _answers(self, requests: list[Request]) -> list[Result]:
        """One translate call for all the requests' lines; each request's share of it."""
        head = requests[0]
        if head.job is not None:
            return [head.job(self.translator)]
        lines = [line for r in requests for line in r.lines]
        prefixes = None
        if any(r.prefixes for r in requests):
            prefixes = [p for r in requests for p in (r.prefixes or [""] * len(r.lines))]
        languages: Languages | list[Languages] = Languages()  # the model's own, for every line
        if any(r.languages for r in requests):
            languages = [language for r in requests
                         for language in (r.languages or [Languages()] * len(r.lines))]
        if head.markup:
            asked = languages if isinstance(languages, list) else [languages] * len(lines)
            translations = [Translation(text, [(0.0, text)]) for document, language
                            in zip(lines, asked) for text in
                            self.translator.translate_markup([document], head.cfg,
                                                             languages=language)]
        else:
            translations = list(self.translator.translate(lines, head.cfg, options=head.options,
                                                          prefixes=prefixes, languages=languages))
        self.batches += 1
        answers, start = [], 0
        for request in requests:
            mine = translations[start: start + len(request.lines)]
            start += len(request.lines)
            starts = request.prefixes or [""] * len(request.lines)
            asked = request.languages or [Languages()] * len(request.lines)
            attention = [self._attention(line, request.cfg, start, language)
                         for line, start, language in zip(request.lines, starts, asked)] \
                if request.attention else None
            answers.append(Result(mine, attention))
        return answers

    def _report(self, error: BaseException) -> None:
        try:
            self.on_error(error)
        except Exception:  # noqa: BLE001 (a failing logger must not stop the inference thread)
            pass

    def _attention(self, line: str, cfg: SearchConfig, prefix: str = "",
                   languages: Languages = Languages()) -> dict | None:
        if self.translator.attention_shape() is None:
            raise UserError("attention: this engine shows no attention; serve with --engine torch")
        from tinytrans.attention import sentence_attention  # PyTorch's engine only

        if not line.strip():
            return None
        pieces = len(self.translator.src_tok.encode([line.strip()])[0])
        if pieces > self.translator.max_source_pieces:  # it was translated in sentences
            raise UserError(f"attention: a line of {pieces} pieces is longer than the model's "
                            f"{self.translator.max_source_pieces}; send its sentences one by one")
        route = self.translator.route(line, languages, "attention: ")
        if len(route.steps) != 1:  # no translation, or two of them
            return None
        return sentence_attention(self.translator, line, cfg, prefix=prefix,
                                  tag=self.translator.tags[route.tgt]).to_json()


def by_settings(requests: list[Request]) -> list[list[Request]]:
    """Requests grouped by the settings they must share, in arrival order."""
    groups: dict[tuple, list[Request]] = {}
    for request in requests:
        groups.setdefault(request.settings, []).append(request)
    return list(groups.values())

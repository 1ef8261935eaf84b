"""`tinytrans serve`: a trained run behind HTTP, speaking LibreTranslate's API.

Many translation apps and plugins already call LibreTranslate, so the same requests work here:

    POST /translate   {"q": "text" or ["text", ...], "source": "en", "target": "de",
                       "format": "text" or "html", "alternatives": 2}
                      -> {"translatedText": "..." or [...], "alternatives": [...]}
    POST /detect      {"q": "text"} -> [{"language": "en", "confidence": 100.0}]
    POST /translate_file  multipart: file (.txt, .html, .srt, .docx), source, target
                      -> {"translatedFileUrl": "http://.../download_file/NAME"}
    GET  /download_file/NAME   the translated file, kept 30 minutes (filestore.py)
    GET  /languages   -> [{"code": "en", "name": "English", "targets": ["de"]}]
    GET  /frontend/settings -> {"charLimit": ..., "keyRequired": ..., "language": ...}
    GET  /health      -> {"status": "ok", ...}
    GET  /            a page that translates as you type and draws the cross-attention

tinytrans' own optional fields in a /translate request: "beam", "alignment" (Moses-style word
pairs per line), "attention" (what `tinytrans attention --json` prints, per line) and "prefix"
(the words the translation begins with, for autocompletion: a string, or one per item of q). Every
mistake is a 4xx with a one-line {"error": "..."}: 400 for a bad request, 403 for a missing or
wrong api_key (with --api-keys), 413 for a body over the limit, 429 when too many requests wait
or a key or address is over its requests a minute (access.py); 503 when a request timed out or
the server is stopping; 500 only for a bug. The event loop never runs the model: requests go to
batching.Batcher's inference thread, which translates what many clients sent in one batch.

Starlette (on uvicorn) is the stack: a maintained ASGI toolkit with routing and responses and
little else, where FastAPI would add pydantic models for a handful of fields checked here.
"""

from __future__ import annotations

import asyncio
import email.policy
import importlib.util
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tinytrans.access import Limiter, Refused
from tinytrans.documents import FILE_FORMATS as FILE_KINDS, translate_document
from tinytrans.filestore import KEEP_SECONDS, FileStore, safe_name
from tinytrans.batching import Batcher, Closed, QueueFull
from tinytrans.config import MAX_BEAM, TEXT_FORMATS, SearchConfig, ServeConfig
from tinytrans.errors import UserError
from tinytrans.directions import Directions
from tinytrans.lines import Languages, LineOptions, LineTranslator, format_alignment
from tinytrans.terminology import check_prefix

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech", "es": "Spanish",
                  "it": "Italian", "nl": "Dutch", "pt": "Portuguese", "pl": "Polish",
                  "ru": "Russian", "uk": "Ukrainian", "zh": "Chinese", "ja": "Japanese",
                  "ar": "Arabic", "tr": "Turkish", "sv": "Swedish", "fi": "Finnish"}
MAX_ALTERNATIVES = 10
FILE_CHARS = 10  # a file may hold this many times --max-chars of text
DOCX_MEDIA = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def supported_file_formats() -> list[str]:
    """The extensions /translate_file takes: .docx where python-docx is installed."""
    return [ext for ext in FILE_KINDS
            if ext != ".docx" or importlib.util.find_spec("docx") is not None]
MAX_ATTENTION_LINES = 20  # attention JSON grows with layers x heads x pieces^2 per line


class Problem(Exception):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# ---------------------------------------------------------------------------------------------
# Reading a request


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (whatever Content-Length
    claims: a client may lie or stream)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the body is {int(declared):,} bytes; at most {limit:,}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"the body is over {limit:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Gone(f"{client_name(request)}: the connection closed after {size:,} bytes of "
                   "the request's body (the client left, or took over --request-timeout)") from None
    return b"".join(chunks)


class Gone(Exception):
    """The client went away before its request was whole: nobody to answer, one line to log."""


def client_name(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


def parse_fields(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object, or a form (application/x-www-form-urlencoded, as LibreTranslate accepts;
    a repeated q is a list, and then so is prefix, one per q)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(400, f"the body is not valid UTF-8 (byte {error.start})") from None
    if "application/x-www-form-urlencoded" in content_type:
        form = parse_qs(text, keep_blank_values=True)
        listed = {"q", "prefix"} if len(form.get("q", [])) > 1 else set()
        return {k: (v if k in listed else v[-1]) for k, v in form.items()}
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        raise Problem(400, f"invalid JSON: {error.msg} (line {error.lineno}, column "
                           f"{error.colno})") from None
    except (ValueError, RecursionError) as error:  # a 5,000-digit number, 100,000 brackets
        raise Problem(400, f"invalid JSON: {type(error).__name__}: "
                           f"{str(error).splitlines()[0][:80]}") from None
    if not isinstance(fields, dict):
        raise Problem(400, f"the body must be a JSON object, not {type(fields).__name__}")
    return fields


@dataclass(frozen=True)
class TranslateRequest:
    texts: list[str]  # the items of q
    many: bool  # q was a list: answer with lists
    source_auto: bool
    cfg: SearchConfig
    alternatives: int
    alignment: bool
    attention: bool
    prefixes: list[str] | None = None  # per item of q: what its translation begins with
    source: str | None = None  # None: the model's own (one pair), or detected (source auto)
    target: str | None = None
    markup: bool = False  # format "html": each item is one document (markup.py), not lines

    def units(self, text: str) -> list[str]:
        """What an item of q is translated as: its lines, or (html) itself."""
        return [text] if self.markup else text.split("\n")

    def line_languages(self, detected: list[dict[str, Any]] | None,
                       multilingual: bool) -> list[Languages]:
        """Per line, its languages: a multilingual model translates each item of q from the
        language detected in it (source auto), as LibreTranslate #779 asks of a mixed list."""
        result = []
        for k, text in enumerate(self.texts):
            source = self.source
            if source is None and multilingual and detected is not None:
                source = detected[k]["language"]
            result += [Languages(source, self.target)] * len(self.units(text))
        return result

    @property
    def lines(self) -> list[str]:
        return [unit for text in self.texts for unit in self.units(text)]

    def line_prefixes(self) -> list[str] | None:
        """Per line, its prefix: an item's prefix goes with its first line that has text."""
        if self.prefixes is None:
            return None
        result = []
        for text, prefix in zip(self.texts, self.prefixes):
            lines = text.split("\n")
            first = next((k for k, line in enumerate(lines) if line.strip()), 0)
            result += [prefix if k == first else "" for k in range(len(lines))]
        return result


def translate_request(fields: dict[str, Any], directions: Directions, serve_cfg: ServeConfig,
                      shows_attention: bool = True) -> TranslateRequest:
    """The fields of a /translate request, checked one by one."""
    texts, many = query_texts(fields.get("q"))
    source, target = language_field(fields, "source"), language_field(fields, "target")
    check_languages(directions, source, target)
    text_format = fields.get("format", "text")
    if text_format not in TEXT_FORMATS:
        raise Problem(400, f"format: {shown(text_format)} must be one of "
                           f"{', '.join(TEXT_FORMATS)}")
    alternatives = int_field(fields, "alternatives", 0, 0, MAX_ALTERNATIVES)
    if text_format == "html":
        asked = [name for name in ("alternatives", "alignment", "attention", "prefix")
                 if fields.get(name) not in (None, False, 0, "0", "false", "")]
        if asked:
            raise Problem(400, f"{asked[0]}: not with format 'html', which comes back as one "
                               "document per item")
    beam = max(int_field(fields, "beam", serve_cfg.beam, 1, MAX_BEAM), alternatives + 1)
    attention = bool_field(fields, "attention")
    if attention and not shows_attention:
        raise Problem(400, "attention: this engine shows no attention; serve with --engine torch")
    lines = texts if text_format == "html" else item_lines(texts)
    prefixes = prefix_field(fields.get("prefix"), texts, many)
    chars = sum(map(len, texts)) + sum(map(len, prefixes or []))  # a prefix is decoded too
    if chars > serve_cfg.max_chars:
        raise Problem(400, f"q: {chars:,} characters (prefixes included); at most "
                           f"{serve_cfg.max_chars:,} per request")
    if len(lines) > serve_cfg.max_lines:
        raise Problem(400, f"q: {len(lines):,} lines; at most {serve_cfg.max_lines:,} per request")
    if attention and len(lines) > MAX_ATTENTION_LINES:
        raise Problem(400, f"attention: {len(lines)} lines; at most {MAX_ATTENTION_LINES} with "
                           "attention")
    return TranslateRequest(texts, many, source == "auto",
                            SearchConfig(beam=beam, nbest=alternatives + 1), alternatives,
                            bool_field(fields, "alignment"), attention, prefixes,
                            None if source == "auto" or not directions.tagged else source,
                            target if directions.tagged else None, text_format == "html")


def check_languages(directions: Directions, source: str, target: str) -> None:
    """A source ("auto" included) and target the model serves; for a named source, one it can
    reach the target from (a trained direction, or through a pivot)."""
    if not directions.tagged:
        src, tgt = directions.trained[0].src, directions.trained[0].tgt
        if source not in (src, "auto") or target != tgt:
            raise Problem(400, f"this server translates {src} to {tgt}, not {shown(source)} to "
                               f"{shown(target)}")
        return
    for name, value in (("target", target), ("source", source)):
        if value not in directions.languages and not (name == "source" and value == "auto"):
            raise Problem(400, f"{name}: {shown(value)} is not one of this server's languages "
                               f"({', '.join(directions.languages)}, or auto for source)")
    if source != "auto":
        try:
            directions.route(source, target)
        except UserError as error:
            raise Problem(400, str(error)) from None


def prefix_field(prefix: Any, texts: list[str], many: bool) -> list[str] | None:
    """The optional `prefix` (not LibreTranslate's: tinytrans' autocompletion): the words the
    translation begins with; a string for a string q, a list of strings (maybe empty) for a
    list q."""
    if prefix is None:
        return None
    items = prefix if many else [prefix]
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise Problem(400, f"prefix: {shown(prefix)} must be "
                           + ("a list of strings, one per item of q" if many else "a string"))
    if len(items) != len(texts):
        raise Problem(400, f"prefix: {len(items)} items, but q has {len(texts)}; one per item")
    try:
        return [check_prefix(checked_text(item, "prefix"), "prefix") for item in items]
    except UserError as error:
        raise Problem(400, str(error)) from None


def item_lines(texts: list[str]) -> list[str]:
    """The lines the items of q hold: each is translated alone."""
    return [line for text in texts for line in text.split("\n")]


def query_texts(q: Any) -> tuple[list[str], bool]:
    if q is None:
        raise Problem(400, "q: missing; the text to translate")
    if isinstance(q, str):
        if not q.strip():
            raise Problem(400, "q: empty; the text to translate")
        return [checked_text(q, "q")], False
    if isinstance(q, list) and q and all(isinstance(item, str) for item in q):
        return [checked_text(item, f"q[{i}]") for i, item in enumerate(q)], True
    if isinstance(q, list) and not q:
        raise Problem(400, "q: an empty list; give at least one text")
    raise Problem(400, f"q: must be a string or a list of strings, not {type(q).__name__}")


def language_field(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise Problem(400, f"{name}: missing; a language code such as 'en'")
    return checked_text(value, name)


def int_field(fields: dict[str, Any], name: str, default: int, least: int, most: int) -> int:
    value = fields.get(name, default)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):  # forms send text
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Problem(400, f"{name}: {shown(value)} must be a whole number")
    if not least <= value <= most:
        raise Problem(400, f"{name}: {shown(value)} must lie between {least} and {most}")
    return value


def shown(value: Any) -> str:
    """A client's value in a message: its repr, short, and ASCII (a lone surrogate in a str
    could not even be encoded into the answer)."""
    text = ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def checked_text(text: str, name: str) -> str:
    """Text that can be encoded: JSON may carry lone surrogates (\\udc80), which no tokenizer
    and no UTF-8 answer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise Problem(400, f"{name}: not valid Unicode text (a lone surrogate at character "
                           f"{error.start})") from None
    return text


def bool_field(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):  # forms
        value = value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise Problem(400, f"{name}: {shown(value)} must be true or false")
    return value


# ---------------------------------------------------------------------------------------------
# Answering


def translate_answer(request: TranslateRequest, result, pair: tuple[str, str],
                     detected: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """LibreTranslate's response: per item of q, its lines' translations joined by newlines;
    with source "auto", `detected` holds each item's language."""
    per_item, alternatives, alignments, attention = [], [], [], []
    results = iter(zip(result.translations, result.attention or [None] * len(result.translations)))
    for text in request.texts:
        mine = [next(results) for _ in request.units(text)]
        per_item.append("\n".join(t.text for t, _ in mine))
        alternatives.append(["\n".join(t.nbest[k][1] if k < len(t.nbest) else t.text
                                       for t, _ in mine)
                             for k in range(1, request.alternatives + 1)])
        alignments.append("\n".join(format_alignment(t.alignments[0]) for t, _ in mine)
                          if request.alignment else None)
        attention.append([a for _, a in mine])

    def shaped(values: list) -> Any:
        return values if request.many else values[0]

    answer: dict[str, Any] = {"translatedText": shaped(per_item)}
    if request.alternatives:
        answer["alternatives"] = shaped(alternatives)
    if request.source_auto:
        answer["detectedLanguage"] = shaped(detected)
    if request.alignment:
        answer["alignment"] = shaped(alignments)
    if request.attention:
        answer["attention"] = shaped(attention)
    return answer


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str],
                                                             tuple[str, bytes] | None]:
    """The text fields of a multipart/form-data body, and its `file` as (name, bytes), read
    with the standard library's e-mail parser (MIME is what multipart is)."""
    if "multipart/form-data" not in content_type:
        raise Problem(400, "translate_file: send multipart/form-data, the file as field 'file'")
    try:
        head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    except UnicodeEncodeError:
        raise Problem(400, "Content-Type: not Latin-1 text") from None
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise Problem(400, "translate_file: the body is not multipart/form-data")
    fields: dict[str, str] = {}
    upload = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            upload = (part.get_filename() or "file.txt", payload)
        elif isinstance(name, str):
            try:
                fields[name] = checked_text(payload.decode("utf-8"), name)
            except UnicodeDecodeError:
                raise Problem(400, f"{name}: not UTF-8") from None
    return fields, upload


def file_job(data: bytes, name: str, kind: str, cfg: SearchConfig, languages: Languages,
             max_chars: int) -> Callable[[LineTranslator], bytes]:
    """What the inference thread does with an uploaded file: a text file line by line (its
    line breaks kept), a document whole (documents.py); a file of more than `max_chars`
    characters of text is refused before any is translated."""
    name = safe_name(name)  # it goes into error messages

    def within_limit(texts: list[str]) -> None:
        chars = sum(map(len, texts))
        if chars > max_chars:
            raise UserError(f"file: {chars:,} characters of text; at most {max_chars:,} per "
                            "file (--max-chars x 10)")

    def job(translator: LineTranslator) -> bytes:
        if kind != "text":
            translate = translator.texts_translator(cfg, languages=languages)

            def checked(texts: list[str]):
                within_limit(texts)
                return translate(texts)
            return translate_document(data, name, kind, checked)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{name}: not UTF-8 (byte {error.start})") from None
        lines = text.split("\n")
        within_limit(lines)
        ends = [line.endswith("\r") for line in lines]
        found = translator.translate([line.rstrip("\r") for line in lines], cfg,
                                     languages=languages)
        return "\n".join(t.text + ("\r" if end else "") for t, end in zip(found, ends)) \
            .encode("utf-8")
    return job


class Routes:
    """The server's routes, one named method each, over one engine and its batcher; `note` gets
    one line for what the server's log should show (a client that left mid-request)."""

    def __init__(self, translator: LineTranslator, batcher: Batcher, cfg: ServeConfig,
                 note: Callable[[str], None], limiter: Limiter | None = None,
                 files: FileStore | None = None):
        self.translator, self.batcher, self.cfg, self.note = translator, batcher, cfg, note
        self.limiter = limiter or Limiter(None, cfg.req_limit)
        self.files = files or FileStore()
        self.pair = (translator.source_language, translator.target_language)  # the first
        self.page = resources.files("tinytrans").joinpath("page.html").read_text(encoding="utf-8")

    async def translate(self, request: Request) -> Response:
        """POST /translate: LibreTranslate's request, answered with its lines."""
        try:
            fields = parse_fields(await read_body(request, self.cfg.max_body),
                                  request.headers.get("content-type", ""))
            self.admit(request, fields)
            shows_attention = self.translator.attention_shape() is not None
            wanted = translate_request(fields, self.translator.directions, self.cfg,
                                       shows_attention)
            # detected first: a multilingual model translates each item from its language
            detected = await self.detected_for_auto(wanted.texts, wanted.target) \
                if wanted.source_auto else None
            languages = wanted.line_languages(detected, self.translator.directions.tagged)
            result = await self.decoded(wanted, languages)
        except Problem as problem:
            return error_response(problem.status, str(problem))
        except Gone as gone:
            self.note(str(gone))
            return Response(status_code=400)  # written to no one: the connection is closed
        answer = translate_answer(wanted, result, self.pair, detected)
        if wanted.attention:  # megabytes of weights: encoded in a worker thread, not the loop
            body = await run_in_threadpool(json.dumps, answer, ensure_ascii=False)
            return Response(body, media_type="application/json")
        return JSONResponse(answer)

    def admit(self, request: Request, fields: dict[str, Any]) -> None:
        """The access rules (access.py): a valid api_key when keys are required, and the limit
        of the key or of the client's address."""
        address = request.client.host if request.client else "unknown"
        # LibreTranslate's form clients may send the key in the query string
        key = fields.get("api_key") or request.query_params.get("api_key")
        try:
            self.limiter.admit(key, address)
        except Refused as refused:
            raise Problem(refused.status, str(refused)) from None

    async def settings(self, request: Request) -> JSONResponse:
        """GET /frontend/settings: what LibreTranslate's clients ask before they translate."""
        source, target = self.pair
        return JSONResponse({
            "charLimit": self.cfg.max_chars, "frontendTimeout": 500,
            "keyRequired": self.limiter.keys_required, "suggestions": False,
            "filesTranslation": True, "supportedFilesFormat": supported_file_formats(),
            "language": {"source": {"code": source, "name": LANGUAGE_NAMES.get(source, source)},
                         "target": {"code": target, "name": LANGUAGE_NAMES.get(target, target)}}})

    def detected(self, texts: list[str], among: list[str] | None = None) -> list[dict[str, Any]]:
        """Each text's language and confidence, as LibreTranslate's detectedLanguage, found by
        the run's identifier (langid.py; about a millisecond per 1,000 characters and language,
        so callers run it off the event loop), maybe only `among` some languages. Raises
        UserError for a run without one."""
        return [{"language": g.language, "confidence": g.confidence}
                for g in self.translator.detect(texts, among)]

    async def detected_for_auto(self, texts: list[str],
                                target: str | None = None) -> list[dict[str, Any]]:
        """detectedLanguage for `source: "auto"`, off the event loop: for a multilingual model
        (`target` given), among the languages that can reach the target. A run made before
        identifiers reads only its source language, which is answered; a damaged identifier is
        logged and answered the same way, so that the translation still comes back."""
        among = None if target is None else self.translator.directions.sources_for(target)
        try:
            if self.translator.identifier is not None:
                return await run_in_threadpool(self.detected, texts, among)
        except UserError as error:
            self.note(f"error: {error}")
        return [{"language": self.pair[0], "confidence": 100.0} for _ in texts]

    async def detect(self, request: Request) -> Response:
        """POST /detect: LibreTranslate's {"q": text} -> [{"language", "confidence"}]; a list q
        gets one such list per item."""
        try:
            fields = parse_fields(await read_body(request, self.cfg.max_body),
                                  request.headers.get("content-type", ""))
            self.admit(request, fields)
            texts, many = query_texts(fields.get("q"))
            if sum(map(len, texts)) > self.cfg.max_chars:
                raise Problem(400, f"q: {sum(map(len, texts)):,} characters; at most "
                                   f"{self.cfg.max_chars:,} per request")
            if len(texts) > self.cfg.max_lines:
                raise Problem(400, f"q: {len(texts):,} items; at most {self.cfg.max_lines:,} "
                                   "per request")
            found = [[guess] for guess in await run_in_threadpool(self.detected, texts)]
        except Problem as problem:
            return error_response(problem.status, str(problem))
        except UserError as error:  # no identifier, or a damaged langid.json
            return error_response(400, str(error))
        except Gone as gone:
            self.note(str(gone))
            return Response(status_code=400)
        return JSONResponse(found if many else found[0])

    async def decoded(self, wanted: TranslateRequest, languages: list[Languages] | None = None):
        """The request's lines, translated by the batcher's inference thread."""
        try:
            future = self.batcher.submit(wanted.lines, wanted.cfg,
                                         LineOptions(alignment=wanted.alignment), wanted.attention,
                                         wanted.line_prefixes(), languages, wanted.markup)
        except QueueFull as full:
            raise Problem(429, f"too many requests waiting ({full}); retry later") from None
        except Closed:
            raise Problem(503, "the server is shutting down") from None
        return await self.waited(future)

    async def translate_file(self, request: Request) -> Response:
        """POST /translate_file: LibreTranslate's multipart upload (file, source, target,
        api_key), translated into a file of the same kind, answered with its download URL."""
        try:
            fields, upload = parse_multipart(await read_body(request, self.cfg.max_body),
                                             request.headers.get("content-type", ""))
            self.admit(request, fields)
            if upload is None:
                raise Problem(400, "file: missing; send the file as the multipart field 'file'")
            name, data = upload
            kind = FILE_KINDS.get(Path(name).suffix.lower())
            if kind is None or kind not in {FILE_KINDS[f] for f in supported_file_formats()}:
                raise Problem(400, f"file: {shown(name)} is not one of "
                                   f"{', '.join(supported_file_formats())}")
            source, target = language_field(fields, "source"), language_field(fields, "target")
            directions = self.translator.directions
            check_languages(directions, source, target)
            languages = Languages(None if source == "auto" or not directions.tagged else source,
                                  target if directions.tagged else None)
            cfg = SearchConfig(beam=self.cfg.beam)
            translated = await self.waited(self.batcher.submit_job(
                file_job(data, name, kind, cfg, languages, FILE_CHARS * self.cfg.max_chars), cfg))
            stored = await run_in_threadpool(self.files.put, name, translated)
        except Problem as problem:
            return error_response(problem.status, str(problem))
        except Gone as gone:
            self.note(str(gone))
            return Response(status_code=400)
        return JSONResponse({"translatedFileUrl": f"{request.base_url}download_file/{stored}"})

    async def download_file(self, request: Request) -> Response:
        """GET /download_file/NAME: a file /translate_file made, while it is kept."""
        name = request.path_params["name"]
        data = await run_in_threadpool(self.files.get, name)
        if data is None:
            return error_response(404, "download_file: no such file (files are kept "
                                       f"{KEEP_SECONDS / 60:g} minutes)")
        upload = name.split(".", 1)[1]
        media = {".html": "text/html", ".htm": "text/html", ".srt": "application/x-subrip",
                 ".txt": "text/plain", ".docx": DOCX_MEDIA}.get(Path(upload).suffix.lower(),
                                                                "application/octet-stream")
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{upload}"'})

    async def waited(self, future):
        """A batcher's future, awaited within --timeout; a UserError it raised is a 400."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.cfg.timeout)
        except asyncio.TimeoutError:
            future.cancel()
            raise Problem(503, f"timed out after {self.cfg.timeout:g} s; the server is busy") \
                from None
        except UserError as error:
            raise Problem(400, str(error)) from None

    async def languages(self, request: Request) -> JSONResponse:
        """GET /languages: every language served, each with the targets it can be translated
        into (trained, or through a pivot), as LibreTranslate lists its languages."""
        directions = self.translator.directions
        return JSONResponse([{"code": code, "name": LANGUAGE_NAMES.get(code, code),
                              "targets": directions.targets_of(code)}
                             for code in directions.languages])

    async def health(self, request: Request) -> JSONResponse:
        """GET /health: the queue, the batches so far, the engine."""
        return JSONResponse({"status": "ok", "source": self.pair[0], "target": self.pair[1],
                             "directions": [d.name for d in self.translator.directions.trained],
                             "waiting": self.batcher.waiting.qsize(),
                             "batches": self.batcher.batches,
                             "translating": self.batcher.translating,
                             "engine": type(self.translator).__name__,
                             **attention_shape(self.translator)})

    async def index(self, request: Request) -> HTMLResponse:
        """GET /: the page that translates as you type and draws the attention."""
        return HTMLResponse(self.page)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}")


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    return error_response(500, f"internal error ({type(error).__name__}); please report it")


def create_app(translator: LineTranslator, batcher: Batcher, cfg: ServeConfig,
               note: Callable[[str], None] = lambda line: None,
               limiter: Limiter | None = None, files: FileStore | None = None) -> Starlette:
    """The ASGI application: the routes, CORS when origins are named, and every error as
    one-line JSON."""
    routes = Routes(translator, batcher, cfg, note, limiter, files)
    # answers a page from another origin may read (the browser asks first with OPTIONS)
    middleware = [Middleware(CORSMiddleware, allow_origins=list(cfg.cors),
                             allow_methods=["GET", "POST"], allow_headers=["Content-Type"])] \
        if cfg.cors else []
    return Starlette(routes=[Route("/translate", routes.translate, methods=["POST"]),
                             Route("/detect", routes.detect, methods=["POST"]),
                             Route("/languages", routes.languages, methods=["GET"]),
                             Route("/translate_file", routes.translate_file, methods=["POST"]),
                             Route("/download_file/{name}", routes.download_file,
                                   methods=["GET"]),
                             Route("/frontend/settings", routes.settings, methods=["GET"]),
                             Route("/health", routes.health, methods=["GET"]),
                             Route("/", routes.index, methods=["GET"])],
                     middleware=middleware,
                     exception_handlers={HTTPException: http_error, Exception: internal_error})


# ---------------------------------------------------------------------------------------------
# Running


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (the port is taken, the host unknown)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there "
                        f"({error.strerror or error})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def guarded_http(max_connections: int, request_timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol with the two bounds a server on a network needs, which uvicorn
    leaves open: at most `max_connections` open at once (one more is answered 503 and closed),
    and `request_timeout` seconds for a client to send each whole request, head and body, from
    when it connects or its previous answer went out (a connection that sends nothing, or
    trickles a byte at a time, is answered 408 and closed). Idle keep-alive connections close
    after uvicorn's own 5 s."""
    # defined here, not at module level: uvicorn (the serve extra) is imported only to serve
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                transport.write(_closing_answer(503, "Service Unavailable"))
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self.transport is not None:  # not one refused in connection_made
                super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self._request_is_in():
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # the next request's clock (super() may go on to a pipelined one)
            super().on_response_complete()
            if self.transport.is_closing():
                self._disarm()

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(request_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _request_is_in(self) -> bool:
            """The whole request has arrived (MUST_CLOSE: whole, and `Connection: close`)."""
            return self.conn.their_state in (h11.DONE, h11.MUST_CLOSE)

        def _too_slow(self) -> None:
            self.deadline = None
            if self.transport.is_closing() or self._request_is_in():
                return
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # nothing sent yet
                self.transport.write(_closing_answer(408, "Request Timeout"))
            self.transport.close()

    return GuardedH11Protocol


def _closing_answer(status: int, reason: str) -> bytes:
    """A whole HTTP answer with no body that closes the connection."""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .encode("ascii"))


def is_loopback(host: str) -> bool:
    """Whether `host` serves this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def attention_shape(translator: LineTranslator) -> dict[str, int]:
    """Decoder layers and heads, for the page's pickers (0 where the engine shows no attention)."""
    shape = translator.attention_shape()
    return {"layers": shape.layers, "heads": shape.heads} if shape else {"layers": 0, "heads": 0}


def serve(translator: LineTranslator, cfg: ServeConfig, announce: Callable[[str], None],
          log_error: Callable[[BaseException], None] | None = None,
          api_keys: dict[str, int] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; then stop accepting, finish the requests in flight, and
    return. `announce` gets one line with the address (the port, when 0 was asked for)."""
    import uvicorn

    batcher = Batcher(translator, cfg.max_wait, queue_size=cfg.queue, on_error=log_error)
    files = FileStore()  # translated files until their download; removed when the server stops
    sock = listen(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(
        create_app(translator, batcher, cfg, note=announce,
                   limiter=Limiter(api_keys, cfg.req_limit), files=files), log_level="warning",
        lifespan="off", timeout_graceful_shutdown=cfg.timeout, ws="none",  # no WebSocket route
        http=guarded_http(cfg.max_connections, cfg.request_timeout)))
    pair = ", ".join(f"{d.src}->{d.tgt}" for d in translator.directions.trained)
    if not is_loopback(cfg.host):
        announce(f"warning: --host {cfg.host} is reachable from the network; tinytrans serve has "
                 "no TLS" + ("" if api_keys else " and, without --api-keys, no authentication")
                 + ": put it behind a reverse proxy that has TLS")
    announce(f"serving {pair} on http://{host}:{port} (Ctrl-C stops)")
    try:
        server.run(sockets=[sock])
    finally:
        batcher.close()
        sock.close()
        files.close()

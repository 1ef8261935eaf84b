"""Files as people have them: plain text, HTML pages, SRT subtitles and Word documents,
translated into a file of the same kind.

    .txt            a line in, a line out (lines.py), as `translate` without --input
    .html, .htm     one document: text translated, markup kept (markup.py)
    .srt            cue numbers and timings kept; a cue's lines translated together, as one
                    sentence or more, and broken again into as many lines, of even lengths
    .docx           paragraphs of the body, tables, headers and footers (python-docx, the
                    `documents` extra); each run keeps its formatting around the words aligned
                    to its own, as an inline tag does in HTML

The format comes from the input's extension or --format. Reading is strict: a file that is not
what its name says (an SRT cue without a timing line, a .docx that is not a Word document) is a
one-line error naming it and the place, before anything is written.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tinytrans.errors import UserError
from tinytrans.markup import Element, Span, place, translate_html

FILE_FORMATS = {".txt": "text", ".html": "html", ".htm": "html", ".srt": "srt", ".docx": "docx"}
DOCUMENT_FORMATS = ("html", "srt", "docx")  # a file of these is one document, not lines
MAX_DOCUMENT_BYTES = 50_000_000
MAX_UNPACKED_BYTES = 200_000_000  # a .docx's XML and media together

Alignment = list[tuple[int, int]]
TranslateTexts = Callable[[list[str]], list[tuple[str, Alignment | None]]]


def file_format(path: Path, given: str | None) -> str:
    """The format of a file: --format when given, else its extension's."""
    if given is not None:
        return given
    found = FILE_FORMATS.get(Path(path).suffix.lower())
    return found or "text"


def translate_document(data: bytes, name: str, fmt: str, translate: TranslateTexts) -> bytes:
    """A whole file of a document format (DOCUMENT_FORMATS) translated into one of the same."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UserError(f"{name}: {len(data):,} bytes; documents of at most "
                        f"{MAX_DOCUMENT_BYTES:,} are translated")
    if fmt == "docx":
        return translate_docx(data, name, translate)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{name}: not UTF-8 (byte {error.start})") from None
    if fmt == "html":
        return translate_html(text, translate).encode("utf-8")
    if fmt == "srt":
        return translate_srt(text, name, translate).encode("utf-8")
    raise UserError(f"--format {fmt}: not a document format ({', '.join(DOCUMENT_FORMATS)})")


# ---------------------------------------------------------------------------------------------
# SRT

_TIMING = re.compile(r"\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}.*")


@dataclass
class Cue:
    number: str  # the line as written
    timing: str
    lines: list[str]


def parse_srt(text: str, name: str) -> tuple[list[Cue], str]:
    """The cues of an SRT file and its line ending; a block that is not a cue is an error
    naming its line."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").split("\n")
    cues, block, start = [], [], 1
    for number, line in enumerate(lines + [""], 1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
            continue
        if block:
            if len(block) < 2 or not block[0].strip().isdigit() or \
                    not _TIMING.fullmatch(block[1].strip()):
                raise UserError(f"{name}:{start}: not an SRT cue (a number, then a timing line "
                                "such as 00:00:01,000 --> 00:00:02,500, then its text)")
            cues.append(Cue(block[0], block[1], block[2:]))
            block = []
    return cues, newline


def write_srt(cues: list[Cue], newline: str) -> str:
    return newline.join(newline.join([cue.number, cue.timing, *cue.lines]) + newline
                        for cue in cues)


def translate_srt(text: str, name: str, translate: TranslateTexts) -> str:
    cues, newline = parse_srt(text, name)
    spoken = [" ".join(" ".join(cue.lines).split()) for cue in cues]
    found = translate(spoken) if spoken else []
    for cue, (translation, _) in zip(cues, found):
        cue.lines = rebreak(translation, max(len(cue.lines), 1)) if cue.lines else []
    return write_srt(cues, newline)


def rebreak(text: str, count: int) -> list[str]:
    """`text` in `count` lines of even lengths, broken between words (fewer when there are
    fewer words)."""
    words = text.split()
    if count <= 1 or len(words) <= 1:
        return [" ".join(words)]
    lines: list[str] = []
    rest = words
    for remaining in range(count, 1, -1):
        target = len(" ".join(rest)) / remaining
        taken, length = 0, -1
        while taken < len(rest) - (remaining - 1) and \
                abs(length + 1 + len(rest[taken]) - target) <= abs(length - target):
            length += 1 + len(rest[taken])
            taken += 1
        taken = max(taken, 1)
        lines.append(" ".join(rest[:taken]))
        rest = rest[taken:]
        if not rest:
            return lines
    lines.append(" ".join(rest))
    return lines


# ---------------------------------------------------------------------------------------------
# Word documents


def translate_docx(data: bytes, name: str, translate: TranslateTexts) -> bytes:
    """The document with every paragraph of its body, tables, headers and footers translated,
    each run keeping its formatting over the words aligned to its own."""
    try:
        import docx
    except ImportError:
        raise UserError("a .docx needs python-docx, which is not installed (pip install "
                        "'tinytrans[documents]')") from None
    _check_unpacked_size(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:  # python-docx raises zipfile, KeyError and lxml errors alike
        raise UserError(f"{name}: not a Word (.docx) document ({type(error).__name__})") from None
    seen: set[int] = set()  # a merged table cell is met once per cell it spans
    paragraphs = [(p, runs) for p in _paragraphs(document)
                  if not (id(p._p) in seen or seen.add(id(p._p)))
                  and (runs := _text_runs(p)) and "".join(r.text for r in runs).strip()]
    found = translate([" ".join("".join(r.text for r in runs).split()) for _, runs in paragraphs])
    for (_, runs), (translation, alignment) in zip(paragraphs, found):
        _put_runs(runs, translation, alignment)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _paragraphs(document) -> Iterator:
    """Every paragraph a reader sees: the body's, the tables' cells' (nested tables too), and
    each section's headers and footers."""
    def of(container) -> Iterator:
        yield from container.paragraphs
        for table in getattr(container, "tables", []):
            for row in table.rows:
                for cell in row.cells:
                    yield from of(cell)
    yield from of(document)
    for section in document.sections:
        for part in (section.header, section.footer):
            if not part.is_linked_to_previous:
                yield from of(part)


def _check_unpacked_size(data: bytes, name: str) -> None:
    """A .docx is a zip: refuse one that would unpack to more than MAX_UNPACKED_BYTES (a small
    upload can hold gigabytes of XML)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UserError(f"{name}: not a Word (.docx) document (not a zip archive)") from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise UserError(f"{name}: unpacks to {unpacked:,} bytes; at most "
                        f"{MAX_UNPACKED_BYTES:,}")


def _text_runs(paragraph) -> list:
    """The paragraph's runs that hold only text (and their formatting): a run with a picture,
    a field, a break or a footnote mark is left as it is, and so is a hyperlink's text."""
    from docx.oxml.ns import qn
    allowed = {qn("w:rPr"), qn("w:t")}
    return [run for run in paragraph.runs if all(child.tag in allowed for child in run._r)]


def _put_runs(runs: list, translation: str, alignment: Alignment | None) -> None:
    """The translation's words shared out among the paragraph's text runs (markup.place): each
    run keeps its formatting around the target words aligned to its own; words no run takes go
    to the run before them."""
    if not runs:
        return
    texts = [run.text for run in runs]
    source = "".join(texts)
    words = _word_spans(source)
    spans, offset = [], 0
    for run, text in zip(runs, texts):
        covered = [k for k, (a, b) in enumerate(words) if a < offset + len(text) and b > offset]
        first = covered[0] if covered else next((k for k, (a, _) in enumerate(words)
                                                 if a >= offset), len(words))
        spans.append(Span(Element("run", "", []), first,
                          covered[-1] if covered else first - 1, []))
        offset += len(text)
    target = translation.split()
    placed = place(spans, len(words), len(target), alignment)
    where = {id(span): (first, last) for span, first, last in placed}
    owner = [None] * len(target)
    for k, span in enumerate(spans):
        first, last = where[id(span)]
        for t in range(first, last + 1):
            owner[t] = k
    current = 0
    for t in range(len(target)):  # words no run took: to the run before them
        if owner[t] is None:
            owner[t] = current
        current = owner[t]
    order = []
    for k, run in enumerate(runs):
        mine = [t for t in range(len(target)) if owner[t] == k]
        run.text = (" " if mine and mine[0] > 0 else "") + " ".join(target[t] for t in mine)
        # a run without words stays after the run before it
        order.append((mine[0] if mine else (order[-1][0] if order else -1), k))
    _reorder(runs, [k for _, k in sorted(order)])


def _reorder(runs: list, order: list[int]) -> None:
    """The runs' XML elements put in `order` in the places the runs held (the translation may
    have moved their words, and a run's formatting goes with its words)."""
    if order == sorted(order):
        return
    elements = [run._r for run in runs]
    markers = []
    for element in elements:
        marker = element.makeelement("marker", {})
        element.addprevious(marker)
        markers.append(marker)
    for element in elements:
        element.getparent().remove(element)
    for marker, k in zip(markers, order):
        marker.addnext(elements[k])
        marker.getparent().remove(marker)


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

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

import copy
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tinytrans.errors import UserError
from tinytrans.markup import translate_html

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
                  and (runs := _text_runs(p)) and _joined(runs)[0].strip()]
    found = translate([" ".join(_joined(runs)[0].split()) for _, runs in paragraphs])
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
    """The translation's words shared out among the paragraph's text runs: each target word
    takes the formatting of the run its source word was in (by the alignment; a word aligned to
    nothing, that of the word before it; without an alignment, by relative position). Each
    stretch of words of one run becomes a run with that run's formatting, in the order of the
    translation, where the text runs were: a bold word stays bold wherever it went."""
    if not runs:
        return
    run_of_word = _run_of_each_word(runs)  # source word -> run index
    target = translation.split()
    owners = _owners(run_of_word, len(target), alignment)
    stretches: list[tuple[int, list[str]]] = []
    for word, owner in zip(target, owners):
        if stretches and stretches[-1][0] == owner:
            stretches[-1][1].append(word)
        else:
            stretches.append((owner, [word]))
    if not _side_by_side(runs):
        # a tab, a field or a picture between text runs stays where it is: each run keeps its
        # place and takes the words it owns
        for k, run in enumerate(runs):
            _set_text(run._r, " ".join(word for word, owner in zip(target, owners) if owner == k))
        return
    marker = runs[0]._r.makeelement("marker", {})  # where the text runs begin
    runs[0]._r.addprevious(marker)
    used: set[int] = set()
    for position, (k, words) in enumerate(stretches):
        # a run's first stretch is the run itself; another is a copy of it (its formatting)
        element = runs[k]._r if k not in used else copy.deepcopy(runs[k]._r)
        used.add(k)
        marker.addprevious(element)
        _set_text(element, (" " if position else "") + " ".join(words))
    marker.getparent().remove(marker)
    for k, run in enumerate(runs):
        if k not in used:
            run._r.getparent().remove(run._r)


def _side_by_side(runs: list) -> bool:
    """Whether the text runs are neighbours in their paragraph, nothing between them."""
    return len(_joined(runs)[0]) == sum(len(run.text) for run in runs)


def _joined(runs: list) -> tuple[str, list[tuple[int, int, int]]]:
    """The text runs' text as one, a space where something else (a tab, a field) stood
    between two of them, and each run's (start, end, index) in it."""
    text, bounds = "", []
    for k, run in enumerate(runs):
        if k and runs[k - 1]._r.getnext() is not run._r:
            text += " "
        bounds.append((len(text), len(text) + len(run.text), k))
        text += run.text
    return text, bounds


def _run_of_each_word(runs: list) -> list[int]:
    """For each whitespace word of the runs' text, the index of the run it starts in."""
    text, bounds = _joined(runs)
    return [next(k for a, b, k in bounds if a <= start < b) for start, _ in _word_spans(text)]


def _owners(run_of_word: list[int], n_target: int, alignment: Alignment | None) -> list[int]:
    """The run of each target word (see _put_runs)."""
    n_source = max(len(run_of_word), 1)
    links: dict[int, int] = {}
    for s, t in sorted(alignment or []):
        links.setdefault(t, s)
    owners: list[int] = []
    for t in range(n_target):
        if alignment is None:
            source = min(len(run_of_word) - 1, t * n_source // max(n_target, 1))
        else:
            source = links.get(t)
        if source is None or source >= len(run_of_word):
            owners.append(owners[-1] if owners else run_of_word[0] if run_of_word else 0)
        else:
            owners.append(run_of_word[source])
    return owners


def _set_text(element, text: str) -> None:
    """A run element's text: one <w:t> (spaces kept), after its formatting."""
    from docx.oxml.ns import qn
    for old in element.findall(qn("w:t")):
        element.remove(old)
    node = element.makeelement(qn("w:t"), {})
    node.text = text
    node.set("{http://www.w3.org/XML/1998/namespace}space", "preserve")
    element.append(node)


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

"""HTML in, HTML out: the text between the tags translated, the tags kept around the words they
covered, placed through the word alignments of each translation.

    <p>The <b>black</b> dog runs.</p>  ->  <p>Der <b>schwarze</b> Hund rennt.</p>

The page is parsed by the standard library's html.parser (no dependency; it reports the tags, the
text and the raw source of every tag, which is what a round trip needs) into a tree, repaired as
browsers repair the common cases: a stray end tag is dropped, an element left open is closed
where its parent closes, a `<p>` or `<li>` is closed by the next block that cannot sit inside it.

Block elements (p, li, td, h1-h6, div, br, ...) bound the runs of text that are translated, each
run whole (a run may hold several sentences: the line handling splits them). Inside a run, an
inline element (b, i, em, strong, a, span, ...) covers some of its words; once the run is
translated, the element covers the target words aligned to those (the span from the first to the
last of them), clamped inside its parent and after its earlier siblings, so that the output has
the input's elements in the same nesting. An element no target word is aligned to is kept, empty,
where its neighbours put it. Engines without alignments (CTranslate2) place by relative position.

Kept as they were, byte for byte: the source of every tag (except translated attributes: alt,
title and placeholder), comments, declarations, and the whole of script, style, code, pre,
textarea and any element marked translate="no" (these also bound runs). Entities in translated
text come out as characters (`&eacute;` -> `é`); `&`, `<` and `>` are escaped again. The
whitespace around each run is kept.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
import re
from bisect import bisect_left, bisect_right
from html.parser import HTMLParser

from tinytrans.errors import UserError

Alignment = list[tuple[int, int]]  # (source word, target word) pairs
# texts -> (translation, word alignment or None when the engine gives none), one per text
TranslateTexts = Callable[[list[str]], list[tuple[str, Alignment | None]]]

BLOCK = frozenset("""address article aside blockquote body br caption dd details dialog div dl dt
    fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6 head header hgroup hr html legend li
    main menu nav ol optgroup option p section summary table tbody td tfoot th thead title tr ul
    """.split())
UNTOUCHED = frozenset("script style code pre textarea kbd samp var template svg math".split())
VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
# an open element of the key's kind is closed when one of these starts (as browsers do)
CLOSED_BY = {"p": BLOCK - {"br"}, "li": {"li"}, "dt": {"dt", "dd"}, "dd": {"dt", "dd"},
             "td": {"td", "th", "tr"}, "th": {"td", "th", "tr"}, "tr": {"tr"},
             "option": {"option", "optgroup"}}
TRANSLATED_ATTRIBUTES = ("alt", "title", "placeholder")
MAX_DEPTH = 500  # nesting deeper than this is refused: no page needs it, recursion would


@dataclass
class Element:
    tag: str
    start: str  # the start tag as written
    attrs: list[tuple[str, str | None]]
    children: list = field(default_factory=list)  # Element, str (text) or Raw
    end: str | None = None  # the end tag as written; None: implied (written as </tag>)

    @property
    def untouched(self) -> bool:
        translate = dict(self.attrs).get("translate")
        return self.tag in UNTOUCHED or (translate or "").strip().lower() == "no"


@dataclass
class Raw:
    """Source kept as it is: a comment, a declaration, an untouched element's content."""

    text: str


class _TreeBuilder(HTMLParser):
    """html.parser's events into a tree of Element, text and Raw. Text arrives with its
    entities decoded (html.parser follows HTML5's rules: "&b=2" stays as it is); an untouched
    element is kept as the slice of the source it spans, byte for byte."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.root = Element("#root", "", [])
        self.stack = [self.root]
        self.verbatim: tuple[Element, int] | None = None  # an untouched element and its start

    def source_offset(self) -> int:
        """The source offset of the event being handled."""
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.verbatim is not None:
            return
        self._close_implied(tag)
        element = Element(tag, self.get_starttag_text() or f"<{tag}>", attrs)
        self.stack[-1].children.append(element)
        if tag in VOID:
            return
        if element.untouched:  # its source, start tag to end tag, is copied at its end
            self.verbatim = (element, self.source_offset())
        if len(self.stack) > MAX_DEPTH:
            raise UserError(f"--format html: elements nested more than {MAX_DEPTH} deep")
        self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs) -> None:
        if self.verbatim is not None:
            return
        self._close_implied(tag)
        element = Element(tag, self.get_starttag_text() or f"<{tag}/>", attrs, end="")
        self.stack[-1].children.append(element)  # <br/>, <span/>: written as they were

    def handle_endtag(self, tag: str) -> None:
        if self.verbatim is not None:
            element, start = self.verbatim
            if tag != element.tag:
                return  # inside an untouched element: all of it is copied
            end = self.text.find(">", self.source_offset())
            self._keep_verbatim(element, start, len(self.text) if end < 0 else end + 1)
            return
        if tag not in [e.tag for e in self.stack[1:]]:
            return  # a stray end tag: browsers drop it
        while self.stack[-1].tag != tag:
            self.stack.pop()  # left open: closed here, as its parent closes
        self.stack.pop().end = f"</{tag}>"

    def _keep_verbatim(self, element: Element, start: int, end: int) -> None:
        """The untouched element becomes the slice of the source it spans."""
        parent = self.stack[-2]
        parent.children[parent.children.index(element)] = Raw(self.text[start:end])
        del self.stack[-1]
        self.verbatim = None

    def close(self) -> None:
        super().close()
        if self.verbatim is not None:  # left open: copied to the end
            self._keep_verbatim(self.verbatim[0], self.verbatim[1], len(self.text))

    def _close_implied(self, tag: str) -> None:
        """A <p> closed by a block starting, an <li> by the next <li>, a <td> and its <tr> by
        the next <tr>, ... (CLOSED_BY), as far as a block that stays open."""
        closed = True
        while closed:
            closed = False
            for k in range(len(self.stack) - 1, 0, -1):
                open_tag = self.stack[k].tag
                if tag in CLOSED_BY.get(open_tag, ()):
                    del self.stack[k:]
                    closed = True
                    break
                if open_tag in BLOCK:
                    return  # nothing closes across a block that stays open

    def handle_data(self, data: str) -> None:
        if self.verbatim is not None:
            return
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)

    def handle_comment(self, data: str) -> None:
        self._raw(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self._raw(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self._raw(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self._raw(f"<![{data}]>")

    def _raw(self, text: str) -> None:
        if self.verbatim is None:
            self.stack[-1].children.append(Raw(text))


def parse(text: str) -> Element:
    """The page as a tree under a root element that writes nothing of its own."""
    builder = _TreeBuilder(text)
    try:
        builder.feed(text)
        builder.close()
    except (AssertionError, ValueError, IndexError) as error:  # html.parser's own refusals
        raise UserError(f"--format html: the HTML cannot be read ({type(error).__name__}: "
                        f"{str(error)[:80]})") from None
    return builder.root


# ---------------------------------------------------------------------------------------------
# Runs: the text between block boundaries, with the inline elements over its words


@dataclass
class Run:
    """A stretch of inline content: its items (text and inline elements, in order) and where
    it sits in its parent's children."""

    parent: Element
    start: int  # index of its first item in parent.children
    items: list  # str and Element


def runs_of(element: Element) -> list[Run]:
    """Every run of the tree, in document order; untouched elements and blocks bound them."""
    found: list[Run] = []
    current: list = []
    start = 0
    for index, child in enumerate(element.children):
        if isinstance(child, Element) and (child.tag in BLOCK or child.untouched or
                                           not _all_inline(child)):
            if current:
                found.append(Run(element, start, current))
            current = []
            if not child.untouched:
                found += runs_of(child)
            start = index + 1
        elif isinstance(child, Raw):
            if current:
                found.append(Run(element, start, current))
            current, start = [], index + 1
        else:
            if not current:
                start = index
            current.append(child)
    if current:
        found.append(Run(element, start, current))
    return found


def _all_inline(element: Element) -> bool:
    """Whether an element holds only text and inline elements, all the way down."""
    for child in element.children:
        if isinstance(child, Raw):
            return False
        if isinstance(child, Element) and (child.tag in BLOCK or child.untouched or
                                           not _all_inline(child)):
            return False
    return True


@dataclass
class Span:
    """An inline element of a run over source words [first, last] (last < first: none, at
    `first`), and its inline children."""

    element: Element
    first: int
    last: int
    children: list[Span]


def flatten(items: list) -> tuple[str, list[Span]]:
    """A run's text (its pieces joined as they are) and its inline elements as word spans."""
    text_parts: list[str] = []
    spans = _spans(items, text_parts, [0])
    text = "".join(text_parts)
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts, ends = [a for a, _ in words], [b for _, b in words]
    return text, [_to_words(span, starts, ends) for span in spans]


def _spans(items: list, text_parts: list[str], length: list[int]) -> list:
    """(element, first character, end character, children) of each inline element; `length`
    counts the characters so far (a running total: pages are long)."""
    result = []
    for item in items:
        if isinstance(item, str):
            text_parts.append(item)
            length[0] += len(item)
            continue
        begin = length[0]
        children = _spans(item.children, text_parts, length)
        result.append((item, begin, length[0], children))
    return result


def _to_words(span, starts: list[int], ends: list[int]) -> Span:
    """An element's characters [begin, end) as the words they touch; none: placed before the
    first word starting at or after it."""
    element, begin, end, children = span
    first = bisect_right(ends, begin)  # the first word ending after `begin`
    last = bisect_left(starts, end) - 1  # the last word starting before `end`
    if end <= begin or last < first:
        first = bisect_left(starts, begin)
        last = first - 1
    return Span(element, first, last, [_to_words(c, starts, ends) for c in children])


# ---------------------------------------------------------------------------------------------
# Placing the elements over the translation


def place(spans: list[Span], n_source: int, n_target: int,
          alignment: Alignment | None) -> list[tuple[Span, int, int]]:
    """Each span's target words [first, last] (last < first: empty, before word `first`), in
    tree order, nested inside its parent and after its earlier siblings."""
    links: dict[int, list[int]] = {}
    for s, t in alignment or []:
        links.setdefault(s, []).append(t)

    def target_of(source: int) -> list[int]:
        if alignment is None:  # no alignment: by relative position
            return [min(n_target - 1, source * n_target // max(n_source, 1))] if n_target else []
        return links.get(source, [])

    placed: list[tuple[Span, int, int]] = []

    def visit(siblings: list[Span], low: int, high: int) -> None:
        ranges = []
        for span in siblings:
            targets = [t for s in range(span.first, span.last + 1) for t in target_of(s)]
            if targets:
                first, last = min(targets), max(targets)
            else:  # no word of it translated: before the target of the word after it
                after = target_of(span.last + 1) if span.last + 1 < n_source else []
                first = min(after) if after else high + 1
                last = first - 1
            ranges.append([max(first, low), min(last, high), span])
        ranges.sort(key=lambda r: r[0])  # the translation may have reordered them
        cursor = low
        for r in ranges:
            first, last = max(r[0], cursor), r[1]
            if last < first:
                first = min(first, high + 1)
                last = first - 1
            placed.append((r[2], first, last))
            visit(r[2].children, first, last)
            cursor = max(cursor, last + 1)

    visit(spans, 0, n_target - 1)
    return placed


def rebuild(words: list[str], placed: list[tuple[Span, int, int]], spans: list[Span]) -> list:
    """The translated run as items again: text, and copies of the inline elements around their
    target words; words joined by single spaces, a space between an element and a word outside
    the element."""
    where = {id(span): (first, last) for span, first, last in placed}

    def emit(siblings: list[Span], low: int, high: int) -> list:
        items: list = []
        position, words_before = low, False
        for span in sorted(siblings, key=lambda s: where[id(s)][0]):
            first, last = where[id(span)]
            if first > position:
                items.append((" " if words_before else "") + " ".join(words[position:first]))
                words_before, position = True, first
            if words_before and last >= first:  # a space between words; an empty one none
                items.append(" ")
            element = span.element
            items.append(Element(element.tag, element.start, element.attrs,
                                 emit(span.children, first, last), element.end))
            words_before = words_before or last >= first
            position = max(position, last + 1)
        if position <= high:
            items.append((" " if words_before else "") + " ".join(words[position: high + 1]))
        return items

    return emit(spans, 0, len(words) - 1)


# ---------------------------------------------------------------------------------------------
# The whole page


def translate_html(text: str, translate: TranslateTexts) -> str:
    """`text` (an HTML fragment or page) with its text translated and its markup kept."""
    root = parse(text)
    runs = [run for run in runs_of(root) if "".join(_texts(run.items)).strip()]
    flattened = [flatten(run.items) for run in runs]
    attributes = _translatable_attributes(root)
    results = translate([" ".join(t.split()) for t, _ in flattened] +
                        [" ".join(value.split()) for _, _, value in attributes])
    # attributes first: the runs' elements are copied when they are placed
    for (element, name, value), (translated, _) in zip(attributes, results[len(runs):]):
        if translated != value:  # else the tag stays as written
            element.attrs = [(k, translated if k == name else v) for k, v in element.attrs]
            element.start = _rebuilt_start(element)
    # the last run first: replacing a run's items moves the later runs of the same parent
    for run, (source, spans), (target, alignment) in reversed(list(zip(runs, flattened,
                                                                        results))):
        words = target.split()
        items = rebuild(words, place(spans, len(source.split()), len(words), alignment), spans)
        first, last = run.items[0], run.items[-1]
        lead = first[: len(first) - len(first.lstrip())] if isinstance(first, str) else ""
        tail = last[len(last.rstrip()):] if isinstance(last, str) else ""
        run.parent.children[run.start: run.start + len(run.items)] = \
            [part for part in (lead, *items, tail) if part != ""]
    return serialize(root)


def _texts(items: list) -> list[str]:
    return [t for item in items for t in ([item] if isinstance(item, str) else
                                          _texts(item.children) if isinstance(item, Element)
                                          else [])]


def _translatable_attributes(root: Element) -> list[tuple[Element, str, str]]:
    found = []

    def visit(element: Element) -> None:
        if element.untouched:
            return
        for name, value in element.attrs:
            if name in TRANSLATED_ATTRIBUTES and value and value.strip():
                found.append((element, name, value))
        for child in element.children:
            if isinstance(child, Element):
                visit(child)
    visit(root)
    return found


def _rebuilt_start(element: Element) -> str:
    """A start tag written anew (its attributes changed), each value quoted and escaped."""
    parts = [element.tag] + [name if value is None else f'{name}="{html.escape(value)}"'
                             for name, value in element.attrs]
    closing = "/>" if element.start.rstrip().endswith("/>") else ">"
    return "<" + " ".join(parts) + closing


def serialize(element: Element) -> str:
    out: list[str] = []

    def write(node) -> None:
        if isinstance(node, str):
            out.append(html.escape(node, quote=False))
        elif isinstance(node, Raw):
            out.append(node.text)
        else:
            out.append(node.start)
            for child in node.children:
                write(child)
            if node.tag not in VOID:
                out.append(node.end if node.end is not None else f"</{node.tag}>")
    for child in element.children:
        write(child)
    return "".join(out)

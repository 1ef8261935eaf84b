"""HTML in, HTML out (markup.py): the tags kept around the words they covered, placed by the
word alignments; what is not text left as it was; malformed pages repaired as browsers do."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest

from helpers_cli import assert_one_line_error, invoke
from tinytrans.markup import BLOCK, Element, parse, translate_html
from toyrun import BUNDLED


def same(texts):
    """The identity, each word aligned with itself."""
    return [(t, [(i, i) for i in range(len(t.split()))]) for t in texts]


def reversed_upper(texts):
    """Each text's words backwards and in capitals, aligned accordingly: the alignment, not
    the position, must decide where a tag goes."""
    found = []
    for text in texts:
        words = text.split()
        n = len(words)
        found.append((" ".join(reversed(words)).upper(), [(i, n - 1 - i) for i in range(n)]))
    return found


def unaligned(texts):
    return [(t.upper(), None) for t in texts]


def tag_tree(text: str, ordered: bool = True) -> list:
    """The elements of a page as nested (tag, [children]) lists, text left out; not `ordered`:
    each element's children sorted (a translation may reorder siblings, as it reorders words)."""
    def shape(element: Element) -> list:
        children = [(c.tag, shape(c)) for c in element.children if isinstance(c, Element)]
        return children if ordered else sorted(children, key=repr)
    return shape(parse(text))


def test_the_alignment_decides_where_a_tag_goes():
    assert translate_html("<p>The <b>black</b> dog runs.</p>", reversed_upper) == \
        "<p>RUNS. DOG <b>BLACK</b> THE</p>"
    assert translate_html("<p>A <b>bold <i>and italic</i> word</b> here.</p>", reversed_upper) \
        == "<p>HERE. <b>WORD <i>ITALIC AND</i> BOLD</b> A</p>"
    # a word aligned to two source words inside and outside a tag: the tag takes the span
    def merged(texts):
        return [("EIN SCHWARZHUND", [(0, 0), (1, 1), (2, 1)]) for _ in texts]
    assert translate_html("A black <b>dog</b>", merged) == "EIN <b>SCHWARZHUND</b>"


def test_a_tag_over_no_translated_word_is_kept_empty_in_place():
    def dropped(texts):  # "very" is aligned to nothing
        return [("EIN HUND", [(0, 0), (2, 1)]) for _ in texts]
    assert translate_html("A <em>very</em> dog", dropped) == "EIN<em></em> HUND"
    assert translate_html("<p>Hello<br>world</p>", same) == "<p>Hello<br>world</p>"


def test_what_is_not_text_stays_as_it_was():
    page = ('<!DOCTYPE html><html><head><title>A title</title><style>p { color: red; }</style>'
            '</head><body><!-- a comment --><p class="x" data-n=\'1\'>Run <code>ls &lt;x&gt; '
            '&amp;&amp; cd</code> now.</p><pre>  keep\n   this</pre><script>if (a < b) '
            'go();</script><p translate="no">Keep Me</p></body></html>')
    out = translate_html(page, reversed_upper)
    for kept in ('<!DOCTYPE html>', '<style>p { color: red; }</style>', '<!-- a comment -->',
                 '<p class="x" data-n=\'1\'>', '<code>ls &lt;x&gt; &amp;&amp; cd</code>',
                 '<pre>  keep\n   this</pre>', '<script>if (a < b) go();</script>',
                 '<p translate="no">Keep Me</p>'):
        assert kept in out, kept
    assert "<title>TITLE A</title>" in out and "<p class=\"x\" data-n='1'>RUN <code>" in out
    assert "</code> NOW.</p>" in out


def test_alt_title_and_placeholder_are_translated_other_attributes_not():
    out = translate_html('<img src="a cat.png" alt="A cat"><a href="x" title="Go there">go</a>'
                         '<input placeholder="Your name" value="Your name">', reversed_upper)
    assert out == ('<img src="a cat.png" alt="CAT A"><a href="x" title="THERE GO">GO</a>'
                   '<input placeholder="NAME YOUR" value="Your name">')


def test_entities_and_whitespace_round_trip():
    page = "<div>\n  <p>Caf&eacute; &amp; b&#228;r &lt;3</p>\n  <p> two  words </p>\n</div>"
    assert translate_html(page, same) == \
        "<div>\n  <p>Café &amp; bär &lt;3</p>\n  <p> two words </p>\n</div>"


def test_malformed_pages_are_repaired_as_browsers_do():
    assert translate_html("<ul><li>one<li>two <em>three</em></ul><p>a<p>b", same) == \
        "<ul><li>one</li><li>two <em>three</em></li></ul><p>a</p><p>b</p>"
    assert translate_html("<p>stray</span> end</b></p><div><i>open</div>", same) == \
        "<p>stray end</p><div><i>open</i></div>"
    assert translate_html("<table><tr><td>a<td>b<tr><td>c</table>", same) == \
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"


INLINE = ("b", "i", "em", "strong", "a", "span", "u", "small")
BLOCKS = ("p", "div", "li", "td", "h2")


def random_page(rng: random.Random, depth: int = 0) -> str:
    """Nested blocks and inline elements around words: the structure is what is checked."""
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.4 or depth > 3:
            parts.append(" ".join(rng.choice(["the", "dog", "runs", "a", "red", "ball", "here"])
                                  for _ in range(rng.randint(1, 4))))
        elif kind < 0.75:
            tag = rng.choice(INLINE)
            parts.append(f"<{tag}>{random_inline(rng, depth + 1)}</{tag}>")
        else:
            tag = rng.choice(BLOCKS)
            inner = random_page(rng, depth + 1)
            parts.append(f"<ul><li>{inner}</li></ul>" if tag == "li" else
                         f"<table><tr><td>{inner}</td></tr></table>" if tag == "td" else
                         f"<{tag}>{inner}</{tag}>")
    return " ".join(parts)


def random_inline(rng: random.Random, depth: int) -> str:
    words = [rng.choice(["big", "cat", "sleeps", "on", "mats"]) for _ in range(rng.randint(0, 3))]
    if depth < 4 and rng.random() < 0.5:
        tag = rng.choice(INLINE)
        words.insert(rng.randint(0, len(words)), f"<{tag}>{random_inline(rng, depth + 1)}</{tag}>")
    return " ".join(words)


@pytest.mark.parametrize("translate", [same, reversed_upper, unaligned])
def test_generated_pages_keep_their_elements_and_nesting(translate):
    rng = random.Random(7)
    for _ in range(300):
        page = random_page(rng)
        out = translate_html(page, translate)
        # the same elements in the same nesting; in the same order where the words kept theirs
        ordered = translate is not reversed_upper
        assert tag_tree(out, ordered) == tag_tree(page, ordered), (page, out)
        assert well_formed(out), out


def well_formed(text: str) -> bool:
    """Every start tag of a non-void element closed, in order."""
    stack = []

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in ("br", "img", "input", "hr", "meta", "link"):
                stack.append(tag)

        def handle_endtag(self, tag):
            assert stack and stack.pop() == tag, (tag, stack)
    Check().feed(text)
    return not stack


def test_a_real_looking_page_keeps_every_element():
    page = """<html><body><nav><ul><li><a href="/">Home</a></li><li><a href="/about">About
    us</a></li></ul></nav><main><h1>A dog in the <em>snow</em></h1><p>The dog
    <strong>runs</strong> across the <a href="/field">white field</a>, and a child
    <span class="name">watches</span>.</p><figure><img src="d.jpg" alt="A dog running">
    <figcaption>Photo: the <i>dog</i>.</figcaption></figure><table><tr><th>Name</th><th>Age
    </th></tr><tr><td>Rex</td><td>3</td></tr></table></main></body></html>"""
    for translate in (same, reversed_upper, unaligned):
        out = translate_html(page, translate)
        ordered = translate is not reversed_upper
        assert tag_tree(out, ordered) == tag_tree(page, ordered) and well_formed(out)


def strip_tags(text: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def test_stripping_the_tags_of_a_translation_gives_the_translation_of_the_stripped_text(
        varied_run):
    import tinytrans
    from tinytrans.config import SearchConfig
    model = tinytrans.load(varied_run, device="cpu", precision="fp32", threads=1)
    lines = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:20]
    rng = random.Random(3)
    pages = []
    for line in lines:
        words = line.split()
        a = rng.randrange(len(words))
        b = rng.randrange(a, len(words))
        tag = rng.choice(INLINE)
        pages.append(" ".join(words[:a] + [f"<{tag}>" + " ".join(words[a:b + 1]) + f"</{tag}>"]
                              + words[b + 1:]))
    translated = list(model.translator.translate_markup(pages, SearchConfig()))
    plain = [model.translate([line])[0] for line in lines]  # a batch of one each, as above
    assert [strip_tags(t) for t in translated] == [" ".join(p.split()) for p in plain]
    assert all(tag_tree(t) == tag_tree(p) for t, p in zip(translated, pages))


def test_the_command_line_translates_html_line_by_line(varied_run):
    result = invoke("translate", "--model", varied_run, "--format", "html", "--precision", "fp32",
                    input="<p>A man <b>rides</b> a bike.</p>\n<i>Hello</i>\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("<p>") and lines[0].endswith("</p>")
    assert lines[0].count("<b>") == 1 and lines[0].count("</b>") == 1
    assert_one_line_error(invoke("translate", "--model", varied_run, "--format", "html",
                                 "--alignment", input="<p>a</p>\n"), 2, "--format html",
                          "--alignment")


def test_blocks_are_translated_apart():
    seen = []

    def record(texts):
        seen.extend(texts)
        return same(texts)
    translate_html("<div>One two.<p>Three</p>four <b>five</b><br>six</div>", record)
    assert seen == ["One two.", "Three", "four five", "six"]
    assert "br" in BLOCK


def test_the_api_translates_html(varied_run):
    import tinytrans
    from tinytrans.errors import UserError
    model = tinytrans.load(varied_run, device="cpu", precision="fp32", threads=1)
    pages = ["<p>A man <b>rides</b> a bike.</p>", "<i>Hello</i>"]
    from tinytrans.config import SearchConfig
    assert model.translate(pages, format="html") == \
        list(model.translator.translate_markup(pages, SearchConfig()))
    with pytest.raises(UserError, match="--format html: not with --nbest"):
        model.translate(pages, format="html", nbest=2)
    with pytest.raises(UserError, match="format"):
        model.translate(pages, format="pdf")


def test_html_the_parser_refuses_is_one_line():
    from tinytrans.errors import UserError
    with pytest.raises(UserError, match=r"^--format html: the HTML cannot be read"):
        translate_html("<p>a</p><![foo[x]]>", same)

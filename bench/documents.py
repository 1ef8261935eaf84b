"""Documents as people have them, translated with the Multi30k model: HTML, SRT, Word.

    python bench/documents.py [RUN]     (default bench/work/quality-multi30k)

Three inputs are built here from test_2016_flickr's English sentences (seeded, never stored): a
Wikipedia-like page (headings, paragraphs of several sentences, nested inline tags, links, a
table, a list; numbers, URLs and e-mail addresses in the text), an SRT of 200 cues (one or two
lines each) and a .docx with paragraphs, bold and italic runs and a table. Each is translated
whole (documents.py, markup.py) and, as the baseline doing the same search work, the same text
as plain lines (the page's runs, the cues' texts, the paragraphs), in the same process: the
overhead of a format is its time over the plain lines'. Checked: every tag kept (the element
multiset and nesting), every placeholder kept byte for byte, the HTML well formed, the SRT's cue
count and timings, the .docx's paragraph count. Then `tinytrans serve --api-keys` with a
request limit: /translate_file round-trips each file, a wrong key is 403, a key over its limit
429.
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, record, require_multi30k  # noqa: E402

from tinytrans.config import SearchConfig  # noqa: E402
from tinytrans.documents import parse_srt, translate_document  # noqa: E402
from tinytrans.markup import Element, flatten, parse, runs_of  # noqa: E402
from tinytrans.placeholders import mask  # noqa: E402
from tinytrans.textio import read_lines  # noqa: E402
from tinytrans.translate import Translator  # noqa: E402

INLINE = ("b", "i", "em", "strong", "span")


def sentences() -> list[str]:
    return list(read_lines(require_multi30k() / "test_2016_flickr.en.gz"))


def decorate(sentence: str, rng: random.Random) -> str:
    """A sentence with an inline tag (maybe nested, maybe a link) over some of its words."""
    words = sentence.split()
    a = rng.randrange(len(words))
    b = min(len(words) - 1, a + rng.randrange(3))
    inner = " ".join(words[a:b + 1])
    if rng.random() < 0.3 and b > a:
        inner = f"{words[a]} <i>{' '.join(words[a + 1:b + 1])}</i>"
    tag = rng.choice(INLINE)
    wrapped = f'<a href="https://example.org/wiki/{a}" title="{words[a]}">{inner}</a>' \
        if rng.random() < 0.2 else f"<{tag}>{inner}</{tag}>"
    return " ".join(words[:a] + [wrapped] + words[b + 1:])


def with_placeholders(sentence: str, rng: random.Random) -> str:
    extra = rng.choice(["(see https://example.org/p?id={n})", "[{n} photos]",
                        "- mail info{n}@example.com", "{{count}} times"])
    return f"{sentence.rstrip('.')} {extra.format(n=rng.randrange(1000, 99999))}."


def build_page(lines: list[str], rng: random.Random) -> str:
    parts = ["<!DOCTYPE html><html><head><title>Pictures of people</title>"
             "<style>p { margin: 0 }</style></head><body>"]
    it = iter(lines)
    for section in range(6):
        parts.append(f"<h2>{next(it).rstrip('.')}</h2>")
        for _ in range(3):
            body = " ".join(decorate(with_placeholders(next(it), rng), rng) for _ in range(3))
            parts.append(f"<p>{body}</p>")
        parts.append("<ul>" + "".join(f"<li>{decorate(next(it), rng)}</li>" for _ in range(3))
                     + "</ul>")
    parts.append("<table><tr><th>Picture</th><th>Caption</th></tr>" + "".join(
        f"<tr><td>{k}</td><td>{decorate(next(it), rng)}</td></tr>" for k in range(5)) +
        "</table><!-- end --><script>var n = 1 < 2;</script></body></html>")
    return "\n".join(parts)


def build_srt(lines: list[str], count: int = 200) -> str:
    cues = []
    for k in range(count):
        words = lines[k].split()
        half = len(words) // 2
        text = [" ".join(words[:half]), " ".join(words[half:])] if len(words) > 8 \
            else [lines[k]]
        start = 2 * k
        cues.append(f"{k + 1}\n00:{start // 60:02d}:{start % 60:02d},000 --> "
                    f"00:{(start + 1) // 60:02d}:{(start + 1) % 60:02d},500\n" + "\n".join(text))
    return "\n\n".join(cues) + "\n"


def build_docx(lines: list[str], rng: random.Random) -> bytes:
    import docx
    document = docx.Document()
    document.add_heading(lines[0].rstrip("."), 1)
    for line in lines[1:40]:
        paragraph = document.add_paragraph()
        words = line.split()
        a = rng.randrange(len(words))
        paragraph.add_run(" ".join(words[:a]) + " ")
        paragraph.add_run(words[a]).bold = True
        paragraph.add_run(" " + " ".join(words[a + 1:]))
    table = document.add_table(rows=4, cols=2)
    for r in range(4):
        table.cell(r, 0).text = str(r)
        table.cell(r, 1).text = lines[40 + r]
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def tags(text: str) -> Counter:
    def walk(element: Element, depth: int, found: Counter) -> Counter:
        for child in element.children:
            if isinstance(child, Element):
                found[(child.tag, depth)] += 1
                walk(child, depth + 1, found)
        return found
    return walk(parse(text), 0, Counter())


def well_formed(text: str) -> bool:
    stack, ok = [], [True]

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in ("br", "img", "input", "hr", "meta", "link"):
                stack.append(tag)

        def handle_endtag(self, tag):
            ok[0] = ok[0] and bool(stack) and stack.pop() == tag
    Check().feed(text)
    return ok[0] and not stack


def protected(text: str) -> Counter:
    return Counter(mask(text).spans)


def timed(function) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else WORK / "quality-multi30k"
    rng = random.Random(11)
    lines = sentences()
    translator = Translator(run, "best", "cpu", "fp32")
    cfg = SearchConfig(beam=5)
    texts = translator.texts_translator(cfg)
    page = build_page(lines[:200], rng)
    srt = build_srt(lines[200:400])
    word = build_docx(lines[400:450], rng)
    rows = ["| format | input | translated whole, s | same text as plain lines, s | overhead | "
            "kept | bars |", "|---|---|---|---|---|---|---|"]
    # HTML
    plain = [" ".join(text.split()) for text in
             (flatten(run.items)[0] for run in runs_of(parse(page))) if text.strip()]
    out, seconds = timed(lambda: translate_document(page.encode(), "page.html", "html", texts))
    _, base = timed(lambda: list(translator.translate(plain, cfg)))
    out = out.decode()
    tags_kept = tags(out) == tags(page)
    spans_kept = all(protected(out)[s] >= n for s, n in protected(page).items())
    rows.append(f"| HTML page | {len(page):,} characters, {sum(tags(page).values())} elements, "
                f"{sum(protected(page).values())} placeholders | {seconds:.2f} | {base:.2f} | "
                f"{seconds / base:.2f}x | elements {'all' if tags_kept else 'NOT all'}, "
                f"placeholders {'all' if spans_kept else 'NOT all'}, well formed: "
                f"{well_formed(out)} | {'yes' if tags_kept and spans_kept and well_formed(out) else 'NO'} |")
    # SRT
    cues, _ = parse_srt(srt, "bench.srt")
    out, seconds = timed(lambda: translate_document(srt.encode(), "bench.srt", "srt", texts))
    _, base = timed(lambda: list(translator.translate([" ".join(c.lines) for c in cues], cfg)))
    after, _ = parse_srt(out.decode(), "out.srt")
    same = [(c.number, c.timing, len(c.lines)) for c in after] == \
        [(c.number, c.timing, len(c.lines)) for c in cues]
    rows.append(f"| SRT | {len(cues)} cues | {seconds:.2f} | {base:.2f} | {seconds / base:.2f}x | "
                f"cue count, timings and line counts the same: {same} | {'yes' if same else 'NO'} |")
    # docx
    import docx
    source = docx.Document(io.BytesIO(word))
    paragraphs = [p.text for p in source.paragraphs if p.text.strip()] + \
        [c.text for row in source.tables[0].rows for c in row.cells if c.text.strip()]
    out, seconds = timed(lambda: translate_document(word, "bench.docx", "docx", texts))
    _, base = timed(lambda: list(translator.translate(paragraphs, cfg)))
    translated = docx.Document(io.BytesIO(out))
    same = len(translated.paragraphs) == len(source.paragraphs)
    bold = sum(1 for p in translated.paragraphs for r in p.runs if r.bold and r.text.strip())
    rows.append(f"| .docx | {len(source.paragraphs)} paragraphs, a 4x2 table | {seconds:.2f} | "
                f"{base:.2f} | {seconds / base:.2f}x | paragraphs the same: {same}; bold runs "
                f"with words: {bold} of 39 | {'yes' if same else 'NO'} |")
    quality = placeholder_quality(translator, cfg)
    server_rows = serve_checks(run, page, srt, word)
    record("Documents: HTML, SRT and Word files through the Multi30k model", [
        f"- model: {run} (beam 5, fp32, 2 threads, the torch engine: tags placed by word "
        "alignment); inputs built from test_2016_flickr's English, seeded", "", *rows, "",
        "- baseline: the same texts (the page's runs of text, the cues, the paragraphs) "
        "translated as plain lines in the same process; a document also aligns each "
        "translation (one more teacher-forced pass), which is most of its overhead", "",
        *quality, "", *server_rows])


def placeholder_quality(translator, cfg) -> list[str]:
    """Placeholders are on by default: test_2016_flickr's BLEU with and without them, and on
    the lines that have a number, URL or variable (the only ones they change)."""
    import sacrebleu
    from tinytrans.lines import LineOptions
    data = require_multi30k()
    sources = sentences()
    references = list(read_lines(data / "test_2016_flickr.de.gz"))
    rows = ["| placeholders | sacreBLEU, all 1,000 | lines with a span | sacreBLEU on those | "
            "spans kept |", "|---|---|---|---|---|"]
    with_spans = [i for i, line in enumerate(sources) if mask(line).spans]
    for on in (True, False):
        hyps = [t.text for t in translator.translate(sources, cfg,
                                                     options=LineOptions(placeholders=on))]
        kept = sum(all(h.count(s) >= 1 for s in mask(sources[i]).spans) for i, h in
                   ((i, hyps[i]) for i in with_spans))
        rows.append(f"| {'on' if on else 'off'} | "
                    f"{sacrebleu.corpus_bleu(hyps, [references]).score:.2f} | {len(with_spans)} | "
                    f"{sacrebleu.corpus_bleu([hyps[i] for i in with_spans], [[references[i] for i in with_spans]]).score:.2f} | "
                    f"{kept} of {len(with_spans)} lines |")
    return rows


def serve_checks(run: Path, page: str, srt: str, word: bytes) -> list[str]:
    """`tinytrans serve` with API keys: each file through /translate_file and back, a wrong key,
    a key over its limit."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.tsv"
        keys.write_text("bench-key-0001\t30\nslow-key-0002\t2\n")
        server = subprocess.Popen([sys.executable, "-m", "tinytrans", "serve", "--model", str(run),
                                   "--port", "0", "--api-keys", str(keys), "--max-body",
                                   "20000000", "--precision", "fp32"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            url = None
            while url is None:
                line = server.stderr.readline()
                if not line:
                    raise SystemExit("the server did not start")
                found = re.search(r"http://127\.0\.0\.1:\d+", line)
                url = found[0] if found else None
            rows = ["| /translate_file | round trip |", "|---|---|"]
            for name, data in (("page.html", page.encode()), ("film.srt", srt.encode()),
                               ("doc.docx", word)):
                status, answer = post_file(url, name, data, "bench-key-0001")
                ok = status == 200 and fetch(answer["translatedFileUrl"])[:2] != b""
                rows.append(f"| {name} | {status}, downloaded: {ok} |")
            wrong, _ = post_file(url, "film.srt", srt.encode(), "no-such-key-000")
            statuses = [post_file(url, "film.srt", b"1\n00:00:01,000 --> 00:00:02,000\nHi.\n",
                                  "slow-key-0002")[0] for _ in range(3)]
            rows += ["", f"- a wrong key: {wrong} (bar 403: {'yes' if wrong == 403 else 'NO'}); "
                     f"a key of 2 requests a minute, three requests: {statuses} (bar: the third "
                     f"429: {'yes' if statuses[-1] == 429 else 'NO'})"]
            return rows
        finally:
            server.terminate()
            server.wait(60)


def post_file(url: str, name: str, data: bytes, key: str) -> tuple[int, dict]:
    boundary = "bench-boundary-7"
    fields = {"source": "en", "target": "de", "api_key": key}
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    .encode() for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
             f'\r\n\r\n').encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/translate_file", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=600) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return reply.read()


if __name__ == "__main__":
    main()

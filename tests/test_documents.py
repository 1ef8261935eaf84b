"""Files as people have them (documents.py): SRT subtitles, Word documents and HTML pages,
translated into files of the same kind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from helpers_cli import assert_one_line_error, invoke
from tinytrans.documents import file_format, parse_srt, rebreak, translate_document
from tinytrans.errors import UserError
from test_markup import reversed_upper

SRT = """1
00:00:01,000 --> 00:00:03,500
A man rides
a red bike.

2
00:00:04,000 --> 00:00:05,000
Hello!

3
00:00:06,000 --> 00:00:09,000
Two dogs play
in the snow
near a house.
"""


def test_srt_keeps_its_cues_timings_and_line_counts():
    out = translate_document(SRT.encode(), "x.srt", "srt", reversed_upper).decode()
    before, _ = parse_srt(SRT, "x.srt")
    after, newline = parse_srt(out, "out.srt")
    assert newline == "\n"
    assert [(c.number, c.timing) for c in after] == [(c.number, c.timing) for c in before]
    assert [len(c.lines) for c in after] == [2, 1, 3]
    assert " ".join(after[0].lines) == "BIKE. RED A RIDES MAN A"  # the cue translated whole
    crlf = translate_document(SRT.replace("\n", "\r\n").encode(), "x.srt", "srt",
                              reversed_upper).decode()
    assert crlf.replace("\r\n", "\n") == out and "\r\n" in crlf


def test_a_file_that_is_not_srt_names_the_place():
    with pytest.raises(UserError, match=r"x.srt:5: not an SRT cue"):
        translate_document(b"1\n00:00:01,000 --> 00:00:02,000\nHi\n\nno timing here\n",
                           "x.srt", "srt", reversed_upper)
    with pytest.raises(UserError, match="not UTF-8"):
        translate_document(b"\xff\xfe", "x.srt", "srt", reversed_upper)


def test_lines_are_broken_evenly_between_words():
    assert rebreak("one two three four", 2) == ["one two", "three four"]
    assert rebreak("a veryveryverylongword b", 3) == ["a", "veryveryverylongword", "b"]
    assert rebreak("single", 3) == ["single"]
    assert rebreak("a b c d e f", 3) == ["a b", "c d", "e f"]


def test_the_format_comes_from_the_extension_unless_given():
    assert [file_format(Path(f"x.{e}"), None) for e in ("txt", "HTML", "htm", "srt", "docx",
                                                        "en")] == \
        ["text", "html", "html", "srt", "docx", "text"]
    assert file_format(Path("x.html"), "text") == "text"


def make_docx() -> bytes:
    docx = pytest.importorskip("docx", reason="python-docx (the documents extra) is not installed")
    document = docx.Document()
    paragraph = document.add_paragraph("The ")
    paragraph.add_run("black").bold = True
    paragraph.add_run(" dog runs.")
    document.add_paragraph("")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "a cat"
    table.cell(0, 1).text = "two birds"
    document.sections[0].header.paragraphs[0].text = "page head"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_a_word_document_keeps_its_paragraphs_tables_and_formatting():
    docx = pytest.importorskip("docx", reason="python-docx (the documents extra) is not installed")
    out = docx.Document(io.BytesIO(translate_document(make_docx(), "x.docx", "docx",
                                                      reversed_upper)))
    assert len(out.paragraphs) == 2
    runs = out.paragraphs[0].runs
    assert "".join(r.text for r in runs) == "RUNS. DOG BLACK THE"
    assert [r.text.strip() for r in runs if r.bold] == ["BLACK"]  # the bold run over its word
    assert [c.text for c in out.tables[0].rows[0].cells] == ["CAT A", "BIRDS TWO"]
    assert out.sections[0].header.paragraphs[0].text == "HEAD PAGE"
    with pytest.raises(UserError, match="x.docx: not a Word"):
        translate_document(b"PK not really", "x.docx", "docx", reversed_upper)


def test_the_command_line_translates_files_by_their_kind(varied_run, tmp_path):
    srt = tmp_path / "film.srt"
    srt.write_text(SRT)
    result = invoke("translate", "--model", varied_run, "--precision", "fp32", "--input", srt,
                    "--output", tmp_path / "film.de.srt")
    assert result.exit_code == 0, result.output
    cues, _ = parse_srt((tmp_path / "film.de.srt").read_text(), "out")
    assert [len(c.lines) for c in cues] == [2, 1, 3]
    page = tmp_path / "page.html"
    page.write_text("<html><body>\n<p>A man <b>rides</b> a bike.</p>\n</body></html>\n")
    result = invoke("translate", "--model", varied_run, "--precision", "fp32", "--input", page)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<html><body>\n<p>") and result.stdout.count("<b>") == 1
    assert_one_line_error(invoke("translate", "--model", varied_run, "--input", srt,
                                 "--format", "docx"), 2, "--format docx", "--output")
    if pytest.importorskip("docx", reason="python-docx is not installed"):
        (tmp_path / "in.docx").write_bytes(make_docx())
        result = invoke("translate", "--model", varied_run, "--precision", "fp32", "--input",
                        tmp_path / "in.docx", "--output", tmp_path / "out.docx")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "out.docx").read_bytes()[:2] == b"PK"


def docx_with_runs(*runs: tuple[str, bool], tab_after: int | None = None) -> bytes:
    docx = pytest.importorskip("docx", reason="python-docx (the documents extra) is not installed")
    document = docx.Document()
    paragraph = document.add_paragraph()
    for k, (text, bold) in enumerate(runs):
        paragraph.add_run(text).bold = bold
        if k == tab_after:
            paragraph.add_run().add_tab()
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_runs_keep_their_words_in_order_and_tabs_stay_in_place():
    docx = pytest.importorskip("docx", reason="python-docx (the documents extra) is not installed")
    out = docx.Document(io.BytesIO(translate_document(
        docx_with_runs(("a ", False), ("b", True), (" c", False)), "x.docx", "docx",
        lambda texts: [(t.upper(), [(i, i) for i in range(len(t.split()))]) for t in texts])))
    runs = out.paragraphs[0].runs
    assert "".join(r.text for r in runs) == "A B C"
    assert [r.text.strip() for r in runs if r.bold] == ["B"]
    # the first run's words on both sides of another's: the first run is used twice
    swapped = docx.Document(io.BytesIO(translate_document(
        docx_with_runs(("a b ", False), ("c", True)), "x.docx", "docx",
        lambda texts: [("A C B", [(0, 0), (2, 1), (1, 2)]) for _ in texts])))
    runs = swapped.paragraphs[0].runs
    assert "".join(r.text for r in runs) == "A C B" and [bool(r.bold) for r in runs] == [False, True, False]
    tabbed = docx.Document(io.BytesIO(translate_document(
        docx_with_runs(("Name:", False), ("Value", False), tab_after=0), "x.docx", "docx",
        lambda texts: [(t.upper(), [(i, i) for i in range(len(t.split()))]) for t in texts])))
    assert tabbed.paragraphs[0].text == "NAME:\tVALUE"


def test_a_docx_that_unpacks_too_big_is_refused_before_it_is_read(monkeypatch):
    import tinytrans.documents as documents
    data = make_docx()
    monkeypatch.setattr(documents, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(UserError, match=r"x.docx: unpacks to [\d,]+ bytes; at most 1,000"):
        translate_document(data, "x.docx", "docx", reversed_upper)


def test_a_served_file_over_its_text_limit_is_refused_before_translation():
    from tinytrans.config import SearchConfig
    from tinytrans.lines import Languages
    from tinytrans.serve import file_job

    class NeverTranslates:
        def translate(self, *args, **kwargs):
            raise AssertionError("translated a file over its limit")

        def texts_translator(self, *args, **kwargs):
            return lambda texts: self.translate()
    for name, data in (("a/b.txt", b"x" * 50), ("film.srt", SRT.encode())):
        job = file_job(data, name, "text" if name.endswith("txt") else "srt", SearchConfig(),
                       Languages(), max_chars=20)
        with pytest.raises(UserError, match=r"^file: \d+ characters of text; at most 20"):
            job(NeverTranslates())

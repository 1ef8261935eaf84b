"""`tinytrans translate` with terminology, alignments, sampling and sentence splitting: the flags
reach the translator, the output keeps one line (or nbest lines) per input line, and every
mistake is one line, exit 2, checked before any work (nothing written)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers_cli import assert_one_line_error, invoke
from toyrun import BUNDLED

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:6]
ALIGNED = re.compile(r"^([^\t]*)\t((\d+-\d+)( \d+-\d+)*)?$")


@pytest.fixture(scope="module")
def run_dir(varied_run: Path) -> Path:
    return varied_run


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.en"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def translate(run_dir: Path, *args, input: str | None = None):
    return invoke("translate", "--model", run_dir, "--precision", "fp32", "--device", "cpu",
                  *args, input=input)


def test_alignment_follows_each_translation_after_a_tab(run_dir, source):
    plain = translate(run_dir, "--input", source)
    result = translate(run_dir, "--input", source, "--alignment")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(LINES)
    for line, text, expected in zip(LINES, lines, plain.stdout.splitlines()):
        match = ALIGNED.match(text)
        assert match and match[1] == expected
        pairs = [tuple(map(int, p.split("-"))) for p in (match[2] or "").split()]
        assert [t for _, t in pairs] == list(range(len(expected.split())))
        assert all(s < len(line.split()) for s, _ in pairs)


def test_alignment_with_nbest_gives_each_entry_its_own(run_dir, source):
    result = translate(run_dir, "--input", source, "--alignment", "--beam", "3", "--nbest", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(LINES)
    for line in lines:
        index, score, text, pairs = line.split("\t")
        assert index in ("0", "1") and float(score) <= 0
        assert len(pairs.split()) == len(text.split())


def test_constraints_file_puts_its_phrases_in_the_translations(run_dir, source, tmp_path):
    phrases = ["Haus", "", "Katze\trot", "", "Mann", "Fahrradhelm"]
    constraints = tmp_path / "c.tsv"
    constraints.write_text("".join(p + "\n" for p in phrases), encoding="utf-8")
    result = translate(run_dir, "--input", source, "--constraints", constraints)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert len(out) == len(LINES)
    for text, wanted in zip(out, phrases):
        assert all(p in text for p in wanted.split("\t") if p)


def test_prefix_file_begins_each_translation_and_the_search_completes_it(run_dir, source,
                                                                         tmp_path):
    plain = translate(run_dir, "--input", source, "--beam", "3").stdout.splitlines()
    starts = ["Ein Hund", "", "Zwei Katzen sitzen", "", "Der", plain[5].split()[0]]
    prefix = tmp_path / "p.txt"
    prefix.write_text("".join(p + "\n" for p in starts), encoding="utf-8")
    result = translate(run_dir, "--input", source, "--beam", "3", "--prefix", prefix)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert len(out) == len(LINES)
    for text, start, free in zip(out, starts, plain):
        assert text.startswith(start) and len(text) > len(start)
        if not start:
            assert text == free  # a line without a prefix is translated as without the file
    short = tmp_path / "short.txt"
    short.write_text("Ein\n", encoding="utf-8")
    result = translate(run_dir, "--input", source, "--prefix", short)
    assert_one_line_error(result, 2, "--prefix", "1 lines", f"has {len(LINES)}")
    result = translate(run_dir, "--prefix", short, input="A house.\nA dog.\n")
    assert_one_line_error(result, 2, "prefixes: none for input line 2")


def test_glossary_terms_appear_where_their_source_terms_occur(run_dir, tmp_path):
    glossary = tmp_path / "g.tsv"
    glossary.write_text("man\tFahrrad\n", encoding="utf-8")
    result = translate(run_dir, "--glossary", glossary, input="A man is here.\nA dog runs.\n")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert "Fahrrad" in first
    assert second == translate(run_dir, input="A dog runs.\n").stdout.strip()


def test_samples_are_reproducible_with_the_seed(run_dir, source):
    def sampled(seed: str) -> str:
        result = translate(run_dir, "--input", source, "--sample", "all", "--nbest", "3",
                           "--seed", seed)
        assert result.exit_code == 0, result.output
        return result.stdout
    first = sampled("7")
    assert len(first.splitlines()) == 3 * len(LINES)
    assert sampled("7") == first and sampled("8") != first


def test_sampling_with_top_k_one_is_greedy(run_dir, source):
    greedy = translate(run_dir, "--input", source, "--beam", "1")
    sampled = translate(run_dir, "--input", source, "--sample", "1", "--temperature", "0.7")
    assert sampled.exit_code == 0 and sampled.stdout == greedy.stdout


def test_a_two_thousand_word_line_comes_back_whole_in_one_line(run_dir):
    sentences = [f"{LINES[i % len(LINES)].rstrip('.?!')} {i}." for i in range(250)]
    document = " ".join(sentences)
    assert len(document.split()) > 2000
    result = translate(run_dir, "--beam", "1", input=f"{LINES[0]}\n{document}\n{LINES[1]}\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")
    assert len(out) == 4 and out[3] == ""  # three lines, each ended
    assert "truncated" not in result.stderr
    assert len(out[1].split()) > 10 * len(out[0].split())
    cut = translate(run_dir, "--beam", "1", "--no-split-sentences", input=document + "\n")
    assert "truncated" in cut.stderr and len(cut.stdout.split()) < len(out[1].split())


@pytest.mark.parametrize("args, causes", [
    (["--sample", "x"], ["--sample: 'x' must be a number of tokens"]),
    (["--sample", "0"], ["--sample: '0' must be a number of tokens"]),
    (["--sample", "5", "--top-p", "2"], ["--top-p: 2.0 must be a number in (0, 1]"]),
    (["--sample", "5", "--temperature", "-1"], ["--temperature: -1.0 must be a number in [0, 1"]),
    (["--sample", "5", "--temperature", "1e39"], ["--temperature: 1e+39 must be a number in"]),
    (["--lenpen", "1000"], ["--lenpen: 1000.0 must be a number in [0, 10]"]),
    (["--batch-tokens", "99999999999999999999"], ["--batch-tokens"]),
    (["--top-p", "0.5"], ["--top-p: 0.5 applies to sampling only"]),
    (["--temperature", "0.5"], ["--temperature: 0.5 applies to sampling only"]),
    (["--sample", "5", "--nbest", "101"], ["--nbest: 101 samples"]),
])
def test_sampling_mistakes_are_one_line(run_dir, source, tmp_path, args, causes):
    output = tmp_path / "out.de"
    result = translate(run_dir, "--input", source, "--output", output, *args)
    assert_one_line_error(result, 2, *causes)
    assert not output.exists()


def test_constraints_mistakes_are_one_line_before_any_work(run_dir, source, tmp_path):
    output = tmp_path / "out.de"
    short = tmp_path / "short.tsv"
    short.write_text("Haus\n", encoding="utf-8")
    result = translate(run_dir, "--input", source, "--output", output, "--constraints", short)
    assert_one_line_error(result, 2, "--constraints", "1 lines", f"has {len(LINES)}")
    not_tsv = tmp_path / "g.tsv"
    not_tsv.write_text("dog Hund\n", encoding="utf-8")
    result = translate(run_dir, "--input", source, "--output", output, "--glossary", not_tsv)
    assert_one_line_error(result, 2, "g.tsv:1: expected 'source term<TAB>target term'")
    result = translate(run_dir, "--input", source, "--output", output, "--glossary",
                       tmp_path / "missing.tsv")
    assert_one_line_error(result, 2, "missing.tsv: no such file")
    result = translate(run_dir, "--input", source, "--output", output, "--sample", "all",
                       "--constraints", short)
    assert_one_line_error(result, 2, "--sample: constraints need beam search")
    assert not output.exists()


def test_constraints_from_stdin_that_run_short_are_one_line(run_dir, tmp_path):
    short = tmp_path / "short.tsv"
    short.write_text("Haus\n", encoding="utf-8")
    result = translate(run_dir, "--constraints", short, input="A house.\nA dog.\n")
    assert_one_line_error(result, 2, "constraints: none for input line 2")

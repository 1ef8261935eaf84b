"""Translation keeps line alignment whatever the input, through the library and the CLI."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tinytrans.cli import app
from tinytrans.data import pad_sentences
from tinytrans.errors import UserError
from tinytrans.config import SearchConfig
from tinytrans.tokenizer import EOS_ID
from tinytrans.train import train
from tinytrans.lengths import length_batches
from tinytrans.translate import Translator, forced_log_probs
from toyrun import BUNDLED, toy_config, write_corpus


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    train(toy_config(write_corpus(root / "train", 400), write_corpus(root / "valid", 20, "valid"),
                     max_steps=30, validate_every=30, checkpoint_every=30), root / "run")
    return root / "run"


HOSTILE = [
    "The man buys a red car.",
    "",
    "   \t ",
    "Where is the dog?",
    " ".join(["house"] * 3000),  # far beyond the model's maximum source length
    "caf\udcff",  # stands in for invalid UTF-8 below
    "The woman sees the children.",
]


def hostile_bytes() -> bytes:
    lines = [line.encode("utf-8", "surrogateescape") for line in HOSTILE]
    return b"\n".join(lines) + b"\n"


def test_one_output_line_per_input_line_whatever_the_input(run_dir):
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "2"],
                                input=hostile_bytes())
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")[:-1]
    assert len(out) == len(HOSTILE)
    assert out[1] == "" and out[2] == ""
    assert all(out[i] for i in (0, 3, 6))
    assert "truncated" not in result.stderr  # split into pieces that fit, and joined back
    assert len(out[4].split()) > 20  # about 25 pieces, each translated
    assert "<stdin>:6: invalid UTF-8" in result.stderr
    assert "Traceback" not in result.output


def test_with_splitting_off_a_line_too_long_is_cut_with_a_warning(run_dir):
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "2",
                                      "--no-split-sentences"], input=hostile_bytes())
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n")[:-1]) == len(HOSTILE)
    assert "line 5:" in result.stderr and "truncated" in result.stderr


def test_input_order_survives_length_sorting_and_chunking(run_dir):
    translator = Translator(run_dir)
    lines = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:40]
    cfg = SearchConfig(beam=2)
    one_by_one = [t.text for t in translator.translate(lines, cfg, chunk_lines=1)]
    chunked = [t.text for t in translator.translate(lines, replace(cfg, batch_tokens=200), chunk_lines=7)]
    assert chunked == one_by_one


def test_nbest_lines_are_indexed_and_sorted(run_dir):
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "4", "--nbest", "3"],
                                input="The man buys a red car.\n\nWhere is the dog?\n")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 9 and all(len(r) == 3 for r in rows)
    assert [r[0] for r in rows] == ["0", "1", "2"] * 3
    for first in (0, 6):
        scores = [float(r[1]) for r in rows[first: first + 3]]
        assert scores == sorted(scores, reverse=True)
    single = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "4"],
                                input="The man buys a red car.\n")
    assert rows[0][2] == single.stdout.strip()


def test_files_in_and_out(run_dir, tmp_path):
    source = tmp_path / "in.en"
    source.write_text("The man buys a red car.\n\nWhere is the dog?\n")
    out = tmp_path / "out.de"
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--input", str(source),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().split("\n")) == 4 and out.read_text().split("\n")[1] == ""


def test_closed_output_pipe_ends_quietly(run_dir):
    lines = ("The man buys a red car.\n" * 3000).encode()
    process = subprocess.Popen([sys.executable, "-m", "tinytrans", "translate", "--model", str(run_dir),
                                "--beam", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdin.write(lines)
    process.stdin.close()
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    assert process.wait(timeout=120) == 0
    assert b"Traceback" not in process.stderr.read()


@pytest.mark.parametrize("args, message", [
    (["--beam", "0"], "--beam"),
    (["--beam", "2", "--nbest", "3"], "--nbest"),
    (["--checkpoint", "nope.safetensors"], "no such checkpoint"),
    (["--device", "tpu"], "--device"),
])
def test_bad_options_are_one_line_errors(run_dir, args, message):
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir), *args], input="x\n")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["translate", "--model", str(tmp_path)], input="x\n")
    assert result.exit_code == 2 and "not a tinytrans run directory" in result.stderr


def test_forced_decoding_adds_up_to_the_search_log_prob(run_dir):
    """Beam search and forced decoding of its hypotheses are the same sums of log-probabilities,
    whether the forced pass runs batched (padded) or one sentence at a time."""
    translator = Translator(run_dir, precision="fp32")
    lines = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:12]
    ids = translator.source_ids(lines)
    hyps = [h[0] for h in translator.translate_batch(ids, SearchConfig(beam=3, lenpen=0.0))]
    src = pad_sentences(ids, [], [EOS_ID])
    targets = [np.asarray(h.tokens, dtype=np.int64) for h in hyps]
    batched = forced_log_probs(translator.model, src, targets)
    for i, (hyp, row) in enumerate(zip(hyps, batched)):
        assert row.shape == (len(hyp.tokens) + 1,)  # every piece, then EOS
        assert row.sum().item() == pytest.approx(hyp.log_prob, abs=1e-4)
        unpadded = src[i: i + 1, : len(ids[i]) + 1]
        alone = forced_log_probs(translator.model, unpadded, targets[i: i + 1])
        assert torch.allclose(alone[0], row, atol=1e-5)


def test_score_pairs_sources_with_targets(run_dir):
    translator = Translator(run_dir, precision="fp32")
    scores = translator.score(["Where is the dog?", "The man buys a red car."],
                              ["Wo ist der Hund?", ""])
    assert len(scores) == 2 and len(scores[1]) == 1  # an empty target: only EOS is scored
    assert len(scores[0]) == len(translator.tgt_tok.encode(["Wo ist der Hund?"])[0]) + 1
    assert all(x <= 0.0 for row in scores for x in row)
    with pytest.raises(UserError, match="2 sources but 1 targets"):
        translator.score(["a", "b"], ["c"])


def _greedy_length_batches(indices, lengths, batch_tokens, beam):
    """The reference: sentences shortest first, a batch grows while sentences x beam x (longest
    + 1) stays within the budget; a sentence too long for it alone gets a batch of its own."""
    batch, longest = [], 0
    for i in sorted(range(len(indices)), key=lambda i: lengths[i]):
        widest = max(longest, lengths[i] + 1)
        if batch and (len(batch) + 1) * widest * beam > batch_tokens:
            yield [indices[j] for j in batch]
            batch, widest = [], lengths[i] + 1
        batch.append(i)
        longest = widest
    if batch:
        yield [indices[j] for j in batch]


@pytest.mark.parametrize("seed", range(20))
def test_translation_batches_are_the_greedy_ones_within_the_budget(seed):
    rng = random.Random(seed)
    n = rng.randint(0, 60)
    lengths = [rng.randint(1, 80) for _ in range(n)]
    indices = rng.sample(range(10_000), n)
    budget, beam = rng.randint(1, 4000), rng.randint(1, 8)
    batches = list(length_batches(indices, lengths, budget, beam))
    assert batches == list(_greedy_length_batches(indices, lengths, budget, beam))
    assert sorted(i for b in batches for i in b) == sorted(indices)
    width = dict(zip(indices, lengths))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * beam * (max(width[i] for i in batch) + 1) <= budget


def test_auto_precision_for_translation_times_real_decoding_both_ways(run_dir, monkeypatch,
                                                                     tmp_path):
    """The decoding trial runs the model's own beam search, in fp32 and bf16 alike, on the same
    batches, and counts target pieces; the caller's random numbers stay as they were."""
    from tinytrans.translate import decoding_probe
    seen = []

    def timed(step, pieces):
        seen.extend((precision, step(precision, piece)) for piece in range(pieces)
                    for precision in ("fp32", "bf16"))
        return 0.9
    monkeypatch.setattr("tinytrans.translate.time_both_ways", timed)
    monkeypatch.setenv("TINYTRANS_CACHE_DIR", str(tmp_path / "cache"))  # measured, not recalled
    translator = Translator(run_dir, device="cpu", precision="fp32")
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    assert decoding_probe(translator.model, translator.device)() == 0.9
    assert torch.equal(torch.rand(2), expected)
    assert {p for p, _ in seen} == {"fp32", "bf16"} and all(n >= 16 for _, n in seen)
    choice = Translator(run_dir, device="cpu", precision="auto").precision_choice
    assert choice.precision == "fp32" and "real decoding" in choice.reason
    assert choice.speedup == 0.9


def other_tokenizer(tmp_path: Path, vocab_size: int) -> Path:
    """A tokenizer of `vocab_size` pieces trained on other text than the toy run's."""
    from tinytrans.tokenizer import train_tokenizer
    text = tmp_path / "other.txt"
    text.write_text("\n".join(f"zebra {i} quux xylophone {i * 7} blorp" for i in range(300)) + "\n")
    train_tokenizer([text], tmp_path / "other", vocab_size)
    return tmp_path / "other.model"


@pytest.mark.parametrize("same_size", [False, True])
def test_a_run_directory_with_another_runs_tokenizer_is_refused(run_dir, tmp_path, same_size):
    """Another run's tokenizer.model: of another size it gave IndexError, of the same size wrong
    text; both are one line, naming the tokenizer or the run, for the API, the CLI and export."""
    import shutil
    from helpers_cli import assert_one_line_error, invoke
    from tinytrans.rundir import load_run_config
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    size = load_run_config(copy).model.src_vocab_size
    shutil.copy(other_tokenizer(tmp_path, size if same_size else 60), copy / "tokenizer.model")
    cause = "not those best.safetensors was trained with" if same_size else \
        f"60 pieces, but the model's source vocabulary has {size:,}"
    with pytest.raises(UserError, match=cause):
        Translator(copy, device="cpu", precision="fp32")
    assert_one_line_error(invoke("translate", "--model", copy, input="A man.\n"), 2, cause)

"""Training end to end at toy size: the run directory, resume continuity, refusals, kills."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tinytrans.checkpoint import load_model_weights, training_checkpoints
from tinytrans.cli import app
from tinytrans.config import build_config
from tinytrans.errors import UserError
from tinytrans.model import Transformer
from tinytrans.rundir import load_run_config
from tinytrans.schedule import learning_rate
from tinytrans.train import train
from toyrun import toy_config


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "log"}


def test_run_directory_holds_everything_needed(corpus, tmp_path):
    events = []
    result = train(toy_config(*corpus), tmp_path / "run", report=events.append)
    run = tmp_path / "run"
    assert result.state.step == 20 and "max_steps" in result.stop_reason
    assert (run / "tokenizer.model").is_file() and (run / "checkpoints" / "best.safetensors").is_file()
    assert [p.name for p in training_checkpoints(run)] == ["step-0000010.safetensors", "step-0000020.safetensors"]
    cfg = load_run_config(run)  # the saved config alone rebuilds the model
    assert cfg.model.src_vocab_size == 300 and cfg.model.d_model == 32
    load_model_weights(training_checkpoints(run)[-1], Transformer(cfg.model))
    kinds = [e["event"] for e in events]
    assert kinds.count("valid") == 2 and kinds[-1] == "end"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert {"loss", "ppl", "bleu", "bleu_signature"} <= valid[0].keys()
    assert "nrefs:1" in valid[0]["bleu_signature"]
    assert len(losses(run)) == 20
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_resumed_run_continues_the_same_curve(corpus, tmp_path):
    straight = tmp_path / "straight"
    train(toy_config(*corpus), straight)
    resumed = tmp_path / "resumed"
    train(toy_config(*corpus, max_steps=10), resumed)
    events = []
    train(toy_config(*corpus), resumed, report=events.append)  # same run, a longer limit
    assert any(e["event"] == "resume" and e["step"] == 10 for e in events)
    a, b = losses(straight), losses(resumed)
    assert sorted(b) == list(range(1, 21))
    for step in range(11, 21):
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_subword_sampling_segments_each_epoch_anew_and_a_resumed_run_sees_the_same(corpus,
                                                                                   tmp_path):
    def sampled(**overrides):
        cfg = toy_config(*corpus, batch_tokens=1500, **overrides)  # 20 updates: several epochs
        return replace(cfg, data=replace(cfg.data, sampling_alpha=0.1))

    straight, resumed, fixed = tmp_path / "straight", tmp_path / "resumed", tmp_path / "fixed"
    train(sampled(), straight)
    train(sampled(max_steps=10), resumed)
    train(sampled(), resumed)
    train(toy_config(*corpus, batch_tokens=1500), fixed)
    a, b, c = losses(straight), losses(resumed), losses(fixed)
    assert max(json.loads(line)["epoch"] for line in (straight / "metrics.jsonl").open()
               if '"log"' in line) >= 1  # the updates run into a second epoch
    for step in range(11, 21):
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    assert a[1] != pytest.approx(c[1], rel=1e-6)  # sampled from the first epoch on


def test_subword_sampling_on_a_prepared_corpus_is_refused_by_the_config(tmp_path):
    with pytest.raises(UserError, match="'data.sampling_alpha' = 0.1 .* prepared corpus"):
        build_config({"data": {"prepared": str(tmp_path), "sampling_alpha": 0.1}}, "run.toml")


def test_a_different_config_is_refused_and_overwrite_starts_over(corpus, tmp_path):
    run = tmp_path / "run"
    train(toy_config(*corpus, max_steps=10), run)
    other = toy_config(*corpus, max_steps=10)
    other = replace(other, train=replace(other.train, lr=1e-3))
    with pytest.raises(UserError, match="different config.*train.lr"):
        train(other, run)
    result = train(other, run, overwrite=True)
    assert result.state.step == 10 and losses(run).keys() == set(range(1, 11))


def test_a_non_run_directory_is_not_overwritten(corpus, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a tinytrans run directory"):
        train(toy_config(*corpus), tmp_path, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_learning_rate_warms_up_linearly_then_decays_with_inverse_sqrt():
    assert learning_rate(5, 1.0, 10) == pytest.approx(0.5)
    assert learning_rate(10, 1.0, 10) == pytest.approx(1.0)
    assert learning_rate(40, 1.0, 10) == pytest.approx(0.5)


def test_linear_schedule_on_a_step_budget():
    def lr(step: int) -> float:  # update `step` of 100, progress measured before it
        return learning_rate(step, 2.0, 10, "linear", progress=(step - 1) / 100)

    assert lr(5) == pytest.approx(1.0)  # the same warmup ramp as inverse_sqrt
    assert lr(10) == pytest.approx(2.0) and lr(11) == pytest.approx(2.0)  # the peak
    for step in range(11, 101):  # a straight line from the peak to zero at the budget
        assert lr(step) == pytest.approx(2.0 * (100 - (step - 1)) / 90)
    assert lr(100) > 0  # the last update still learns
    assert learning_rate(101, 2.0, 10, "linear", progress=1.0) == 0.0


def test_linear_schedule_on_a_time_budget_decays_monotonically_to_zero():
    """Uneven updates and validation pauses: the rate still only goes down, and stays positive
    until the budget is spent."""
    generator = torch.Generator().manual_seed(0)
    seconds = 0.5 + torch.rand(200, generator=generator)  # per update
    seconds[::25] += 20.0  # a validation every 25 updates
    elapsed = [0.0] + torch.cumsum(seconds, 0).tolist()  # before each update
    budget = elapsed[-1] + 1e-9
    rates = [learning_rate(step, 1.0, 20, "linear", progress=elapsed[step - 1] / budget)
             for step in range(1, 201)]
    assert rates[19] == pytest.approx(1.0)
    after_warmup = rates[19:]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    assert all(rate > 0 for rate in rates) and rates[-1] < 0.02


def test_linear_schedule_without_a_budget_is_refused_when_the_config_is_built(corpus):
    with pytest.raises(UserError, match="lr_schedule.* = 'linear' decays to zero at the budget"):
        toy_config(*corpus, lr_schedule="linear", max_steps=None, max_epochs=1)


def test_training_follows_the_linear_schedule(corpus, tmp_path):
    train(toy_config(corpus[0], None, lr_schedule="linear", warmup_steps=5), tmp_path / "run")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rates = {r["step"]: r["lr"] for r in map(json.loads, lines) if r["event"] == "log"}
    assert sorted(rates) == list(range(1, 21))
    for step, rate in rates.items():
        expected = step / 5 if step <= 5 else (20 - (step - 1)) / 15
        assert rate == pytest.approx(3e-3 * expected), step


def test_gradient_accumulation_equals_one_batch_of_the_same_pairs(corpus):
    """update_freq: gradients of two batches summed, normalised by all their tokens, equal the
    gradient of one batch holding the same pairs (SGD makes the update the gradient itself)."""
    from tinytrans.data import FilterConfig, encode_parallel, make_batch
    from tinytrans.textio import read_parallel
    from tinytrans.tokenizer import train_tokenizer
    from tinytrans.train import Timings, train_step

    tok = train_tokenizer([Path(f"{corpus[0]}.en"), Path(f"{corpus[0]}.de")],
                          corpus[0].parent / "accum-spm", 300)
    data = encode_parallel(read_parallel(corpus[0], "en", "de"), tok, tok, FilterConfig())
    cfg = toy_config(*corpus, clip_norm=0.0)
    cfg = replace(cfg, model=replace(cfg.model, dropout=0.0, src_vocab_size=300, tgt_vocab_size=300))
    indices = list(range(12))
    updated = []
    for batches in ([make_batch(data, indices[:5]), make_batch(data, indices[5:])],
                    [make_batch(data, indices)]):
        torch.manual_seed(0)
        model = Transformer(cfg.model)
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)
        train_step(model, batches, sgd, cfg, 1.0, torch.device("cpu"), "fp32", Timings())
        updated.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(updated[0], updated[1], atol=1e-5)


def test_training_a_killed_run_resumes_from_its_last_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "tinytrans", "train", "--output", str(run),
               "--train", str(corpus[0]), "--src", "en", "--tgt", "de", "--vocab-size", "300",
               "--checkpoint-every", "3", "--max-steps", "100000", "--threads", "1", "--quiet"]
    config = tmp_path / "toy.toml"
    config.write_text('[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
                      'n_decoder_layers = 1\n[train]\nbatch_tokens = 600\nwarmup_steps = 10\n')
    process = subprocess.Popen(command + ["--config", str(config)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(training_checkpoints(run)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, as with a power cut
    process.wait()
    assert training_checkpoints(run), process.stderr.read().decode()
    killed_at = int(training_checkpoints(run)[-1].stem.split("-")[1])
    result = CliRunner().invoke(app, ["train", "--output", str(run), "--max-steps", str(killed_at + 3),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert int(training_checkpoints(run)[-1].stem.split("-")[1]) == killed_at + 3
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]


def test_cli_train_reports_user_errors_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "--output", str(tmp_path / "r"), "--train",
                                      str(tmp_path / "missing"), "--src", "en", "--tgt", "de"])
    assert result.exit_code == 2
    assert "missing.en: no such file" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_ctrl_c_stops_at_an_update_boundary_with_a_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "toy.toml"
    config.write_text('[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
                      'n_decoder_layers = 1\n[train]\nbatch_tokens = 600\ncheckpoint_every = 1000\n'
                      'log_every = 1\nthreads = 1\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "tinytrans", "train", "--output", str(run), "--train", str(corpus[0]),
         "--src", "en", "--tgt", "de", "--vocab-size", "300", "--config", str(config)],
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").is_file()
                                          and len(losses(run)) >= 3):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    stderr = process.stderr.read()
    assert "interrupted" in stderr and "Traceback" not in stderr
    steps = sorted(losses(run))
    assert [p.name for p in training_checkpoints(run)] == [f"step-{steps[-1]:07d}.safetensors"]


def test_unequal_training_corpus_is_reported_before_tokenizer_training(tmp_path):
    Path(f"{tmp_path}/c.en").write_text("one\ntwo\nthree\n")
    Path(f"{tmp_path}/c.de").write_text("eins\nzwei\n")
    result = CliRunner().invoke(app, ["train", "--output", str(tmp_path / "r"), "--train",
                                      str(tmp_path / "c"), "--src", "en", "--tgt", "de"])
    assert result.exit_code == 2
    assert "c.en has 3 lines but" in result.stderr and "c.de has 2" in result.stderr


def test_average_last_averages_the_last_checkpoints_and_validates_them(corpus, tmp_path):
    train_prefix, valid_prefix = corpus
    cfg = toy_config(train_prefix, valid_prefix, max_steps=20, checkpoint_every=5, keep_last=4,
                     average_last=3, validate_every=10)
    train(cfg, tmp_path / "run")
    last_three = training_checkpoints(tmp_path / "run")[-3:]
    assert [p.name for p in last_three] == [f"step-{s:07d}.safetensors" for s in (10, 15, 20)]
    models = []
    for path in last_three + [tmp_path / "run" / "checkpoints" / "average.safetensors"]:
        model = Transformer(load_run_config(tmp_path / "run").model)
        load_model_weights(path, model)
        models.append(dict(model.named_parameters()))
    for name, averaged in models[-1].items():
        mean = sum(m[name] for m in models[:-1]) / 3
        assert torch.allclose(averaged, mean, atol=1e-6), name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    average = [r for r in records if r["event"] == "average"]
    assert len(average) == 1 and average[0]["checkpoints"] == 3 and 0 <= average[0]["bleu"] <= 100


def test_average_last_is_skipped_when_interrupted(corpus, tmp_path):
    train_prefix, valid_prefix = corpus
    cfg = toy_config(train_prefix, valid_prefix, max_steps=20, checkpoint_every=5, keep_last=4,
                     average_last=3)
    polls = iter(range(1, 10**6))  # stop_requested is asked once after every update
    result = train(cfg, tmp_path / "run", stop_requested=lambda: next(polls) >= 11)
    # three step checkpoints (5, 10 and the interrupted 11): enough that a finished run averages
    assert result.state.step == 11 and len(training_checkpoints(tmp_path / "run")) == 3
    assert not (tmp_path / "run" / "checkpoints" / "average.safetensors").exists()

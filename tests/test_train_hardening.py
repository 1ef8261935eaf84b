"""Training under hostile conditions: validation sets with empty lines, kills between a validation
and the next checkpoint, resumption with other intervals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import sacrebleu
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import tinytrans
import tinytrans.schedule
import tinytrans.train
from tinytrans.cli import app
from tinytrans.errors import UserError
from tinytrans.checkpoint import BEST, read_checkpoint, read_state, training_checkpoints
from tinytrans.model import Transformer
from tinytrans.tokenizer import Tokenizer, train_tokenizer
from tinytrans.rundir import learning_curves
from tinytrans.train import train
from tinytrans.validation import greedy_translations, load_validation_data, validate
from toyrun import toy_config, write_corpus


@pytest.fixture(scope="module")
def tokenizer_model(corpus) -> Path:
    train = corpus[0]
    train_tokenizer([Path(f"{train}.en"), Path(f"{train}.de")], train.parent / "spm", 300)
    return train.parent / "spm.model"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_model) -> Tokenizer:
    return Tokenizer.load(tokenizer_model)


# ---------------------------------------------------------------------------------------------
# Validation pairs and references stay aligned


def test_dropped_validation_pairs_take_their_references_with_them(corpus, tokenizer, tmp_path):
    src = Path(f"{corpus[1]}.en").read_text(encoding="utf-8").splitlines()[:8]
    tgt = Path(f"{corpus[1]}.de").read_text(encoding="utf-8").splitlines()[:8]
    src[1] = ""  # an empty line
    tgt[3] = " \t "  # only whitespace
    src[5] = "\u200b"  # not blank as text, but no pieces once normalised
    for lang, lines in (("en", src), ("de", tgt)):
        Path(f"{tmp_path}/valid.{lang}").write_text("".join(f"{x}\n" for x in lines), "utf-8")
    kept = [i for i in range(8) if i not in (1, 3, 5)]
    events = []
    cfg = toy_config(corpus[0], tmp_path / "valid")
    valid = load_validation_data(cfg, tokenizer, tokenizer, events.append)[""]  # one pair: one set

    assert valid.references == [tgt[i] for i in kept]
    assert len(valid.corpus) == len(kept)
    positions = range(len(kept))
    assert tokenizer.decode([valid.corpus.src[k].tolist() for k in positions]) == \
        [src[i] for i in kept]
    assert tokenizer.decode([valid.corpus.tgt[k].tolist() for k in positions]) == valid.references
    assert events == [{"event": "valid_data", "read": 8, "kept": 5}]

    torch.manual_seed(0)
    model = Transformer(replace(cfg.model, src_vocab_size=300, tgt_vocab_size=300)).eval()
    cpu = torch.device("cpu")
    hyps = greedy_translations(model, valid.corpus, tokenizer, 600, cpu, "fp32")
    scores = validate(model, {"": valid}, tokenizer, cfg, cpu, "fp32")
    assert scores["bleu"] == sacrebleu.corpus_bleu(hyps, [[tgt[i] for i in kept]]).score


# ---------------------------------------------------------------------------------------------
# curves.png compares like with like


def test_learning_curves_plot_training_nll_against_validation_nll():
    records = [{"event": "log", "step": 1, "loss": 9.0, "nll": 7.0},
               {"event": "log", "step": 2, "loss": 8.5, "nll": 6.0},
               {"event": "valid", "step": 2, "loss": 5.5, "bleu": 3.0}]
    curves = learning_curves(records)
    assert curves["train_nll"] == ([1, 2], [7.0, 6.0])  # not the label-smoothed "loss"
    assert curves["valid_nll"] == ([2], [5.5])
    assert curves["valid_bleu"] == ([2], [3.0])


# ---------------------------------------------------------------------------------------------
# Resume never loses the best model or the early-stopping count
#
# Validation scores are scripted by step, so that each test decides which validation is the
# best; a kill is an exception raised from the report callback, which train() does not catch:
# the run stops where it is, with no checkpoint written, as after a kill -9.

# BLEU of a validation at step s (index s): new bests at various steps, then a decline.
BLEU_BY_STEP = [0, 5, 10, 9, 12, 11, 13, 12, 12, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 9]


class Killed(Exception):
    pass


class ScriptedValidation:
    """Stands in for train.validate: BLEU as a function of the step being validated, which it
    learns from the "log" event that precedes every validation (log_every = 1)."""

    def __init__(self, bleu_by_step, loss_by_step=None):
        self.bleu_by_step, self.loss_by_step, self.step = bleu_by_step, loss_by_step, 0

    def __call__(self, *args) -> dict:
        loss = float(self.loss_by_step[self.step]) if self.loss_by_step else 1.0
        return {"loss": loss, "ppl": 2.7, "bleu": float(self.bleu_by_step[self.step]),
                "bleu_signature": "scripted", "sample": ""}


@pytest.fixture
def scripted(monkeypatch) -> ScriptedValidation:
    script = ScriptedValidation(BLEU_BY_STEP)
    monkeypatch.setattr(tinytrans.train, "validate", script)
    return script


def run(cfg, run_dir: Path, script: ScriptedValidation, kill: tuple[str, int] | None = None):
    """Train; with `kill` = (event, step), die right after that event is reported."""
    def report(event: dict) -> None:
        if event["event"] == "log":
            script.step = event["step"]
        if (event["event"], event.get("step")) == kill:
            raise Killed

    return train(cfg, run_dir, report=report)


def scripted_config(corpus, tokenizer_model: Path, **train_overrides):
    cfg = toy_config(*corpus, **train_overrides)
    return replace(cfg, data=replace(cfg.data, tokenizer=str(tokenizer_model)))  # no retraining


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == kind]


def best_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / BEST)[0]


@pytest.mark.parametrize("validate_every, checkpoint_every", [(2, 3), (3, 2)])
def test_a_kill_after_any_validation_loses_neither_best_nor_patience(
        corpus, tokenizer_model, scripted, tmp_path, validate_every, checkpoint_every):
    cfg = scripted_config(corpus, tokenizer_model, validate_every=validate_every,
                          checkpoint_every=checkpoint_every, patience=3, keep_last=10)
    straight = run(cfg, tmp_path / "straight", scripted)
    assert "early stopping" in straight.stop_reason  # the script makes patience run out
    expected_valid = [(r["step"], r["bleu"]) for r in records(tmp_path / "straight", "valid")]
    expected_best = best_weights(tmp_path / "straight")
    kills = [("log", 1)] + [("valid", step) for step, _ in expected_valid]
    for kill in kills:
        run_dir = tmp_path / f"killed-{kill[0]}-{kill[1]}"
        with pytest.raises(Killed):
            run(cfg, run_dir, scripted, kill)
        resumed = run(cfg, run_dir, scripted)
        # best_bleu, best_step, validations_since_best (the patience count), step, epoch: all but the seconds
        assert replace(resumed.state, elapsed=0) == replace(straight.state, elapsed=0), kill
        assert resumed.stop_reason == straight.stop_reason, kill
        assert read_state(run_dir / "checkpoints" / BEST)["best_step"] == straight.state.best_step
        for name, tensor in best_weights(run_dir).items():
            torch.testing.assert_close(tensor, expected_best[name], msg=f"{kill} {name}")
        # metrics.jsonl holds every update and validation once, as if nothing had happened
        steps = list(range(1, straight.state.step + 1))
        assert [r["step"] for r in records(run_dir, "log")] == steps, kill
        assert [(r["step"], r["bleu"]) for r in records(run_dir, "valid")] == expected_valid, kill


def test_a_resumed_run_validating_at_other_steps_keeps_the_better_best(
        corpus, tokenizer_model, scripted, tmp_path):
    """The killed attempt found its best (step 4) after its last checkpoint (step 3); resumed
    with validate_every 5, the run never sees step 4 again and its validations all score lower,
    though above the best the checkpoint knew (step 2)."""
    scripted.bleu_by_step = [10 + step / 100 for step in range(21)]
    scripted.bleu_by_step[4] = 12.0
    run_dir = tmp_path / "run"
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=3, patience=2)
    with pytest.raises(Killed):
        run(cfg, run_dir, scripted, kill=("valid", 4))
    weights_at_4 = best_weights(run_dir)

    result = run(replace(cfg, train=replace(cfg.train, validate_every=5)), run_dir, scripted)
    assert (result.state.best_bleu, result.state.best_step) == (12.0, 4)
    assert result.state.validations_since_best == 2 and result.state.step == 10  # validations at 5 and 10
    assert "early stopping" in result.stop_reason
    assert read_state(run_dir / "checkpoints" / BEST)["best_step"] == 4
    for name, tensor in best_weights(run_dir).items():
        assert torch.equal(tensor, weights_at_4[name]), name
    validations = [(r["step"], r["best_step"]) for r in records(run_dir, "valid")]
    assert validations == [(2, 2), (5, 4), (10, 4)]


def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_afresh(
        corpus, tokenizer_model, scripted, tmp_path):
    run_dir = tmp_path / "run"
    cfg = scripted_config(corpus, tokenizer_model, max_steps=6, validate_every=2,
                          checkpoint_every=100)
    with pytest.raises(Killed):
        run(cfg, run_dir, scripted, kill=("log", 5))
    assert not training_checkpoints(run_dir) and len(records(run_dir, "log")) == 5
    run(cfg, run_dir, scripted)
    assert [r["step"] for r in records(run_dir, "log")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records(run_dir, "valid")] == [2, 4, 6]


# ---------------------------------------------------------------------------------------------
# When to stop: one decision after each update, after the validation that is due


def step_checkpoints(run_dir: Path) -> list[int]:
    return [read_state(path)["step"] for path in training_checkpoints(run_dir)]


def test_patience_stops_at_the_validation_that_runs_it_out(corpus, tokenizer_model, scripted,
                                                           tmp_path):
    # validations at even steps score 10, 12, 13 (the best, step 6), 12, 13, 12: the third
    # after the best without beating it is step 12's
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=100,
                          patience=3, max_steps=None)
    result = run(cfg, tmp_path / "run", scripted)
    assert result.stop_reason == "no better BLEU in 3 validations (early stopping)"
    assert result.state.step == 12 and result.state.best_step == 6
    assert [r["step"] for r in records(tmp_path / "run", "valid")] == [2, 4, 6, 8, 10, 12]
    assert step_checkpoints(tmp_path / "run") == [12]  # the stop writes one


# Validation loss by step: lowest at step 4, where BLEU (12) is not the best (step 6's 13).
LOSS_BY_STEP = [9, 8, 7, 6, 5, 6, 5.5, 6, 7, 5.2, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8]


def test_best_metric_loss_keeps_the_lowest_loss_and_runs_patience_out_on_it(
        corpus, tokenizer_model, scripted, tmp_path):
    scripted.loss_by_step = LOSS_BY_STEP
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=100,
                          patience=3, max_steps=None, best_metric="loss")
    result = run(cfg, tmp_path / "run", scripted)
    # losses at 2, 4, 6, 8, 10: 7, 5 (the best), 5.5, 7, 6: the third without a lower one is 10's
    assert result.stop_reason == "no better loss in 3 validations (early stopping)"
    assert (result.state.step, result.state.best_step) == (10, 4)
    assert (result.state.best_loss, result.state.best_bleu) == (5.0, 12.0)  # BLEU at the best
    assert read_state(tmp_path / "run" / "checkpoints" / BEST)["best_step"] == 4
    assert [(r["step"], r["best_step"], r["best_loss"]) for r in records(tmp_path / "run", "valid")] \
        == [(2, 2, 7.0), (4, 4, 5.0), (6, 4, 5.0), (8, 4, 5.0), (10, 4, 5.0)]


def test_a_kill_after_a_lowest_loss_resumes_with_that_loss_to_beat(corpus, tokenizer_model,
                                                                     scripted, tmp_path):
    """Killed after the best validation (step 4, loss 5) and before a checkpoint knew of it
    (step 3's); resumed validating every 5 steps, the run never sees step 4 again, and its
    validations (loss 6 at 5 and 10, 7 at 15) must not beat the best it can no longer see."""
    scripted.loss_by_step = LOSS_BY_STEP
    run_dir = tmp_path / "run"
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=3,
                          patience=3, max_steps=None, best_metric="loss")
    with pytest.raises(Killed):
        run(cfg, run_dir, scripted, kill=("valid", 4))
    weights_at_4 = best_weights(run_dir)
    result = run(replace(cfg, train=replace(cfg.train, validate_every=5)), run_dir, scripted)
    assert (result.state.best_loss, result.state.best_step, result.state.step) == (5.0, 4, 15)
    assert result.stop_reason == "no better loss in 3 validations (early stopping)"
    for name, tensor in best_weights(run_dir).items():
        assert torch.equal(tensor, weights_at_4[name]), name


@pytest.mark.parametrize("loss, best", [(4.9, True), (5.0, False), (float("nan"), False),
                                        (float("inf"), False)])
def test_only_a_lower_finite_loss_is_a_new_best(loss: float, best: bool):
    from tinytrans.checkpoint import TrainState
    state = TrainState(best_loss=5.0, best_bleu=30.0)
    assert tinytrans.train.is_new_best("loss", {"loss": loss, "bleu": 0.0}, state) is best
    assert tinytrans.train.is_new_best("loss", {"loss": loss, "bleu": 0.0}, TrainState()) \
        is (loss == loss and loss != float("inf"))  # the first finite loss is the best yet


def test_a_diverged_validation_leaves_a_run_that_resumes(corpus, tokenizer_model, scripted,
                                                         tmp_path):
    """BLEU picks a best whose loss is not a number: its state keeps -1 (none), since a
    checkpoint's state must hold finite numbers, and the run resumes from it."""
    scripted.loss_by_step = [float("nan")] * 21
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=2,
                          max_steps=4)
    first = run(cfg, tmp_path / "run", scripted)
    assert first.state.best_loss == -1.0 and first.state.best_step == 4
    longer = run(replace(cfg, train=replace(cfg.train, max_steps=6)), tmp_path / "run", scripted)
    assert longer.state.step == 6


@pytest.mark.parametrize("interrupted_at, validated", [(4, [2, 4]), (3, [2])])
def test_an_interruption_stops_after_its_update_validating_only_when_due(
        corpus, tokenizer_model, scripted, tmp_path, interrupted_at, validated):
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=100)

    def report(event: dict) -> None:
        if event["event"] == "log":
            scripted.step = event["step"]
    # Ctrl-C during update `interrupted_at`: the CLI's handler makes stop_requested true
    result = train(cfg, tmp_path / "run", report=report,
                   stop_requested=lambda: scripted.step >= interrupted_at)
    assert result.stop_reason == tinytrans.train.INTERRUPTED
    assert result.state.step == interrupted_at
    assert [r["step"] for r in records(tmp_path / "run", "valid")] == validated
    assert step_checkpoints(tmp_path / "run") == [interrupted_at]


def test_a_limit_between_validations_validates_once_more_at_the_stop(
        corpus, tokenizer_model, scripted, tmp_path):
    cfg = scripted_config(corpus, tokenizer_model, validate_every=2, checkpoint_every=100,
                          max_steps=5)
    events: list[dict] = []

    def report(event: dict) -> None:
        if event["event"] == "log":
            scripted.step = event["step"]
        events.append(event)

    result = train(cfg, tmp_path / "run", report=report)
    assert result.stop_reason == "reached max_steps 5"
    assert [r["step"] for r in records(tmp_path / "run", "valid")] == [2, 4, 5]
    # every update is reported as a step, the ones with a checkpoint too
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4, 5]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [5]


# ---------------------------------------------------------------------------------------------
# Epochs, precision, sizes, and what the library leaves alone


def test_max_epochs_1_with_3_batches_per_epoch_makes_3_updates(tmp_path):
    """The epoch ends with its last update, not one update into the next epoch."""
    train_prefix = write_corpus(tmp_path / "train", 60)
    one_epoch = toy_config(train_prefix, None, max_steps=None, max_epochs=1, batch_tokens=1000,
                           checkpoint_every=1000)
    result = train(one_epoch, tmp_path / "one")
    tok = Tokenizer.load(tmp_path / "one" / "tokenizer.model")
    corpus, _ = tinytrans.train.load_training_data(one_epoch, tok, tok, lambda event: None)
    epoch = tinytrans.train.length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, 1000, 1, 0)
    assert len(epoch) == 3
    assert result.state.step == 3 and result.state.epoch == 1 and result.state.batch == 0
    assert result.stop_reason == "reached max_epochs 1"
    # resumed with one more epoch: exactly its 3 updates more
    two = replace(one_epoch, train=replace(one_epoch.train, max_epochs=2))
    assert train(two, tmp_path / "one").state.step == 6


def test_the_start_of_training_says_which_precision_and_why(corpus, tmp_path, monkeypatch):
    steps = []

    def timed(step, pieces):  # the real updates run, the verdict is made up
        steps.extend(step(precision, 0) for precision in ("fp32", "bf16"))
        return 0.6
    monkeypatch.setattr("tinytrans.train.time_both_ways", timed)
    monkeypatch.setenv("TINYTRANS_CACHE_DIR", str(tmp_path / "cache"))
    train(toy_config(corpus[0], None, max_steps=1, precision="auto"), tmp_path / "run")
    start = next(r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text()
                                .splitlines()) if r["event"] == "start")
    assert (start["precision"], start["precision_reason"], start["bf16_speedup"]) == \
        ("fp32", "bf16 measured 0.6x fp32 in real training updates on this CPU", 0.6)
    assert len(steps) == 2 and all(tokens > 0 for tokens in steps)  # target tokens of a batch


def test_the_precision_trial_leaves_the_run_as_it_would_be_without_it(corpus, tmp_path,
                                                                       monkeypatch):
    """auto's real updates go to a throwaway model: a run that measured and kept fp32 trains
    exactly as one told fp32 (the same losses, the same weights); the caller's random numbers
    are as they were."""
    monkeypatch.setenv("TINYTRANS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("tinytrans.hardware.BF16_MIN_SPEEDUP", float("inf"))  # auto keeps fp32
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    runs = {}
    for precision in ("auto", "fp32"):
        train(toy_config(corpus[0], None, max_steps=3, precision=precision), tmp_path / precision)
        records = [json.loads(r) for r in (tmp_path / precision / "metrics.jsonl").read_text()
                   .splitlines()]
        runs[precision] = [r["loss"] for r in records if r["event"] == "log"]
    assert torch.equal(torch.rand(3), expected)
    start = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["bf16_speedup"] > 0 and "real training updates" in start["precision_reason"]
    assert runs["auto"] == runs["fp32"] and runs["auto"]


def test_a_model_too_big_for_the_machine_is_refused_before_it_is_built(corpus, tmp_path):
    huge = toy_config(corpus[0], None)
    huge = replace(huge, model=replace(huge.model, n_encoder_layers=1_000_000))
    with pytest.raises(UserError, match=r"model.n_encoder_layers = 1000000 makes a model of .* GiB"):
        train(huge, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_run_config_with_an_absurd_size_is_one_line_naming_the_file_and_key(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(toy_config(corpus[0], None, max_steps=1), run_dir)
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("d_model = 32", "d_model = 1000000"))
    result = CliRunner().invoke(app, ["translate", "--model", str(run_dir)], input="Hello\n")
    assert result.exit_code == 2
    assert f"{config}: 'model.d_model' = 1000000 makes a model of" in result.output
    assert "Traceback" not in result.output


def test_fused_adam_falls_back_where_this_torch_lacks_it(corpus, monkeypatch):
    real = torch.optim.Adam

    def without_fused(params, fused=None, **settings):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point "
                               "Tensors of supported devices")
        return real(params, **settings)
    monkeypatch.setattr(torch.optim, "Adam", without_fused)
    cfg = toy_config(corpus[0], None)
    model = Transformer(replace(cfg.model, src_vocab_size=50, tgt_vocab_size=50))
    optimizer = tinytrans.schedule.make_optimizer(model, cfg)
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused")


def test_training_and_loading_change_nothing_process_wide(corpus, tmp_path):
    """A program that imports tinytrans keeps its own thread count and plotting backend."""
    import matplotlib
    backend = matplotlib.get_backend()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        run_dir = tmp_path / "run"
        train(toy_config(corpus[0], None, max_steps=1, threads=1), run_dir)  # curves.png too
        tinytrans.load(run_dir).translate(["Hello"])
        assert torch.get_num_threads() == threads + 1
        assert matplotlib.get_backend() == backend
        assert (run_dir / "curves.png").is_file()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("forged", [{"step": -5}, {"step": "3"}, {"surprise": 1},
                                    {"update_sizes": [[0]]}, {"elapsed": float("nan")},
                                    {"elapsed": 10**400}])
def test_a_forged_training_state_is_refused_in_one_line(corpus, tmp_path, forged):
    run_dir = tmp_path / "run"
    cfg = toy_config(corpus[0], None, max_steps=2, checkpoint_every=2)
    train(cfg, run_dir)
    path = training_checkpoints(run_dir)[-1]
    tensors, metadata = read_checkpoint(path)
    state = {**json.loads(metadata["state"]), **forged}
    save_file(tensors, str(path), metadata={**metadata, "state": json.dumps(state)})
    longer = replace(cfg, train=replace(cfg.train, max_steps=4))
    with pytest.raises(UserError, match=f"{path}: .*training state field"):
        train(longer, run_dir)


def test_a_best_checkpoint_without_its_score_is_refused_in_one_line(corpus, tmp_path):
    run_dir = tmp_path / "run"
    cfg = toy_config(corpus[1].parent / "train", corpus[1], max_steps=2, validate_every=2,
                     checkpoint_every=2)
    train(cfg, run_dir)
    best = run_dir / "checkpoints" / BEST
    tensors, metadata = read_checkpoint(best)
    save_file(tensors, str(best), metadata={**metadata, "state": json.dumps({"best_step": "x"})})
    with pytest.raises(UserError, match="best_step"):
        train(replace(cfg, train=replace(cfg.train, max_steps=4)), run_dir)


def test_a_checkpoint_with_the_old_state_names_still_resumes(tmp_path):
    from tinytrans.checkpoint import TrainState
    state = TrainState.from_saved({"step": 7, "stale": 2, "regrouped": [[0, 1], [3, 2]]},
                                  tmp_path / "old.safetensors")
    assert (state.step, state.validations_since_best, state.update_sizes) == (7, 2, [[0, 1], [3, 2]])


def test_best_loss_is_read_checked_and_absent_from_older_checkpoints(tmp_path):
    from tinytrans.checkpoint import TrainState
    path = tmp_path / "c.safetensors"
    assert TrainState.from_saved({"step": 7, "best_bleu": 3.5}, path).best_loss == -1.0  # none yet
    assert TrainState.from_saved({"best_loss": 2}, path).best_loss == 2.0
    for forged in ("2.5", float("nan"), -3.0, -0.5, True):
        with pytest.raises(UserError, match=f"{path}: training state field 'best_loss'"):
            TrainState.from_saved({"best_loss": forged}, path)


def test_every_process_makes_the_same_collective_calls_and_stops_alike(monkeypatch, corpus):
    """The stop decision under torchrun, with the collectives stubbed: process 1 alone was
    interrupted at an update where process 0 reaches max_steps and no validation is due. Both
    ask the same two questions in the same order, process 0 does not validate (the run is
    interrupted anyway), and both stop as interrupted."""
    from types import SimpleNamespace

    from tinytrans.checkpoint import TrainState
    from tinytrans.distributed import Ranks
    cfg = toy_config(*corpus, max_steps=5, validate_every=2)
    calls: dict[int, list[str]] = {0: [], 1: []}
    validated: list[int] = []
    monkeypatch.setattr(tinytrans.train, "any_rank",
                        lambda flag, ranks, device: calls[ranks.rank].append("any_rank") or True)
    monkeypatch.setattr(tinytrans.train, "process_0_says",
                        lambda flag, ranks, device: calls[ranks.rank].append("process_0_says") or True)
    monkeypatch.setattr(tinytrans.train, "_validate_and_keep_best",
                        lambda run, state, timings: validated.append(state.step) or {})
    reasons = []
    for rank in (0, 1):
        run = SimpleNamespace(cfg=cfg, ranks=Ranks(world_size=2, rank=rank), device=None)
        reason, _ = tinytrans.train._validate_and_decide(run, TrainState(step=5), rank == 1,
                                                         tinytrans.train.Timings())
        reasons.append(reason)
    assert calls[0] == calls[1] == ["any_rank", "process_0_says"]
    assert validated == []
    assert reasons == [tinytrans.train.INTERRUPTED] * 2


@pytest.mark.parametrize("before", ["absent", "empty"])
def test_a_refused_set_up_takes_back_the_run_directory_it_began(tmp_path, before):
    """Refused after the tokenizer and config.toml were written (the validation corpus is not
    UTF-8): nothing of the attempt is left, so the same command, once the file is fixed, runs."""
    train_prefix = write_corpus(tmp_path / "train", 200)
    valid = write_corpus(tmp_path / "valid", 10, "valid")
    good = Path(f"{valid}.de").read_bytes()
    Path(f"{valid}.de").write_bytes(good + b"\xff\xfe broken\n")
    Path(f"{valid}.en").write_bytes(Path(f"{valid}.en").read_bytes() + b"broken\n")
    run = tmp_path / "run"
    if before == "empty":
        run.mkdir()
    cfg = toy_config(train_prefix, valid, max_steps=2, validate_every=2, checkpoint_every=2)
    with pytest.raises(UserError, match="UTF-8"):
        train(cfg, run)
    assert (run.exists() and not any(run.iterdir())) if before == "empty" else not run.exists()
    Path(f"{valid}.de").write_bytes(good + b"fixed\n")
    assert train(cfg, run).state.step == 2


def test_a_refused_resume_leaves_the_run_as_it_was(corpus, tmp_path):
    run = tmp_path / "run"
    train(toy_config(*corpus, max_steps=2, validate_every=2, checkpoint_every=2), run)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    cfg = toy_config(*corpus, max_steps=4, validate_every=2, checkpoint_every=2)
    broken = tmp_path / "broken"
    write_corpus(broken, 5, "valid")
    Path(f"{broken}.de").write_bytes(b"\xff\n" * 5)
    with pytest.raises(UserError, match="holds a run with a different config"):
        train(replace(cfg, data=replace(cfg.data, valid=str(broken))), run)
    assert set(before) <= {p.relative_to(run) for p in run.rglob("*")}  # nothing taken away


def test_every_event_is_decided_and_a_misspelt_one_fails(corpus, tmp_path):
    """The display decides every Event (shows it or not, explicitly), refuses a name that is no
    Event, and everything a training run reports is an Event."""
    from rich.console import Console
    from tinytrans.events import Event
    from tinytrans.progress import TrainDisplay
    display = TrainDisplay(Console(file=open(tmp_path / "out.txt", "w")), quiet=True)
    assert set(display.handlers()) == set(Event)
    with pytest.raises(ValueError, match="'chekpoint' is not a valid Event"):
        display({"event": "chekpoint", "step": 1})
    seen = []
    train(toy_config(corpus[0], corpus[1], max_steps=2, validate_every=2, checkpoint_every=2),
          tmp_path / "run", report=lambda event: seen.append(Event(event["event"])))
    assert {Event.DATA, Event.VALID_DATA, Event.START, Event.STEP, Event.LOG, Event.VALID,
            Event.CHECKPOINT, Event.END} <= set(seen)

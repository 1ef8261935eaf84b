"""Fine-tuning (train.init, `tinytrans train --init RUN`) at toy size: a run that starts from
another run's weights, tokenizer and model shape, with a fresh optimizer and schedule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers_cli import assert_one_line_error, invoke
from tinytrans.average import model_tensors
from tinytrans.checkpoint import (file_sha256, load_model_weights, read_checkpoint, read_state,
                                  training_checkpoints)
from tinytrans.config import DataConfig
from tinytrans.errors import UserError
from tinytrans.model import Transformer
from tinytrans.prepared import prepare
from tinytrans.rundir import load_run_config, load_tokenizers, resolve_run_config
from tinytrans.train import train
from tinytrans.validation import load_validation_data, validation_loss
from toyrun import toy_config, write_corpus

Corpus = tuple[Path, Path]  # (train prefix, valid prefix)


@pytest.fixture(scope="module")
def base(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run fine-tuned from: the toy model, 20 updates, step checkpoints at 10 and 20."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(toy_config(*corpus), run)
    return run


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The data fine-tuned on: bundled pairs that the base run never saw."""
    root = tmp_path_factory.mktemp("new")
    return (write_corpus(root / "train", 200, skip=5000),
            write_corpus(root / "valid", 20, "valid", skip=100))


def fine_tuning(run_dir: Path, base: Path, new: Corpus, **train_flags: Any):
    """The config `tinytrans train --init BASE --train NEW --valid NEW ...` resolves."""
    return resolve_run_config(run_dir, {
        "data": {"train": str(new[0]), "valid": str(new[1])},
        "train": {"init": str(base), "max_steps": 4, "warmup_steps": 2, **train_flags}})


def records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def one_update() -> bool:
    """stop_requested that stops after the first update, before any end-of-run validation."""
    return True


@pytest.fixture(scope="module")
def straight(base: Path, new: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuned run of 4 updates, not interrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(fine_tuning(run, base, new), run)
    return run


def test_a_fine_tuned_run_starts_from_the_init_weights_and_tokenizer(base, new, tmp_path):
    run = tmp_path / "run"
    cfg = fine_tuning(run, base, new)
    train(cfg, run, stop_requested=one_update)
    assert (run / "tokenizer.model").read_bytes() == (base / "tokenizer.model").read_bytes()
    # its first validation, before any update, is the init model's on the new data
    init_cfg = load_run_config(base)
    model = Transformer(init_cfg.model)
    load_model_weights(base / "checkpoints" / "best.safetensors", model)
    tok, _ = load_tokenizers(base, init_cfg)
    valid = load_validation_data(cfg, tok, tok, lambda event: None)[""]  # one pair: one set
    expected = validation_loss(model.eval(), valid.corpus, cfg.train.batch_tokens,
                               torch.device("cpu"), "fp32")
    first = records(run, "valid")[0]
    assert first["step"] == 0 and first["loss"] == pytest.approx(expected, rel=1e-6)
    # ... and so the run's best weights, kept at step 0, are the init checkpoint's exactly
    best = Path("checkpoints", "best.safetensors")
    kept, init = model_tensors(run / best), model_tensors(base / best)
    assert kept.keys() == init.keys() and all(torch.equal(kept[k], init[k]) for k in kept)


def test_a_fine_tuned_run_records_where_it_came_from(base, straight):
    saved = load_run_config(straight)
    assert (saved.train.init, saved.train.init_checkpoint) == (str(base.resolve()), "best")
    assert saved.data.train != load_run_config(base).data.train  # its own corpora, not the init's
    best = base / "checkpoints" / "best.safetensors"
    [start] = records(straight, "start")
    assert start["init"] == {"run": str(base.resolve()), "checkpoint": str(best.resolve()),
                             "sha256": file_sha256(best), "step": read_state(best)["step"],
                             "optimizer": False}
    # a fresh schedule: warmup starts again at update 1
    rates = [r["lr"] for r in records(straight, "log")]
    assert rates[0] == pytest.approx(saved.train.lr / saved.train.warmup_steps)


def test_settings_may_change_but_not_the_model_shape_or_tokenizer(base, new, tmp_path):
    toml = tmp_path / "fine.toml"
    toml.write_text("[model]\ndropout = 0.3\n[train]\nlr = 1e-4\n")
    cfg = resolve_run_config(tmp_path / "run", {"data": {"train": str(new[0])},
                                                "train": {"init": str(base)}}, toml=toml)
    init_cfg = load_run_config(base)
    assert cfg.model == replace(init_cfg.model, dropout=0.3) and cfg.train.lr == 1e-4
    assert cfg.train.max_steps == init_cfg.train.max_steps  # the rest defaults to the init's
    assert cfg.data.valid is None  # never the init's corpora


@pytest.mark.parametrize("flags, toml, preset, named", [
    ({"data": {"vocab_size": 999}}, None, None,
     ["--vocab-size = 999 disagrees with", "config.toml: 'data.vocab_size' = 300"]),
    ({"data": {"tokenizer": "other.model"}}, None, None,
     ["--tokenizer = 'other.model' disagrees with", "'data.tokenizer' = None"]),
    ({}, "[model]\nd_model = 64\nn_heads = 2\n", None,
     ["fine.toml: 'model.d_model' = 64 disagrees with", "config.toml: 'model.d_model' = 32"]),
    ({}, None, "tiny", ["preset tiny: 'model.d_model' = 128 disagrees with", "= 32"]),
])
def test_a_flag_that_would_change_the_model_or_tokenizer_is_refused(base, new, tmp_path, flags,
                                                                    toml, preset, named):
    if toml is not None:
        (tmp_path / "fine.toml").write_text(toml)
    flags = {"data": {"train": str(new[0]), **flags.get("data", {})}, "train": {"init": str(base)}}
    with pytest.raises(UserError) as error:
        resolve_run_config(tmp_path / "run", flags, preset,
                           tmp_path / "fine.toml" if toml is not None else None)
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in named), message
    assert not (tmp_path / "run").exists()


def test_a_config_built_by_hand_with_another_model_shape_is_refused_before_any_work(base, new,
                                                                                    tmp_path):
    cfg = toy_config(*new, init=str(base))
    cfg = replace(cfg, model=replace(cfg.model, d_ff=128))
    with pytest.raises(UserError, match=r"model.d_ff = 128 disagrees with --init .*: .model.d_ff. = 64"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case, cause", [
    ("missing", "no such run directory"),
    ("not a run", "not a tinytrans run directory"),
    ("the output", "is the run directory being trained"),
    ("no such checkpoint", "no such checkpoint"),
    ("optimizer of best", "holds weights only"),
    ("optimizer without init", "--init-optimizer"),
    ("checkpoint without init", "--checkpoint last"),
])
def test_every_init_option_is_checked_before_any_work(base, new, tmp_path, case, cause):
    (tmp_path / "plain").mkdir()
    run = base if case == "the output" else tmp_path / "run"
    options = {"missing": {"init": str(tmp_path / "nowhere")},
               "not a run": {"init": str(tmp_path / "plain")},
               "the output": {"init": str(base)},
               "no such checkpoint": {"init": str(base),
                                      "init_checkpoint": str(tmp_path / "x.safetensors")},
               "optimizer of best": {"init": str(base), "init_optimizer": True},
               "optimizer without init": {"init_optimizer": True},
               "checkpoint without init": {"init_checkpoint": "last"}}[case]
    before = sorted(p.name for p in base.rglob("*"))
    with pytest.raises(UserError, match=cause) as error:
        train(toy_config(*new, **options), run)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in base.rglob("*")) == before


def adam_state(path: Path, slot: str) -> dict[str, torch.Tensor]:
    return {k: t for k, t in read_checkpoint(path)[0].items() if k.endswith(f"/{slot}")}


def test_init_optimizer_takes_adams_moments_and_the_default_does_not(base, new, tmp_path):
    """From the same weights the first update sees the same gradient g, so after it the second
    moment is beta2 * v0 + (1 - beta2) g^2 with the init's moments v0, and (1 - beta2) g^2
    without them."""
    steps = {}
    for init_optimizer in (False, True):
        run = tmp_path / f"optimizer-{init_optimizer}"
        train(fine_tuning(run, base, new, init_checkpoint="last", init_optimizer=init_optimizer),
              run, stop_requested=one_update)
        steps[init_optimizer] = training_checkpoints(run)[-1]
    init = training_checkpoints(base)[-1]
    assert all(t.item() == 1 for t in adam_state(steps[False], "step").values())
    assert all(t.item() == 21 for t in adam_state(steps[True], "step").values())  # 20 + 1
    fresh, warm, v0 = (adam_state(p, "exp_avg_sq") for p in (steps[False], steps[True], init))
    beta2 = load_run_config(base).train.adam_beta2
    for key in v0:
        assert torch.allclose(warm[key] - fresh[key], beta2 * v0[key], rtol=1e-4, atol=1e-12), key


def test_an_interrupted_fine_tuning_resumes_from_its_own_checkpoint(base, new, straight, tmp_path):
    run = tmp_path / "run"
    polls = iter(range(1, 100))
    train(fine_tuning(run, base, new), run, stop_requested=lambda: next(polls) >= 2)
    events: list[dict[str, Any]] = []
    train(fine_tuning(run, base, new), run, report=events.append)  # --init again: the same run
    assert any(e["event"] == "resume" and e["step"] == 2 for e in events)
    assert "init" not in records(run, "start")[-1]  # not initialised again
    a = {r["step"]: r["loss"] for r in records(straight, "log")}
    b = {r["step"]: r["loss"] for r in records(run, "log")}
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    with pytest.raises(UserError, match=r"different config \(train.init: "):
        train(fine_tuning(run, base, new, init=str(tmp_path / "another"), max_steps=6), run)


def test_a_prepared_corpus_must_be_encoded_with_the_init_tokenizer(base, new, tmp_path):
    prepare(DataConfig(train=str(new[0]), tokenizer=str(base / "tokenizer.model")),
            tmp_path / "same", workers=1)
    prepare(DataConfig(train=str(new[0]), vocab_size=200), tmp_path / "other", workers=1)
    for data in ("same", "other"):
        cfg = resolve_run_config(tmp_path / data / "run", {
            "data": {"prepared": str(tmp_path / data)},
            "train": {"init": str(base), "max_steps": 2}})
        if data == "other":
            with pytest.raises(UserError, match="encoded with another tokenizer than --init"):
                train(cfg, tmp_path / "run-other")
            assert not (tmp_path / "run-other").exists()
        else:
            result = train(cfg, tmp_path / "run-same")
            assert result.state.step == 2


def test_cli_fine_tunes_and_the_new_run_translates(base, new, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--init", base, "--checkpoint", "last", "--train", new[0],
                    "--valid", new[1], "--max-steps", "2", "--output", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert load_run_config(run).train.init_checkpoint == "last"
    result = invoke("translate", "--model", run, "--beam", "1", input="The dog sleeps.\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1, result.output
    assert_one_line_error(invoke("train", "--init", base, "--train", new[0], "--vocab-size", "999",
                                 "--output", tmp_path / "other"), 2, "--vocab-size = 999", "300")
    assert_one_line_error(invoke("train", "--init", tmp_path / "nowhere", "--train", new[0],
                                 "--output", tmp_path / "other"),
                          2, "--init", "no such run directory")


def test_a_checkpoint_of_another_shape_is_refused_before_anything_is_written(base, new, tmp_path):
    """--checkpoint FILE of another model: refused before the run directory is made, so the
    retry with the right checkpoint is not refused for what the first attempt left behind."""
    from safetensors.torch import save_file
    tensors, metadata = read_checkpoint(base / "checkpoints" / "best.safetensors")
    name = next(k for k in tensors if k.startswith("model/") and tensors[k].dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"other.safetensors: .* has shape .*--init .*'s config"):
        train(fine_tuning(run, base, new, init_checkpoint=str(other)), run)
    assert not run.exists()
    train(fine_tuning(run, base, new), run)  # the retry
    assert training_checkpoints(run)


@pytest.mark.parametrize("inside", ["init", "train", "checkpoint"])
def test_overwrite_refuses_to_delete_what_the_run_reads(base, new, tmp_path, inside):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(base, out)  # a run directory ...
    shutil.copytree(base, out / "base")  # ... holding the run to fine-tune from
    for suffix in ("en", "de"):
        shutil.copy(f"{new[0]}.{suffix}", out / f"train.{suffix}")
    train_prefix = str(out / "train") if inside == "train" else str(new[0])
    init = str(out / "base") if inside == "init" else str(base)
    checkpoint = str(out / "checkpoints" / "best.safetensors") if inside == "checkpoint" else "best"
    cfg = toy_config(train_prefix, new[1], init=init, init_checkpoint=checkpoint)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    flag = f"--{inside}"
    with pytest.raises(UserError, match=f"{flag} .*: lies inside --output .*--overwrite would"):
        train(cfg, out, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before

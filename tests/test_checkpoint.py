"""Checkpoints: exact round trips, resumable training state, refusal of anything that is not ours,
atomic writes that survive a crash, pruning and resolution of 'best' / 'last'."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import tinytrans.atomic
import tinytrans.checkpoint
from helpers_model import random_sources, source_batch, toy_config, toy_model
from tinytrans.checkpoint import (BEST, CHECKPOINT_DIR, load_model_weights, load_training_state,
                                  prune_checkpoints, read_checkpoint, read_state,
                                  resolve_checkpoint, save_checkpoint, step_name,
                                  training_checkpoints)
from tinytrans.cli import app
from tinytrans.config import build_config, to_toml
from tinytrans.errors import UserError
from tinytrans.loss import label_smoothed_nll
from tinytrans.model import Transformer
from tinytrans.rundir import CONFIG_FILE
from tinytrans.tokenizer import BOS_ID, PAD_ID, Tokenizer

SRC = source_batch(random_sources(41, [5, 3]))
TGT = torch.tensor([[BOS_ID, 5, 6, 7], [BOS_ID, 8, 9, PAD_ID]])


def outputs(model: Transformer) -> torch.Tensor:
    with torch.no_grad():
        return model(SRC, TGT)


def train_steps(model: Transformer, optimizer: torch.optim.Optimizer, steps: int) -> None:
    model.train()
    keep = TGT != PAD_ID
    for _ in range(steps):
        # dropout draws from the RNG, so a resumed run is only exact if the RNG is restored too
        logits = model(SRC, TGT)
        target = torch.roll(TGT, -1, dims=1).masked_fill(~keep, PAD_ID)
        loss, _ = label_smoothed_nll(logits[keep], target[keep], 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def make_optimizer(model: Transformer, fused: bool) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9, fused=fused)


def no_stray_files(directory: Path, expected: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == expected


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False}, {"pre_norm": False}],
                         ids=["tied", "untied", "post-norm"])
def test_weights_round_trip_gives_identical_outputs(tmp_path: Path, overrides: dict):
    model = toy_model(1, **overrides)
    path = tmp_path / "checkpoints" / "best.safetensors"  # the parent is created on save
    save_checkpoint(path, model, None, {"step": 7, "best_bleu": 12.5})
    other = toy_model(2, **overrides)
    assert not torch.equal(outputs(other), outputs(model))
    state = load_model_weights(path, other)
    assert state == {"step": 7, "best_bleu": 12.5}
    assert read_state(path) == state  # the same state, from the header alone
    assert torch.equal(outputs(other), outputs(model))
    for name, tensor in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name
    no_stray_files(path.parent, {"best.safetensors"})


def training_checkpoint(tmp_path: Path) -> Path:
    """A real training checkpoint of a toy model after one update, with state {"step": 1}."""
    model = toy_model(1)
    optimizer = make_optimizer(model, fused=False)
    train_steps(model, optimizer, 1)
    path = tmp_path / step_name(1)
    save_checkpoint(path, model, optimizer, {"step": 1})
    return path


def test_checkpoint_layout(tmp_path: Path):
    path = training_checkpoint(tmp_path)
    tensors, metadata = read_checkpoint(path)
    assert metadata["format"] == "tinytrans" and metadata["version"] == "1"
    assert json.loads(metadata["state"]) == {"step": 1}
    weights = {k.removeprefix("model/") for k in tensors if k.startswith("model/")}
    assert weights == set(toy_model(1).state_dict())
    assert "rng/torch" in tensors and any(k.startswith("optim/") for k in tensors)
    assert json.loads(metadata["param_groups"])[0]["lr"] == 1e-3
    assert step_name(1) == "step-0000001.safetensors"


@pytest.mark.parametrize("fused", [False, True], ids=["adam", "fused-adam"])
def test_training_state_restores_optimizer_moments_and_rng(tmp_path: Path, fused: bool):
    torch.manual_seed(0)
    model = Transformer(toy_config(dropout=0.2))
    optimizer = make_optimizer(model, fused)
    train_steps(model, optimizer, 3)
    path = tmp_path / step_name(3)
    save_checkpoint(path, model, optimizer, {"step": 3, "epoch": 0})
    saved_optim = copy.deepcopy(optimizer.state_dict())  # the live state changes in place
    next_random = torch.rand(4)
    train_steps(model, optimizer, 2)  # the run goes on (with dropout, so with the RNG) ...
    continued = outputs(model)

    torch.manual_seed(12345)  # ... is killed, and a new process starts from a different state
    resumed = Transformer(model.cfg)
    resumed_optimizer = make_optimizer(resumed, fused)
    state = load_training_state(path, resumed, resumed_optimizer)
    assert state == {"step": 3, "epoch": 0}
    assert torch.equal(torch.rand(4), next_random)  # the RNG continues where it was saved

    loaded = resumed_optimizer.state_dict()
    assert loaded["state"].keys() == saved_optim["state"].keys()
    for index, slots in saved_optim["state"].items():
        for slot in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(loaded["state"][index][slot]),
                               torch.as_tensor(slots[slot])), (index, slot)
    group, saved_group = loaded["param_groups"][0], saved_optim["param_groups"][0]
    assert group["lr"] == saved_group["lr"] and tuple(group["betas"]) == tuple(saved_group["betas"])
    assert group["eps"] == saved_group["eps"] and group["params"] == saved_group["params"]

    train_steps(resumed, resumed_optimizer, 2)
    assert torch.equal(outputs(resumed), continued)  # bit-identical continuation


def test_weights_only_checkpoint_cannot_resume_training(tmp_path: Path):
    model = toy_model(1)
    path = tmp_path / BEST
    save_checkpoint(path, model, None, {"step": 1})
    with pytest.raises(UserError, match="weights only"):
        load_training_state(path, toy_model(2), make_optimizer(model, fused=False))


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = toy_model(1)
    optimizer = make_optimizer(model, fused=False)
    train_steps(model, optimizer, 1)
    path = tmp_path / step_name(1)
    save_checkpoint(path, model, optimizer, {"step": 1})

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    resumed = toy_model(2)
    load_training_state(path, resumed, make_optimizer(resumed, fused=False))
    assert torch.equal(outputs(resumed), outputs(model))


# ---------------------------------------------------------------------------------------------
# What is refused


def test_pickle_posing_as_safetensors_is_refused(tmp_path: Path):
    model = toy_model(1)
    path = tmp_path / "step-0000001.safetensors"
    torch.save({f"model/{k}": v for k, v in model.state_dict().items()}, path)
    with pytest.raises(UserError, match="step-0000001.safetensors"):
        load_model_weights(path, toy_model(2))
    legacy = tmp_path / "legacy.safetensors"  # the pre-zip pickle format, too
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError):
        load_model_weights(legacy, toy_model(2))


@pytest.mark.parametrize("content",
                         [b"", b"hello, I am not a checkpoint\n", b"\x00" * 8, b"\xff" * 64],
                         ids=["empty", "text", "zero-header", "huge-header"])
def test_garbage_files_are_refused(tmp_path: Path, content: bytes):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match="model.safetensors"):
        load_model_weights(path, toy_model(1))
    with pytest.raises(UserError, match="model.safetensors"):
        read_state(path)


def test_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_model_weights(tmp_path / "nope.safetensors", toy_model(1))
    with pytest.raises(UserError, match="no such checkpoint"):
        read_state(tmp_path / "nope.safetensors")
    with pytest.raises(UserError):
        load_model_weights(tmp_path, toy_model(1))  # a directory is not a checkpoint either


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"framework": "tinytrans"}],
                         ids=["no-metadata", "other-format", "wrong-key"])
def test_safetensors_without_tinytrans_metadata_is_refused(tmp_path: Path, metadata):
    model = toy_model(1)
    path = tmp_path / "foreign.safetensors"
    # the right tensor names, even: only the metadata says it is a tinytrans checkpoint
    save_file({f"model/{k}": v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata=metadata)
    with pytest.raises(UserError, match="not a tinytrans checkpoint"):
        load_model_weights(path, toy_model(2))
    with pytest.raises(UserError, match="not a tinytrans checkpoint"):
        read_state(path)


def test_other_format_version_is_refused(tmp_path: Path):
    model = toy_model(1)
    path = tmp_path / "future.safetensors"
    save_file({f"model/{k}": v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "tinytrans", "version": "99", "state": "{}"})
    with pytest.raises(UserError, match="version"):
        load_model_weights(path, toy_model(2))


def test_weights_of_another_shape_are_refused(tmp_path: Path):
    path = tmp_path / BEST
    save_checkpoint(path, toy_model(1, d_model=32), None, {})
    target = toy_model(2, d_model=16)
    before = outputs(target)
    with pytest.raises(UserError, match=r"has shape \(.*\), the config needs \("):
        load_model_weights(path, target)
    assert torch.equal(outputs(target), before)  # nothing half-loaded


@pytest.mark.parametrize("overrides", [{"n_decoder_layers": 3}, {"n_encoder_layers": 1},
                                       {"tie_embeddings": False}],
                         ids=["more-layers", "fewer-layers", "untied"])
def test_weights_of_another_architecture_are_refused(tmp_path: Path, overrides: dict):
    path = tmp_path / BEST
    save_checkpoint(path, toy_model(1), None, {})
    with pytest.raises(UserError, match="missing|unexpected") as error:
        load_model_weights(path, toy_model(2, **overrides))
    assert "layers" in str(error.value) or "embedding" in str(error.value)  # it names the weights


def test_other_vocabulary_size_is_refused(tmp_path: Path):
    path = tmp_path / BEST
    save_checkpoint(path, toy_model(1), None, {})
    with pytest.raises(UserError, match="embedding.weight.*shape"):
        load_model_weights(path, toy_model(2, src_vocab_size=24, tgt_vocab_size=24))


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01], ids=["last-bytes", "half", "mid-header"])
def test_truncated_file_is_refused(tmp_path: Path, keep: float):
    model = toy_model(1)
    optimizer = make_optimizer(model, fused=False)
    train_steps(model, optimizer, 1)
    path = tmp_path / step_name(1)
    save_checkpoint(path, model, optimizer, {"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UserError, match=step_name(1)):
        load_model_weights(path, toy_model(2))
    with pytest.raises(UserError):
        load_training_state(path, toy_model(2), make_optimizer(model, fused=False))


# ---------------------------------------------------------------------------------------------
# Cut off or forged metadata and optimizer state: one line naming the file and the key, and
# nothing restored half-way


def forged(tmp_path: Path, metadata: dict[str, str | None] | None = None,
           tensors: dict[str, torch.Tensor | None] | None = None) -> Path:
    """A real training checkpoint, rewritten with some metadata entries and tensors replaced
    (None: removed)."""
    path = training_checkpoint(tmp_path)
    found_tensors, found_metadata = read_checkpoint(path)
    new_metadata = {**found_metadata, **(metadata or {})}
    new_tensors = {**found_tensors, **(tensors or {})}
    save_file({k: v.contiguous() for k, v in new_tensors.items() if v is not None}, str(path),
              metadata={k: v for k, v in new_metadata.items() if v is not None})
    return path


def assert_one_line(error: pytest.ExceptionInfo, path: Path) -> None:
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


BAD_STATES = {
    "cut-off": ('{"step": 1, "ep', "metadata 'state' is not valid JSON"),
    "empty": ("", "metadata 'state' is not valid JSON"),
    "nested-too-deep": ("[" * 100_000, "metadata 'state' is not valid JSON"),
    "array": ("[1, 2]", "metadata 'state' must be a JSON object, not array"),
    "text": ('"step 1"', "metadata 'state' must be a JSON object, not string"),
    "null": ("null", "metadata 'state' must be a JSON object, not null"),
}


@pytest.mark.parametrize("case", BAD_STATES)
def test_a_bad_state_is_refused_by_every_reader(tmp_path: Path, case: str):
    text, message = BAD_STATES[case]
    path = forged(tmp_path, metadata={"state": text})
    model = toy_model(2)
    before = outputs(model)
    for read in (read_state, lambda p: load_model_weights(p, model),
                 lambda p: load_training_state(p, model, make_optimizer(model, fused=False))):
        with pytest.raises(UserError, match=message) as error:
            read(path)
        assert_one_line(error, path)
    assert torch.equal(outputs(model), before)  # no weights loaded before the state was read


BAD_OPTIMIZER_STATES = {
    "groups-cut-off": ({"param_groups": '[{"lr": 0.001, "par'}, {},
                       "metadata 'param_groups' is not valid JSON"),
    "groups-object": ({"param_groups": '{"lr": 0.001}'}, {},
                      "metadata 'param_groups' must be a JSON array, not object"),
    "groups-of-numbers": ({"param_groups": "[1, 2]"}, {}, "'param_groups' must be a list of objects"),
    "params-as-text": ({"param_groups": '[{"lr": 0.001, "params": "all"}]'}, {},
                       "'param_groups' must be a list of objects"),
    "too-few-params": ({"param_groups": '[{"lr": 0.001, "params": [0, 1]}]'}, {},
                       "'param_groups' has groups of \\[2\\] parameters"),
    "betas-as-text": ("betas", {}, r"'param_groups\[0\].betas' is 'fast'"),
    "params-out-of-order": ("params", {}, "must number the parameters 0 to"),
    "no-index": ({}, {"optim/x/exp_avg": torch.zeros(3)}, "'optim/x/exp_avg' is not named optim/INDEX/SLOT"),
    "no-slot": ({}, {"optim/0": torch.zeros(3)}, "'optim/0' is not named optim/INDEX/SLOT"),
    "too-deep": ({}, {"optim/0/exp_avg/x": torch.zeros(3)}, "is not named optim/INDEX/SLOT"),
    "no-such-parameter": ({}, {"optim/999/exp_avg": torch.zeros(3)}, "is for parameter 999"),
    "moment-of-another-shape": ({}, {"optim/0/exp_avg": torch.zeros(7, 3)},
                                "'optim/0/exp_avg' has shape \\(7, 3\\)"),
    "moment-missing": ({}, {"optim/0/exp_avg_sq": None}, "slots differ between parameters"),
    "rng-of-another-shape": ({}, {"rng/torch": torch.zeros(10, dtype=torch.uint8)},
                             "'rng/torch' is not a random generator state"),
    "rng-as-floats": ({}, {"rng/torch": torch.zeros(5056)}, "'rng/torch' is not a random generator"),
}


def edited_groups(what: str) -> str:
    """The param_groups of forged()'s optimizer, with one thing changed."""
    model = toy_model(1)
    groups = make_optimizer(model, fused=False).state_dict()["param_groups"]
    if what == "betas":
        groups[0]["betas"] = "fast"
    else:
        groups[0]["params"] = groups[0]["params"][::-1]
    return json.dumps(groups)


@pytest.mark.parametrize("case", BAD_OPTIMIZER_STATES)
def test_a_bad_optimizer_or_rng_state_is_refused_and_restores_nothing(tmp_path: Path, case: str):
    metadata, tensors, message = BAD_OPTIMIZER_STATES[case]
    if isinstance(metadata, str):
        metadata = {"param_groups": edited_groups(metadata)}
    path = forged(tmp_path, metadata, tensors)
    model = toy_model(2)
    optimizer = make_optimizer(model, fused=False)
    train_steps(model, optimizer, 1)
    before, moments = outputs(model), copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    with pytest.raises(UserError, match=message) as error:
        load_training_state(path, model, optimizer)
    assert_one_line(error, path)
    assert torch.equal(outputs(model), before) and torch.equal(torch.get_rng_state(), rng)
    after = optimizer.state_dict()
    assert after["param_groups"] == moments["param_groups"]
    assert all(torch.equal(after["state"][i]["exp_avg"], slots["exp_avg"])
               for i, slots in moments["state"].items())
    assert load_model_weights(path, model) == {"step": 1}  # the weights alone are fine


def test_cli_translate_names_a_checkpoint_with_bad_metadata(tmp_path: Path,
                                                            small_tokenizer_prefix: Path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(f"{small_tokenizer_prefix}.model", run / "tokenizer.model")
    vocab = Tokenizer.load(run / "tokenizer.model").vocab_size
    cfg = build_config({"model": {**TINY, "src_vocab_size": vocab, "tgt_vocab_size": vocab},
                        "data": {"vocab_size": vocab}}, "test")
    (run / CONFIG_FILE).write_text(to_toml(cfg))
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, Transformer(cfg.model), None, {"step": 1})
    tensors, metadata = read_checkpoint(path)
    save_file(tensors, str(path), metadata={**metadata, "state": '{"step": 1, "be'})
    result = CliRunner().invoke(app, ["translate", "--model", str(run), "--checkpoint", str(path),
                                      "--device", "cpu", "--precision", "fp32"],
                                input="A man.\n")
    assert result.exit_code == 2, result.output
    assert f"{path}: metadata 'state' is not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1}


def test_only_well_named_step_files_are_checkpoints(tmp_path: Path):
    """A file of the checkpoint directory named step-<not ASCII digits> or a folder named like a
    checkpoint is not one (it used to crash the numeric sort, or pruning)."""
    directory = make_run(tmp_path, [1, 2], best=False)
    (directory / "step-\u00b2.safetensors").write_bytes(b"x")  # "²".isdigit() is True
    (directory / "step-\u0663.safetensors").write_bytes(b"x")  # an Arabic-Indic 3
    (directory / step_name(9)).mkdir()
    assert [p.name for p in training_checkpoints(tmp_path)] == [step_name(1), step_name(2)]
    prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in training_checkpoints(tmp_path)] == [step_name(2)]
    assert resolve_checkpoint(tmp_path, "last").name == step_name(2)


# ---------------------------------------------------------------------------------------------
# Atomic writes: a crash mid-write leaves the previous checkpoint intact


class Crash(Exception):
    pass


def half_written_save_file(tensors, filename, metadata=None):
    """Write the first half of the real bytes, then die like a full disk or a kill would."""
    save_file(tensors, filename, metadata=metadata)
    data = Path(filename).read_bytes()
    Path(filename).write_bytes(data[: len(data) // 2])
    raise Crash("disk full")


def test_crash_during_write_keeps_previous_checkpoint(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    directory = tmp_path / CHECKPOINT_DIR
    path = directory / BEST
    old_model = toy_model(1)
    save_checkpoint(path, old_model, None, {"step": 100})
    old_bytes = path.read_bytes()

    monkeypatch.setattr(tinytrans.checkpoint, "save_file", half_written_save_file)
    new_model = toy_model(2)
    with pytest.raises(Crash):
        save_checkpoint(path, new_model, None, {"step": 200})

    assert path.read_bytes() == old_bytes
    reloaded = toy_model(3)
    assert load_model_weights(path, reloaded) == {"step": 100}
    assert torch.equal(outputs(reloaded), outputs(old_model))
    no_stray_files(directory, {BEST})  # the half-written temporary file is gone


def test_crash_during_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tinytrans.checkpoint, "save_file", half_written_save_file)
    with pytest.raises(Crash):
        save_checkpoint(tmp_path / step_name(5), toy_model(1), None, {"step": 5})
    no_stray_files(tmp_path, set())


def test_crash_at_rename_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / BEST
    save_checkpoint(path, toy_model(1), None, {"step": 1})

    def failing_replace(src, dst):
        raise Crash("rename failed")

    monkeypatch.setattr(tinytrans.atomic.os, "replace", failing_replace)
    with pytest.raises(Crash):
        save_checkpoint(path, toy_model(2), None, {"step": 2})
    monkeypatch.undo()
    assert load_model_weights(path, toy_model(3)) == {"step": 1}
    no_stray_files(tmp_path, {BEST})


def test_successful_overwrite_replaces_the_file(tmp_path: Path):
    path = tmp_path / BEST
    save_checkpoint(path, toy_model(1), None, {"step": 1})
    newer = toy_model(2)
    save_checkpoint(path, newer, None, {"step": 2})
    reloaded = toy_model(3)
    assert load_model_weights(path, reloaded) == {"step": 2}
    assert torch.equal(outputs(reloaded), outputs(newer))
    no_stray_files(tmp_path, {BEST})


def test_temporary_file_left_by_a_killed_run_is_not_a_checkpoint(tmp_path: Path):
    """A kill -9 skips the cleanup; the leftover must not be mistaken for the newest step."""
    directory = tmp_path / CHECKPOINT_DIR
    save_checkpoint(directory / step_name(10), toy_model(1), None, {"step": 10})
    (directory / f".{step_name(20)}.tmp-{os.getpid() + 1}").write_bytes(b"half a checkpoint")
    assert training_checkpoints(tmp_path) == [directory / step_name(10)]
    assert resolve_checkpoint(tmp_path, "last") == directory / step_name(10)


# ---------------------------------------------------------------------------------------------
# Pruning and resolving


def make_run(tmp_path: Path, steps: list[int], best: bool) -> Path:
    directory = tmp_path / CHECKPOINT_DIR
    directory.mkdir(parents=True)
    for step in steps:  # pruning and resolving only look at names: empty files will do
        (directory / step_name(step)).write_bytes(b"")
    if best:
        (directory / BEST).write_bytes(b"")
    return directory


@pytest.mark.parametrize("keep_last", [1, 2, 3])
def test_prune_keeps_the_last_k(tmp_path: Path, keep_last: int):
    steps = [1000, 5, 10, 9, 200]  # created out of order; 9 < 10 numerically, not just as text
    directory = make_run(tmp_path, steps, best=True)
    prune_checkpoints(tmp_path, keep_last)
    kept = sorted(steps)[-keep_last:]
    assert training_checkpoints(tmp_path) == [directory / step_name(s) for s in kept]
    assert (directory / BEST).is_file()  # the best weights are never pruned


def test_order_is_numeric_beyond_seven_digits(tmp_path: Path):
    directory = make_run(tmp_path, [9_999_999, 10_000_000], best=False)
    assert resolve_checkpoint(tmp_path, "last") == directory / step_name(10_000_000)
    prune_checkpoints(tmp_path, 1)
    assert training_checkpoints(tmp_path) == [directory / step_name(10_000_000)]


def test_prune_with_fewer_checkpoints_than_k_keeps_all(tmp_path: Path):
    directory = make_run(tmp_path, [3, 4], best=False)
    prune_checkpoints(tmp_path, 5)
    assert training_checkpoints(tmp_path) == [directory / step_name(3), directory / step_name(4)]
    prune_checkpoints(tmp_path / "elsewhere", 2)  # no checkpoint directory at all: nothing to do


def test_prune_real_checkpoints_leaves_the_newest_loadable(tmp_path: Path):
    directory = tmp_path / CHECKPOINT_DIR
    models = {step: toy_model(step) for step in (1, 2, 3)}
    for step, model in models.items():
        save_checkpoint(directory / step_name(step), model, None, {"step": step})
        prune_checkpoints(tmp_path, 2)
    assert [p.name for p in training_checkpoints(tmp_path)] == [step_name(2), step_name(3)]
    reloaded = toy_model(9)
    assert load_model_weights(resolve_checkpoint(tmp_path, "last"), reloaded) == {"step": 3}
    assert torch.equal(outputs(reloaded), outputs(models[3]))


def test_resolve_best_last_and_fallback(tmp_path: Path):
    directory = make_run(tmp_path, [100, 300, 200], best=True)
    assert resolve_checkpoint(tmp_path, "last") == directory / step_name(300)
    assert resolve_checkpoint(tmp_path, "best") == directory / BEST
    (directory / BEST).unlink()
    assert resolve_checkpoint(tmp_path, "best") == directory / step_name(300)  # no validation yet
    explicit = tmp_path / "somewhere" / "else.safetensors"
    assert resolve_checkpoint(tmp_path, str(explicit)) == explicit


def test_resolve_without_checkpoints_is_a_user_error(tmp_path: Path):
    for which in ("last", "best"):
        with pytest.raises(UserError, match="no checkpoints"):
            resolve_checkpoint(tmp_path, which)
    make_run(tmp_path, [], best=False)
    with pytest.raises(UserError, match="no checkpoints"):
        resolve_checkpoint(tmp_path, "last")


@pytest.mark.parametrize("recorded, outcome", [
    (None, None),  # written before checkpoints recorded their tokenizers
    ({"tokenizer.model": "ab" * 32}, {"tokenizer.model": "ab" * 32}),
    (["tokenizer.model"], "'tokenizers'"),  # not an object
    ({"tokenizer.model": 7}, "must map file names to hashes"),
])
def test_the_tokenizers_a_checkpoint_recorded_are_read_and_checked(tmp_path, recorded, outcome):
    from tinytrans.checkpoint import checkpoint_metadata, checkpoint_tokenizers
    metadata = checkpoint_metadata({"step": 1})
    if recorded is not None:
        metadata["tokenizers"] = json.dumps(recorded)
    path = tmp_path / "c.safetensors"
    save_file({"model/w": torch.zeros(2)}, str(path), metadata)
    if isinstance(outcome, str):
        with pytest.raises(UserError, match=outcome):
            checkpoint_tokenizers(path)
    else:
        assert checkpoint_tokenizers(path) == outcome

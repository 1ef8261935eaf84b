"""Checkpoint averaging: the mean of the weights, refused across configs, loadable as 'average'."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers_model import toy_model
from tinytrans.average import AVERAGE, average_checkpoints, average_last, model_tensors
from tinytrans.cli import app
from tinytrans.checkpoint import (CHECKPOINT_DIR, load_model_weights, save_checkpoint,
                                  training_checkpoints)
from tinytrans.errors import UserError
from tinytrans.config import SearchConfig
from tinytrans.train import train
from tinytrans.translate import Translator
from toyrun import toy_config, write_corpus


def saved(tmp_path: Path, name: str, model: torch.nn.Module, with_optimizer: bool = False) -> Path:
    """A checkpoint of `model`; with an optimizer that has taken one step, like a training one."""
    optimizer = None
    if with_optimizer:
        optimizer = torch.optim.Adam(model.parameters())
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
    path = tmp_path / name
    save_checkpoint(path, model, optimizer, {"step": 1})
    return path


def test_the_average_of_identical_checkpoints_equals_each(tmp_path):
    path = saved(tmp_path, "a.safetensors", toy_model(0), with_optimizer=True)
    out = average_checkpoints([path, path, path], tmp_path / "avg.safetensors")
    original, averaged = model_tensors(path), model_tensors(out)
    assert averaged.keys() == original.keys()
    for name, tensor in original.items():
        # (x + x + x) / 3 in fp32 may be one rounding away from x, never more
        assert torch.allclose(averaged[name], tensor, rtol=1e-6, atol=0), name


def test_the_average_of_two_is_their_mean_and_loads_into_the_model(tmp_path):
    a, b = toy_model(0), toy_model(1)
    paths = [saved(tmp_path, "a.safetensors", a, with_optimizer=True),
             saved(tmp_path, "b.safetensors", b)]
    out = average_checkpoints(paths, tmp_path / "avg.safetensors")
    model = toy_model(2)
    state = load_model_weights(out, model)  # the same loader as translate's
    assert state == {"averaged": ["a.safetensors", "b.safetensors"]}
    wa, wb = a.state_dict(), b.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor, (wa[name] + wb[name]) / 2, atol=1e-7), name
    assert not any(key.startswith("optim/") for key in model_tensors(out))


def test_bf16_weights_are_summed_in_fp32_and_stay_bf16(tmp_path):
    a, b = toy_model(0).to(torch.bfloat16), toy_model(1).to(torch.bfloat16)
    paths = [saved(tmp_path, "a.safetensors", a), saved(tmp_path, "b.safetensors", b)]
    averaged = model_tensors(average_checkpoints(paths, tmp_path / "avg.safetensors"))
    for name, ta in a.state_dict().items():
        expected = ((ta.float() + b.state_dict()[name].float()) / 2).to(torch.bfloat16)
        assert averaged[name].dtype == torch.bfloat16 and torch.equal(averaged[name], expected)


@pytest.mark.parametrize("other, message", [
    ({"d_ff": 48}, "has shape"),  # same names, other sizes
    ({"n_decoder_layers": 3}, "not the same model"),  # other names
])
def test_checkpoints_of_another_config_are_refused(tmp_path, other, message):
    paths = [saved(tmp_path, "a.safetensors", toy_model(0)),
             saved(tmp_path, "b.safetensors", toy_model(0, **other))]
    with pytest.raises(UserError, match=message) as error:
        average_checkpoints(paths, tmp_path / "avg.safetensors")
    assert "b.safetensors" in str(error.value) and "another config" in str(error.value)
    assert not (tmp_path / "avg.safetensors").exists()


def test_nothing_to_average_is_refused(tmp_path):
    with pytest.raises(UserError, match="no checkpoints"):
        average_checkpoints([], tmp_path / "avg.safetensors")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A toy run that keeps three step checkpoints (10, 20, 30)."""
    root = tmp_path_factory.mktemp("avg")
    train(toy_config(write_corpus(root / "train", 200), None, max_steps=30, checkpoint_every=10,
                     validate_every=1000, keep_last=3), root / "run")
    return root / "run"


def test_average_last_writes_the_mean_of_the_newest_checkpoints(run_dir):
    steps = training_checkpoints(run_dir)
    assert len(steps) == 3
    out, n = average_last(run_dir, 2)
    assert n == 2 and out == run_dir / CHECKPOINT_DIR / AVERAGE
    newer, newest = model_tensors(steps[1]), model_tensors(steps[2])
    averaged = model_tensors(out)
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (newer[name] + newest[name]) / 2, atol=1e-7), name
    assert not torch.equal(newer["embedding.weight"], newest["embedding.weight"])  # not vacuous


def test_checkpoint_average_translates(run_dir):
    average_last(run_dir, 3)
    translator = Translator(run_dir, checkpoint="average")
    assert translator.checkpoint == run_dir / CHECKPOINT_DIR / AVERAGE
    lines = ["The man buys a red car.", ""]
    out = [t.text for t in translator.translate(lines, SearchConfig(beam=2))]
    assert out[0] and out[1] == ""


def test_average_without_a_count_takes_every_checkpoint_the_run_keeps(run_dir):
    """The README's commands in order: train (keep_last 3 here), then 'tinytrans average'
    without --last. The default comes from the run, so it never asks for more than it keeps."""
    steps = training_checkpoints(run_dir)
    out, n = average_last(run_dir)
    assert n == 3
    tensors = [model_tensors(step) for step in steps]
    for name, tensor in model_tensors(out).items():
        assert torch.allclose(tensor, sum(t[name] for t in tensors) / 3, atol=1e-6), name


def test_the_cli_average_default_works_after_training(run_dir):
    result = CliRunner().invoke(app, ["average", "--model", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "the last 3 checkpoints" in result.output


@pytest.mark.parametrize("n, message", [(0, "at least 1"), (5, "holds 3")])
def test_average_last_refuses_impossible_counts(run_dir, n, message):
    with pytest.raises(UserError, match=message):
        average_last(run_dir, n)


def test_checkpoint_average_before_averaging_says_how_to_make_one(tmp_path, run_dir):
    average = run_dir / CHECKPOINT_DIR / AVERAGE
    average.unlink(missing_ok=True)
    with pytest.raises(UserError, match="tinytrans average"):
        Translator(run_dir, checkpoint="average")

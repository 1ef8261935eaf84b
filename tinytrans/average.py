"""Checkpoint averaging: one set of weights, the mean of a run's last step checkpoints.

Late in training the step checkpoints scatter around one region of weight space; their mean tends
to lie nearer its centre than any of them and usually translates better, at no training cost
(Vaswani et al. 2017 average the last 5 checkpoints of a base model, 20 of a big one).

The result, `checkpoints/average.safetensors`, holds model weights only (no optimizer state, so
training cannot resume from it) and loads like `best`: `--checkpoint average`. Its metadata names
the checkpoints that went into it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from tinytrans.atomic import atomic_write
from tinytrans.checkpoint import (CHECKPOINT_DIR, check_layout, checkpoint_metadata,
                                  checkpoint_tokenizers, read_checkpoint, resolve_checkpoint,
                                  training_checkpoints)
from tinytrans.errors import UserError
from tinytrans.rundir import load_run_config

AVERAGE = "average.safetensors"
MODEL_PREFIX = "model/"  # checkpoint.py stores the model's tensors under this prefix


def average_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / AVERAGE


def average_last(run_dir: Path, n: int | None = None) -> tuple[Path, int]:
    """Average the run's last `n` step checkpoints into checkpoints/average.safetensors; return
    the file and how many went in. Without `n`, the run's own number: its train.average_last,
    else every step checkpoint it keeps (train.keep_last), as many as there are."""
    found = training_checkpoints(Path(run_dir))
    if n is None:
        t = load_run_config(Path(run_dir)).train
        n = min(t.average_last or t.keep_last, len(found)) or 1
    if n < 1:
        raise UserError(f"--last: {n} must be at least 1")
    if len(found) < n:
        raise UserError(f"{run_dir}: cannot average the last {n} checkpoints, "
                        f"{Path(run_dir) / CHECKPOINT_DIR} holds {len(found)}")
    return average_checkpoints(found[-n:], average_path(run_dir)), n


def average_checkpoints(paths: list[Path], output: Path) -> Path:
    """Write the element-wise mean of the model weights in `paths` to `output`; return `output`.

    Sums are accumulated in fp32 (bf16 has 8 bits of mantissa: summing ten checkpoints in it
    would lose the small differences that averaging is about) and the mean is cast back to each
    tensor's own dtype. Checkpoints of another config (other names or shapes) are refused.
    """
    if not paths:
        raise UserError("no checkpoints to average")
    first = model_tensors(paths[0])
    total = {name: t.to(torch.float32) for name, t in first.items()}
    for path in paths[1:]:
        tensors = model_tensors(path)
        check_layout(path, tensors, first, str(paths[0]))
        for name, tensor in tensors.items():
            total[name] += tensor.to(torch.float32)
    mean = {MODEL_PREFIX + name: (t / len(paths)).to(first[name].dtype).contiguous()
            for name, t in total.items()}
    state = {"averaged": [Path(p).name for p in paths]}
    metadata = checkpoint_metadata(state, checkpoint_tokenizers(paths[-1]))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: save_file(mean, str(tmp), metadata=metadata))
    return output


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The model's weights in a checkpoint, by parameter name (optimizer and RNG state left out)."""
    tensors, _ = read_checkpoint(Path(path))
    return {name.removeprefix(MODEL_PREFIX): tensor for name, tensor in tensors.items()
            if name.startswith(MODEL_PREFIX)}


def resolve_with_average(run_dir: Path, which: str) -> Path:
    """resolve_checkpoint, plus 'average' for checkpoints/average.safetensors."""
    if which != "average":
        return resolve_checkpoint(Path(run_dir), which)
    path = average_path(run_dir)
    if not path.is_file():
        raise UserError(f"{run_dir}: no averaged checkpoint ({path}); "
                        f"make one with 'tinytrans average --model {run_dir} --last N'")
    return path

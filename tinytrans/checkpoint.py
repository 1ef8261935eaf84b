"""Checkpoints: safetensors weights plus JSON state, written atomically, loaded without pickle.

A training checkpoint `checkpoints/step-0001000.safetensors` holds the model's tensors under
`model/`, Adam's moments under `optim/`, the random number generator under `rng/`, and the JSON
training state (step, epoch, data position, best score) in the safetensors header's metadata.
`checkpoints/best.safetensors` holds only the weights of the best validation BLEU so far.
Nothing here ever calls pickle, so a checkpoint cannot run code when it is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tinytrans.atomic import atomic_write
from tinytrans.errors import UserError

FORMAT = "tinytrans"
FORMAT_VERSION = "1"
CHECKPOINT_DIR = "checkpoints"
BEST = "best.safetensors"


def step_name(step: int) -> str:
    return f"step-{step:07d}.safetensors"


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any]) -> None:
    """Write model (and optimizer, RNG) tensors with `state` as metadata, atomically."""
    tensors = {f"model/{name}": t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "state": json.dumps(state)}
    if optimizer is not None:
        optim = optimizer.state_dict()
        for index, slots in optim["state"].items():
            for slot, value in slots.items():
                tensors[f"optim/{index}/{slot}"] = torch.as_tensor(value).contiguous().cpu()
        metadata["param_groups"] = json.dumps(optim["param_groups"])
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng/cuda"] = torch.cuda.get_rng_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_checkpoint(path: Path,
                    tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (none with `tensors=False`) and the metadata of a tinytrans checkpoint;
    anything else is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = _checked_metadata(path, handle.metadata())
            loaded = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}
    except UserError:
        raise
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path}: not a readable safetensors checkpoint ({_first_line(error)})") from None
    return loaded, metadata


def read_state(path: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint, read from its header alone."""
    return json.loads(read_checkpoint(path, tensors=False)[1].get("state", "{}"))


def _checked_metadata(path: Path, metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a tinytrans checkpoint (no tinytrans metadata)")
    if metadata.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {metadata.get('version')!r}, "
                        f"this tinytrans reads version {FORMAT_VERSION}")
    return metadata


def load_model_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into `model` (names and shapes must match exactly); return the JSON state."""
    tensors, metadata = read_checkpoint(path)
    _copy_weights(path, tensors, model)
    return json.loads(metadata.get("state", "{}"))


def _copy_weights(path: Path, tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    weights = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    check_layout(path, weights, model.state_dict(), "the config")
    model.load_state_dict(weights)


def check_layout(path: Path, found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                 against: str) -> None:
    """`found` must have the tensor names and shapes of `expected` (those of `against`: the
    config, or another checkpoint), or a UserError names the first difference."""
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    if missing or unexpected:
        raise UserError(f"{path}: not the same model as {against} (missing "
                        f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}): another config")
    for name, tensor in found.items():
        if tensor.shape != expected[name].shape:
            raise UserError(f"{path}: '{name}' has shape {tuple(tensor.shape)}, {against} needs "
                            f"{tuple(expected[name].shape)}: another config")


def load_training_state(path: Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG from a training checkpoint; return its JSON state."""
    tensors, metadata = read_checkpoint(path)
    _copy_weights(path, tensors, model)
    if "param_groups" not in metadata or "rng/torch" not in tensors:
        raise UserError(f"{path}: holds weights only, not a training state to resume from")
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optim/"):
            _, index, slot = key.split("/")
            slots.setdefault(int(index), {})[slot] = tensor
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads(metadata["param_groups"])})
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return json.loads(metadata.get("state", "{}"))


def training_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    found = [p for p in (run_dir / CHECKPOINT_DIR).glob("step-*.safetensors")
             if p.stem.removeprefix("step-").isdigit()]
    return sorted(found, key=lambda path: int(path.stem.removeprefix("step-")))  # numeric order


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for path in training_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        path.unlink(missing_ok=True)


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """'best', 'last' or a path -> the checkpoint file to load."""
    if which == "last":
        found = training_checkpoints(run_dir)
        if not found:
            raise UserError(f"{run_dir}: no checkpoints in {run_dir / CHECKPOINT_DIR}")
        return found[-1]
    if which == "best":
        best = run_dir / CHECKPOINT_DIR / BEST
        if best.is_file():
            return best
        return resolve_checkpoint(run_dir, "last")  # no validation yet: the newest is the best we have
    return Path(which)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

"""Checkpoints: safetensors weights plus JSON state, written atomically, loaded without pickle.

A training checkpoint `checkpoints/step-0001000.safetensors` holds the model's tensors under
`model/`, Adam's moments under `optim/`, the random number generator under `rng/`, and the JSON
training state (TrainState: step, epoch, data position, best score) in the safetensors header's
metadata.
`checkpoints/best.safetensors` holds only the weights of the best validation so far (by
train.best_metric: the highest BLEU, or the lowest loss).
Nothing here ever calls pickle, so a checkpoint cannot run code when it is loaded.

A checkpoint is a file like any other a user hands in: cut off, edited or made by something else.
Every JSON value of its metadata is read through `_json_metadata`, every tensor name and shape is
checked, and all of it before the model or the optimizer is changed, so a bad checkpoint is a
one-line UserError naming the file and the key, and loads nothing half-way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
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


# checkpoints written before these fields were renamed still resume
OLD_STATE_NAMES = {"stale": "validations_since_best", "regrouped": "update_sizes"}


FLOAT_FIELDS = ("elapsed", "best_bleu", "best_loss")  # of TrainState; the others are counts


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint, so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # the next batch of this epoch to train on
    elapsed: float = 0.0  # seconds of training so far, over all resumptions
    best_bleu: float = -1.0  # the best checkpoint's BLEU (-1: none yet)
    best_loss: float = -1.0  # and its loss (-1: none yet, or a run saved before this field)
    best_step: int = 0
    validations_since_best: int = 0  # what --patience counts
    # (batch, batches per update) from which this epoch's batches were shared among processes:
    # see distributed.epoch_plan; empty until training starts
    update_sizes: list[list[int]] = field(default_factory=list)

    @classmethod
    def from_saved(cls, values: dict[str, Any], path: Path) -> TrainState:
        """The state a checkpoint's metadata holds, every field checked: the file is untrusted
        (a forged or damaged one must not resume a run at step -5 or crash it later)."""
        values = {OLD_STATE_NAMES.get(key, key): value for key, value in values.items()}
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise UserError(f"{path}: unknown training state field '{key}'")
            if not _valid_state_value(key, value):
                raise UserError(f"{path}: training state field '{key}' = {value!r} is not valid")
        return cls(**{k: float(v) if k in FLOAT_FIELDS else v for k, v in values.items()})


def _valid_state_value(key: str, value: Any) -> bool:
    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0
    if key == "update_sizes":
        return isinstance(value, list) and all(
            isinstance(pair, list) and len(pair) == 2 and all(count(x) for x in pair) and pair[1] >= 1
            for pair in value)
    if key in FLOAT_FIELDS:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        try:  # a JSON integer of 400 digits is no float
            # elapsed: seconds; a best score: -1 (none yet) or a real BLEU or loss
            return math.isfinite(float(value)) and (value >= 0 or (key != "elapsed" and value == -1))
        except OverflowError:
            return False
    return count(value)


def read_training_state(path: Path) -> TrainState:
    """The training state a checkpoint holds, checked."""
    return TrainState.from_saved(read_state(path), path)


def checkpoint_metadata(state: dict[str, Any],
                        tokenizers: dict[str, str] | None = None) -> dict[str, str]:
    """The safetensors header metadata that makes a file a tinytrans checkpoint, with `state`,
    and the SHA-256 of the tokenizer files its model was trained with (by file name), so that a
    run directory whose tokenizer was swapped is refused where it is loaded."""
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "state": json.dumps(state)}
    if tokenizers is not None:
        metadata["tokenizers"] = json.dumps(tokenizers, sort_keys=True)
    return metadata


def checkpoint_tokenizers(path: Path) -> dict[str, str] | None:
    """The tokenizer files' SHA-256 a checkpoint recorded (None: written before they were)."""
    metadata = read_checkpoint(path, tensors=False)[1]
    if "tokenizers" not in metadata:
        return None
    recorded = _json_metadata(path, metadata, "tokenizers", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()):
        raise UserError(f"{path}: 'tokenizers' in its metadata must map file names to hashes")
    return recorded


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], tokenizers: dict[str, str] | None = None) -> None:
    """Write model (and optimizer, RNG) tensors with `state` (and the tokenizers' hashes) as
    metadata, atomically."""
    tensors = {f"model/{name}": t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    metadata = checkpoint_metadata(state, tokenizers)
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


def model_shapes(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint as empty tensors of their shapes (on the meta device),
    read from its header alone: enough to check it fits a model before anything is written."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key.removeprefix("model/"): torch.empty(handle.get_slice(key).get_shape(),
                                                            device="meta")
                    for key in handle.keys() if key.startswith("model/")}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"{path}: not a readable safetensors checkpoint ({_first_line(error)})") from None


def read_state(path: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint, read from its header alone."""
    return _state(path, read_checkpoint(path, tensors=False)[1])


def _state(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The training state (a JSON object); a checkpoint written without one has an empty one."""
    return _json_metadata(path, metadata, "state", dict) if "state" in metadata else {}


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
               float: "number", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _checked_metadata(path: Path, metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a tinytrans checkpoint (no tinytrans metadata)")
    if metadata.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {metadata.get('version')!r}, "
                        f"this tinytrans reads version {FORMAT_VERSION}")
    return metadata


def _json_metadata(path: Path, metadata: dict[str, str], key: str, expected: type) -> Any:
    """The JSON value of the metadata entry `key`, which must be a JSON object (`expected` dict)
    or array (list): invalid JSON, cut off or of another type, is a UserError naming the key."""
    try:
        value = json.loads(metadata[key])
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: metadata '{key}' is not valid JSON "
                        f"({_first_line(error)})") from None
    if not isinstance(value, expected):
        raise UserError(f"{path}: metadata '{key}' must be a JSON {_JSON_TYPES[expected]}, "
                        f"not {_json_type(value)}")
    return value


def load_model_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights into `model` (names and shapes must match exactly); return the JSON state."""
    tensors, metadata = read_checkpoint(path)
    state = _state(path, metadata)
    model.load_state_dict(_model_weights(path, tensors, model))
    return state


def _model_weights(path: Path, tensors: dict[str, torch.Tensor],
                   model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's weights by parameter name, checked against `model`'s names and shapes."""
    weights = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    check_layout(path, weights, model.state_dict(), "the config")
    return weights


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
    """Restore model, optimizer and RNG from a training checkpoint; return its JSON state.

    Everything is checked before anything is restored: a bad checkpoint changes nothing."""
    tensors, metadata = read_checkpoint(path)
    if "param_groups" not in metadata or "rng/torch" not in tensors:
        raise UserError(f"{path}: holds weights only, not a training state to resume from")
    state = _state(path, metadata)
    weights = _model_weights(path, tensors, model)
    optimizer_state = _optimizer_state(path, tensors, metadata, optimizer)
    _check_rng(path, tensors)
    model.load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return state


def load_init(path: Path, model: torch.nn.Module,
              optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Start a fine-tuned run from another run's checkpoint: `model`'s weights and, with
    `optimizer`, Adam's step counts and moments; return the checkpoint's JSON state.

    The optimizer keeps its own settings (betas, eps, weight decay: the new run's config), and
    neither the training state nor the random generators are restored: the new run starts at
    step 0. Everything is checked before anything is loaded, as for load_training_state."""
    tensors, metadata = read_checkpoint(path)
    if optimizer is not None and "param_groups" not in metadata:
        raise UserError(f"{path}: holds weights only, no optimizer state to start from; take a "
                        "step checkpoint (--checkpoint last)")
    weights = _model_weights(path, tensors, model)
    optimizer_state = _optimizer_state(path, tensors, metadata, optimizer) \
        if optimizer is not None else None
    model.load_state_dict(weights)
    if optimizer is not None:
        own = [{k: v for k, v in group.items() if k != "params"}
               for group in optimizer.param_groups]
        optimizer.load_state_dict(optimizer_state)
        for group, settings in zip(optimizer.param_groups, own):
            group.update(settings)  # load_state_dict took the checkpoint's
    return _state(path, metadata)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, in hex: what identifies the checkpoint a run started from."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ---------------------------------------------------------------------------------------------
# The optimizer's state, checked against the optimizer it is loaded into

OPTIM_KEY = re.compile(r"optim/([0-9]+)/([A-Za-z_][A-Za-z0-9_]*)")  # optim/INDEX/SLOT


def _optimizer_state(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                     optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The state dict for `optimizer.load_state_dict`, made of the checkpoint's parameter groups
    and `optim/INDEX/SLOT` tensors. PyTorch checks little of it when loading and fails only at
    the next step, so the groups, the indices and the shapes are checked here."""
    groups = _param_groups(path, metadata, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # index order
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("optim/"):
            index, slot = _optim_key(path, key, len(params))
            if tensor.dim() > 0 and tensor.shape != params[index].shape:  # `step` is a scalar
                raise UserError(f"{path}: '{key}' has shape {tuple(tensor.shape)}, its parameter "
                                f"{tuple(params[index].shape)}")
            slots.setdefault(index, {})[slot] = tensor
    kinds = sorted({tuple(sorted(found)) for found in slots.values()})
    if len(kinds) > 1:  # Adam needs all of its slots (step, moments) for every parameter it has
        raise UserError(f"{path}: the optimizer's slots differ between parameters "
                        f"({', '.join(kinds[0])} and {', '.join(kinds[1])})")
    return {"state": slots, "param_groups": groups}


def _optim_key(path: Path, key: str, n_params: int) -> tuple[int, str]:
    """`optim/INDEX/SLOT` -> (INDEX, SLOT); INDEX must be a parameter of the optimizer."""
    match = OPTIM_KEY.fullmatch(key)
    if match is None:
        raise UserError(f"{path}: tensor '{key}' is not named optim/INDEX/SLOT")
    index = int(match[1])
    if index >= n_params:
        raise UserError(f"{path}: tensor '{key}' is for parameter {index}, the optimizer has "
                        f"{n_params}")
    return index, match[2]


def _param_groups(path: Path, metadata: dict[str, str],
                  optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The checkpoint's parameter groups: as many as the optimizer's, of the same sizes, naming
    the parameters 0..N-1 in order, with options of the same JSON types as the optimizer's.
    An option the checkpoint lacks keeps the optimizer's value (as PyTorch does for options
    added by a later version)."""
    saved = _json_metadata(path, metadata, "param_groups", list)
    current = optimizer.param_groups
    sizes = [len(group["params"]) for group in current]
    if not all(isinstance(g, dict) and _is_int_list(g.get("params")) for g in saved):
        raise UserError(f"{path}: metadata 'param_groups' must be a list of objects, each with "
                        "a list of parameter indices 'params'")
    if [len(group["params"]) for group in saved] != sizes:
        raise UserError(f"{path}: metadata 'param_groups' has groups of "
                        f"{[len(g['params']) for g in saved]} parameters, the optimizer "
                        f"{sizes}: another model")
    if [i for group in saved for i in group["params"]] != list(range(sum(sizes))):
        raise UserError(f"{path}: metadata 'param_groups' must number the parameters 0 to "
                        f"{sum(sizes) - 1} in order")
    checked = []
    for number, (group, ours) in enumerate(zip(saved, current)):
        for option, value in group.items():
            if option in ours and option != "params" and not _same_kind(value, ours[option]):
                raise UserError(f"{path}: metadata 'param_groups[{number}].{option}' is "
                                f"{value!r:.40}, the optimizer's is {ours[option]!r:.40}")
        checked.append({**{k: v for k, v in ours.items() if k != "params"}, **group})
    return checked


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(i) is int and i >= 0 for i in value)


def _same_kind(saved: Any, ours: Any) -> bool:
    """Whether a saved option has the JSON type of the optimizer's own (tuples became lists).
    PyTorch's three-way flags (`fused`, `foreach`: None, False or True) may differ between the
    machine that saved and the one that resumes."""
    if isinstance(ours, (list, tuple)):
        return (isinstance(saved, list) and len(saved) == len(ours)
                and all(map(_same_kind, saved, ours)))
    if type(ours) not in _JSON_TYPES:
        return True  # not a JSON value (a tensor learning rate): nothing to compare with
    kinds = {_json_type(saved), _json_type(ours)}
    return len(kinds) == 1 or kinds == {"null", "boolean"}


def _check_rng(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The random number generators' states must be what this PyTorch's generators hold."""
    expected = {"rng/torch": torch.get_rng_state}
    if torch.cuda.is_available():
        expected["rng/cuda"] = torch.cuda.get_rng_state
    for key, current in expected.items():
        if key in tensors:
            like, found = current(), tensors[key]
            if found.dtype != like.dtype or found.shape != like.shape:
                raise UserError(f"{path}: '{key}' is not a random generator state "
                                f"({found.dtype}, {tuple(found.shape)}; this PyTorch's is "
                                f"{like.dtype}, {tuple(like.shape)})")


STEP_NAME = re.compile(r"step-([0-9]+)\.safetensors")  # ASCII digits: str.isdigit takes "²" too


def training_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints (files named like step_name's), oldest first."""
    steps = {}
    for path in (run_dir / CHECKPOINT_DIR).glob("step-*.safetensors"):
        match = STEP_NAME.fullmatch(path.name)
        if match is not None and path.is_file():
            steps[path] = int(match[1])
    return sorted(steps, key=steps.__getitem__)  # numeric order


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for path in training_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        path.unlink(missing_ok=True)


CHECKPOINT_NAMES = ("best", "last", "average")  # what --checkpoint takes besides a file's path


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

"""Configuration: frozen dataclasses, presets, and TOML files where unknown keys are errors.

A run is described by one `RunConfig` (model, data, train) that is resolved once, saved in the
run directory as `config.toml`, and passed down explicitly. Values come from, in order of
increasing precedence: the dataclass defaults, a preset, a TOML file, command-line flags.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tinytrans.errors import UserError


@dataclass(frozen=True)
class ModelConfig:
    """The Transformer's shape. Vocabulary sizes come from the tokenizer(s)."""

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 1024
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    dropout: float = 0.1  # on embeddings and on every residual branch
    attention_dropout: float = 0.0  # on attention weights
    activation_dropout: float = 0.0  # inside the feed-forward block, after the ReLU
    pre_norm: bool = True  # LayerNorm before each sub-layer (stabler); False = the paper's post-norm
    tie_embeddings: bool = True  # one matrix for source, target and output embeddings

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise UserError(f"model.d_model {self.d_model} is not divisible by model.n_heads {self.n_heads}")
        if self.tie_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError("model.tie_embeddings needs one joint vocabulary (data.joint_vocab = true)")


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel text is, how it is tokenized and which training pairs are kept."""

    train: str = ""  # corpus prefix: TRAIN.SRC and TRAIN.TGT (optionally .gz)
    valid: str | None = None
    src: str = "en"
    tgt: str = "de"
    tokenizer: str | None = None  # an existing SentencePiece model; else one is trained
    vocab_size: int = 8000
    model_type: str = "bpe"
    joint_vocab: bool = True
    max_length: int = 128  # pieces; longer training pairs are dropped
    max_ratio: float = 3.0
    utf8_errors: str = "strict"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, limits and the hardware to run on."""

    batch_tokens: int = 4096
    update_freq: int = 1  # batches whose gradients are summed into one update
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 4000
    # inverse_sqrt: decay with 1/sqrt(step) after warmup (Vaswani et al.); linear: decay linearly
    # to zero at the budget (max_steps or max_time, whichever comes first), which is better when
    # training is cut short by a time limit.
    lr_schedule: str = "inverse_sqrt"
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables gradient clipping
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    max_steps: int | None = None
    max_epochs: int | None = None
    max_time: float | None = None  # minutes of training, validation included
    validate_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 3
    average_last: int | None = None  # at the end, average the last N step checkpoints
    patience: int | None = None  # validations without a new best BLEU before stopping
    log_every: int = 100
    seed: int = 1
    precision: str = "auto"  # fp32, bf16 or auto
    device: str = "auto"  # cpu, cuda or auto
    threads: int | None = None


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

# Settings that may differ when an interrupted run is resumed: limits and housekeeping, not maths.
RESUMABLE = {
    ("train", name) for name in (
        "max_steps", "max_epochs", "max_time", "validate_every", "checkpoint_every", "keep_last",
        "patience", "log_every", "device", "threads", "average_last",
    )
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The bundled corpus in a few minutes on two CPU cores.
    "tiny": {
        "model": {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_encoder_layers": 2,
                  "n_decoder_layers": 2, "dropout": 0.1},
        "data": {"vocab_size": 1000},
        "train": {"batch_tokens": 4096, "lr": 3e-3, "warmup_steps": 200, "max_time": 5.5,
                  "validate_every": 300, "checkpoint_every": 300},
    },
    # Multi30k-sized data (30k pairs) on a CPU in about 20 minutes.
    "small": {
        "model": {"d_model": 256, "n_heads": 4, "d_ff": 1024, "n_encoder_layers": 3,
                  "n_decoder_layers": 3, "dropout": 0.1},
        "data": {"vocab_size": 6000},
        "train": {"batch_tokens": 3000, "lr": 2e-3, "warmup_steps": 300, "max_time": 20.0,
                  "validate_every": 400, "checkpoint_every": 400},
    },
    # Vaswani et al. (2017) base, for WMT-sized data on a GPU.
    "base": {
        "model": {"d_model": 512, "n_heads": 8, "d_ff": 2048, "n_encoder_layers": 6,
                  "n_decoder_layers": 6, "dropout": 0.1},
        "data": {"vocab_size": 32000},
        "train": {"batch_tokens": 25000, "lr": 7e-4, "warmup_steps": 4000,
                  "validate_every": 2000, "checkpoint_every": 2000},
    },
}


def merge(base: dict[str, dict[str, Any]], override: dict[str, dict[str, Any]]) -> dict:
    """Section-wise update of nested {section: {key: value}} dicts."""
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


def build_config(values: dict[str, dict[str, Any]], origin: str = "config") -> RunConfig:
    """Check every key and type, then freeze. Unknown sections or keys are errors, not ignored."""
    for section in values:
        if section not in SECTIONS:
            raise UserError(f"{origin}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
    parts = {
        name: _build_section(cls, values.get(name, {}), name, origin) for name, cls in SECTIONS.items()
    }
    return RunConfig(**parts)


def _build_section(cls: type, values: dict[str, Any], section: str, origin: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{origin}: unknown key '{section}.{key}' (known: {', '.join(known)})")
        if not _has_type(value, hints[key]):
            raise UserError(f"{origin}: '{section}.{key}' = {value!r} should be {_type_name(hints[key])}")
    return cls(**{k: float(v) if hints[k] is float else v for k, v in values.items()})


def _has_type(value: Any, hint: Any) -> bool:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind in (bool, str) and isinstance(value, kind):
            return True
    return False


def _type_name(hint: Any) -> str:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join("none" if k is type(None) else k.__name__ for k in allowed)


def preset(name: str) -> dict[str, dict[str, Any]]:
    if name not in PRESETS:
        raise UserError(f"--preset: unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def read_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    for section, table in values.items():
        if not isinstance(table, dict):
            raise UserError(f"{path}: '{section}' must be a [section] table")
    return values


def config_to_dict(config: RunConfig) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}


def to_toml(config: RunConfig) -> str:
    """Render a config as TOML. None values are left out: missing keys mean the default (None)."""
    lines = []
    for section, values in config_to_dict(config).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    return repr(value)


def _toml_char(c: str) -> str:
    """A character inside a TOML basic string: quotes, backslashes and control characters escaped."""
    if c in '"\\':
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c


def differences(old: RunConfig, new: RunConfig) -> list[str]:
    """Keys whose values differ and that may not change when a run resumes."""
    before, after = config_to_dict(old), config_to_dict(new)
    return [
        f"{section}.{key}: {before[section][key]!r} -> {after[section][key]!r}"
        for section in SECTIONS for key in before[section]
        if before[section][key] != after[section][key] and (section, key) not in RESUMABLE
    ]

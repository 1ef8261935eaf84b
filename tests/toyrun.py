"""A toy run directory (tiny model, a few hundred bundled pairs) shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from tinytrans.config import RunConfig, build_config

BUNDLED = Path(__file__).resolve().parents[1] / "corpora" / "en-de"


def write_corpus(prefix: Path, n: int, split: str = "train", skip: int = 0) -> Path:
    """The first n pairs (after `skip`) of a bundled split, as PREFIX.en / PREFIX.de."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        lines = (BUNDLED / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[skip: skip + n]
        Path(f"{prefix}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return prefix


def toy_config(train: Path, valid: Path | None, **train_overrides) -> RunConfig:
    return build_config({
        "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "dropout": 0.1},
        "data": {"train": str(train), "valid": str(valid) if valid else None, "src": "en",
                 "tgt": "de", "vocab_size": 300},
        "train": {"batch_tokens": 600, "lr": 3e-3, "warmup_steps": 10, "max_steps": 20,
                  "validate_every": 10, "checkpoint_every": 10, "log_every": 1, "threads": 1,
                  # fp32 whatever the CPU: a test's numbers must not depend on the machine's probe
                  "precision": "fp32", **train_overrides},
    }, "toy")


def varied_config(train: Path, max_steps: int, origin: str) -> RunConfig:
    """A model trained just enough (no dropout, a larger learning rate) that different
    sentences get different translations: for tests that compare outputs line by line."""
    return build_config({
        "model": {"d_model": 64, "n_heads": 2, "d_ff": 128, "n_encoder_layers": 1,
                  "n_decoder_layers": 1, "dropout": 0.0},
        "data": {"train": str(train), "src": "en", "tgt": "de", "vocab_size": 300},
        "train": {"batch_tokens": 1500, "lr": 5e-3, "warmup_steps": 50, "max_steps": max_steps,
                  "validate_every": 1000, "checkpoint_every": max_steps, "threads": 1,
                  "precision": "fp32"},
    }, origin)

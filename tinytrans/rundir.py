"""The run directory: what a trained model is, on disk, and how to read it back.

    RUN/config.toml        the resolved RunConfig; rebuilding the model needs nothing else
    RUN/tokenizer.model    the joint SentencePiece model (or tokenizer.src.model + tokenizer.tgt.model)
    RUN/checkpoints/       see checkpoint.py
"""

from __future__ import annotations

from pathlib import Path

from tinytrans.config import RunConfig, build_config, read_toml
from tinytrans.errors import UserError
from tinytrans.tokenizer import Tokenizer

CONFIG_FILE = "config.toml"


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a tinytrans run directory (no {CONFIG_FILE})")
    return build_config(read_toml(path), str(path))


def tokenizer_files(run_dir: Path, joint: bool) -> list[Path]:
    names = ["tokenizer.model"] if joint else ["tokenizer.src.model", "tokenizer.tgt.model"]
    return [Path(run_dir) / name for name in names]


def load_tokenizers(run_dir: Path, cfg: RunConfig) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers of a run; the same object twice for a joint vocabulary."""
    loaded = [Tokenizer.load(path) for path in tokenizer_files(run_dir, cfg.data.joint_vocab)]
    return (loaded[0], loaded[0]) if len(loaded) == 1 else (loaded[0], loaded[1])

"""The run directory: what a trained model is, on disk, and how to read it back.

    RUN/config.toml        the resolved RunConfig; rebuilding the model needs nothing else
    RUN/tokenizer.model    the joint SentencePiece model (or tokenizer.src.model + tokenizer.tgt.model)
    RUN/checkpoints/       see checkpoint.py

Training starts here (start_or_resume, run_tokenizers); translation reads the config and the
tokenizers back (load_run_config, load_tokenizers).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from tinytrans.config import RunConfig, build_config, differences, read_toml
from tinytrans.errors import UserError
from tinytrans.prepared import PreparedData
from tinytrans.tokenizer import Tokenizer, as_pair, make_tokenizers, tokenizer_names

CONFIG_FILE = "config.toml"


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a tinytrans run directory (no {CONFIG_FILE})")
    return build_config(read_toml(path), str(path))


def tokenizer_files(run_dir: Path, joint: bool) -> list[Path]:
    return [Path(run_dir) / name for name in tokenizer_names(joint)]


def load_tokenizers(run_dir: Path, cfg: RunConfig) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers of a run; the same object twice for a joint vocabulary."""
    return as_pair([Tokenizer.load(path) for path in tokenizer_files(run_dir, cfg.data.joint_vocab)])


# ---------------------------------------------------------------------------------------------
# Setting a run directory up for training

def start_or_resume(run_dir: Path, config: RunConfig, overwrite: bool) -> RunConfig | None:
    """Make `run_dir` ready for training `config`: a new (or, with `overwrite`, emptied) run
    directory, or an existing run of the same config, whose saved config is returned."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a directory")
    is_run = (run_dir / CONFIG_FILE).is_file()
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run:
        raise UserError(f"{run_dir}: exists, is not empty and is not a tinytrans run directory")
    if overwrite and is_run:
        shutil.rmtree(run_dir)
        is_run = False
    if not is_run:
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    saved = load_run_config(run_dir)
    if config.model.src_vocab_size == 0:  # not known yet: it comes from the run's tokenizer
        config = replace(config, model=replace(config.model, src_vocab_size=saved.model.src_vocab_size,
                                               tgt_vocab_size=saved.model.tgt_vocab_size))
    changed = differences(saved, config)
    if changed:
        raise UserError(f"{run_dir}: holds a run with a different config ({'; '.join(changed)}); "
                        "use another --output, or --overwrite to start over")
    return saved


def run_tokenizers(run_dir: Path, cfg: RunConfig,
                   prepared: PreparedData | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers: already in the run directory, copied from the prepared data or
    data.tokenizer, or trained."""
    data = cfg.data
    paths = tokenizer_files(run_dir, data.joint_vocab)
    if prepared is not None:
        # a resumed run must still see the tokenizer its data was encoded with
        prepared.check_tokenizers(paths, str(run_dir))
        for source, path in zip(prepared.tokenizer_paths, paths):
            if not path.is_file():
                Tokenizer.load(source).save(path)
    if all(p.is_file() for p in paths):
        return as_pair([Tokenizer.load(p) for p in paths])
    return make_tokenizers(data, paths, cfg.train.seed)

"""The run directory: what a trained model is, on disk, and how to read it back.

    RUN/config.toml        the resolved RunConfig; rebuilding the model needs nothing else
    RUN/tokenizer.model    the joint SentencePiece model (or tokenizer.src.model + tokenizer.tgt.model)
    RUN/checkpoints/       see checkpoint.py
    RUN/metrics.jsonl      one JSON object per record: start of an attempt, log, validation, average
    RUN/curves.png         learning curves (with the 'plot' extra)

Three parts: reading a run back (load_run_config, load_tokenizers: for translation, and for a
run fine-tuned from it); setting a run up for training (resolve_run_config, then
set_up_for_training); and what training writes there (RunFiles: begin_attempt, which also decides
what a resumed attempt keeps, then metrics, checkpoints and curves.png). A run fine-tuned from
another (train.init) starts from that run's config and copies its tokenizers: it is a run
directory like any other, and needs the other no more once it has a checkpoint of its own.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinytrans.atomic import atomic_write, atomic_write_text, remove_leftovers
from tinytrans.checkpoint import (BEST, CHECKPOINT_DIR, CHECKPOINT_NAMES, TrainState,
                                  checkpoint_tokenizers, file_sha256, prune_checkpoints,
                                  read_training_state, save_checkpoint, step_name)
from tinytrans.config import (DataConfig, RunConfig, build_config, differences, read_toml, resolve_train_config,
                              to_toml, with_vocab_sizes)
from tinytrans.directions import Direction, Directions, direction_corpora, parse_directions
from tinytrans.errors import UserError
from tinytrans.langid import LANGID_FILE
from tinytrans.events import Event
from tinytrans.tokenizer import Tokenizer, as_pair, make_tokenizers, tokenizer_names

if TYPE_CHECKING:  # types only: reading a run back for translation needs neither module
    import torch

    from tinytrans.model import Transformer
    from tinytrans.prepared import PreparedData

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a tinytrans run directory (no {CONFIG_FILE})")
    return build_config(read_toml(path), str(path))


def run_directions(data: DataConfig) -> Directions:
    """The directions a run was trained on: data.directions, tagged, or its one pair."""
    if data.multilingual:
        return Directions(parse_directions(data.directions), tagged=True)
    return Directions((Direction(data.src, data.tgt),), tagged=False)


def tokenizer_files(run_dir: Path, joint: bool) -> list[Path]:
    return [Path(run_dir) / name for name in tokenizer_names(joint)]


def load_tokenizers(run_dir: Path, cfg: RunConfig) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers of a run; the same object twice for a joint vocabulary."""
    return as_pair([Tokenizer.load(path) for path in tokenizer_files(run_dir, cfg.data.joint_vocab)])


def tokenizer_hashes(run_dir: Path, cfg: RunConfig) -> dict[str, str]:
    """The SHA-256 of each of the run's tokenizer files, by file name."""
    return {path.name: file_sha256(path) for path in tokenizer_files(run_dir, cfg.data.joint_vocab)}


def check_tokenizers(run_dir: Path, cfg: RunConfig, tokenizers: tuple[Tokenizer, Tokenizer],
                     checkpoint: Path) -> None:
    """The run directory's tokenizers must be those its model was trained with: each as many
    pieces as the model's vocabulary (another run's tokenizer gave IndexError or wrong text), and
    the very files the checkpoint recorded (where it recorded them)."""
    for side, tokenizer, size in (("source", tokenizers[0], cfg.model.src_vocab_size),
                                  ("target", tokenizers[1], cfg.model.tgt_vocab_size)):
        if size and tokenizer.vocab_size != size:
            raise UserError(f"{tokenizer.name}: {tokenizer.vocab_size:,} pieces, but the model's "
                            f"{side} vocabulary has {size:,}: not this run's tokenizer (copied "
                            "from another run?)")
    recorded = checkpoint_tokenizers(checkpoint)
    if recorded is not None and recorded != tokenizer_hashes(run_dir, cfg):
        raise UserError(f"{run_dir}: its tokenizer files are not those {checkpoint.name} was "
                        "trained with (copied from another run?)")


def init_config_file(init: str | Path) -> Path:
    """RUN/config.toml of the run a new run is fine-tuned from (train.init, --init)."""
    if not Path(init).exists():
        raise UserError(f"--init {init}: no such run directory")
    if not (Path(init) / CONFIG_FILE).is_file():
        raise UserError(f"--init {init}: not a tinytrans run directory (no {CONFIG_FILE})")
    return Path(init) / CONFIG_FILE


# ---------------------------------------------------------------------------------------------
# Setting a run directory up for training

def resolve_run_config(run_dir: Path, flags: dict[str, dict[str, Any]],
                       preset_name: str | None = None, toml: Path | None = None,
                       overwrite: bool = False) -> RunConfig:
    """The config to train in `run_dir` (config.resolve_train_config): the run there, resumed
    with its saved config, or a new run; a new run fine-tuned from another (the flag train.init)
    starts from that run's config. The init run and a checkpoint file given as flags are
    recorded as absolute paths, so that the same flags resume from anywhere."""
    train = dict(flags.get("train", {}))
    if train.get("init"):
        train["init"] = str(Path(train["init"]).resolve())
    if train.get("init_checkpoint") not in (None, *CHECKPOINT_NAMES):
        train["init_checkpoint"] = str(Path(train["init_checkpoint"]).resolve())
    flags = {**flags, "train": train}
    saved = Path(run_dir) / CONFIG_FILE
    if saved.is_file() and not overwrite:
        return resolve_train_config(flags, preset_name, toml, saved=saved)
    init = init_config_file(train["init"]) if train.get("init") else None
    return resolve_train_config(flags, preset_name, toml, init=init)


def set_up_for_training(run_dir: Path, cfg: RunConfig, overwrite: bool,
                        prepared: PreparedData | None = None,
                        init: Path | None = None) -> tuple[Tokenizer, Tokenizer]:
    """Process 0's part of starting to train `cfg` in `run_dir`: the directory (new, emptied with
    `overwrite`, or a run of the same config, resumed), its tokenizers (run_tokenizers) and
    config.toml with their vocabulary sizes. Returns the (source, target) tokenizers."""
    saved = start_or_resume(run_dir, cfg, overwrite)
    if saved is not None:
        remove_killed_writes(run_dir, cfg)
    tokenizers = run_tokenizers(run_dir, cfg, prepared, init)
    cfg = with_vocab_sizes(cfg, tokenizers[0].vocab_size, tokenizers[1].vocab_size)
    if saved is not None and differences(saved, cfg):
        raise UserError(f"{run_dir}: its tokenizer no longer matches its config")
    atomic_write_text(run_dir / CONFIG_FILE, to_toml(cfg))
    return tokenizers


def remove_killed_writes(run_dir: Path, cfg: RunConfig) -> None:
    """An attempt killed while writing a file leaves its temporary file behind: remove those
    beside the run's own files and its checkpoints."""
    remove_leftovers(run_dir / CHECKPOINT_DIR)
    tokenizers = tokenizer_names(cfg.data.joint_vocab)
    remove_leftovers(run_dir, [CONFIG_FILE, METRICS_FILE, CURVES_FILE, LANGID_FILE, *tokenizers,
                               *(Path(name).with_suffix(".vocab").name for name in tokenizers)])


def check_inputs_outside(run_dir: Path, cfg: RunConfig) -> None:
    """--overwrite deletes the run directory: refuse, before anything is deleted, when something
    the run reads lies inside it (`--init OUT/base --output OUT --overwrite` would delete the
    run it fine-tunes)."""
    target = run_dir.resolve()
    d = cfg.data
    checkpoint = cfg.train.init_checkpoint  # best, last, average, or a file's path
    corpora = [(flag, prefix) for flag, value in (("--train", d.train), ("--valid", d.valid))
               for prefix in corpus_prefixes(value, d)]
    for flag, value in (("--init", cfg.train.init), *corpora,
                        ("--tokenizer", d.tokenizer), ("--data", d.prepared),
                        ("--checkpoint", None if checkpoint in CHECKPOINT_NAMES else checkpoint)):
        if not value:
            continue
        path = Path(value).resolve()
        if path == target or target in path.parents:
            raise UserError(f"{flag} {value}: lies inside --output {run_dir}, which --overwrite "
                            "would delete; move it out, or train into another directory")


def corpus_prefixes(value: str | None, data: DataConfig) -> list[str]:
    """The corpus prefixes data.train (or data.valid) names: one, or for a model of several
    directions each entry's (directions.direction_corpora)."""
    if not value:
        return []
    if not data.multilingual:
        return [value]
    return sorted(set(direction_corpora(value, parse_directions(data.directions)).values()))


@contextmanager
def undone_if_refused(run_dir: Path, main: bool) -> Iterator[None]:
    """A new run's set-up that is refused (a corpus line that is not UTF-8, a model too big, an
    interruption) takes back the directory it began to fill, so that the same command, once the
    cause is fixed, starts afresh instead of meeting a half-made run. A directory that held
    anything before is left as the set-up left it."""
    absent = not run_dir.exists()
    empty = run_dir.is_dir() and not any(run_dir.iterdir())
    try:
        yield
    except BaseException:
        if main and absent and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
        elif main and empty and run_dir.is_dir():  # the directory itself (its mode, owner) stays
            for entry in run_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


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
        config = with_vocab_sizes(config, saved.model.src_vocab_size, saved.model.tgt_vocab_size)
    changed = differences(saved, config)
    if changed:
        raise UserError(f"{run_dir}: holds a run with a different config ({'; '.join(changed)}); "
                        "use another --output, or --overwrite to start over")
    return saved


def run_tokenizers(run_dir: Path, cfg: RunConfig, prepared: PreparedData | None = None,
                   init: Path | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers: already in the run directory, copied from the run it is fine-tuned
    from (`init`), the prepared data or data.tokenizer, or trained."""
    data = cfg.data
    paths = tokenizer_files(run_dir, data.joint_vocab)
    if prepared is not None:
        # a resumed run must still see the tokenizer its data was encoded with
        prepared.check_tokenizers(paths, str(run_dir))
    # a fine-tuned run's weights know its init's pieces (a prepared corpus was checked to match)
    sources = tokenizer_files(init, data.joint_vocab) if init is not None else \
        prepared.tokenizer_paths if prepared is not None else []
    for source, path in zip(sources, paths):
        if not path.is_file():
            Tokenizer.load(source).save(path)
    if all(p.is_file() for p in paths):
        return as_pair([Tokenizer.load(p) for p in paths])
    return make_tokenizers(data, paths, cfg.train.seed)


# ---------------------------------------------------------------------------------------------
# What training writes there

class RunFiles:
    """Writes a training run's files: metrics.jsonl, checkpoints, curves.png.

    metrics.jsonl is appended to, a line per record (an append of one line cannot garble the
    lines before it; a torn last line from a kill is dropped on resume: truncate_metrics). Every
    other file is written atomically."""

    def __init__(self, run_dir: Path, cfg: RunConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.metrics = run_dir / METRICS_FILE

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Forget what a killed attempt logged after `step`, its last checkpoint (0 when it wrote
        none): those updates are about to be made, and logged, again."""
        if self.metrics.is_file():
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if _step_of(line) <= step]
            atomic_write_text(self.metrics, "".join(line + "\n" for line in kept))

    def begin_attempt(self, state: TrainState, start: dict[str, Any]) -> TrainState:
        """Begin a training attempt from `state` (fresh, or the checkpoint resumed from): what a
        killed attempt logged after it is forgotten, a best model found after it is kept
        (recover_best, which refuses a damaged best before anything is logged), and its `start`
        record is logged. Returns the state to train from."""
        self.truncate_metrics(state.step)
        state = recover_best(state, self.best_path)
        self.log(start)
        return state

    def checkpoint(self, model: Transformer, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        path = self.run_dir / CHECKPOINT_DIR / step_name(state["step"])
        save_checkpoint(path, model, optimizer, state, self.tokenizer_hashes)
        prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        return path

    @property
    def best_path(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR / BEST

    def best(self, model: Transformer, state: dict[str, Any]) -> None:
        save_checkpoint(self.best_path, model, None, state, self.tokenizer_hashes)

    @functools.cached_property
    def tokenizer_hashes(self) -> dict[str, str]:
        """The run's tokenizer files' SHA-256, by name: every checkpoint records them."""
        return tokenizer_hashes(self.run_dir, self.cfg)

    def plot_curves(self) -> Path | None:
        return plot_curves(self)


def recover_best(state: TrainState, best_path: Path) -> TrainState:
    """`state` (from the step checkpoint resumed from, or fresh) with the best score of
    best.safetensors when that best was found after the checkpoint.

    The rule for resuming. A resumed run makes the updates after its checkpoint again, and with
    them their validations (at the steps its own validate_every names), so the patience count is
    the checkpoint's plus the resumed run's validations: nothing is counted twice. The best model
    is the exception: best.safetensors is written at every new best, so an attempt killed after a
    new best and before its next checkpoint leaves a best that the checkpoint does not know of.
    That model stays the one to beat, so a resumed run never replaces it with a worse one (its
    validations may fall at other steps, or give other scores), and since nothing has been
    validated after it yet, patience starts again from 0; validations re-run at or before its
    step come before it and do not count (see train._validate_and_keep_best).
    """
    if not best_path.is_file():
        return state
    saved = read_training_state(best_path)
    if saved.best_step <= state.step:
        return state  # the checkpoint was written after this best, and knows it
    return replace(state, best_bleu=saved.best_bleu, best_loss=saved.best_loss,
                   best_step=saved.best_step,
                   validations_since_best=0)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 10**12  # a torn last line from a kill: drop it


Series = tuple[list[int], list[float]]  # (updates, values)


def learning_curves(records: list[dict[str, Any]]) -> dict[str, Series]:
    """The curves of curves.png from metrics.jsonl records.

    Training and validation are both the plain NLL per target token: the label-smoothed training
    loss adds epsilon x the cross-entropy against a uniform distribution, a large term that made
    validation look several times better than training. Training batches still run with dropout.
    """
    logs = [r for r in records if r["event"] == Event.LOG]
    vals = [r for r in records if r["event"] == Event.VALID]
    curves = {"train_nll": ([r["step"] for r in logs], [r["nll"] for r in logs]),
              "valid_nll": ([r["step"] for r in vals], [r["loss"] for r in vals]),
              "valid_bleu": ([r["step"] for r in vals], [r["bleu"] for r in vals])}
    # a multilingual run's validations hold each direction's too: valid_bleu is their mean
    for name in dict.fromkeys(n for r in vals for n in r.get("directions", {})):
        each = [r for r in vals if name in r.get("directions", {})]
        curves[f"valid_bleu {name}"] = ([r["step"] for r in each],
                                        [r["directions"][name]["bleu"] for r in each])
    return curves


def plot_curves(files: RunFiles) -> Path | None:
    """Training and validation NLL, and validation BLEU, against updates, as RUN/curves.png."""
    try:
        # the figure alone, without pyplot: no backend is chosen for the process that imports us
        from matplotlib.figure import Figure
    except ImportError:
        return None  # the 'plot' extra is not installed; metrics.jsonl has the same numbers
    records = [json.loads(line) for line in files.metrics.read_text().splitlines() if line.strip()] \
        if files.metrics.is_file() else []
    curves = learning_curves(records)
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_bleu = fig.subplots(1, 2)
    ax_loss.plot(*curves["train_nll"], label="training batches (dropout on)")
    ax_loss.plot(*curves["valid_nll"], "o-", label="validation set (dropout off)")
    ax_loss.set(xlabel="update", ylabel="NLL per target token (no label smoothing)",
                title="Negative log-likelihood")
    ax_loss.legend()
    directions = [name for name in curves if name.startswith("valid_bleu ")]
    ax_bleu.plot(*curves["valid_bleu"], "o-", color="tab:green",
                 label="mean of the directions" if directions else None)
    for name in directions:
        ax_bleu.plot(*curves[name], ".-", label=name.split(" ", 1)[1])
    if directions:
        ax_bleu.legend()
    ax_bleu.set(xlabel="update", ylabel="BLEU (sacrebleu, greedy search)", title="Validation BLEU")
    fig.tight_layout()
    path = files.run_dir / CURVES_FILE
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path

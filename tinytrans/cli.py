"""The `tinytrans` command line: each command turns flags into one library call.

Every mistake a user can make ends as one line on stderr and a non-zero exit, never a traceback:

    exit 2   a user error: a bad option or value, a missing or unreadable file, a directory that
             does not exist, a full disk, a corrupt checkpoint (UserError and OSError)
    exit 3   an internal error: a bug in tinytrans; `tinytrans --debug ...` shows the traceback
    exit 130 interrupted (Ctrl-C)

`corpus check` also exits 1 when the corpus cannot be trained on as it is.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click, whose exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors

from tinytrans import __version__
from tinytrans.config import (ATTENTION_KINDS, BEST_METRICS, BLEU_TOKENIZE, DEVICES, ENGINES,
                              EXPORT_FORMATS, GLOSSARY_METHODS, INFERENCE_PRECISIONS, LR_SCHEDULES, MODEL_TYPES, PRECISIONS, PRESETS,
                              QUANTIZATIONS, FILE_FORMATS, UTF8_POLICIES, DataConfig, SearchConfig,
                              ServeConfig, sample_option)
from tinytrans.errors import UserError

# Choices are listed in --help and checked by the CLI itself.
Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
Device = Literal[DEVICES]  # type: ignore[valid-type]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
InferencePrecision = Literal[INFERENCE_PRECISIONS]  # type: ignore[valid-type]
Utf8Policy = Literal[UTF8_POLICIES]  # type: ignore[valid-type]
GlossaryMethodName = Literal[GLOSSARY_METHODS]  # type: ignore[valid-type]
LrSchedule = Literal[LR_SCHEDULES]  # type: ignore[valid-type]
BestMetric = Literal[BEST_METRICS]  # type: ignore[valid-type]
AttentionKind = Literal[ATTENTION_KINDS]  # type: ignore[valid-type]
ExportFormat = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]
Quantization = Literal[QUANTIZATIONS]  # type: ignore[valid-type]
ModelType = Literal[MODEL_TYPES]  # type: ignore[valid-type]
Engine = Literal[ENGINES]  # type: ignore[valid-type]
FileFormat = Literal[FILE_FORMATS]  # type: ignore[valid-type]

USER_ERROR, INTERNAL_ERROR, INTERRUPTED = 2, 3, 130
DEBUG_ENV = "TINYTRANS_DEBUG"
stderr = Console(stderr=True)


def say(message: str, label: str = "", style: str = "") -> None:
    """One line on stderr. User text (paths, lines) is never read as rich markup."""
    stderr.print(Text(label, style=style) + Text(message), highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """Bad options and values (click's usage errors) as one line, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:
            print(error.ctx.get_help() if error.ctx else str(error))
            sys.exit(USER_ERROR)
        except click_errors.UsageError as error:
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            say(error.format_message().replace("Value error, ", "") + where, "error: ", "bold red")
            sys.exit(error.exit_code)
        except typer.Abort:
            say("interrupted", "error: ", "bold red")
            sys.exit(INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Train and run neural machine translation models you can read end to end.")
tokenizer_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                            help="Train and apply SentencePiece tokenizers.")
corpus_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect parallel corpora.")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(corpus_app, name="corpus")


def friendly_errors(command):
    """Turn every exception into one line and an exit code (or re-raise it under --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _terminate_as_interrupt():
                return command(*args, **kwargs)
        except (typer.Exit, click_errors.ClickException):
            raise
        except KeyboardInterrupt:
            if _debugging():
                raise
            say("interrupted", "error: ", "bold red")
            raise typer.Exit(INTERRUPTED) from None
        except Exception as error:  # noqa: BLE001 (the one place that decides how errors look)
            if _debugging():
                raise
            message, code = describe_error(error)
            say(message, "error: ", "bold red")
            raise typer.Exit(code) from None
    return wrapper


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (`tinytrans --debug translate ...`). The root
    callback sets them at every invocation; no environment variable carries them, so a program
    that calls the CLI in process keeps its environment as it was."""

    debug: bool = False


_global_options = GlobalOptions()


def _debugging() -> bool:
    """--debug was given, or TINYTRANS_DEBUG is set (by the user: tinytrans never sets it)."""
    return _global_options.debug or bool(os.environ.get(DEBUG_ENV))


def describe_error(error: Exception) -> tuple[str, int]:
    """One line for any exception, and the exit code it gets."""
    if isinstance(error, UserError):
        return str(error), USER_ERROR
    if isinstance(error, OSError):  # a missing directory, a permission, a full disk ...
        cause = error.strerror or str(error) or type(error).__name__
        where = error.filename if error.filename is not None else "file system"
        return f"{where}: {cause}", USER_ERROR
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return ("out of memory: try a smaller --batch-tokens, a smaller model or fewer --threads",
                USER_ERROR)
    first = (str(error).strip().splitlines() or [""])[0]
    return (f"internal error ({type(error).__name__}: {first}); run 'tinytrans --debug ...' to see "
            "the traceback, and please report it", INTERNAL_ERROR)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (kill, a scheduler) unwinds like Ctrl-C, so temporary files are cleaned up and the
    file being replaced survives. Training installs its own handler on top of this one."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _version(value: bool) -> None:
    if value:
        print(f"tinytrans {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    global _global_options
    _global_options = GlobalOptions(debug=debug)


# ---------------------------------------------------------------------------------------------
# tokenizer

@tokenizer_app.command("train")
@friendly_errors
def tokenizer_train(
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Text file (plain or .gz); repeat for more.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Prefix: writes PREFIX.model and PREFIX.vocab.")],
    vocab_size: Annotated[int, typer.Option(help="Number of pieces, reserved ids included.")] = DataConfig.vocab_size,
    model_type: Annotated[ModelType, typer.Option(help="SentencePiece's algorithm.")] = "bpe",
    character_coverage: Annotated[float, typer.Option(help="Share of characters covered (1.0 for alphabetic scripts).")] = 1.0,
    max_sentences: Annotated[Optional[int], typer.Option(help="Train on a random sample of this many lines.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 1,
    utf8_errors: Annotated[Utf8Policy, typer.Option(help="strict: invalid UTF-8 is an error; replace: replace it.")] = DataConfig.utf8_errors,
) -> None:
    """Train a SentencePiece model (one joint vocabulary when given both languages' files)."""
    from tinytrans.tokenizer import train_tokenizer
    tok = train_tokenizer(input, output, vocab_size, model_type, character_coverage, max_sentences,
                          seed, utf8_errors)
    say(f"wrote {output}.model and {output}.vocab ({tok.vocab_size} pieces)")


def _stdin_lines():
    from tinytrans.translate import decode_input
    return decode_input(sys.stdin.buffer, "<stdin>", lambda m: say(m, "warning: ", "yellow"))


@tokenizer_app.command("encode")
@friendly_errors
def tokenizer_encode(
    model: Annotated[Path, typer.Option("--model", "-m", help="PREFIX.model")],
    ids: Annotated[bool, typer.Option("--ids", help="Print ids instead of pieces.")] = False,
) -> None:
    """Segment stdin into pieces (or ids), one line out per line in."""
    from tinytrans.tokenizer import Tokenizer
    tok = Tokenizer.load(model)
    with _QuietBrokenPipe():
        for line in _stdin_lines():
            out = tok.encode([line])[0] if ids else tok.encode_pieces([line])[0]
            print(" ".join(map(str, out)), flush=sys.stdout.isatty())


@tokenizer_app.command("decode")
@friendly_errors
def tokenizer_decode(
    model: Annotated[Path, typer.Option("--model", "-m", help="PREFIX.model")],
    ids: Annotated[bool, typer.Option("--ids", help="Read ids instead of pieces.")] = False,
) -> None:
    """Join pieces (or ids) from stdin back into text."""
    from tinytrans.tokenizer import Tokenizer
    tok = Tokenizer.load(model)
    with _QuietBrokenPipe():
        for number, line in enumerate(_stdin_lines(), 1):
            fields = line.split()
            if ids:
                try:
                    values = [int(f) for f in fields]
                except ValueError:
                    raise UserError(f"<stdin>:{number}: not a list of integer ids") from None
                if any(not 0 <= v < tok.vocab_size for v in values):
                    raise UserError(f"<stdin>:{number}: id out of range 0..{tok.vocab_size - 1}")
                print(tok.decode([values])[0], flush=sys.stdout.isatty())
            else:
                print(tok.decode_pieces([fields])[0], flush=sys.stdout.isatty())


# ---------------------------------------------------------------------------------------------
# corpus

@corpus_app.command("check")
@friendly_errors
def corpus_check(
    prefix: Annotated[str, typer.Argument(help="Corpus prefix: reads PREFIX.SRC and PREFIX.TGT (or .gz).")],
    src: Annotated[str, typer.Option(help="Source language suffix.")] = "en",
    tgt: Annotated[str, typer.Option(help="Target language suffix.")] = "de",
    max_length: Annotated[int, typer.Option(help="Longest side in words counted as usable.")] = DataConfig.max_length,
    max_ratio: Annotated[float, typer.Option(help="Largest word-length ratio counted as usable.")] = DataConfig.max_ratio,
    utf8_errors: Annotated[Utf8Policy, typer.Option(help="strict: invalid UTF-8 is an error; replace: count it.")] = "replace",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object with every count and line number.")] = False,
) -> None:
    """Validate a parallel corpus and print its statistics and problem lines.

    Exit status: 0 trainable, 1 not trainable as it is, 2 usage error.
    """
    from tinytrans.config import FLAGS, build_config
    from tinytrans.corpus_check import check_corpus
    build_config({"data": {"max_length": max_length, "max_ratio": max_ratio}}, FLAGS)
    report = check_corpus(prefix, src, tgt, max_length, max_ratio, utf8_errors)
    if as_json:
        print(json.dumps(report.to_json(prefix)))
    else:
        table = Table(title=Text(f"{prefix} ({src}-{tgt})"))
        table.add_column("")
        table.add_column(src, justify="right")
        table.add_column(tgt, justify="right")
        for row in report.rows():
            table.add_row(*row)
        Console().print(table)
        for line in report.where():
            say(line, "  ")
        for problem in report.problems():
            say(problem, "problem: ", "bold red")
    if report.problems():
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# train

@app.command()
@friendly_errors
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory (resumed if it exists).")],
    train: Annotated[Optional[list[str]], typer.Option("--train", help="Training corpus prefix (PREFIX.SRC, PREFIX.TGT); with --directions a multi-way prefix (PREFIX.LANG for every language), or repeated as PREFIX:en-de for bilingual corpora.")] = None,
    valid: Annotated[Optional[list[str]], typer.Option("--valid", help="Validation corpus prefix, given as --train is.")] = None,
    directions: Annotated[Optional[str], typer.Option("--directions", help="Train one model for several directions, such as en-de,de-en,en-fr (a target-language tag starts each source).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="With --directions: share each epoch among them by (size)^(1/T); 1 keeps their sizes, larger evens them out.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="A corpus made by 'tinytrans prepare' (instead of --train/--valid).")] = None,
    src: Annotated[Optional[str], typer.Option(help="Source language suffix.")] = None,
    tgt: Annotated[Optional[str], typer.Option(help="Target language suffix.")] = None,
    preset: Annotated[Optional[Preset], typer.Option(help="A model size and schedule to start from.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with [model], [data] and [train] tables.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Existing joint SentencePiece model.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Pieces of the tokenizer trained here.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Drop training pairs longer than this (pieces).")] = None,
    utf8_errors: Annotated[Optional[Utf8Policy], typer.Option(help="strict: invalid UTF-8 is an error; replace: replace and count it.")] = None,
    sampling_alpha: Annotated[Optional[float], typer.Option(help="Subword regularization: segment the training text anew each epoch by sampling (BPE: each merge skipped with this probability). 0: off.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout on embeddings and residual branches.")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help="Tokens per batch, padding included.")] = None,
    update_freq: Annotated[Optional[int], typer.Option(help="Batches per update (gradient accumulation).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warmup updates.")] = None,
    lr_schedule: Annotated[Optional[LrSchedule], typer.Option(help="Decay after warmup: 1/sqrt(step), or linear to zero at --max-steps/--max-time.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many updates.")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Stop after this many epochs.")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="Stop after this many minutes.")] = None,
    validate_every: Annotated[Optional[int], typer.Option(help="Updates between validations.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Updates between checkpoints.")] = None,
    keep_last: Annotated[Optional[int], typer.Option(help="Step checkpoints to keep.")] = None,
    average_last: Annotated[Optional[int], typer.Option(help="At the end, average the last N step checkpoints.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many validations without a better --best-metric.")] = None,
    best_metric: Annotated[Optional[BestMetric], typer.Option(help="What picks the best checkpoint and what --patience watches: a higher greedy validation BLEU, or a lower validation loss (fairseq's way).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="auto: bf16 where the hardware has it, else fp32.")] = None,
    device: Annotated[Optional[Device], typer.Option(help="auto: a CUDA GPU when there is one.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Fine-tune: start from this run's weights, tokenizer and model shape (flags that would change them are refused), its other settings as defaults (its corpora not), with a fresh optimizer and learning rate schedule.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="With --init: that run's checkpoint to start from: best, last, average or a file.")] = None,
    init_optimizer: Annotated[bool, typer.Option("--init-optimizer", help="With --init: take Adam's moments from that checkpoint too (a step checkpoint: --checkpoint last). The learning rate schedule still starts at update 0, warmup included.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing run and start over.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Train a Transformer (tokenizer included), fine-tune a trained one (--init) or resume an
    interrupted run."""
    from tinytrans.progress import TrainDisplay
    from tinytrans.rundir import resolve_run_config
    from tinytrans.train import train as run_training

    data_flags = {"train": _corpora(train), "valid": _corpora(valid, "--valid"), "src": src,
                  "tgt": tgt,
                  "tokenizer": tokenizer, "vocab_size": vocab_size, "max_length": max_length,
                  "utf8_errors": utf8_errors, "directions": directions}
    given = [name for name, value in data_flags.items() if value is not None]
    if data is not None and given:
        flag = "--" + given[0].replace("_", "-")
        raise UserError(f"{flag}: the corpus in --data {data} was read, filtered and encoded by "
                        f"'tinytrans prepare'; give {flag} to prepare instead")
    resolved = resolve_run_config(output, {
        "data": {**data_flags, "prepared": str(data) if data is not None else None,
                 "sampling_alpha": sampling_alpha, "temperature": temperature},
        "model": {"dropout": dropout},
        "train": {"batch_tokens": batch_tokens, "update_freq": update_freq, "lr": lr,
                  "warmup_steps": warmup_steps, "lr_schedule": lr_schedule,
                  "max_steps": max_steps, "max_epochs": max_epochs, "max_time": max_time,
                  "validate_every": validate_every, "checkpoint_every": checkpoint_every,
                  "keep_last": keep_last, "average_last": average_last, "patience": patience,
                  "best_metric": best_metric,
                  "seed": seed, "precision": precision, "device": device, "threads": threads,
                  "init": str(init) if init is not None else None, "init_checkpoint": checkpoint,
                  "init_optimizer": init_optimizer or None}},
        preset, config, overwrite)
    _own_the_process(resolved.train.threads)
    display = TrainDisplay(stderr, quiet)
    stop = _StopOnSignal()
    try:
        run_training(resolved, output, overwrite, display, stop.requested)
    finally:
        stop.restore()
        display.close()


def _corpora(prefixes: list[str] | None, flag: str = "--train") -> str | None:
    """--train (or --valid) given once or more: one string, the entries joined by commas (the
    form data.train takes in a config file, directions.direction_corpora reads it). Several
    plain prefixes are a mistake: a multi-way corpus is one prefix, bilingual ones name their
    pairs."""
    if prefixes and len(prefixes) > 1 and not all(":" in p for p in prefixes):
        raise UserError(f"{flag}: given {len(prefixes)} times; several corpora are for a model "
                        "of several directions (--directions), each as PREFIX:en-de")
    return ",".join(prefixes) if prefixes else None


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM): finish the current update, checkpoint and stop. Second: abort."""

    def __init__(self):
        self.flag = False
        self.previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (an embedding application): no handlers
            pass

    def _handle(self, signum, frame):
        # Under torchrun one Ctrl-C reaches each training process twice, a moment apart: from the
        # terminal, and forwarded by torchrun. Only a signal a second or more later aborts.
        if self.flag:
            if time.monotonic() - self.first >= 1.0:
                raise KeyboardInterrupt
            return
        self.flag, self.first = True, time.monotonic()
        stderr.print("stopping after this update and saving a checkpoint (Ctrl-C again to abort)")

    def requested(self) -> bool:
        return self.flag

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# prepare

@app.command()
@friendly_errors
def prepare(
    output: Annotated[Path, typer.Option("--output", "-o", help="Data directory to write (replaced if prepare wrote it).")],
    train: Annotated[list[str], typer.Option("--train", help="Training corpus prefix (as train --train: with --directions, multi-way, or repeated as PREFIX:en-de).")],
    valid: Annotated[Optional[list[str]], typer.Option("--valid", help="Validation corpus prefix, given as --train is.")] = None,
    src: Annotated[Optional[str], typer.Option(help="Source language suffix.")] = None,
    tgt: Annotated[Optional[str], typer.Option(help="Target language suffix.")] = None,
    directions: Annotated[Optional[str], typer.Option("--directions", help="Several directions in one corpus, for one model (as train --directions).")] = None,
    preset: Annotated[Optional[Preset], typer.Option(help="The preset whose [data] settings to use (as train --preset).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file whose [data] table to use.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Existing joint SentencePiece model.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Pieces of the tokenizer trained here.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Drop training pairs longer than this (pieces).")] = None,
    utf8_errors: Annotated[Optional[Utf8Policy], typer.Option(help="strict: invalid UTF-8 is an error; replace: replace and count it.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the tokenizer's training sample.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Encoding processes (default: one per core).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Encode a parallel corpus once, for 'train --data': filtered, tokenized, memory-mappable."""
    from tinytrans.config import resolve_train_config
    from tinytrans.events import Event
    from tinytrans.prepared import prepare as prepare_corpus
    from tinytrans.progress import TrainDisplay

    resolved = resolve_train_config(
        {"data": {"train": _corpora(train), "valid": _corpora(valid, "--valid"), "src": src,
                  "tgt": tgt,
                  "directions": directions, "tokenizer": tokenizer, "vocab_size": vocab_size,
                  "max_length": max_length, "utf8_errors": utf8_errors},
         "train": {"seed": seed}}, preset, config)
    display = TrainDisplay(stderr, quiet)  # the same lines as train's about the data
    status = stderr.status("preparing...") if stderr.is_terminal and not quiet else None

    def report(event: dict[str, Any]) -> None:
        if event["event"] == Event.PROGRESS and status is not None:
            status.update(f"{event['read']:,} pairs read, {event['kept']:,} kept")
        display(event)

    with status if status is not None else ExitStack():
        manifest = prepare_corpus(resolved.data, output, workers, resolved.train.seed, report)
    if not quiet:
        say(f"wrote {output} ({manifest['splits']['train']['kept']:,} training pairs, "
            f"{manifest['tokenizer']['vocab_size']:,} pieces); train with --data {output}")


# ---------------------------------------------------------------------------------------------
# translate

class _QuietBrokenPipe:
    """`tinytrans translate ... | head` closes the pipe early: end quietly, like other tools."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
            raise typer.Exit(0)
        return False


# The search options, declared once for translate, evaluate and attention; their defaults and
# ranges are SearchConfig's (config.py), which checks them.
DEFAULT_SEARCH = SearchConfig()
Beam = Annotated[int, typer.Option(help="Beam size (1 = greedy).")]
NBest = Annotated[int, typer.Option(help="Hypotheses per line: index<TAB>score<TAB>text.")]
LenPen = Annotated[float, typer.Option(help="Length penalty alpha (score / length^alpha).")]
MaxLenA = Annotated[float, typer.Option(help="Output length limit a * source + b (a <= 10).")]
MaxLenB = Annotated[int, typer.Option(help="Output length limit a * source + b (b <= 1024).")]
SearchBatchTokens = Annotated[int, typer.Option(help="Source tokens x beam per batch.")]
SplitSentences = Annotated[bool, typer.Option("--split-sentences/--no-split-sentences", help="Translate each line sentence by sentence, joined back into one line (the default); the no form keeps each line whole, and cuts one too long for the model.")]
EngineOption = Annotated[Engine, typer.Option(help="torch: the run directory's PyTorch model; ctranslate2: a directory 'tinytrans export' wrote, in C++ (no constraints, alignments or attention).")]
GlossaryFile = Annotated[Optional[Path], typer.Option("--glossary", help="TSV of 'source term<TAB>target term': where a source term occurs, its target term must appear.")]
GlossaryMethod = Annotated[GlossaryMethodName, typer.Option("--glossary-method", help="place: translate, then put each term where its source term was translated (by word alignment); constrain: make the search include each term.")]


SourceLanguage = Annotated[Optional[str], typer.Option("--src", help="The input's language, for a model of several directions (default: detected per line).")]
TargetLanguage = Annotated[Optional[str], typer.Option("--tgt", help="The language to translate into, for a model of several target languages.")]
ZeroShot = Annotated[bool, typer.Option("--zero-shot", help="A pair the model was not trained on: straight there with its tag, not through a pivot language (rarely good).")]


@app.command()
@friendly_errors
def translate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory of a trained model.")],
    checkpoint: Annotated[str, typer.Option(help="best, last, average or a checkpoint path.")] = "best",
    beam: Beam = DEFAULT_SEARCH.beam,
    nbest: NBest = DEFAULT_SEARCH.nbest,
    lenpen: LenPen = DEFAULT_SEARCH.lenpen,
    max_len_a: MaxLenA = DEFAULT_SEARCH.max_len_a,
    max_len_b: MaxLenB = DEFAULT_SEARCH.max_len_b,
    batch_tokens: SearchBatchTokens = DEFAULT_SEARCH.batch_tokens,
    device: Annotated[Device, typer.Option(help="auto: a CUDA GPU when there is one.")] = "auto",
    precision: Annotated[InferencePrecision, typer.Option(help="int8: quantised, CPU only; auto: bf16 where native, else fp32.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Read this file instead of stdin.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Write here instead of stdout (replaced only when complete).")] = None,
    constraints: Annotated[Optional[Path], typer.Option("--constraints", help="One line per input line: target phrases that must appear, tab-separated (empty line: none).")] = None,
    glossary: GlossaryFile = None,
    glossary_method: GlossaryMethod = "place",
    prefix: Annotated[Optional[Path], typer.Option("--prefix", help="One line per input line: the words its translation begins with (empty line: none); the search completes it.")] = None,
    split_sentences: SplitSentences = True,
    alignment: Annotated[bool, typer.Option("--alignment", help="Append a tab and the word alignment: pairs of word indices, source-target (0-0 1-2 ...).")] = False,
    sample: Annotated[Optional[str], typer.Option("--sample", metavar="K|all", help="Sample translations instead of searching: each token from the K most probable, or from all.")] = None,
    temperature: Annotated[float, typer.Option(help="With --sample: < 1 sharpens, > 1 flattens the distribution; 0 takes the most probable.")] = DEFAULT_SEARCH.temperature,
    top_p: Annotated[float, typer.Option(help="With --sample: draw from the most probable tokens holding this much probability.")] = DEFAULT_SEARCH.top_p,
    seed: Annotated[int, typer.Option(help="With --sample: the same seed and input give the same samples.")] = DEFAULT_SEARCH.seed,
    engine: EngineOption = "torch",
    src: SourceLanguage = None,
    tgt: TargetLanguage = None,
    zero_shot: ZeroShot = False,
    placeholders: Annotated[bool, typer.Option("--placeholders/--no-placeholders", help="Keep URLs, e-mail addresses, numbers and {variables} byte for byte: the model sees a stand-in, the translation gets them back.")] = True,
    format: Annotated[Optional[FileFormat], typer.Option("--format", help="The input's kind (default: --input's extension, else text). html: HTML whose text is translated, its tags kept around the words they covered (placed by word alignment), script, code and translate=\"no\" left as they are (from stdin: each line a fragment); srt: subtitles, cue numbers and timings kept; docx: a Word document (--input and --output).")] = None,
) -> None:
    """Translate lines from stdin (or --input) to stdout: one output line per input line."""
    from tinytrans.atomic import atomic_text_output, check_writable, same_file
    from tinytrans.lines import (Languages, LineOptions, check_markup_options,
                                 check_sampling_alone, decode_input)
    from tinytrans.terminology import constraints_for, prefixes_for, read_glossary
    from tinytrans.textio import open_binary

    cfg = SearchConfig(beam=beam, nbest=nbest, lenpen=lenpen, max_len_a=max_len_a,
                       max_len_b=max_len_b, batch_tokens=batch_tokens, sample=sample_option(sample),
                       temperature=temperature, top_p=top_p, seed=seed)
    check_sampling_alone(cfg, constraints is not None or glossary is not None)
    options = LineOptions(split_sentences, alignment,
                          read_glossary(glossary) if glossary is not None else None,
                          glossary_method, placeholders)
    phrases = constraints_for(constraints, input) if constraints is not None else None
    prefixes = prefixes_for(prefix, input) if prefix is not None else None
    from tinytrans.documents import DOCUMENT_FORMATS, file_format
    kind = file_format(input, format) if input is not None else (format or "text")
    if kind != "text":
        check_markup_options(cfg, options, phrases, prefixes, kind)
    if kind == "docx" and (input is None or output is None):
        raise UserError("--format docx: give the document with --input FILE and where to write "
                        "its translation with --output FILE")
    if output is not None:
        # Checked before anything is opened for writing: the output would replace the input.
        if same_file(output, input if input is not None else _stdin_fd()):
            raise UserError(f"--output {output}: is the input file; write the translation elsewhere")
        check_writable(output)
    translator = _load_engine(engine, model, checkpoint, device, precision, threads)
    languages = Languages(src, tgt, zero_shot)
    translator.route("", languages)  # a language the model lacks: refused before any input
    warn = lambda message: say(message, "warning: ", "yellow")  # noqa: E731
    if kind in DOCUMENT_FORMATS and (input is not None or kind != "html"):
        _translate_document(translator, input, output, kind, cfg, warn, languages, placeholders)
        return
    interactive = input is None and sys.stdin.isatty()
    progress = _LineCounter(enabled=stderr.is_terminal and not interactive)
    with ExitStack() as files, _QuietBrokenPipe(), progress:
        source = files.enter_context(open_binary(input)) if input else sys.stdin.buffer
        sink = files.enter_context(atomic_text_output(output)) if output else sys.stdout
        lines = decode_input(source, str(input or "<stdin>"), warn)
        if kind == "html":  # from stdin: each line a fragment
            for document in translator.translate_markup(lines, cfg, warn, languages,
                                                        options.placeholders):
                progress.advance()
                sink.write(document.replace("\n", " ") + "\n")
                if interactive:
                    sink.flush()
            sink.flush()
            return
        for result in translator.translate(lines, cfg, 1 if interactive else 2000, warn,
                                           options, phrases, prefixes, languages):
            progress.advance()
            sink.write(_output_lines(result, cfg.nbest, alignment))
            if interactive:
                sink.flush()
        sink.flush()


def _translate_document(translator, input: Path | None, output: Path | None, kind: str,
                        cfg: SearchConfig, warn, languages, placeholders: bool) -> None:
    """A whole document (documents.py) read from --input (or stdin), its translation written
    to --output (replaced only when complete) or stdout."""
    from tinytrans.atomic import atomic_write_bytes
    from tinytrans.documents import translate_document
    from tinytrans.textio import open_binary
    name = str(input or "<stdin>")
    if input is not None:
        with open_binary(input) as handle:
            data = handle.read()
    else:
        data = sys.stdin.buffer.read()
    translated = translate_document(data, name, kind, translator.texts_translator(
        cfg, warn, languages, placeholders))
    if output is not None:
        atomic_write_bytes(output, translated)
    else:
        sys.stdout.buffer.write(translated)
        sys.stdout.flush()


def _output_lines(result, nbest: int, alignment: bool) -> str:
    """What `translate` prints for one input line: the translation, or `nbest` lines of
    index<TAB>score<TAB>translation; each followed by <TAB>alignment when asked."""
    from tinytrans.lines import format_alignment

    aligned = [f"\t{format_alignment(pairs)}" for pairs in result.alignments] if alignment else None
    if nbest == 1:
        return result.text + (aligned[0] if aligned else "") + "\n"
    entries = result.nbest or [(0.0, "")] * nbest
    return "".join(f"{index}\t{score:.4f}\t{text}"
                   f"{aligned[min(index, len(aligned) - 1)] if aligned else ''}\n"
                   for index, (score, text) in enumerate(entries))


def _load_engine(engine: str, model: Path, checkpoint: str, device: str, precision: str,
                 threads: int | None):
    """The translator of --engine: PyTorch's (a run directory), or CTranslate2's (a directory
    `tinytrans export` wrote), which imports no torch: its process does not own PyTorch's
    threads, CTranslate2 gets them itself."""
    if engine == "torch":
        from tinytrans.translate import Translator
        _own_the_process(threads)
        return Translator(model, checkpoint, device, precision)
    from tinytrans.ct2engine import CT2Translator
    for flag, value, default in (("--checkpoint", checkpoint, "best"),
                                 ("--precision", precision, "auto")):
        if value != default:
            raise UserError(f"{flag}: with --engine ctranslate2 the export decides (tinytrans "
                            "export --checkpoint ... --quantization ...)")
    return CT2Translator(model, device, threads)


def _own_the_process(threads: int | None) -> None:
    """What the library leaves to the program that owns the process: PyTorch's thread count
    and the allocator's policy (hardware.keep_freed_memory)."""
    from tinytrans.hardware import keep_freed_memory, set_threads
    set_threads(threads)
    keep_freed_memory()


def _serving_threads(threads: int | None) -> int | None:
    """serve's thread count for the PyTorch model: as asked (--threads, or OMP_NUM_THREADS), or
    one fewer than PyTorch would take. The event loop reads requests and writes answers while
    the model runs, and a model thread it preempts holds up every other at the next
    synchronisation: on 2 cores, 2 threads served one client 10.2 sentences/s and 16 clients
    39.8, 1 thread 29.2 and 74.2 (bench/RESULTS.md, "Serving")."""
    if threads is not None or os.environ.get("OMP_NUM_THREADS"):
        return threads
    import torch
    return max(1, torch.get_num_threads() - 1)


def _stdin_fd() -> int:
    try:
        return sys.stdin.fileno()
    except (OSError, ValueError):  # replaced by an object without a descriptor (tests, embedding)
        return -1


class _LineCounter:
    """'N lines translated' on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.status = stderr.status("translating...") if enabled else None
        self.lines = 0

    def __enter__(self):
        if self.status:
            self.status.start()
        return self

    def advance(self) -> None:
        self.lines += 1
        if self.status and self.lines % 100 == 0:
            self.status.update(f"{self.lines:,} lines translated")

    def __exit__(self, *exc):
        if self.status:
            self.status.stop()
        return False


@app.command()
@friendly_errors
def detect(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory, or a directory 'tinytrans export' wrote.")],
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Read this file instead of stdin.")] = None,
) -> None:
    """Which of the model's languages each line of stdin (or --input) is in: language<TAB>confidence."""
    from tinytrans.langid import identifier_in, missing_identifier
    from tinytrans.lines import decode_input
    from tinytrans.textio import open_binary

    if not model.is_dir():
        raise UserError(f"--model {model}: not a directory")
    identifier = identifier_in(model)
    if identifier is None:
        raise missing_identifier(f"--model {model}")
    warn = lambda message: say(message, "warning: ", "yellow")  # noqa: E731
    with ExitStack() as files, _QuietBrokenPipe():
        source = files.enter_context(open_binary(input)) if input else sys.stdin.buffer
        for line in decode_input(source, str(input or "<stdin>"), warn):
            guess = identifier.identify(line)
            sys.stdout.write(f"{guess.language}\t{guess.confidence:.1f}\n")


# ---------------------------------------------------------------------------------------------
# evaluate

@app.command()
@friendly_errors
def evaluate(
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run directory to translate with.")] = None,
    test: Annotated[Optional[list[str]], typer.Option("--test", help="Test corpus prefix; repeat for more.")] = None,
    src: Annotated[Optional[str], typer.Option(help="Source language suffix (default: the model's; a model of several directions: each of them).")] = None,
    tgt: Annotated[Optional[str], typer.Option(help="Target language suffix (as --src).")] = None,
    directions: Annotated[Optional[str], typer.Option("--directions", help="A model of several directions: score these (such as en-de,de-fr) instead of every trained one whose files exist.")] = None,
    zero_shot: ZeroShot = False,
    hyp: Annotated[Optional[Path], typer.Option("--hyp", help="Score this translation file instead.")] = None,
    ref: Annotated[Optional[list[Path]], typer.Option("--ref", help="Reference file(s) for --hyp.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last, average or a checkpoint path.")] = "best",
    beam: Beam = DEFAULT_SEARCH.beam,
    lenpen: LenPen = DEFAULT_SEARCH.lenpen,
    max_len_a: MaxLenA = DEFAULT_SEARCH.max_len_a,
    max_len_b: MaxLenB = DEFAULT_SEARCH.max_len_b,
    batch_tokens: SearchBatchTokens = DEFAULT_SEARCH.batch_tokens,
    device: Annotated[Device, typer.Option(help="auto: a CUDA GPU when there is one.")] = "auto",
    precision: Annotated[InferencePrecision, typer.Option(help="int8: quantised, CPU only; auto: bf16 where native, else fp32.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Case-insensitive scores.")] = False,
    tokenize: Annotated[str, typer.Option(help="sacrebleu's BLEU tokenizer (13a, intl, none, char, ...).")] = BLEU_TOKENIZE,
    save_hyp: Annotated[Optional[Path], typer.Option(help="Keep translations in this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per test set on stdout.")] = False,
) -> None:
    """BLEU, chrF and TER (sacrebleu, with signatures) of a model on test sets, or of a file."""
    from tinytrans.evaluate import ScoreOptions, check_test_sets, evaluate_test_set, score_files
    from tinytrans.translate import Translator

    options = ScoreOptions(lowercase=lowercase, tokenize=tokenize)
    trained = None  # the model's directions, when a model is evaluated
    if hyp is not None:
        if not ref:
            raise UserError("--hyp needs at least one --ref")
        results = [score_files(hyp, ref, options)]
    else:
        if model is None or not test:
            raise UserError("give --model RUN with --test PREFIX, or --hyp FILE with --ref FILE")
        cfg = SearchConfig(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b,
                           batch_tokens=batch_tokens)
        from tinytrans.rundir import load_run_config, run_directions
        trained = run_directions(load_run_config(model).data)
        wanted = test_directions(trained, test, src, tgt, directions)
        for prefix, direction in wanted:  # before the model loads or any translation
            check_test_sets([prefix], direction.src, direction.tgt, save_hyp)
            if trained.tagged:  # a model of one pair: --src and --tgt name files only
                trained.route(direction.src, direction.tgt, zero_shot)
        _own_the_process(threads)
        translator = Translator(model, checkpoint, device, precision)
        results = [{**evaluate_test_set(translator, prefix, direction.src, direction.tgt, cfg,
                                        options, save_hyp, zero_shot),
                    "precision": str(translator.precision_choice)}
                   for prefix, direction in wanted]
    if as_json:
        for result in results:
            print(json.dumps(result))
    elif trained is not None and trained.tagged:
        _print_directions(results)
    else:
        for result in results:
            _print_scores(result)


# ---------------------------------------------------------------------------------------------
# attention, average, export

@app.command()
@friendly_errors
def attention(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory of a trained model.")],
    sentences: Annotated[Optional[list[str]], typer.Argument(help="Sentences to translate; lines from stdin when none is given.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last, average or a checkpoint path.")] = "best",
    kind: Annotated[AttentionKind, typer.Option(help="cross: target rows over source columns; encoder or decoder: self-attention.")] = "cross",
    layer: Annotated[str, typer.Option(help="Layer index (0 = first, -1 = last) or all (their mean).")] = "all",
    head: Annotated[str, typer.Option(help="Head index, mean, or all (a grid of layers x heads; --png only).")] = "mean",
    png: Annotated[Optional[Path], typer.Option("--png", help="Write a labelled picture here (needs the plot extra).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sentence: pieces and every weight matrix.")] = False,
    beam: Beam = DEFAULT_SEARCH.beam,
    device: Annotated[Device, typer.Option(help="auto: a CUDA GPU when there is one.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
) -> None:
    """Translate sentences and show what the model attends to, as a heatmap in the terminal."""
    import tinytrans
    from tinytrans.attention import render_heatmap, save_png

    texts = sentences or [line for line in _stdin_lines() if line.strip()]
    if png is not None and len(texts) != 1:
        raise UserError(f"--png: draws one sentence, {len(texts)} were given")
    _own_the_process(threads)
    translation_model = tinytrans.load(model, checkpoint, device, "fp32")
    for text in texts:
        found = translation_model.attention(text, beam=beam)
        if as_json:
            print(json.dumps(found.to_json()))
        elif png is None:
            Console().print(render_heatmap(found, kind, layer, head))
    if png is not None:
        say(f"wrote {save_png(found, png, kind, layer, head)}")


@app.command()
@friendly_errors
def average(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory.")],
    last: Annotated[Optional[int], typer.Option(help="How many of the newest step checkpoints to average (default: the run's average_last, else every checkpoint it keeps).")] = None,
) -> None:
    """Average the weights of the last N step checkpoints into checkpoints/average.safetensors."""
    from tinytrans.average import average_last
    path, n = average_last(model, last)
    say(f"wrote {path} (the mean of the last {n} checkpoints); use --checkpoint average")


@app.command()
@friendly_errors
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="A new directory for the exported model.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="The engine to export to.")] = "ctranslate2",
    checkpoint: Annotated[str, typer.Option(help="best, last, average or a checkpoint path.")] = "best",
    quantization: Annotated[Optional[Quantization], typer.Option(help="Weights' type in the export (default: fp32).")] = None,
) -> None:
    """Export a trained model to CTranslate2 (needs the export extra: pip install 'tinytrans[export]')."""
    from tinytrans.export import export_model
    path = export_model(model, output, format, checkpoint, quantization)
    say(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# serve

DEFAULT_SERVE = ServeConfig()

@app.command()
@friendly_errors
def serve(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory of a trained model.")],
    checkpoint: Annotated[str, typer.Option(help="best, last, average or a checkpoint path.")] = "best",
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 serves this machine only.")] = DEFAULT_SERVE.host,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, printed at start).")] = DEFAULT_SERVE.port,
    beam: Beam = DEFAULT_SEARCH.beam,
    max_chars: Annotated[int, typer.Option(help="Characters of text per request, at most.")] = DEFAULT_SERVE.max_chars,
    max_lines: Annotated[int, typer.Option(help="Lines per request, at most.")] = DEFAULT_SERVE.max_lines,
    max_body: Annotated[int, typer.Option(help="Bytes of a request body, at most (413 beyond).")] = DEFAULT_SERVE.max_body,
    queue: Annotated[int, typer.Option(help="Requests waiting for the model, at most (429 beyond).")] = DEFAULT_SERVE.queue,
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait for its translation (503 beyond).")] = DEFAULT_SERVE.timeout,
    max_connections: Annotated[int, typer.Option(help="Open connections at once, at most (503 and closed beyond).")] = DEFAULT_SERVE.max_connections,
    request_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a whole request, from connecting or from its last answer (408 and closed beyond).")] = DEFAULT_SERVE.request_timeout,
    device: Annotated[Device, typer.Option(help="auto: a CUDA GPU when there is one.")] = "auto",
    precision: Annotated[InferencePrecision, typer.Option(help="int8: quantised, CPU only; auto: bf16 where measured faster, else fp32.")] = "auto",
    api_keys: Annotated[Optional[Path], typer.Option("--api-keys", help="A line per key: KEY<TAB>REQUESTS_PER_MINUTE; every request must then carry a listed api_key (403), within its limit (429).")] = None,
    req_limit: Annotated[int, typer.Option("--req-limit", help="Without --api-keys: requests a minute per client address (0: no limit).")] = DEFAULT_SERVE.req_limit,
    cors: Annotated[Optional[list[str]], typer.Option("--cors", help="An origin whose pages may read the answers (https://example.org, or *); repeat for more.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for the model (torch engine default: one fewer than PyTorch would take, leaving the server's HTTP work a core)")] = None,
    engine: EngineOption = "torch",
) -> None:
    """Serve a model over HTTP: LibreTranslate's API, and a page that shows attention."""
    from tinytrans.access import read_api_keys
    try:
        from tinytrans.serve import serve as run_server
    except ImportError as missing:
        raise UserError(f"serve needs the serve extra ({missing.name} is missing): "
                        "pip install 'tinytrans[serve]'") from None

    cfg = ServeConfig(host=host, port=port, beam=beam, max_chars=max_chars, max_lines=max_lines,
                      max_body=max_body, queue=queue, timeout=timeout,
                      max_connections=max_connections, request_timeout=request_timeout,
                      req_limit=req_limit, cors=tuple(cors or ()))
    keys = read_api_keys(api_keys) if api_keys is not None else None  # before the model loads
    translator = _load_engine(engine, model, checkpoint, device, precision,
                              _serving_threads(threads) if engine == "torch" else threads)
    # uvicorn handles SIGTERM and Ctrl-C itself (stop accepting, finish what is in flight), then
    # raises the signal again once it has stopped: by then there is nothing left to interrupt.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    run_server(translator, cfg, announce=say,
               log_error=lambda error: say(describe_error(error)[0], "error: ", "bold red"),
               api_keys=keys)
    say("stopped")


def test_directions(trained, prefixes: list[str], src: str | None, tgt: str | None,
                    directions: str | None) -> list[tuple[str, Any]]:
    """(test prefix, direction) pairs to score: --src/--tgt, or --directions, or, for a model of
    one pair, its pair; for a multilingual model every trained direction whose two files the
    test prefix has (at least one, else an error naming what is missing)."""
    from tinytrans.directions import Direction, parse_directions
    from tinytrans.textio import corpus_file
    if directions is not None and (src or tgt):
        raise UserError("--directions: give it, or --src and --tgt, not both")
    if directions is not None:
        chosen = list(parse_directions(directions, "--directions"))
    elif src or tgt:
        default = trained.trained[0]
        chosen = [Direction(src or default.src, tgt or default.tgt)]
    else:
        chosen = list(trained.trained)
    if directions is not None or src or tgt or not trained.tagged:
        return [(prefix, d) for prefix in prefixes for d in chosen]
    found = []
    for prefix in prefixes:
        mine = [(prefix, d) for d in chosen
                if all(_corpus_exists(prefix, lang) for lang in (d.src, d.tgt))]
        if not mine:
            raise UserError(f"--test {prefix}: has the files of none of the model's directions "
                            f"({', '.join(d.name for d in chosen)}): e.g. "
                            f"{corpus_file(prefix, chosen[0].src)}")
        found += mine
    return found


def _corpus_exists(prefix: str, language: str) -> bool:
    from tinytrans.textio import corpus_file
    try:
        return corpus_file(prefix, language).is_file()
    except UserError:
        return False


def _print_directions(results: list[dict[str, Any]]) -> None:
    """Several directions' scores as one table, a row per direction and test set."""
    table = Table(title=Text("scores by direction"))
    for column in ("test", "direction", "sentences", "BLEU", "chrF", "TER", "sentences/s"):
        table.add_column(column, justify="left" if column in ("test", "direction") else "right")
    for r in results:
        table.add_row(Path(r["test"]).name, r["direction"], str(r["sentences"]), f"{r['bleu']:.2f}",
                      f"{r['chrf']:.2f}", f"{r['ter']:.2f}", f"{r['sentences_per_second']:.1f}")
    Console().print(table)
    for name in ("bleu", "chrf", "ter"):
        Console().print(f"{name} signature: {results[0]['signatures'][name]}")


def _print_scores(result: dict[str, Any]) -> None:
    table = Table(title=Text(f"{result['test']} ({result['sentences']} sentences)"))
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("signature")
    for name in ("bleu", "chrf", "ter"):
        table.add_row(name.upper() if name != "chrf" else "chrF", f"{result[name]:.2f}", result["signatures"][name])
    Console().print(table)
    if "seconds" in result:
        Console().print(f"translated in {result['seconds']:.1f} s ({result['sentences_per_second']:.1f} sentences/s)")


def main() -> None:
    app(prog_name="tinytrans")

"""The `tinytrans` command line: each command turns flags into one library call.

Errors a user can cause arrive here as UserError and are printed as one line, exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinytrans import __version__
from tinytrans.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and run neural machine translation models you can read end to end.")
tokenizer_app = typer.Typer(no_args_is_help=True, help="Train and apply SentencePiece tokenizers.")
corpus_app = typer.Typer(no_args_is_help=True, help="Inspect parallel corpora.")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(corpus_app, name="corpus")

stderr = Console(stderr=True)
DEBUG_ENV = "TINYTRANS_DEBUG"


def say(message: str, label: str = "", style: str = "") -> None:
    """One line on stderr. User text (paths, lines) is never read as rich markup."""
    stderr.print(Text(label, style=style) + Text(message), highlight=False, soft_wrap=True)


def friendly_errors(command):
    """Print a UserError as one line and exit 2 (or re-raise it under --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if os.environ.get(DEBUG_ENV):
                raise
            say(str(error), "error: ", "bold red")
            raise typer.Exit(2) from None
    return wrapper


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
    if debug:
        os.environ[DEBUG_ENV] = "1"


# ---------------------------------------------------------------------------------------------
# tokenizer

@tokenizer_app.command("train")
@friendly_errors
def tokenizer_train(
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Text file (plain or .gz); repeat for more.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Prefix: writes PREFIX.model and PREFIX.vocab.")],
    vocab_size: Annotated[int, typer.Option(help="Number of pieces, reserved ids included.")] = 8000,
    model_type: Annotated[str, typer.Option(help="bpe or unigram.")] = "bpe",
    character_coverage: Annotated[float, typer.Option(help="Share of characters covered (1.0 for alphabetic scripts).")] = 1.0,
    max_sentences: Annotated[Optional[int], typer.Option(help="Train on a random sample of this many lines.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 1,
) -> None:
    """Train a SentencePiece model (one joint vocabulary when given both languages' files)."""
    from tinytrans.tokenizer import train_tokenizer
    tok = train_tokenizer(input, output, vocab_size, model_type, character_coverage, max_sentences, seed)
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
    with _quiet_broken_pipe():
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
    with _quiet_broken_pipe():
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
    max_length: Annotated[int, typer.Option(help="Longest side in words counted as usable.")] = 128,
    max_ratio: Annotated[float, typer.Option(help="Largest word-length ratio counted as usable.")] = 3.0,
    utf8_errors: Annotated[str, typer.Option(help="strict: invalid UTF-8 is an error; replace: count it.")] = "replace",
) -> None:
    """Validate a parallel corpus and print its statistics; exit 1 if it cannot be trained on."""
    from tinytrans.corpus_check import check_corpus
    report = check_corpus(prefix, src, tgt, max_length, max_ratio, utf8_errors)
    table = Table(title=Text(f"{prefix} ({src}-{tgt})"))
    table.add_column("")
    table.add_column(src, justify="right")
    table.add_column(tgt, justify="right")
    for row in report.rows():
        table.add_row(*row)
    Console().print(table)
    for problem in report.problems():
        say(problem, "problem: ", "bold red")
    if report.problems():
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# train

def _overrides(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}


@app.command()
@friendly_errors
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory (resumed if it exists).")],
    train: Annotated[Optional[str], typer.Option("--train", help="Training corpus prefix.")] = None,
    valid: Annotated[Optional[str], typer.Option("--valid", help="Validation corpus prefix.")] = None,
    src: Annotated[Optional[str], typer.Option(help="Source language suffix.")] = None,
    tgt: Annotated[Optional[str], typer.Option(help="Target language suffix.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="tiny, small or base.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with [model], [data], [train].")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Existing joint SentencePiece model.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Pieces of the tokenizer trained here.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Drop training pairs longer than this (pieces).")] = None,
    utf8_errors: Annotated[Optional[str], typer.Option(help="strict or replace.")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option(help="Tokens per batch, padding included.")] = None,
    update_freq: Annotated[Optional[int], typer.Option(help="Batches per update (gradient accumulation).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warmup updates.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many updates.")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Stop after this many epochs.")] = None,
    max_time: Annotated[Optional[float], typer.Option(help="Stop after this many minutes.")] = None,
    validate_every: Annotated[Optional[int], typer.Option(help="Updates between validations.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Updates between checkpoints.")] = None,
    keep_last: Annotated[Optional[int], typer.Option(help="Step checkpoints to keep.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many validations without a better BLEU.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, bf16 or auto.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete an existing run and start over.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Train a Transformer (tokenizer included) or resume an interrupted run."""
    from tinytrans import config as configs
    from tinytrans.progress import TrainDisplay
    from tinytrans.rundir import CONFIG_FILE
    from tinytrans.train import train as run_training

    values: dict[str, dict[str, Any]] = {}
    if (output / CONFIG_FILE).is_file() and not overwrite:
        values = configs.config_to_dict(configs.build_config(configs.read_toml(output / CONFIG_FILE)))
    elif preset is None and config is None:
        preset = "tiny"
    if preset is not None:
        values = configs.merge(values, configs.preset(preset))
    if config is not None:
        values = configs.merge(values, configs.read_toml(config))
    values = configs.merge(values, _overrides(
        data={"train": train, "valid": valid, "src": src, "tgt": tgt, "tokenizer": tokenizer,
              "vocab_size": vocab_size, "max_length": max_length, "utf8_errors": utf8_errors},
        train={"batch_tokens": batch_tokens, "update_freq": update_freq, "lr": lr,
               "warmup_steps": warmup_steps, "max_steps": max_steps, "max_epochs": max_epochs,
               "max_time": max_time, "validate_every": validate_every,
               "checkpoint_every": checkpoint_every, "keep_last": keep_last, "patience": patience,
               "seed": seed, "precision": precision, "device": device, "threads": threads}))
    resolved = configs.build_config(values, str(config or "command line"))
    if not resolved.data.train:
        raise UserError("--train: a training corpus prefix is needed for a new run")
    display = TrainDisplay(stderr, quiet)
    stop = _StopOnSignal()
    try:
        run_training(resolved, output, overwrite, display, stop.requested)
    finally:
        stop.restore()
        display.close()


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
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        stderr.print("stopping after this update and saving a checkpoint (Ctrl-C again to abort)")

    def requested(self) -> bool:
        return self.flag

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# translate

class _quiet_broken_pipe:
    """`tinytrans translate ... | head` closes the pipe early: end quietly, like other tools."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
            raise typer.Exit(0)
        return False


@app.command()
@friendly_errors
def translate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory of a trained model.")],
    checkpoint: Annotated[str, typer.Option(help="best, last or a checkpoint path.")] = "best",
    beam: Annotated[int, typer.Option(help="Beam size (1 = greedy).")] = 5,
    nbest: Annotated[int, typer.Option(help="Hypotheses per line: index<TAB>score<TAB>text.")] = 1,
    lenpen: Annotated[float, typer.Option(help="Length penalty alpha (score / length^alpha).")] = 1.0,
    max_len_a: Annotated[float, typer.Option(help="Output length limit a * source + b.")] = 1.5,
    max_len_b: Annotated[int, typer.Option(help="Output length limit a * source + b.")] = 10,
    batch_tokens: Annotated[int, typer.Option(help="Source tokens x beam per batch.")] = 12000,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16, int8 (CPU) or auto.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Read this file instead of stdin.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Write here instead of stdout.")] = None,
) -> None:
    """Translate lines from stdin (or --input) to stdout: one output line per input line."""
    from tinytrans.textio import open_binary
    from tinytrans.translate import Translator, decode_input, load_search_config

    cfg = load_search_config(beam, nbest, lenpen, max_len_a, max_len_b)
    translator = Translator(model, checkpoint, device, precision, threads)
    warn = lambda message: say(message, "warning: ", "yellow")  # noqa: E731
    source = open_binary(input) if input else sys.stdin.buffer
    interactive = input is None and sys.stdin.isatty()
    lines = decode_input(source, str(input or "<stdin>"), warn)
    sink = open(output, "w", encoding="utf-8") if output else sys.stdout
    progress = _LineCounter(enabled=stderr.is_terminal and not interactive)
    with _quiet_broken_pipe(), progress:
        for result in translator.translate(lines, cfg, batch_tokens, 1 if interactive else 2000, warn):
            progress.advance()
            if nbest == 1:
                sink.write(result.text + "\n")
            else:
                for index, (score, text) in enumerate(result.nbest or [(0.0, "")] * nbest):
                    sink.write(f"{index}\t{score:.4f}\t{text}\n")
            if interactive:
                sink.flush()
        sink.flush()
    if output:
        sink.close()


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


# ---------------------------------------------------------------------------------------------
# evaluate

@app.command()
@friendly_errors
def evaluate(
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run directory to translate with.")] = None,
    test: Annotated[Optional[list[str]], typer.Option("--test", help="Test corpus prefix; repeat for more.")] = None,
    src: Annotated[str, typer.Option(help="Source language suffix.")] = "en",
    tgt: Annotated[str, typer.Option(help="Target language suffix.")] = "de",
    hyp: Annotated[Optional[Path], typer.Option("--hyp", help="Score this translation file instead.")] = None,
    ref: Annotated[Optional[list[Path]], typer.Option("--ref", help="Reference file(s) for --hyp.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last or a checkpoint path.")] = "best",
    beam: Annotated[int, typer.Option(help="Beam size (1 = greedy).")] = 5,
    lenpen: Annotated[float, typer.Option(help="Length penalty alpha.")] = 1.0,
    batch_tokens: Annotated[int, typer.Option(help="Source tokens x beam per batch.")] = 12000,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16, int8 (CPU) or auto.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Case-insensitive scores.")] = False,
    tokenize: Annotated[str, typer.Option(help="sacrebleu's BLEU tokenizer.")] = "13a",
    save_hyp: Annotated[Optional[Path], typer.Option(help="Keep translations in this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per test set on stdout.")] = False,
) -> None:
    """BLEU, chrF and TER (sacrebleu, with signatures) of a model on test sets, or of a file."""
    from tinytrans.evaluate import ScoreOptions, evaluate_test_set, score_files
    from tinytrans.translate import Translator, load_search_config

    options = ScoreOptions(lowercase=lowercase, tokenize=tokenize)
    if hyp is not None:
        if not ref:
            raise UserError("--hyp needs at least one --ref")
        results = [score_files(hyp, ref, options)]
    else:
        if model is None or not test:
            raise UserError("give --model RUN with --test PREFIX, or --hyp FILE with --ref FILE")
        translator = Translator(model, checkpoint, device, precision, threads)
        cfg = load_search_config(beam, 1, lenpen, 1.5, 10)
        results = [evaluate_test_set(translator, prefix, src, tgt, cfg, options, batch_tokens, save_hyp)
                   for prefix in test]
    for result in results:
        if as_json:
            print(json.dumps(result))
        else:
            _print_scores(result)


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

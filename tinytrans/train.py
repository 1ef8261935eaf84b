"""Training: from a config and parallel text to a run directory with checkpoints.

This file is the update and the loop, and when to stop. Each update: the batches of one step
(distributed.my_share of the epoch's length-sorted plan), the teacher-forced label-smoothed loss
(objective.py), backward, gradient clipping, Adam at the step's learning rate (schedule.py). Every
`validate_every` updates process 0 validates (validation.py) and keeps the best checkpoint; every
`checkpoint_every` it writes one (rundir.RunFiles). It reports through a callback (the CLI draws
progress from it). The run directory (rundir.py) holds config.toml, the tokenizers, checkpoints,
metrics.jsonl and curves.png: a kill at any moment leaves the last checkpoint loadable, and
running the same command again resumes where it left off, on the same curve.

A run may start from another run's weights instead of random ones (fine-tuning, train.init):
it takes that run's tokenizer and model shape, with a fresh optimizer and schedule (Adam's
moments too with train.init_optimizer), and validates once before its first update, so its curve
starts where the other run stands on the new data.

The training data is parallel text, encoded at the start, or a directory made by `tinytrans
prepare` (data.prepared), memory-mapped. Under torchrun, several processes train one model
(distributed.py): each trains on its share of every update's batches, and process 0 alone
validates, writes the run directory and reports.
"""
from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tinytrans.average import average_last, resolve_with_average
from tinytrans.checkpoint import (TrainState, check_layout, file_sha256, load_init,
                                  load_model_weights, load_training_state, model_shapes,
                                  read_checkpoint, read_state, read_training_state,
                                  training_checkpoints)
from tinytrans.config import (TRAINING_BYTES_PER_PARAMETER, RunConfig, check_fits_in_memory,
                              check_kept_from_init, with_vocab_sizes)
from tinytrans.data import (Batch, EncodedCorpus, FilterConfig, FilterStats, ResampledCorpus,
                            concatenate, encode_parallel, gather, length_sorted_batches,
                            make_batch, with_tag)
from tinytrans.directions import direction_corpora, epoch_sample, parse_directions, tag_id
from tinytrans.distributed import (ONE_PROCESS, Ranks, any_rank, barrier, epoch_plan, process_0_says,
                                   my_share, process_device, process_group, ranks_from_environment,
                                   seed_dropout, sum_over_ranks, backend_errors_as_user_errors, wrap)
from tinytrans.errors import UserError
from tinytrans.events import Event
from tinytrans.hardware import PrecisionChoice, Probe, pick_precision, time_both_ways
from tinytrans.langid import LANGID_FILE, SAMPLE_LINES, LanguageIdentifier, evenly_spaced
from tinytrans.model import Transformer, count_parameters
from tinytrans.objective import TeacherForcing
from tinytrans.prepared import PreparedData, open_prepared, validation_sets
from tinytrans.schedule import budget_progress, learning_rate, make_optimizer
from tinytrans.rundir import (RunFiles, check_inputs_outside, init_config_file, load_run_config,
                              load_tokenizers, set_up_for_training, tokenizer_files,
                              undone_if_refused)
from tinytrans.textio import LineCounter, ParallelCounter, read_parallel
from tinytrans.tokenizer import Tokenizer
from tinytrans.validation import ValidationSets, load_validation_data, validate

Report = Callable[[dict[str, Any]], None]
INTERRUPTED = "interrupted; run the same command again to resume"
STOPPED_BY_MAIN = "stopped with process 0 (its report says why)"
PRECISION_TRIAL_UPDATES = 7  # batches `--precision auto` times both ways (the first warms up)


@dataclass
class Timings:
    """Seconds spent in each part of the training step, for profiling."""

    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0
    validation: float = 0.0


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    stop_reason: str
    tokens_per_second: float
    timings: Timings
    parameters: int
    last_validation: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Data


def load_training_data(cfg: RunConfig, src_tok: Tokenizer, tgt_tok: Tokenizer,
                       report: Report) -> tuple[EncodedCorpus, Callable[[int], EncodedCorpus]]:
    """The training pairs as ids, and the function that gives each epoch's ids: the same ones,
    or with data.sampling_alpha a new sampled segmentation of the text each epoch."""
    data = cfg.data
    if data.multilingual:
        return load_multilingual_data(cfg, src_tok, report)
    counter = ParallelCounter(LineCounter(), LineCounter())
    pairs = read_parallel(data.train, data.src, data.tgt, data.utf8_errors, counter)
    filters = FilterConfig(data.max_length, data.max_ratio)
    if data.sampling_alpha > 0:
        pairs = list(pairs)
    corpus = encode_parallel(pairs, src_tok, tgt_tok, filters)
    stats = corpus.stats
    report({"event": Event.DATA, "split": "train", "read": stats.read, "kept": stats.kept,
            "empty": stats.empty, "too_long": stats.too_long, "bad_ratio": stats.bad_ratio,
            "utf8_replaced": counter.src.replaced + counter.tgt.replaced})
    if stats.kept == 0:
        raise UserError(f"{data.train}: no usable training pairs ({stats.read} read, all dropped "
                        "as empty, too long or of extreme length ratio)")
    if data.sampling_alpha > 0:
        return corpus, ResampledCorpus(pairs, src_tok, tgt_tok, filters, data.sampling_alpha,
                                       cfg.train.seed)
    return corpus, lambda epoch: corpus


def load_multilingual_data(cfg: RunConfig, tokenizer: Tokenizer,
                           report: Report) -> tuple[EncodedCorpus, Callable[[int], EncodedCorpus]]:
    """Every direction's pairs, each source with its target's tag in front (directions.py),
    laid end to end (EncodedCorpus.parts says where), and the function that gives each epoch's
    pairs: drawn by temperature over the directions' sizes (directions.epoch_sample)."""
    data = cfg.data
    directions = parse_directions(data.directions)
    corpora = direction_corpora(data.train, directions)
    filters = FilterConfig(data.max_length, data.max_ratio)
    sources, targets, parts, total, replaced = [], [], [], FilterStats(), 0
    for direction in directions:
        counter = ParallelCounter(LineCounter(), LineCounter())
        pairs = read_parallel(corpora[direction], direction.src, direction.tgt, data.utf8_errors,
                              counter)
        part = encode_parallel(pairs, tokenizer, tokenizer, filters)
        if part.stats.kept == 0:
            raise UserError(f"{corpora[direction]}: no usable training pairs for "
                            f"{direction.name} ({part.stats.read} read, all dropped as empty, "
                            "too long or of extreme length ratio)")
        sources.append(with_tag(part.src, tag_id(tokenizer, direction.tgt)))
        targets.append(part.tgt)
        parts.append((direction.src, direction.tgt, part.stats.kept))
        for name in ("read", "kept", "empty", "too_long", "bad_ratio"):
            setattr(total, name, getattr(total, name) + getattr(part.stats, name))
        replaced += counter.src.replaced + counter.tgt.replaced
    corpus = EncodedCorpus(concatenate(sources), concatenate(targets), total, parts)
    report({"event": Event.DATA, "split": "train", "read": total.read, "kept": total.kept,
            "empty": total.empty, "too_long": total.too_long, "bad_ratio": total.bad_ratio,
            "utf8_replaced": replaced,
            "directions": {f"{src}-{tgt}": kept for src, tgt, kept in parts}})
    return corpus, sampled_epochs(corpus, data.temperature, cfg.train.seed)


def sampled_epochs(corpus: EncodedCorpus, temperature: float,
                   seed: int) -> Callable[[int], EncodedCorpus]:
    """The pairs of each epoch: for a corpus of several directions (EncodedCorpus.parts) drawn
    by temperature over their sizes (directions.epoch_sample), else the corpus itself."""
    sizes = [count for *_, count in corpus.parts]

    def epoch_corpus(epoch: int) -> EncodedCorpus:
        picked = epoch_sample(sizes, temperature, seed, epoch) if sizes else None
        if picked is None:
            return corpus
        return EncodedCorpus(gather(corpus.src, picked), gather(corpus.tgt, picked),
                             corpus.stats, corpus.parts)
    return epoch_corpus


def prepared_data_events(prepared: PreparedData, report: Report) -> None:
    """The same events as when the text is encoded at the start, from the manifest."""
    train = prepared.manifest["splits"]["train"]
    report({"event": Event.DATA, "split": "train", "prepared": str(prepared.directory),
            **{k: train[k] for k in ("read", "kept", "empty", "too_long", "bad_ratio",
                                     "utf8_replaced")}})
    valid = prepared.manifest["splits"].get("valid")
    if valid is not None:
        report({"event": Event.VALID_DATA, "read": valid["read"], "kept": valid["kept"]})


# ---------------------------------------------------------------------------------------------
# Fine-tuning: the run a run starts from

@dataclass(frozen=True)
class InitRun:
    """The run a fine-tuned run starts from (train.init), and the checkpoint it takes."""

    run_dir: Path
    config: RunConfig
    checkpoint: Path

    def record(self, optimizer: bool) -> dict[str, Any]:
        """Where the run came from, for its metrics.jsonl: the run, the file and its contents."""
        return {"run": str(self.run_dir.resolve()), "checkpoint": str(self.checkpoint.resolve()),
                "sha256": file_sha256(self.checkpoint),
                "step": read_state(self.checkpoint).get("step"), "optimizer": optimizer}


def find_init(cfg: RunConfig, run_dir: Path, overwrite: bool = False) -> InitRun | None:
    """The run that `cfg` is fine-tuned from, when this start of it uses one: every train.init*
    option is checked here, before any work, and each mistake is a one-line UserError.

    None for a run from scratch, and for a fine-tuned run resumed from a checkpoint of its own
    (it needs its init run no more)."""
    t = cfg.train
    if not t.init:
        if t.init_optimizer:
            raise UserError("--init-optimizer: takes Adam's moments from the run given with "
                            "--init, but there is no --init")
        if t.init_checkpoint != "best":
            raise UserError(f"--checkpoint {t.init_checkpoint}: picks a checkpoint of the run "
                            "given with --init, but there is no --init")
        return None
    init_dir = Path(t.init)
    if init_dir.resolve() == run_dir.resolve():
        raise UserError(f"--init {t.init}: is the run directory being trained (--output); "
                        "fine-tune into another directory")
    if training_checkpoints(run_dir) and not overwrite:
        return None
    init_config_file(init_dir)  # a UserError unless it is a run directory
    init_config = load_run_config(init_dir)
    check_kept_from_init(cfg, init_config, f"--init {t.init}", data_fixed=bool(cfg.data.prepared))
    try:
        checkpoint = resolve_with_average(init_dir, t.init_checkpoint)
        _, metadata = read_checkpoint(checkpoint, tensors=False)
    except UserError as error:
        raise UserError(f"--checkpoint {t.init_checkpoint} of --init {t.init}: {error}") from None
    if t.init_optimizer and "param_groups" not in metadata:
        raise UserError(f"--init-optimizer: {checkpoint} holds weights only, no optimizer state; "
                        "take a step checkpoint (--checkpoint last)")
    with torch.device("meta"):  # the shapes alone: no memory, no random numbers drawn
        expected = Transformer(init_config.model).state_dict()
    check_layout(checkpoint, model_shapes(checkpoint), expected, f"--init {t.init}'s config")
    return InitRun(init_dir, init_config, checkpoint)


def check_prepared_tokenizer(prepared: PreparedData, init: InitRun) -> None:
    """A prepared corpus is ids: a fine-tuned run can train on it only if it was encoded with the
    tokenizer the run takes from its init (the manifest holds the tokenizer files' SHA-256)."""
    files = tokenizer_files(init.run_dir, init.config.data.joint_vocab)
    if {path.name: file_sha256(path) for path in files} != prepared.manifest["tokenizer"]["files"]:
        raise UserError(f"{prepared.directory}: was encoded with another tokenizer than --init "
                        f"{init.run_dir}'s; prepare it again with that run's tokenizer "
                        f"(--tokenizer {files[0]})")


# ---------------------------------------------------------------------------------------------
# One update

def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch's tensors on `device`. To a GPU they go from pinned (page-locked) host memory
    without blocking, so the copy overlaps the GPU's work on what was queued before."""
    if device.type != "cuda":
        return batch.to(device)

    def move(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.pin_memory().to(device, non_blocking=True)
    return Batch(move(batch.src), move(batch.tgt_in), move(batch.tgt_out), batch.indices)


def train_step(model: torch.nn.Module, batches: list[Batch], optimizer: torch.optim.Optimizer,
               cfg: RunConfig, lr: float, device: torch.device, precision: str,
               timings: Timings, ranks: Ranks = ONE_PROCESS) -> tuple[float, float, int]:
    """One update from one or more batches (gradient accumulation); with several processes, from
    every process's batches. Returns the mean smoothed loss and mean NLL per target token, and
    the number of target tokens, all processes together.

    `model` is the Transformer, or its TeacherForcing (wrapped in DistributedDataParallel when
    several processes train). The loss is normalised by the target tokens of the whole update on
    all processes: N processes with update_freq F take the step one process takes with update_freq
    N x F over the same batches.
    """
    objective = TeacherForcing(model) if isinstance(model, Transformer) else model
    n_tokens = int(sum_over_ranks([sum(b.n_tgt_tokens for b in batches)], ranks, device)[0])
    # DDP averages gradients over the processes: each divides by its share of the tokens so that
    # the average is the update's summed loss over all its tokens
    share = n_tokens / ranks.world_size
    total_loss = total_nll = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        # gradients of all but the last batch stay local; the last backward sums them all at once
        accumulate = objective.no_sync() if ranks.distributed and not last else nullcontext()
        with accumulate, backend_errors_as_user_errors(ranks):
            start = time.perf_counter()
            moved = to_device(batch, device)
            loss, nll = objective(moved.src, moved.tgt_in, moved.tgt_out,
                                  cfg.train.label_smoothing, precision)
            middle = time.perf_counter()
            (loss / share).backward()
        timings.forward += middle - start
        timings.backward += time.perf_counter() - middle
        total_loss, total_nll = total_loss + loss.detach(), total_nll + nll
    start = time.perf_counter()
    if cfg.train.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.train.clip_norm)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    timings.optimizer += time.perf_counter() - start
    loss_sum, nll_sum = sum_over_ranks([total_loss, total_nll], ranks, device)
    return loss_sum / n_tokens, nll_sum / n_tokens, n_tokens


# ---------------------------------------------------------------------------------------------
# The loop

def train(cfg: RunConfig, run_dir: Path, overwrite: bool = False,
          report: Report | None = None, stop_requested: Callable[[], bool] | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir`; return where it stopped and why.

    `stop_requested` is polled after every update (the CLI sets it on Ctrl-C): training then
    stops at that step boundary and writes a checkpoint, so nothing is lost.

    Under torchrun every process calls this with the same arguments; they train one model
    together, and only process 0 writes the run directory and reports.
    """
    ranks = ranks_from_environment()
    report = report if report is not None and ranks.main else _silent
    stop_requested = stop_requested or (lambda: False)
    if overwrite:
        check_inputs_outside(Path(run_dir), cfg)
    init = find_init(cfg, Path(run_dir), overwrite)
    # before the run directory is made: the exact check, with the tokenizer's vocabulary, follows
    check_fits_in_memory(cfg.model, TRAINING_BYTES_PER_PARAMETER, cfg.data.vocab_size)
    device = process_device(cfg.train.device, ranks)
    # training seeds the random numbers (initialisation, dropout); the caller's are restored after
    with process_group(ranks, device), _own_random_numbers(device), _fp32_matmuls(device):
        with undone_if_refused(Path(run_dir), ranks.main):
            run, state = _set_up(cfg, Path(run_dir), overwrite, report, ranks, device, init)
        result = _loop(run, state, stop_requested)
        barrier(ranks)  # all end together, once process 0 has written the last checkpoint
    return result


def _own_random_numbers(device: torch.device):
    """A context in which training may seed torch's generators: the CPU's (and the GPU's in use)
    are put back as they were when it ends, so a program that trains changes nothing
    process-wide."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _silent(event: dict[str, Any]) -> None:
    """The report of processes other than 0: what they would say, process 0 says."""


@dataclass
class Run:
    """What the training loop works with, set up once by train()."""

    cfg: RunConfig
    model: Transformer
    objective: torch.nn.Module  # TeacherForcing(model); wrapped in DDP when several processes train
    optimizer: torch.optim.Optimizer
    corpus: EncodedCorpus
    epoch_corpus: Callable[[int], EncodedCorpus]  # the ids of epoch e (resampled or the same)
    valid: ValidationSets | None  # process 0's alone: only it validates
    tgt_tok: Tokenizer
    files: RunFiles
    device: torch.device
    precision: str
    ranks: Ranks
    report: Report


def _set_up(cfg: RunConfig, run_dir: Path, overwrite: bool, report: Report, ranks: Ranks,
            device: torch.device, init: InitRun | None) -> tuple[Run, TrainState]:
    """Everything the loop needs, in the order it is made: the run directory and tokenizers,
    the data, the model and optimizer, the state to start from, and the start record."""
    prepared = open_prepared(Path(cfg.data.prepared)) if cfg.data.prepared else None
    if prepared is not None:
        if init is not None:
            check_prepared_tokenizer(prepared, init)
        cfg = replace(cfg, data=prepared.data_config(cfg.data))
    tokenizers = set_up_for_training(run_dir, cfg, overwrite, prepared,
                                     init.run_dir if init else None) if ranks.main else None
    barrier(ranks)  # the others read the tokenizers process 0 has written
    src_tok, tgt_tok = tokenizers or load_tokenizers(run_dir, cfg)
    cfg = with_vocab_sizes(cfg, src_tok.vocab_size, tgt_tok.vocab_size)
    check_fits_in_memory(cfg.model, TRAINING_BYTES_PER_PARAMETER)
    corpus, epoch_corpus, valid = _training_data(cfg, prepared, src_tok, tgt_tok, report, ranks)
    if ranks.main and not (run_dir / LANGID_FILE).exists():
        train_language_identifier(cfg, corpus, src_tok, tgt_tok).save(run_dir / LANGID_FILE)
    precision = _agreed_precision(cfg, device, ranks, corpus)
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)
    optimizer = make_optimizer(model, cfg)
    state = _starting_state(cfg, run_dir, model, optimizer, init, report)
    _check_same_start(state, run_dir, ranks, device)
    cfg = _keep_effective_batch(cfg, state, ranks)
    start = _start_record(cfg, state, device, precision, ranks, init)
    files = RunFiles(run_dir, cfg)
    if ranks.main:
        state = files.begin_attempt(state, start)
    report({**start, "parameters": count_parameters(model), "pairs": len(corpus),
            "state": asdict(state), "config": cfg})
    run = Run(cfg, model, wrap(TeacherForcing(model), ranks, device), optimizer, corpus,
              epoch_corpus, valid, tgt_tok, files, device, precision.precision, ranks, report)
    return run, state


def train_language_identifier(cfg: RunConfig, corpus: EncodedCorpus, src_tok: Tokenizer,
                              tgt_tok: Tokenizer) -> LanguageIdentifier:
    """The run's identifier of its languages (langid.py), from lines of its training corpus
    spread over it, decoded back to text (a prepared corpus keeps only ids). A multilingual
    corpus gives each language the same number of lines, spread over the directions it is a
    side of (decoding leaves the sources' tags out)."""
    parts = corpus.parts or [(cfg.data.src, cfg.data.tgt, len(corpus))]
    sides = Counter(language for src, tgt, _ in parts for language in (src, tgt))
    samples: dict[str, list[str]] = {}
    start = 0
    for src, tgt, count in parts:
        for language, tokenizer, side in ((src, src_tok, corpus.src), (tgt, tgt_tok, corpus.tgt)):
            picked = evenly_spaced(count, -(-SAMPLE_LINES // sides[language]))
            lines = tokenizer.decode([side[start + i].tolist() for i in picked])
            samples.setdefault(language, []).extend(lines)
        start += count
    return LanguageIdentifier.train(samples)


def _training_data(cfg: RunConfig, prepared: PreparedData | None, src_tok: Tokenizer,
                   tgt_tok: Tokenizer, report: Report, ranks: Ranks):
    """(the corpus, the corpus of epoch e, process 0's validation set): prepared ids, or
    the text encoded now."""
    if prepared is not None:
        prepared_data_events(prepared, report)
        valid = validation_sets(prepared.valid) if prepared.valid is not None and ranks.main \
            else None
        return prepared.train, sampled_epochs(prepared.train, cfg.data.temperature,
                                              cfg.train.seed), valid
    corpus, epoch_corpus = load_training_data(cfg, src_tok, tgt_tok, report)
    valid = load_validation_data(cfg, src_tok, tgt_tok, report) if ranks.main else None
    return corpus, epoch_corpus, valid


def _starting_state(cfg: RunConfig, run_dir: Path, model: Transformer,
                    optimizer: torch.optim.Optimizer, init: InitRun | None,
                    report: Report) -> TrainState:
    """Where training starts: the run's last checkpoint (resumed), else the init run's weights
    (fine-tuning), else nothing (a new run)."""
    checkpoints = training_checkpoints(run_dir)
    if checkpoints:
        # the state is checked before anything is restored from the checkpoint
        state = read_training_state(checkpoints[-1])
        load_training_state(checkpoints[-1], model, optimizer)
        report({"event": Event.RESUME, "step": state.step, "checkpoint": str(checkpoints[-1])})
        return state
    if init is not None:
        load_init(init.checkpoint, model, optimizer if cfg.train.init_optimizer else None)
    return TrainState()


def _start_record(cfg: RunConfig, state: TrainState, device: torch.device,
                  precision: PrecisionChoice, ranks: Ranks, init: InitRun | None) -> dict[str, Any]:
    """The `start` record of metrics.jsonl: how this attempt trains."""
    t = cfg.train
    start = {"event": Event.START, "step": state.step, "device": str(device),
             "precision": precision.precision, "precision_reason": precision.reason,
             "bf16_speedup": precision.speedup,
             "processes": ranks.world_size, "batch_tokens": t.batch_tokens,
             "update_freq": t.update_freq,
             "effective_batch_tokens": ranks.world_size * t.batch_tokens * t.update_freq}
    if init is not None:
        start["init"] = init.record(t.init_optimizer)
    return start


def _agreed_precision(cfg: RunConfig, device: torch.device, ranks: Ranks,
                      corpus: EncodedCorpus) -> PrecisionChoice:
    """The precision to train in, the same on every process. Where `auto` measures, process 0
    alone runs the probe (the others would time it on the same cores at the same moment, and
    could come out on the other side of the threshold) and tells the others."""
    def choose() -> PrecisionChoice:
        return pick_precision(cfg.train.precision, device, updates_probe(cfg, corpus, device),
                              _precision_work(cfg, corpus))
    if not (ranks.distributed and cfg.train.precision == "auto"):
        return choose()
    choice = choose() if ranks.main else None
    bf16 = process_0_says(choice is not None and choice.precision == "bf16", ranks, device)
    return choice or PrecisionChoice("bf16" if bf16 else "fp32", "as process 0 measured")


def _precision_work(cfg: RunConfig, corpus: EncodedCorpus) -> str:
    """What the precision probe times, as its cache key names it: the model, the batch, and
    the corpus's sentence length (a verdict on captions is not one on documents)."""
    mean = float(corpus.tgt.lengths.mean()) if len(corpus) else 0.0
    return (f"{cfg.model.describe()}; {cfg.train.batch_tokens} tokens per batch, target "
            f"sentences of about {round(mean / 5) * 5} pieces")


def updates_probe(cfg: RunConfig, corpus: EncodedCorpus, device: torch.device) -> Probe:
    """`--precision auto`'s measurement: real updates (train_step: the loss, backward, clipping,
    Adam, dropout) on batches of the run's own corpus, of every length, each in fp32 and in bf16
    (hardware.time_both_ways). They update a throwaway model of the run's shape, so the run
    itself starts as it would with the precision named."""
    def probe() -> float:
        plan = length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths,
                                     cfg.train.batch_tokens, seed=0, epoch=0)
        by_size = sorted(plan, key=len)  # from the longest sentences' batches to the shortest's
        picks = sorted({round(i * (len(by_size) - 1) / (PRECISION_TRIAL_UPDATES - 1))
                        for i in range(PRECISION_TRIAL_UPDATES)})
        batches = [make_batch(corpus, by_size[i]) for i in picks]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Transformer(cfg.model).to(device)
        optimizer = make_optimizer(model, cfg)

        def update(precision: str, piece: int) -> int:
            batch = batches[piece % len(batches)]
            train_step(model, [batch], optimizer, cfg, 0.0, device, precision, Timings())
            return batch.n_tgt_tokens
        with torch.random.fork_rng(devices=[]):  # dropout's draws are the trial's own
            return time_both_ways(update, PRECISION_TRIAL_UPDATES)
    return probe


@contextmanager
def _fp32_matmuls(device: torch.device) -> Iterator[None]:
    """On a GPU, while training, fp32 matrix products may use TF32 tensor cores (fp32's range,
    a 10-bit mantissa): several times faster, and accurate enough for training; bf16 autocast
    does not need it. The setting is torch's process-wide one: put back as it was after."""
    before = torch.get_float32_matmul_precision()
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _keep_effective_batch(cfg: RunConfig, state: TrainState, ranks: Ranks) -> RunConfig:
    """A run resumed with another number of processes keeps its batches per update (processes x
    update_freq: the effective batch its learning rate was tuned for). update_freq becomes what
    keeps it, or, where these processes cannot share it evenly, the resume is refused."""
    if not state.update_sizes:
        return cfg  # a new run (or a checkpoint of an older tinytrans, which did not record it)
    per_update = state.update_sizes[-1][1]
    if ranks.world_size * cfg.train.update_freq == per_update:
        return cfg
    if per_update % ranks.world_size:
        raise UserError(f"resumed with {ranks.world_size} processes, but the run makes {per_update} "
                        "batches per update (processes x update_freq), which they cannot share "
                        f"evenly: resume with a number of processes that divides {per_update}")
    return replace(cfg, train=replace(cfg.train, update_freq=per_update // ranks.world_size))


def _check_same_start(state: TrainState, run_dir: Path, ranks: Ranks, device: torch.device) -> None:
    """Every process must resume from the same checkpoint, or they would not step together."""
    main_step = int(sum_over_ranks([state.step if ranks.main else 0], ranks, device)[0])
    if main_step != state.step:
        raise UserError(f"{run_dir}: process {ranks.rank} resumes at step {state.step} but process "
                        f"0 at step {main_step}; every machine must see the same run directory "
                        "(put it on a shared filesystem)")


def _stop_reason(cfg: RunConfig, state: TrainState) -> str | None:
    """Why to stop now by this process's own count (process 0's decides for all: _agreed_stop)."""
    t = cfg.train
    if t.max_steps is not None and state.step >= t.max_steps:
        return f"reached max_steps {t.max_steps}"
    if t.max_epochs is not None and state.epoch >= t.max_epochs:
        return f"reached max_epochs {t.max_epochs}"
    if t.max_time is not None and state.elapsed >= t.max_time * 60:
        return f"reached max_time {t.max_time:g} min"
    if t.patience is not None and state.validations_since_best >= t.patience:
        better = "BLEU" if t.best_metric == "bleu" else "loss"
        return f"no better {better} in {t.patience} validations (early stopping)"
    return None


def _interrupted_anywhere(run: Run, interrupted: bool) -> bool:
    """Whether any process received a Ctrl-C or SIGTERM (a collective: every process asks)."""
    return any_rank(interrupted, run.ranks, run.device) if run.ranks.distributed else interrupted


def _agreed_stop(run: Run, reason: str | None, interrupted: bool) -> str | None:
    """Why to stop after this update, the same on every process: an interruption anywhere
    (`interrupted`, already agreed), or process 0's `reason` (its clock and patience count decide
    for all)."""
    if run.ranks.distributed and process_0_says(reason is not None, run.ranks, run.device):
        reason = reason or STOPPED_BY_MAIN
    return INTERRUPTED if interrupted else reason


def _updates(epoch_corpus: Callable[[int], EncodedCorpus], cfg: RunConfig, state: TrainState,
             ranks: Ranks = ONE_PROCESS) -> Iterator[list[Batch]]:
    """This process's batches for each update, epoch after epoch, from the saved position. An
    update is processes x update_freq batches of the epoch's plan, shared out by
    distributed.my_share; the plan is the same on every process.

    Updates `state.epoch`, `state.batch` and `state.update_sizes` before yielding each update, so
    that after the update the state says where to resume (and which epoch is complete).
    """
    t = cfg.train
    per_update = ranks.world_size * t.update_freq
    if not state.update_sizes or state.update_sizes[-1][1] != per_update:
        # a new run, or a checkpoint of an older tinytrans, which has no `update_sizes` (its epoch
        # so far stays). A resume with another number of processes keeps batches per update
        # (_keep_effective_batch), so the plan of a later checkpoint never changes here.
        state.update_sizes = [*state.update_sizes, [state.batch, per_update]] if state.batch \
            else [[0, per_update]]
    while True:
        corpus = epoch_corpus(state.epoch)
        batches = epoch_plan(length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths,
                                                   t.batch_tokens, t.seed, state.epoch),
                             state.update_sizes)
        while state.batch < len(batches):
            group = batches[state.batch: state.batch + per_update]
            update = [make_batch(corpus, indices) for indices in my_share(group, ranks)]
            state.batch += len(group)
            epoch_done = state.batch >= len(batches)
            if epoch_done:
                # say so before the update is made, so that max_epochs stops after it and a
                # checkpoint written after it resumes at the start of the next epoch
                _next_epoch(state, per_update)
            yield update
            if epoch_done:
                break
        else:  # a checkpoint of an older tinytrans, saved at the very end of an epoch
            _next_epoch(state, per_update)


def _next_epoch(state: TrainState, per_update: int) -> None:
    state.epoch, state.batch, state.update_sizes = state.epoch + 1, 0, [[0, per_update]]


@dataclass
class LogWindow:
    """The updates since the last `log` record: their tokens, summed losses and start time."""

    tokens: int = 0
    loss: float = 0.0
    nll: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, nll: float, n_tokens: int) -> None:
        self.tokens += n_tokens
        self.loss, self.nll = self.loss + loss * n_tokens, self.nll + nll * n_tokens

    def record(self, state: TrainState, lr: float, now: float) -> dict[str, Any]:
        """The `log` record of these updates: mean losses per target token, and their speed."""
        return {"event": Event.LOG, "step": state.step, "epoch": state.epoch,
                "loss": self.loss / self.tokens, "nll": self.nll / self.tokens, "lr": lr,
                "tokens_per_second": self.tokens / (now - self.start),
                "elapsed": state.elapsed}


def _loop(run: Run, state: TrainState, stop_requested: Callable[[], bool]) -> TrainResult:
    """Update until a limit, patience or an interruption says stop. After each update, in this
    order: the log record (every log_every), the step reported, validation (every
    validate_every, and at a stop that is not an interruption), one agreed decision to stop, a
    checkpoint (every checkpoint_every, and at the stop)."""
    cfg, t, ranks, files, report = run.cfg, run.cfg.train, run.ranks, run.files, run.report
    timings = Timings()
    started = time.perf_counter() - state.elapsed
    run_tokens, run_start = 0, time.perf_counter()
    last_validation: dict[str, Any] = {}
    if _validating(run) and cfg.train.init and state.step == 0 and ranks.main:
        # a fine-tuned run's starting point on its new data: its init's score, the curve's origin
        last_validation = _validate_and_keep_best(run, state, timings)
    window = LogWindow()
    run.model.train()
    reason = _agreed_stop(run, _stop_reason(cfg, state) if ranks.main else None,
                          _interrupted_anywhere(run, False))
    updates = _updates(run.epoch_corpus, cfg, state, ranks)
    while reason is None:
        fetch = time.perf_counter()
        batches = next(updates)
        timings.data += time.perf_counter() - fetch
        seed_dropout(t.seed, ranks, state.step)
        lr = learning_rate(state.step + 1, t.lr, t.warmup_steps, t.lr_schedule,
                           budget_progress(cfg.train, state.step, state.elapsed))
        loss, nll, n_tokens = train_step(run.objective, batches, run.optimizer, cfg, lr, run.device,
                                         run.precision, timings, ranks)
        state.step += 1
        state.elapsed = time.perf_counter() - started
        run_tokens += n_tokens
        window.add(loss, nll, n_tokens)
        if state.step % t.log_every == 0:
            now = time.perf_counter()
            record = window.record(state, lr, now)
            if ranks.main:
                files.log(record)
            report(record)
            window = LogWindow(start=now)
        report({"event": Event.STEP, "step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr,
                "elapsed": state.elapsed})
        reason, validation = _validate_and_decide(run, state, stop_requested(), timings)
        last_validation = validation or last_validation
        if ranks.main and (state.step % t.checkpoint_every == 0 or reason is not None):
            path = files.checkpoint(run.model, run.optimizer, asdict(state))
            report({"event": Event.CHECKPOINT, "step": state.step, "path": str(path)})
    elapsed = time.perf_counter() - run_start
    result = TrainResult(files.run_dir, state, reason, run_tokens / max(elapsed - timings.validation, 1e-9),
                         timings, count_parameters(run.model), last_validation)
    if ranks.main:
        if t.average_last is not None and reason != INTERRUPTED:
            _average_and_validate(run, state)
        files.plot_curves()
    report({"event": Event.END, "result": result})
    return result


def _validating(run: Run) -> bool:
    """Whether the run has a validation set: known to every process, though only process 0 has
    the set itself."""
    return run.cfg.data.valid is not None


def _validate_and_decide(run: Run, state: TrainState, interrupted: bool,
                         timings: Timings) -> tuple[str | None, dict[str, Any] | None]:
    """After an update: process 0 validates when it is due, then every process agrees on why to
    stop, if at all (one vote, after the validation, so that patience counts it). Returns the
    reason and the validation record (None when there was none)."""
    interrupted = _interrupted_anywhere(run, interrupted)  # first: a validation waits for it
    if not run.ranks.main:
        return _agreed_stop(run, None, interrupted), None
    reason = _stop_reason(run.cfg, state)  # a limit reached by this update
    validation = None
    if _validating(run) and (state.step % run.cfg.train.validate_every == 0
                             or reason is not None and not interrupted):
        validation = _validate_and_keep_best(run, state, timings)
        reason = reason or _stop_reason(run.cfg, state)  # patience, counting this validation
    return _agreed_stop(run, reason, interrupted), validation


def _average_and_validate(run: Run, state: TrainState) -> None:
    """Average the last `average_last` step checkpoints (or as many as there are) into
    checkpoints/average.safetensors and validate it beside the best single checkpoint.

    Averaging the weights of the last checkpoints smooths out the noise of the final updates and
    usually gains BLEU for free (Vaswani et al., 2017 average the last 5 or 20)."""
    available = len(training_checkpoints(run.files.run_dir))
    n = min(run.cfg.train.average_last, available)
    if n < 2:
        return  # one checkpoint averaged is itself
    path, _ = average_last(run.files.run_dir, n)
    record: dict[str, Any] = {"event": Event.AVERAGE, "step": state.step, "checkpoints": n,
                              "path": str(path)}
    if run.valid is not None:
        averaged = copy.deepcopy(run.model)
        load_model_weights(path, averaged)
        scores = validate(averaged, run.valid, run.tgt_tok, run.cfg, run.device, run.precision)
        record.update(bleu=scores["bleu"], loss=scores["loss"], best_bleu=state.best_bleu,
                      best_loss=state.best_loss, best_step=state.best_step)
    run.files.log(record)
    run.report(record)


def is_new_best(metric: str, scores: dict[str, Any], state: TrainState) -> bool:
    """Whether a validation's `scores` beat the best so far by `metric` (config.BEST_METRICS);
    a loss that is not a number (a diverged model) never does."""
    if metric == "loss":
        return math.isfinite(scores["loss"]) and (state.best_loss < 0 or scores["loss"] < state.best_loss)
    return scores["bleu"] > state.best_bleu


def _validate_and_keep_best(run: Run, state: TrainState, timings: Timings) -> dict[str, Any]:
    """Process 0's validation of the model as it stands: scores logged and reported, the best
    checkpoint written when they are the best yet, and the patience count kept."""
    start = time.perf_counter()
    scores = validate(run.model, run.valid, run.tgt_tok, run.cfg, run.device, run.precision)
    timings.validation += time.perf_counter() - start
    if is_new_best(run.cfg.train.best_metric, scores, state):
        # (-1, "none", for a loss that is not a number: a checkpoint's state holds finite values)
        state.best_bleu = scores["bleu"]
        state.best_loss = scores["loss"] if math.isfinite(scores["loss"]) else -1.0
        state.best_step, state.validations_since_best = state.step, 0
        run.files.best(run.model, asdict(state))
    elif state.step > state.best_step:
        state.validations_since_best += 1
    # else: a validation re-run after a resume, at or before the step of a best found by the
    # killed attempt (see rundir.recover_best): it precedes that best, so it is not one "since the best"
    record = {"event": Event.VALID, "step": state.step, "epoch": state.epoch, **scores,
              "best_bleu": state.best_bleu, "best_loss": state.best_loss, "best_step": state.best_step}
    run.files.log(record)
    run.report(record)
    return record

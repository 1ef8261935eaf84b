"""Configuration: frozen dataclasses, presets, and TOML files where unknown keys are errors.

A run is described by one `RunConfig` (model, data, train) that is resolved once, saved in the
run directory as `config.toml`, and passed down explicitly. Values come from, in order of
increasing precedence: the dataclass defaults, a preset, a TOML file, command-line flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tinytrans.directions import direction_corpora, has_pair, parse_directions
from tinytrans.errors import UserError

# The choices of string-valued keys, named once here and used by the CLI and every check.
MODEL_TYPES = ("bpe", "unigram")
UTF8_POLICIES = ("strict", "replace")
LR_SCHEDULES = ("inverse_sqrt", "linear")
BEST_METRICS = ("bleu", "loss")  # what picks the best checkpoint and what --patience watches
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
INFERENCE_PRECISIONS = PRECISIONS + ("int8",)  # int8: dynamic quantisation, CPU decoding only
ATTENTION_KINDS = ("cross", "encoder", "decoder")  # tinytrans attention --kind
EXPORT_FORMATS = ("ctranslate2",)
QUANTIZATIONS = ("int8", "int8_float32", "float16", "bfloat16")  # CTranslate2's names
BLEU_TOKENIZE = "13a"  # sacrebleu's default BLEU tokenizer, evaluate's default
MIN_VOCAB_SIZE = 8  # 4 reserved ids (pad, unk, bos, eos) and a few pieces
FLAGS = "command line"  # the origin of values given as flags


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
        # build_config checks the same rules first, naming where each key came from; this guards
        # a ModelConfig made directly (tests, the API's callers)
        _check_model_shape(dataclasses.asdict(self), dotted_key)

    def describe(self) -> str:
        """Every field as `name value`, comma-separated: the model in a cache key."""
        return ", ".join(f"{key} {value}" for key, value in dataclasses.asdict(self).items())


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
    # Subword regularization: > 0 segments the training text anew each epoch, by sampling.
    # SentencePiece's alpha: for BPE the probability of skipping each merge (BPE-dropout,
    # Provilkov et al., 2020), for unigram the smoothing of the sampled segmentations (Kudo,
    # 2018). 0: always the single best segmentation. Needs the text, not a prepared corpus.
    sampling_alpha: float = 0.0
    max_ratio: float = 3.0
    utf8_errors: str = "strict"
    prepared: str | None = None  # a directory made by `tinytrans prepare`; it fixes the keys above
    # Many directions in one model (directions.py): "en-de,de-en,..." ("" = the one pair src-tgt,
    # untagged). `train`/`valid` are then a multi-way prefix or PREFIX:SRC-TGT entries joined by
    # commas; `temperature` shares the epoch among the directions by their sizes.
    directions: str = ""
    temperature: float = 5.0

    @property
    def multilingual(self) -> bool:
        return bool(self.directions)


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
    patience: int | None = None  # validations without a new best before stopping
    # What makes a validation the best yet: a higher greedy BLEU (what a user reads), or a lower
    # loss (fairseq's default, which published recipes such as Wu et al., 2021 stop on; it is
    # smoother than BLEU). The best checkpoint and --patience both follow it.
    best_metric: str = "bleu"
    log_every: int = 100
    seed: int = 1
    precision: str = "auto"  # fp32, bf16 or auto
    device: str = "auto"  # cpu, cuda or auto
    threads: int | None = None  # set by `tinytrans train`, which owns its process; train() leaves it
    # Fine-tuning: a run directory whose weights, tokenizer and model shape this run starts from
    # ("" = from scratch), which of its checkpoints (best, last, average or a file), and whether
    # Adam's moments come with the weights. The optimizer and the schedule otherwise start anew.
    init: str = ""
    init_checkpoint: str = "best"
    init_optimizer: bool = False


MAX_LEN_A, MAX_LEN_B = 10, 1024  # the output length limit a x source + b may not exceed these
MAX_SAMPLES = 100  # --nbest with --sample: samples per sentence
# Upper bounds of the other search options: each works at its bound (tests/test_config.py
# decodes with it); past them, length^lenpen overflows a float, logits / temperature become NaN
MAX_SEARCH_BEAM = 256
MAX_LENPEN = 10.0
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 1_000_000  # --sample K: more than any vocabulary, so "all" in effect
MAX_SEED = 2**63 - 1  # torch.Generator's seeds are 64-bit
MAX_BATCH_TOKENS = 10_000_000


def sample_option(value: object, name: str = "--sample") -> int | None:
    """`--sample K|all` (or the API's sample=K|"all") as SearchConfig.sample: None to search,
    0 for every token, K >= 1 for the K most probable."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "all":
        return 0
    try:
        k = int(value) if isinstance(value, str) else value
    except ValueError:
        k = None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{name}: {value!r} must be a number of tokens (K >= 1) or 'all'")
    return k


@dataclass(frozen=True)
class SearchConfig:
    """How translations are searched for (translate, evaluate, the Python API)."""

    beam: int = 5
    nbest: int = 1
    lenpen: float = 1.0  # alpha: rank finished hypotheses by log-prob / length^alpha (0 = raw sum)
    max_len_a: float = 1.5  # at most a * source length + b target pieces
    max_len_b: int = 10
    batch_tokens: int = 12000  # source tokens x decoder rows (beam or samples) per batch
    # Sampling instead of search (for back-translation and diverse outputs): each token drawn
    # from the `sample` most probable ones (0: from all), their probabilities sharpened or
    # flattened by `temperature` (0: the most probable, as greedy) and cut to the smallest set
    # holding `top_p` of the mass. `nbest` samples per sentence; `seed` makes them reproducible.
    sample: int | None = None  # None: beam search
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.beam <= MAX_SEARCH_BEAM:
            raise UserError(f"--beam: {self.beam} must lie between 1 and {MAX_SEARCH_BEAM}")
        if self.sample is None:
            if not 1 <= self.nbest <= self.beam:
                raise UserError(f"--nbest: {self.nbest} must lie between 1 and --beam ({self.beam})")
            for flag, value in (("--temperature", self.temperature), ("--top-p", self.top_p)):
                if value != 1.0:
                    raise UserError(f"{flag}: {value} applies to sampling only; add --sample K "
                                    "(or --sample all)")
        else:
            self._check_sampling()
        if not (math.isfinite(self.lenpen) and 0 <= self.lenpen <= MAX_LENPEN):
            raise UserError(f"--lenpen: {self.lenpen} must be a number in [0, {MAX_LENPEN:g}]")
        # a model trained on pairs whose lengths differ at most max_ratio (3) times never learned
        # outputs far longer than that; a bound keeps a model that never says EOS from
        # running for hours on one line
        if not (math.isfinite(self.max_len_a) and 0 <= self.max_len_a <= MAX_LEN_A):
            raise UserError(f"--max-len-a: {self.max_len_a} must be a number in [0, {MAX_LEN_A}]")
        if not 1 <= self.max_len_b <= MAX_LEN_B:
            raise UserError(f"--max-len-b: {self.max_len_b} must lie between 1 and {MAX_LEN_B}")
        if not 1 <= self.batch_tokens <= MAX_BATCH_TOKENS:
            raise UserError(f"--batch-tokens: {self.batch_tokens} must lie between 1 and "
                            f"{MAX_BATCH_TOKENS:,}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed: {self.seed} must lie between 0 and {MAX_SEED}")

    def _check_sampling(self) -> None:
        if not 0 <= self.sample <= MAX_TOP_K:
            raise UserError(f"--sample: {self.sample} must be a number of tokens between 1 and "
                            f"{MAX_TOP_K:,}, or all")
        if not 1 <= self.nbest <= MAX_SAMPLES:
            raise UserError(f"--nbest: {self.nbest} samples; must lie between 1 and {MAX_SAMPLES}")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE):
            raise UserError(f"--temperature: {self.temperature} must be a number in "
                            f"[0, {MAX_TEMPERATURE:g}]")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise UserError(f"--top-p: {self.top_p} must be a number in (0, 1]")

    @property
    def sampling(self) -> bool:
        return self.sample is not None


GLOSSARY_METHODS = ("place", "constrain")  # how glossary terms enter a translation (lines.py)
ENGINES = ("torch", "ctranslate2")  # what runs the search: translate/serve --engine
TEXT_FORMATS = ("text", "html")  # serve's "format": lines, or markup.py
FILE_FORMATS = TEXT_FORMATS + ("srt", "docx")  # translate --format (documents.py)
MAX_BEAM = 16  # a request to `tinytrans serve` may ask for this beam at most


MAX_CONNECTIONS = 10_000  # a process has ~1,024 file descriptors by default; beyond, ulimit's
MAX_SECONDS = 86_400.0  # a day: larger timeouts overflow asyncio's timers, and mean "never"


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings; every limit is a flag of `tinytrans serve`."""

    host: str = "127.0.0.1"
    port: int = 8000
    beam: int = SearchConfig.beam
    max_chars: int = 10_000  # characters of text per request, all lines together
    max_lines: int = 200  # lines per request (each item of q, and each line inside one)
    max_body: int = 1_000_000  # bytes of a request body
    queue: int = 256  # requests waiting for the model; more get 429
    timeout: float = 60.0  # seconds a request may wait for its translation; then 503
    max_wait: float = 0.005  # seconds the inference thread waits to gather a batch
    max_connections: int = 256  # open connections at once; more are closed at once
    request_timeout: float = 10.0  # seconds a client has to send each whole request; then 408
    req_limit: int = 0  # requests a minute per client address, without API keys (0: no limit)
    cors: tuple[str, ...] = ()  # origins whose pages may read the answers ("*": any)

    def __post_init__(self) -> None:
        for flag, value, least, most in (
                ("--port", self.port, 0, 65535), ("--beam", self.beam, 1, MAX_BEAM),
                ("--max-chars", self.max_chars, 1, 100_000_000),
                ("--max-lines", self.max_lines, 1, 1_000_000),
                ("--max-body", self.max_body, 1, 2**31 - 1), ("--queue", self.queue, 1, 1_000_000),
                ("--max-connections", self.max_connections, 1, MAX_CONNECTIONS),
                ("--req-limit", self.req_limit, 0, 1_000_000)):
            if not least <= value <= most:
                raise UserError(f"{flag}: {value} must lie between {least} and {most:,}")
        for origin in self.cors:
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
                raise UserError(f"--cors: '{origin}' must be * or an origin such as "
                                "https://example.org (scheme and host, maybe a port, no path)")
        for flag, seconds in (("--timeout", self.timeout),
                              ("--request-timeout", self.request_timeout)):
            if not 0 < seconds <= MAX_SECONDS:
                raise UserError(f"{flag}: {seconds} must be more than 0 and at most "
                                f"{MAX_SECONDS:g} seconds")


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

# What a fine-tuned run (train.init) keeps of the run it starts from: the model's shape and the
# tokenizer, which the weights are made for. Dropouts, data filters and training settings may
# change.
KEPT_FROM_INIT = (
    [("model", f.name) for f in fields(ModelConfig) if not f.name.endswith("dropout")]
    + [("data", name) for name in ("tokenizer", "vocab_size", "model_type", "joint_vocab")]
)
# What it never takes from there: that run's corpora, and where that run itself started.
NOT_INHERITED = {("data", "train"), ("data", "valid"), ("data", "prepared"),
                 ("train", "init"), ("train", "init_checkpoint"), ("train", "init_optimizer")}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The bundled corpus in a few minutes on two CPU cores.
    "tiny": {
        "model": {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_encoder_layers": 2,
                  "n_decoder_layers": 2, "dropout": 0.1},
        "data": {"vocab_size": 1000},
        "train": {"batch_tokens": 4096, "lr": 3e-3, "warmup_steps": 200, "max_time": 5.5,
                  "validate_every": 300, "checkpoint_every": 300},
    },
    # Multi30k-sized data (30k pairs) on a CPU in about 20 minutes. Narrow and deep: at d_model
    # 128 a CPU makes 1.8x the updates of a 3+3 x d256 model in the same time, which won 1.0
    # validation BLEU on Multi30k in 20 minutes (bench/RESULTS.md); small data wants small
    # models (Wu et al., 2021). Twenty minutes are only about nine epochs, too few to overfit
    # much: dropout 0.1 won 1.4 validation BLEU over 0.2 there (and over none: 0.4). The
    # learning rate peaks at 5e-3 (validation NLL 1.80 against 1.87 at 3e-3 and 1.89 at 8e-3)
    # and falls linearly to zero at the time limit. An 8k vocabulary won 1.75 validation BLEU
    # over 4k, although it makes 15% fewer updates.
    "small": {
        "model": {"d_model": 128, "n_heads": 4, "d_ff": 512, "n_encoder_layers": 4,
                  "n_decoder_layers": 4, "dropout": 0.1},
        "data": {"vocab_size": 8000},
        "train": {"batch_tokens": 3000, "lr": 5e-3, "warmup_steps": 200, "max_time": 20.0,
                  "lr_schedule": "linear", "validate_every": 250, "checkpoint_every": 250},
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


# ---------------------------------------------------------------------------------------------
# Sizes: a config whose model cannot fit in this machine's memory is refused before allocation

WEIGHT_BYTES = 4  # fp32
TRAINING_BYTES_PER_PARAMETER = 4 * WEIGHT_BYTES  # weights, gradients and Adam's two moments
SIZE_KEYS = ("d_model", "d_ff", "n_encoder_layers", "n_decoder_layers", "src_vocab_size",
             "tgt_vocab_size")


def with_vocab_sizes(cfg: RunConfig, src_size: int, tgt_size: int) -> RunConfig:
    """`cfg` with its tokenizers' vocabulary sizes: the model's shape is known only once they are."""
    return replace(cfg, model=replace(cfg.model, src_vocab_size=src_size, tgt_vocab_size=tgt_size))


def parameter_count(m: ModelConfig | types.SimpleNamespace, vocab_size: int = 0) -> int:
    """The number of parameters model.Transformer(m) has, from the config alone (`vocab_size`
    stands in for vocabulary sizes not known yet, 0 in the config)."""
    d, src_v, tgt_v = m.d_model, m.src_vocab_size or vocab_size, m.tgt_vocab_size or vocab_size
    attention = 4 * d * d + 4 * d  # Q, K, V and output projections with biases
    feed_forward = 2 * d * m.d_ff + m.d_ff + d
    norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * norm
    decoder_layer = 2 * attention + feed_forward + 3 * norm
    embeddings = src_v * d if m.tie_embeddings else (src_v + tgt_v) * d + tgt_v * d
    final_norms = 2 * norm if m.pre_norm else 0
    return (embeddings + m.n_encoder_layers * encoder_layer + m.n_decoder_layers * decoder_layer
            + final_norms)


def machine_memory() -> int:
    """Bytes of physical memory (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_fits_in_memory(m: ModelConfig, bytes_per_parameter: int, vocab_size: int = 0,
                         where: Callable[[str, str], str] | None = None) -> None:
    """Refuse a model whose parameters (times `bytes_per_parameter`) exceed this machine's
    memory, naming the key that makes it so big: the one whose default value shrinks it most.
    Without this, an absurd config.toml (d_model = 1000000000) allocates until the system kills."""
    available = machine_memory()
    needed = parameter_count(m, vocab_size) * bytes_per_parameter
    if not available or needed <= available:
        return
    default = ModelConfig()
    # (a namespace, not a ModelConfig: one vocabulary size alone may not change when tied)
    shrunk = {key: parameter_count(types.SimpleNamespace(**{**dataclasses.asdict(m),
                                                             key: getattr(default, key)}),
                                   vocab_size) for key in SIZE_KEYS}
    key = min(shrunk, key=shrunk.__getitem__)
    name = where("model", key) if where else f"model.{key}"
    what = "weights" if bytes_per_parameter == WEIGHT_BYTES else \
        "weights, gradients and optimizer state"
    raise UserError(f"{name} = {getattr(m, key)} makes a model of {needed / 2**30:,.1f} GiB of "
                    f"{what}, more than this machine's {available / 2**30:,.1f} GiB of memory")


# ---------------------------------------------------------------------------------------------
# The values each key may take, checked in one place when a config is built

@dataclass(frozen=True)
class Interval:
    """A range of numbers; `None` leaves that side open-ended. NaN and infinity never fit."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the low end itself is excluded
    high_open: bool = False

    def admits(self, value: Any) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float) -> str:
    """A bound as people write it: 1,000,000 rather than 1e+06; 0.5 as it is."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def admits(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class NonEmpty:
    def admits(self, value: Any) -> bool:
        return bool(value.strip())

    def __str__(self) -> str:
        return "a non-empty text"


@dataclass(frozen=True)
class ZeroOr:
    """0 (meaning: decided later) or a value inside `rest`."""

    rest: Interval

    def admits(self, value: Any) -> bool:
        return value == 0 or self.rest.admits(value)

    def __str__(self) -> str:
        return f"0 or {self.rest}"


# Every range has an upper end: one past which the value would overflow later, or could mean
# nothing but a slip of the finger (1e39 minutes of training)
BIG_COUNT = 10**12  # steps, intervals, checkpoints: more than any run will reach
COUNT = Interval(1, BIG_COUNT)  # intervals and counts
NON_NEGATIVE = Interval(0, BIG_COUNT)
PROBABILITY = Interval(0, 1, high_open=True)  # dropout, smoothing, Adam's betas
MAX_VOCAB_SIZE = 1_048_576
VOCAB = Interval(MIN_VOCAB_SIZE, MAX_VOCAB_SIZE)
WIDTH = Interval(1, 1_048_576)  # d_model, d_ff, heads, layers: memory refuses far less first

RULES: dict[str, dict[str, Interval | OneOf | NonEmpty | ZeroOr]] = {
    "model": {
        "src_vocab_size": ZeroOr(VOCAB), "tgt_vocab_size": ZeroOr(VOCAB),
        "d_model": WIDTH, "n_heads": WIDTH, "d_ff": WIDTH,
        "n_encoder_layers": WIDTH, "n_decoder_layers": WIDTH,
        "dropout": PROBABILITY, "attention_dropout": PROBABILITY, "activation_dropout": PROBABILITY,
    },
    "data": {
        # paths (train, valid, tokenizer, prepared) are checked when read; booleans need no rule
        "src": NonEmpty(), "tgt": NonEmpty(),
        "vocab_size": VOCAB, "model_type": OneOf(MODEL_TYPES),
        "max_length": Interval(1, 65_536), "max_ratio": Interval(1, 1000),
        "utf8_errors": OneOf(UTF8_POLICIES), "sampling_alpha": PROBABILITY,
        "temperature": Interval(1, 1000),
    },
    "train": {
        "batch_tokens": Interval(1, MAX_BATCH_TOKENS), "update_freq": Interval(1, 100_000),
        "lr": Interval(0, 10, low_open=True), "warmup_steps": NON_NEGATIVE,
        "lr_schedule": OneOf(LR_SCHEDULES), "label_smoothing": PROBABILITY,
        "clip_norm": Interval(0, 1e6), "adam_beta1": PROBABILITY, "adam_beta2": PROBABILITY,
        "adam_eps": Interval(0, 1, low_open=True), "weight_decay": Interval(0, 100),
        "max_steps": COUNT, "max_epochs": COUNT,
        "max_time": Interval(0, 60 * 24 * 366 * 10, low_open=True),  # minutes: ten years
        "validate_every": COUNT, "checkpoint_every": COUNT,
        "keep_last": COUNT, "average_last": COUNT, "patience": COUNT, "log_every": COUNT,
        "best_metric": OneOf(BEST_METRICS),
        "seed": Interval(0, 2**32 - 1), "precision": OneOf(PRECISIONS), "device": OneOf(DEVICES),
        "threads": Interval(1, 4096),
    },
}


def merge(base: dict[str, dict[str, Any]], override: dict[str, dict[str, Any]]) -> dict:
    """Section-wise update of nested {section: {key: value}} dicts."""
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


Origins = dict[tuple[str, str], str]  # (section, key) -> where its value came from


def build_config(values: dict[str, dict[str, Any]], origin: str = "config",
                 origins: Origins | None = None) -> RunConfig:
    """Check every key, type and range, then freeze. Unknown sections or keys are errors.

    `origin` names where the values came from (a file, "command line"); `origins` may name it
    per key when values were merged from several places.
    """
    where = _Where(origin, origins or {})
    check_known_keys(values, origin)
    for section, table in values.items():
        _check_values(SECTIONS[section], table, section, where)
    _check_together(merge(_defaults(), values), where)
    config = RunConfig(**{name: _freeze(cls, values.get(name, {})) for name, cls in SECTIONS.items()})
    # the weights at least must fit (training needs more: train.py checks that with the vocabulary)
    check_fits_in_memory(config.model, WEIGHT_BYTES, config.data.vocab_size, where)
    return config


def _defaults() -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}


def check_known_keys(values: dict[str, dict[str, Any]], origin: str) -> None:
    """Unknown sections and keys are errors naming `origin`: a typo never passes silently."""
    for section, table in values.items():
        if section not in SECTIONS:
            raise UserError(f"{origin}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        known = [f.name for f in fields(SECTIONS[section])]
        for key in table:
            if key not in known:
                raise UserError(f"{origin}: unknown key '{section}.{key}' (known: {', '.join(known)})")


class _Where:
    """Names a key the way the user gave it: `--lr` for a flag, `run.toml: 'train.lr'` for a file."""

    def __init__(self, default: str, origins: Origins):
        self.default, self.origins = default, origins

    def __call__(self, section: str, key: str) -> str:
        origin = self.origins.get((section, key), self.default)
        if origin == FLAGS:
            return "--" + key.replace("_", "-")
        return f"{origin}: '{section}.{key}'"


def _check_values(cls: type, values: dict[str, Any], section: str, where: _Where) -> None:
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _has_type(value, hints[key]):
            raise UserError(f"{where(section, key)} = {value!r} should be {_type_name(hints[key])}")
        rule = RULES[section].get(key)
        if rule is not None and value is not None and not rule.admits(value):
            raise UserError(f"{where(section, key)} = {value!r} must be {rule}")


def _freeze(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{k: float(v) if hints[k] is float else v for k, v in values.items()})


def _check_together(values: dict[str, dict[str, Any]], where: _Where) -> None:
    """Rules that tie two keys together (`values`: every key, defaults filled in)."""
    m, d, t = values["model"], values["data"], values["train"]
    if m["tie_embeddings"] and not d["joint_vocab"]:
        raise UserError(f"{where('model', 'tie_embeddings')} needs one joint vocabulary, but "
                        f"{where('data', 'joint_vocab')} is false")
    _check_model_shape(m, where)
    if t["lr_schedule"] == "linear" and t["max_steps"] is None and t["max_time"] is None:
        raise UserError(f"{where('train', 'lr_schedule')} = 'linear' decays to zero at the budget: "
                        "give max_steps or max_time")
    if d["sampling_alpha"] > 0 and d["prepared"]:
        raise UserError(f"{where('data', 'sampling_alpha')} = {d['sampling_alpha']} segments the text "
                        f"anew each epoch, but the prepared corpus {d['prepared']} is encoded once: "
                        "train on the text (--train) instead")
    if d["directions"]:
        _check_multilingual(d, where)
    elif any(has_pair(entry) for entry in d["train"].split(",")) and not d["prepared"]:
        raise UserError(f"{where('data', 'train')} = {d['train']!r}: corpora named with their "
                        f"pairs are for a model of several directions; give "
                        f"{where('data', 'directions')}")
    if t["average_last"] is not None and t["average_last"] > t["keep_last"]:
        raise UserError(f"{where('train', 'average_last')} = {t['average_last']} needs that many step "
                        f"checkpoints, but {where('train', 'keep_last')} = {t['keep_last']} keeps fewer")


def _check_multilingual(d: dict[str, Any], where: _Where) -> None:
    """A multilingual run's data keys: its directions parse, its corpora give each of them, and
    what it cannot do is refused."""
    directions = parse_directions(d["directions"], where("data", "directions"))
    if not d["joint_vocab"]:
        raise UserError(f"{where('data', 'directions')} needs one joint vocabulary for every "
                        f"language, but {where('data', 'joint_vocab')} is false")
    if d["sampling_alpha"] > 0:
        raise UserError(f"{where('data', 'sampling_alpha')}: not with several directions yet")
    for key in ("train", "valid"):
        if d[key]:
            direction_corpora(d[key], directions, where("data", key))


def dotted_key(section: str, key: str) -> str:
    """A key named as in a TOML file, for checks of a config that was not read from one."""
    return f"{section}.{key}"


def _check_model_shape(m: dict[str, Any], where: Callable[[str, str], str]) -> None:
    """The rules that tie the model's own keys together."""
    if m["n_heads"] < 1 or m["d_model"] % m["n_heads"]:
        raise UserError(f"{where('model', 'd_model')} = {m['d_model']} is not divisible by "
                        f"{where('model', 'n_heads')} = {m['n_heads']}")
    if m["tie_embeddings"] and m["src_vocab_size"] != m["tgt_vocab_size"]:
        raise UserError(f"{where('model', 'tie_embeddings')} needs equal vocabulary sizes, but "
                        f"{where('model', 'src_vocab_size')} = {m['src_vocab_size']} and "
                        f"{where('model', 'tgt_vocab_size')} = {m['tgt_vocab_size']}")


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


def resolve_train_config(flags: dict[str, dict[str, Any]], preset_name: str | None = None,
                         toml: Path | None = None, saved: Path | None = None,
                         init: Path | None = None) -> RunConfig:
    """The config of a `tinytrans train` run, merged in increasing precedence: defaults, the
    config saved in the run directory being resumed (`saved`) or, for a new run fine-tuned from
    another, that run's config (`init`, its config.toml) without NOT_INHERITED, a preset (tiny
    when nothing else is given), a TOML file, then flags (None = not given). Every value is
    checked, and errors name the flag or the file and key it came from, before anything is
    written; so is a value that would change what a fine-tuned run keeps (KEPT_FROM_INIT)."""
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = []
    init_config: RunConfig | None = None  # the config a new fine-tuned run starts from
    if saved is not None:
        layers.append((str(saved), read_toml(saved)))
    elif init is not None:
        init_values = read_toml(init)
        init_config = build_config(init_values, str(init))
        layers.append((str(init), {section: {k: v for k, v in table.items()
                                             if (section, k) not in NOT_INHERITED}
                                   for section, table in init_values.items()}))
    elif preset_name is None and toml is None:
        preset_name = "tiny"
    if preset_name is not None:
        layers.append((f"preset {preset_name}", preset(preset_name)))
    if toml is not None:
        layers.append((str(toml), read_toml(toml)))
    layers.append((FLAGS, {section: {k: v for k, v in table.items() if v is not None}
                           for section, table in flags.items()}))
    values: dict[str, dict[str, Any]] = {}
    origins: Origins = {}
    for origin, layer in layers:
        check_known_keys(layer, origin)
        values = merge(values, layer)
        origins.update({(section, key): origin for section, table in layer.items() for key in table})
    config = build_config(values, FLAGS, origins)
    if init_config is not None:
        check_kept_from_init(config, init_config, str(init), _Where(FLAGS, origins))
    if not config.data.train and not config.data.prepared:
        raise UserError("--train: a training corpus prefix is needed for a new run (or --data, a "
                        "prepared corpus)")
    return config


def check_kept_from_init(config: RunConfig, init: RunConfig, init_name: str,
                         where: Callable[[str, str], str] = dotted_key,
                         data_fixed: bool = False) -> None:
    """A key of KEPT_FROM_INIT that differs from the fine-tuned run's init (`init_name`, its
    config) is refused, named with both values. `where` names a key of `config` (by its origin,
    for a config being resolved); `data_fixed` leaves the data keys out (a prepared corpus fixes
    them, and its tokenizer is checked by checksum instead)."""
    changed = [(section, key) for section, key in changed_from_init(config, init)
               if not (data_fixed and section == "data")]
    if changed:
        (section, key), new, old = changed[0], config_to_dict(config), config_to_dict(init)
        raise UserError(f"{where(section, key)} = {new[section][key]!r} disagrees with "
                        f"{init_name}: '{section}.{key}' = {old[section][key]!r}; a fine-tuned "
                        "run keeps the model shape and tokenizer of the run it starts from "
                        "(--init)")


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


def changed_from_init(config: RunConfig, init: RunConfig) -> list[tuple[str, str]]:
    """The keys of KEPT_FROM_INIT whose values differ between a fine-tuned run's config and the
    config of the run it starts from. A vocabulary size of 0 is not known yet (the tokenizer
    gives it) and differs from nothing."""
    new, old = config_to_dict(config), config_to_dict(init)
    return [(section, key) for section, key in KEPT_FROM_INIT
            if new[section][key] != old[section][key]
            and not (section == "model" and key.endswith("vocab_size") and new[section][key] == 0)]


def differences(old: RunConfig, new: RunConfig) -> list[str]:
    """Keys whose values differ and that may not change when a run resumes."""
    before, after = config_to_dict(old), config_to_dict(new)
    return [
        f"{section}.{key}: {before[section][key]!r} -> {after[section][key]!r}"
        for section in SECTIONS for key in before[section]
        if before[section][key] != after[section][key] and (section, key) not in RESUMABLE
    ]

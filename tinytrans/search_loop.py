"""The one search loop: what greedy, beam, sampled and constrained search all do, written once.

Every strategy decodes the same way: encode the batch once, then one decoder step per target
position on the newest token of each row, with a key/value cache holding the past. What they
share lives here: the length limit of each sentence, forcing EOS there, forcing a target prefix,
keeping the cache, the memory and the source mask in step with the rows, and letting rows whose
sentence is done leave the batch. What differs is one question, asked at every step: given these
log-probabilities, which rows go on, and with which tokens? A `Strategy` answers it (search.py:
greedy and beam; sampling.py; constraints.py) and keeps what its rows have found.

Shapes (N = sentences, R = rows decoding at this step, V = vocabulary, S = source length):
    sentence    (R,)      which sentence each row belongs to, on the CPU (bookkeeping)
    log_probs   (R, V)    the model's log-probabilities of each row's next token
    parents     (R',)     for each row of the next step, the row it continues
    memory      (M, S, D) the encoder's output of each source the rows read, in M blocks of
                          G = R / M rows: the K beams of a sentence read one copy (G = K); where
                          sentences keep unequal numbers of rows, one copy per row (G = 1)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tinytrans.config import SearchConfig
from tinytrans.model import Transformer, padding_mask, reorder_cache
from tinytrans.tokenizer import BOS_ID, EOS_ID, PAD_ID

NEG_INF = float("-inf")
Prefix = Sequence[int]  # target piece ids every hypothesis of a sentence begins with


@dataclass
class Hypothesis:
    tokens: list[int]  # target ids, without BOS and EOS (a prefix included)
    log_prob: float  # sum of the token log-probabilities, EOS included
    score: float  # log_prob after the length penalty: what hypotheses are ranked by


def length_penalty(log_prob: float, length: int, alpha: float) -> float:
    """fairseq's normalisation: divide by length^alpha (length counts EOS), so that long
    hypotheses, which add more negative log-probabilities, are not unfairly pushed out."""
    return log_prob / (length ** alpha)


def max_lengths(src: torch.Tensor, cfg: SearchConfig) -> torch.Tensor:
    """(B, S) source ids -> (B,) most target pieces each sentence may get (before EOS)."""
    src_len = (src != PAD_ID).sum(dim=1).cpu() - 1  # source ids end with EOS
    return (cfg.max_len_a * src_len + cfg.max_len_b).long().clamp(min=1)  # on the CPU: bookkeeping


def next_log_probs(model: Transformer, last: torch.Tensor, memory: torch.Tensor,
                   src_mask: torch.Tensor, cache: list) -> torch.Tensor:
    """One decoder step: (R,) newest tokens -> (R, V) log-probabilities of the next token."""
    states = model.decode_step(last, memory, src_mask, cache)  # (R, D)
    log_probs = model.step_logits(states).float().log_softmax(dim=-1)  # (R, V)
    log_probs[:, PAD_ID] = log_probs[:, BOS_ID] = NEG_INF  # never generated
    return log_probs


def force_token(log_probs: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> None:
    """Only `tokens[i]` may follow in row `rows[i]`: every other token of the row gets -inf.

    The forced token keeps the model's log-probability, so that scores stay comparable."""
    kept = log_probs[rows, tokens].clone()
    log_probs[rows] = NEG_INF
    log_probs[rows, tokens] = kept


def force_eos(log_probs: torch.Tensor, rows: torch.Tensor) -> None:
    """At the length limit, only EOS may follow."""
    force_token(log_probs, rows, torch.full_like(rows, EOS_ID))


@dataclass(frozen=True)
class NewWord:
    """Where a prefix ends with a finished word (its user typed a space after it), the piece
    after the prefix must begin a new word: `Ein ` may go on as `Ein Mann`, not as `Eine`."""

    after: Sequence[bool]  # per sentence: its prefix ends with a finished word
    pieces: torch.Tensor  # (V,) bool: the pieces that begin a word, and EOS


@dataclass(frozen=True)
class Step:
    """What a strategy is told at each step, beside the log-probabilities."""

    number: int  # 0 at the first target position
    sentence: torch.Tensor  # (R,) the sentence of each row, on the CPU
    at_limit: torch.Tensor  # (R,) bool: the row's sentence reached its length limit (EOS forced)


@dataclass(frozen=True)
class Choice:
    """A strategy's answer: the rows of the next step. Rows not named leave the batch."""

    parents: torch.Tensor  # (R',) long, on the CPU: the row each next row continues
    tokens: torch.Tensor  # (R',) long, on the model's device: the token it continues with


class Strategy(ABC):
    """Which rows go on with which tokens, step after step; and what they found."""

    rows_at_start: int = 1  # rows per sentence at the first step (all reading BOS)

    def room(self, limit: torch.Tensor) -> torch.Tensor:
        """(N,) each sentence's length limit -> the limit this strategy searches with."""
        return limit

    @abstractmethod
    def choose(self, log_probs: torch.Tensor, step: Step) -> Choice:
        """(R, V) log-probabilities (EOS and prefixes already forced) -> the next step's rows."""

    @abstractmethod
    def hypotheses(self) -> list[list[Hypothesis]]:
        """Once no row is left: each sentence's hypotheses, best first."""


@torch.inference_mode()
def run_search(model: Transformer, src: torch.Tensor, cfg: SearchConfig, strategy: Strategy,
               prefixes: Sequence[Prefix] | None = None,
               new_word: NewWord | None = None) -> list[list[Hypothesis]]:
    """Search translations of (N, S) `src` (ids ending with EOS) with `strategy`.

    `prefixes`, when given, holds one prefix per sentence (maybe empty): its hypotheses begin
    with those pieces, forced one per step, then go on freely (autocompletion); `new_word` says
    which prefixes end with a finished word. A sentence's length limit grows by its prefix,
    which uses none of the room its source gives.
    """
    n, device = src.size(0), src.device
    src_mask = padding_mask(src)  # (N, 1, 1, S)
    memory = model.encode(src, src_mask)  # (N, S, D)
    forced = prefix_table(prefixes, n)  # (N, P) or None
    limit = strategy.room(max_lengths(src, cfg))  # (N,) on the CPU
    if forced is not None:
        limit = limit + (forced >= 0).sum(dim=1)
    word_step = new_word_steps(forced, new_word)  # (N,) or None
    group = strategy.rows_at_start  # G: rows of each source, side by side
    sentence = torch.arange(n).repeat_interleave(group)  # (R,)
    last = torch.full((sentence.numel(),), BOS_ID, dtype=torch.long, device=device)  # (R,)
    cache = model.new_cache()
    for number in range(int(limit.max()) + 1):
        log_probs = next_log_probs(model, last, memory, src_mask, cache)  # (R, V)
        at_limit = limit[sentence] <= number  # (R,)
        if at_limit.any():  # rarely: most sentences end before their limit
            force_eos(log_probs, at_limit.nonzero().flatten().to(device))
        if forced is not None and number < forced.size(1):
            force_prefix(log_probs, forced[sentence, number], device)
        if word_step is not None:
            begin_a_word(log_probs, (word_step[sentence] == number).nonzero().flatten(),
                         new_word.pieces)
        choice = strategy.choose(log_probs, Step(number, sentence, at_limit))
        if choice.parents.numel() == 0:
            break
        sentence, group, memory, src_mask = follow(choice.parents, sentence, group, memory,
                                                   src_mask, cache)
        last = choice.tokens  # (R',)
    return strategy.hypotheses()


def prefix_table(prefixes: Sequence[Prefix] | None, n: int) -> torch.Tensor | None:
    """Per sentence its prefix as one (N, P) tensor, -1 past its end; None if no sentence has one."""
    if prefixes is None or not any(len(p) for p in prefixes):
        return None
    if len(prefixes) != n:
        raise ValueError(f"{len(prefixes)} prefixes for {n} sentences")
    table = torch.full((n, max(len(p) for p in prefixes)), -1, dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        table[row, : len(prefix)] = torch.as_tensor(list(prefix), dtype=torch.long)
    return table


def force_prefix(log_probs: torch.Tensor, tokens: torch.Tensor, device: torch.device) -> None:
    """(R,) each row's prefix token at this step (-1: none left) becomes its only next token."""
    rows = (tokens >= 0).nonzero().flatten()
    if rows.numel():
        force_token(log_probs, rows.to(device), tokens[rows].to(device))


def new_word_steps(forced: torch.Tensor | None, new_word: NewWord | None) -> torch.Tensor | None:
    """(N,) the step at which each sentence's next piece must begin a word (the one right after
    its prefix), -1 for none; None when no sentence has such a prefix."""
    if forced is None or new_word is None or not any(new_word.after):
        return None
    lengths = (forced >= 0).sum(dim=1)  # (N,)
    after = torch.as_tensor(list(new_word.after), dtype=torch.bool)
    return torch.where(after & (lengths > 0), lengths, torch.full_like(lengths, -1))


def begin_a_word(log_probs: torch.Tensor, rows: torch.Tensor, pieces: torch.Tensor) -> None:
    """The rows' next token must be one of `pieces` (V,): every other gets -inf."""
    if rows.numel():
        rows = rows.to(log_probs.device)
        log_probs[rows] = log_probs[rows].masked_fill(~pieces.to(log_probs.device), NEG_INF)


def follow(parents: torch.Tensor, sentence: torch.Tensor, group: int, memory: torch.Tensor,
           src_mask: torch.Tensor, cache: list) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """Make the next step's rows: each continues row `parents[i]` (its sentence, its source and
    its cache). Returns the new (sentence, group, memory, src_mask); the cache changes in place.

    Rows that go on exactly as they are cost nothing. When every row keeps its sentence (beams
    re-ranked within their sentences), only the self-attention keys and values are reordered:
    the sources, their memory and cross-attention keys stay. They move only when a sentence is
    done, or when the rows of a sentence stop being a block of G (then each row gets its own).
    """
    if parents.numel() == sentence.numel() and torch.equal(parents, torch.arange(parents.numel())):
        return sentence, group, memory, src_mask
    moved = sentence[parents]  # (R',)
    device = memory.device
    if torch.equal(moved, sentence):  # the same blocks of rows: the sources stay
        reorder_cache(cache, parents.to(device))
        return moved, group, memory, src_mask
    new_group = rows_per_source(moved)
    sources = parents[::new_group] // group  # (M',) the source each new block reads
    if torch.equal(sources, torch.arange(memory.size(0))):
        reorder_cache(cache, parents.to(device))
        return moved, new_group, memory, src_mask
    sources = sources.to(device)
    reorder_cache(cache, parents.to(device), sources)
    return moved, new_group, memory[sources], src_mask[sources]


def rows_per_source(sentence: torch.Tensor) -> int:
    """G when the rows' (R,) sentences come in blocks of G equal ones (each sentence one block),
    else 1: each row reads its own copy of its source."""
    R = sentence.numel()
    blocks = int((sentence[1:] != sentence[:-1]).sum()) + 1 if R else 1
    G = R // blocks
    if G > 1 and G * blocks == R and bool((sentence.view(blocks, G) == sentence[::G, None]).all()):
        return G
    return 1

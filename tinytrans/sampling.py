"""Sampling: translations drawn token by token from the model's distribution, not searched for.

A strategy of search_loop.run_search. Used for back-translation, where sampled synthetic sources
train a better model than beam search's outputs do (Edunov et al., 2018), and for diverse
alternatives. Each step turns the model's log-probabilities into a sampling distribution in
named steps, in this order:

    temper             divide by the temperature: < 1 sharpens, > 1 flattens, 0 is argmax
    restrict_to_top_k  keep the k most probable tokens (Fan et al., 2018)
    restrict_to_top_p  keep the smallest set holding top_p of the mass (Holtzman et al., 2020)
    draw               one token per row, from a seeded generator

Every hypothesis still carries the model's own log-probability of its tokens (untempered,
untruncated), so samples can be rescored and compared with search outputs.

Shapes (N = sentences, K = samples per sentence, R = rows still decoding <= N*K, V = vocabulary):
    log_probs  (R, V)    the model's log-probabilities of the next token
    alive      (R,)      original row (n*K + k: sample k of sentence n) of each live row
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinytrans.config import SearchConfig
from tinytrans.model import Transformer
from tinytrans.search_loop import (NEG_INF, Choice, Hypothesis, Prefix, Step, Strategy,
                                   length_penalty, run_search)
from tinytrans.tokenizer import EOS_ID


def temper(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """(R, V) -> (R, V) log-probabilities divided by the temperature (softmax renormalises).

    Each row's maximum is subtracted first, so that a tiny temperature sends the best token to 0
    and the others towards -inf, never all of them to -inf (which is no distribution at all);
    the clamp keeps a temperature that float32 would round to 0 from dividing by zero.
    """
    temperature = max(temperature, torch.finfo(log_probs.dtype).tiny)
    return (log_probs - log_probs.max(dim=-1, keepdim=True).values) / temperature


def restrict_to_top_k(log_probs: torch.Tensor, k: int) -> torch.Tensor:
    """(R, V) -> (R, V): each row's k most probable tokens keep their values, the others -inf.

    The stable sort breaks ties towards the lower id, as argmax does, so that k = 1 is exactly
    greedy and k tokens are always exactly k.
    """
    ranked = log_probs.argsort(dim=-1, descending=True, stable=True)  # (R, V) ids, best first
    return log_probs.scatter(1, ranked[:, k:], NEG_INF)


def restrict_to_top_p(log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(R, V) -> (R, V): each row keeps the smallest set of most probable tokens whose probability
    mass reaches top_p (the nucleus); the others get -inf. Ties break towards the lower id."""
    if top_p >= 1.0:  # everything: also spares the rounding of a sum that should reach exactly 1
        return log_probs
    probs, ranked = log_probs.softmax(dim=-1).sort(dim=-1, descending=True, stable=True)  # (R, V)
    mass_before = probs.cumsum(dim=-1) - probs  # (R, V) mass of the tokens ranked above each
    # A token is needed while the tokens above it fall short of top_p; the first one, with
    # nothing above it, always stays.
    dropped_ranks = mass_before >= top_p  # (R, V) in ranked order
    dropped = torch.zeros_like(dropped_ranks).scatter(1, ranked, dropped_ranks)  # (R, V) by id
    return log_probs.masked_fill(dropped, NEG_INF)


def draw(log_probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(R, V) unnormalised log-probabilities -> (R,) one token per row, drawn from their softmax."""
    return torch.multinomial(log_probs.softmax(dim=-1), 1, generator=generator).squeeze(1)  # (R,)


def next_tokens(log_probs: torch.Tensor, cfg: SearchConfig,
                generator: torch.Generator) -> torch.Tensor:
    """(R, V) the model's log-probabilities -> (R,) the next token of each row, as cfg says."""
    if cfg.temperature == 0:  # the limit of an ever sharper distribution: the most probable
        return log_probs.argmax(dim=-1)  # (R,)
    log_probs = temper(log_probs, cfg.temperature)
    if cfg.sample:  # 0 (or None): from all tokens
        log_probs = restrict_to_top_k(log_probs, cfg.sample)
    return draw(restrict_to_top_p(log_probs, cfg.top_p), generator)


class Sampling(Strategy):
    """Each sentence decoded as nbest independent rows, each drawing its next token as cfg says;
    a row leaves the batch when it draws EOS."""

    def __init__(self, n: int, cfg: SearchConfig, device: torch.device):
        self.cfg, self.rows_at_start = cfg, cfg.nbest
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.alive = torch.arange(n * cfg.nbest)  # (R,) original row of each row still decoding
        self.tokens: list[list[int]] = [[] for _ in range(self.alive.numel())]
        self.log_prob = [0.0] * self.alive.numel()

    def choose(self, log_probs: torch.Tensor, step: Step) -> Choice:
        token = next_tokens(log_probs, self.cfg, self.generator)  # (R,)
        token_log_prob = log_probs.gather(1, token[:, None]).squeeze(1)  # (R,) the model's own
        done = (token == EOS_ID).cpu()  # (R,)
        for row, t, lp, ended in zip(self.alive.tolist(), token.tolist(),
                                     token_log_prob.tolist(), done.tolist()):
            self.log_prob[row] += lp
            if not ended:
                self.tokens[row].append(t)
        keep = (~done).nonzero().flatten()
        self.alive = self.alive[keep]
        return Choice(keep, token if keep.numel() == token.numel() else token[keep.to(token.device)])

    def hypotheses(self) -> list[list[Hypothesis]]:
        return per_sentence(self.tokens, self.log_prob, self.cfg.nbest, self.cfg.lenpen)


def sample(model: Transformer, src: torch.Tensor, cfg: SearchConfig,
           prefixes: Sequence[Prefix] | None = None) -> list[list[Hypothesis]]:
    """For each sentence of (N, S) `src`, `cfg.nbest` sampled translations, best score first.

    The draws come from one generator seeded with cfg.seed, consumed row by row in batch order:
    the same batch with the same seed on the same device gives the same samples.
    """
    return run_search(model, src, cfg, Sampling(src.size(0), cfg, src.device), prefixes)


def per_sentence(tokens: list[list[int]], log_prob: list[float], K: int,
                 lenpen: float) -> list[list[Hypothesis]]:
    """N*K finished rows (row n*K + k: sample k of sentence n) -> N lists of K, best score first."""
    hyps = [Hypothesis(ids, lp, length_penalty(lp, len(ids) + 1, lenpen))
            for ids, lp in zip(tokens, log_prob, strict=True)]
    return [sorted(hyps[first: first + K], key=lambda h: -h.score)
            for first in range(0, len(hyps), K)]

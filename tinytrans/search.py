"""Greedy and beam search: the two strategies of search_loop.run_search that search for the best
translation (sampling.py draws one instead; constraints.py searches with phrases that must appear).

Greedy search takes the most probable next token at every step; it is the reference the beam is
tested against. Beam search keeps the K best partial hypotheses of each sentence.

State of beam search (N = sentences still searching, K = beam size, V = vocabulary):
    scores   (N, K)       sum of log-probabilities of each live beam
    tokens   (N*K, t)     the ids generated so far, row n*K + k is beam k of sentence n
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tinytrans.config import SearchConfig
from tinytrans.model import Transformer
from tinytrans.search_loop import (NEG_INF, Choice, Hypothesis, Prefix, Step, Strategy,
                                   length_penalty, max_lengths, run_search)
from tinytrans.tokenizer import EOS_ID

__all__ = ["Hypothesis", "length_penalty", "max_lengths", "greedy_search", "beam_search", "search"]


class Greedy(Strategy):
    """The most probable next token at every step; a row leaves the batch when it ends."""

    def __init__(self, n: int, cfg: SearchConfig):
        self.cfg = cfg
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.log_prob = [0.0] * n
        self.results: list[Hypothesis | None] = [None] * n

    def choose(self, log_probs: torch.Tensor, step: Step) -> Choice:
        best_lp, best = log_probs.max(dim=-1)  # (R,), (R,)
        done = (best == EOS_ID).cpu()
        for sentence, token, lp, ended in zip(step.sentence.tolist(), best.tolist(),
                                              best_lp.tolist(), done.tolist()):
            self.log_prob[sentence] += lp
            if ended:
                self.results[sentence] = Hypothesis(self.tokens[sentence], self.log_prob[sentence], 0.0)
            else:
                self.tokens[sentence].append(token)
        keep = (~done).nonzero().flatten()
        return Choice(keep, best if keep.numel() == best.numel() else best[keep.to(best.device)])

    def hypotheses(self) -> list[list[Hypothesis]]:
        for hyp in self.results:
            hyp.score = length_penalty(hyp.log_prob, len(hyp.tokens) + 1, self.cfg.lenpen)
        return [[hyp] for hyp in self.results]


class Beam(Strategy):
    """Batched beam search: each sentence keeps its K best partial hypotheses; K finished
    hypotheses (or the length limit) end it, and its `nbest` best are returned."""

    def __init__(self, n: int, cfg: SearchConfig, device: torch.device):
        self.cfg, self.K = cfg, cfg.beam
        self.scores = torch.zeros(n, self.K, device=device)
        self.scores[:, 1:] = NEG_INF  # all beams start identical: expand only the first at step 0
        self.tokens = torch.empty((n * self.K, 0), dtype=torch.long, device=device)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(n)]

    def choose(self, log_probs: torch.Tensor, step: Step) -> Choice:
        K = self.K
        first = step.number == 0
        if first:  # one row per sentence so far (its K beams are the same lone BOS): K copies
            log_probs = log_probs.repeat_interleave(K, dim=0)  # (N*K, V)
        alive = step.sentence if first else step.sentence[::K]  # (N,)
        at_limit = step.at_limit if first else step.at_limit[::K]  # (N,)
        # A sentence's 2K best candidates are among the 2K best next tokens of each of its
        # beams, so only those K * 2K are ranked, not all K * V.
        C = min(2 * K, log_probs.size(-1))
        beam_best, beam_token = log_probs.topk(C, dim=-1)  # (N*K, C)
        candidates = (self.scores[:, :, None] + beam_best.view(-1, K, C)).view(-1, K * C)  # (N, K*C)
        top_scores, top_index = candidates.topk(2 * K, dim=-1)  # (N, 2K): K may end, K go on
        top_beam, top_token = top_index // C, beam_token.view(-1, K * C).gather(1, top_index)
        if (top_token == EOS_ID).any():
            full = set_aside_finished(top_scores, top_beam, top_token, self.tokens, alive,
                                      self.finished, self.cfg)  # (N,)
            scores, beam, token = continue_beams(top_scores, top_beam, top_token, K)  # (N, K) each
            done = full | at_limit  # (N,)
        else:  # most steps: no candidate ends, the K best go on (the search's hottest path)
            scores, beam, token = top_scores[:, :K], top_beam[:, :K], top_token[:, :K]
            done = at_limit  # no sentence filled up (and none at its limit: EOS is forced there)
        rows = (torch.arange(scores.size(0), device=beam.device)[:, None] * K + beam).flatten()
        tokens = torch.cat([self.tokens[rows], token.reshape(-1, 1)], dim=1)  # (N*K, t + 1)
        if not done.any():  # every sentence goes on
            self.scores, self.tokens = scores, tokens
            parents = rows.cpu()
            return Choice(parents // K if first else parents, token.reshape(-1))
        keep = (~done).nonzero().flatten()
        keep_rows = (keep[:, None] * K + torch.arange(K)).flatten().to(beam.device)  # (N'*K,)
        self.scores, self.tokens = scores[keep.to(beam.device)], tokens[keep_rows]
        parents = rows[keep_rows].cpu()
        return Choice(parents // K if first else parents, token.reshape(-1)[keep_rows])

    def hypotheses(self) -> list[list[Hypothesis]]:
        return [sorted(hyps, key=lambda h: -h.score)[: self.cfg.nbest] for hyps in self.finished]


def set_aside_finished(top_scores: torch.Tensor, top_beam: torch.Tensor, top_token: torch.Tensor,
                       tokens: torch.Tensor, alive: torch.Tensor, finished: list[list[Hypothesis]],
                       cfg: SearchConfig) -> torch.Tensor:
    """Candidates ending in EOS among the K best of each sentence become finished hypotheses.
    Returns (N,) True for the sentences that now have K of them: those are done (fairseq's
    rule). Stopping as soon as the best candidate ends would be faster (about 15% on Multi30k)
    but lost 0.6 BLEU there with a length penalty, and would make the 1-best depend on --nbest.
    """
    K = cfg.beam
    ends = (top_token[:, :K] == EOS_ID) & (top_scores[:, :K] > NEG_INF)
    for row, rank in ends.nonzero().tolist():
        sentence = int(alive[row])
        if len(finished[sentence]) >= K:
            continue
        ids = tokens[row * K + int(top_beam[row, rank])].tolist()
        log_prob = float(top_scores[row, rank])
        finished[sentence].append(
            Hypothesis(ids, log_prob, length_penalty(log_prob, len(ids) + 1, cfg.lenpen)))
    return torch.tensor([len(finished[s]) >= K for s in alive.tolist()], dtype=torch.bool)


def continue_beams(top_scores: torch.Tensor, top_beam: torch.Tensor, top_token: torch.Tensor,
                   K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K best candidates of each sentence that do not end in EOS: (N, K) scores, beams, tokens.

    Of 2K candidates at most K end in EOS, so K always remain. EOS candidates are pushed to the
    back by their rank key, keeping the others in score order.
    """
    rank = torch.arange(top_scores.size(1), device=top_scores.device)
    key = rank + (top_token == EOS_ID) * top_scores.size(1)  # (N, 2K)
    pick = key.argsort(dim=1)[:, :K]
    return top_scores.gather(1, pick), top_beam.gather(1, pick), top_token.gather(1, pick)


def greedy_search(model: Transformer, src: torch.Tensor, cfg: SearchConfig,
                  prefixes: Sequence[Prefix] | None = None) -> list[Hypothesis]:
    """Each sentence's most probable token at every step: one Hypothesis per sentence."""
    found = run_search(model, src, cfg, Greedy(src.size(0), cfg), prefixes)
    return [hyps[0] for hyps in found]


def beam_search(model: Transformer, src: torch.Tensor, cfg: SearchConfig,
                prefixes: Sequence[Prefix] | None = None) -> list[list[Hypothesis]]:
    """Batched beam search; returns for each sentence its `nbest` hypotheses, best first."""
    return run_search(model, src, cfg, Beam(src.size(0), cfg, src.device), prefixes)


def search(model: Transformer, src: torch.Tensor, cfg: SearchConfig,
           prefixes: Sequence[Prefix] | None = None) -> list[list[Hypothesis]]:
    """Beam search, with greedy search as the fast path for a beam of 1."""
    if cfg.beam == 1:
        return [[hyp] for hyp in greedy_search(model, src, cfg, prefixes)]
    return beam_search(model, src, cfg, prefixes)

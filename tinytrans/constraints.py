"""Lexically constrained decoding: target phrases that must appear in the translation.

A translator with a glossary wants "Schraubendreher", not "Schraubenzieher". Beam search alone
cannot promise that: the phrase may never be among the best next tokens. Forcing it in at some
step would make every beam carry it early and badly. Dynamic beam allocation (Post & Vilar 2018,
"Fast Lexically Constrained Decoding with Dynamic Beam Allocation") keeps both kinds of beams:

  1. every beam proposes its usual best next tokens, and also the next token of each phrase it
     still has to produce (so a phrase can always make progress);
  2. candidates are put in banks by how many constraint tokens they have produced so far;
  3. the K beams are dealt out round-robin over the banks, most advanced bank first, each bank
     giving its best remaining candidate: hypotheses that met more constraints are never crowded
     out by ones that merely score better, and free slots go to whichever bank has candidates;
  4. a hypothesis may end (EOS) only when every phrase is in it.

With no constraints there is one bank, and the step is search.beam_search's: the 2K best
candidates, those among the first K that end are finished, the K best others go on (the scores
are added in Python's double precision here, so an exact tie may break the other way; the
translator sends a batch without any phrase to beam_search itself). With a beam of 1 the one
slot goes to the most advanced bank: the phrases come first. Use a beam of 4 or more.
Each sentence gets room for its phrases: its length limit grows by their length.

Shapes (N = sentences still searching, K = beam size, V = vocabulary, t = step):
    scores   (N, K)       sum of log-probabilities of each beam (-inf: an empty slot)
    tokens   (N*K, t)     the ids generated so far
    states   N lists of K ConstraintState, one per beam
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from tinytrans.config import SearchConfig
from tinytrans.model import Transformer
from tinytrans.search_loop import (NEG_INF, Choice, Hypothesis, Prefix, Step, Strategy,
                                   length_penalty, run_search)
from tinytrans.tokenizer import BOS_ID, EOS_ID

Phrase = tuple[int, ...]  # target piece ids of one constraint


@dataclass(frozen=True)
class ConstraintState:
    """Where one hypothesis stands with its sentence's phrases.

    A phrase is met once all its tokens were produced in a row. A phrase begun but left half-way
    (another token came) counts for nothing, except where its last tokens begin it (or another
    unmet phrase) again. When several unmet phrases could go on, the one with the longest
    beginning produced is followed (the first of them, on a tie).
    """

    phrases: tuple[Phrase, ...]
    met: int = 0  # bit i set: phrase i is in the hypothesis
    current: int = -1  # the phrase being produced, -1 if none
    position: int = 0  # its tokens produced so far

    @cached_property  # asked for every candidate, many times: the state never changes
    def count(self) -> int:
        """Constraint tokens produced: the bank this hypothesis belongs to."""
        done = sum(len(p) for i, p in enumerate(self.phrases) if self.met >> i & 1)
        return done + (self.position if self.current >= 0 else 0)

    @property
    def all_met(self) -> bool:
        return self.met == (1 << len(self.phrases)) - 1

    def next_tokens(self) -> list[int]:
        """The tokens that would advance a phrase: the next one of the phrase in progress,
        else the first of every unmet phrase."""
        if self.current >= 0:
            return [self.phrases[self.current][self.position]]
        return sorted({p[0] for i, p in enumerate(self.phrases) if not self.met >> i & 1})

    def advance(self, token: int) -> ConstraintState:
        """The state after `token` is appended to the hypothesis."""
        if self.current >= 0 and self.phrases[self.current][self.position] == token:
            return self._progress(self.current, self.position + 1)
        if self.current < 0:  # the common case: only a phrase's first token changes anything
            for i, phrase in enumerate(self.phrases):
                if not self.met >> i & 1 and phrase[0] == token:
                    return self._progress(i, 1)
            return self
        # the phrase in progress breaks here; its last tokens and this one may still begin an
        # unmet phrase: `a a` then `a` is on its way to `a a b` (as a string search falls back
        # on the longest prefix that is also a suffix of what it matched)
        tail = (*self.phrases[self.current][: self.position], token)
        best, best_length = -1, 0
        for i, phrase in enumerate(self.phrases):
            if self.met >> i & 1:
                continue
            for length in range(min(len(tail), len(phrase)), best_length, -1):
                if tail[-length:] == phrase[:length]:
                    best, best_length = i, length
                    break
        if best < 0:
            return ConstraintState(self.phrases, self.met)  # nothing in progress
        return self._progress(best, best_length)

    def _progress(self, phrase: int, position: int) -> ConstraintState:
        if position == len(self.phrases[phrase]):
            return ConstraintState(self.phrases, self.met | 1 << phrase)
        return ConstraintState(self.phrases, self.met, phrase, position)


@dataclass(frozen=True)
class Candidate:
    score: float  # the beam's score + the token's log-probability
    beam: int  # which of the sentence's K beams it extends
    token: int
    state: ConstraintState  # after the token (EOS: unchanged)


class Constrained(Strategy):
    """Dynamic beam allocation over each sentence's K beams (see the module's docstring)."""

    def __init__(self, cfg: SearchConfig, constraints: list[list[Phrase]], device: torch.device):
        self.cfg, self.K, self.device, n = cfg, cfg.beam, device, len(constraints)
        self.rows_at_start = self.K  # every sentence starts with K rows of BOS, the first alive
        self.lengths = torch.tensor([sum(map(len, c)) for c in constraints])
        self.tokens = torch.full((n * self.K, 1), BOS_ID, dtype=torch.long, device=device)
        self.scores = [[0.0] + [NEG_INF] * (self.K - 1) for _ in range(n)]
        self.states = [[ConstraintState(tuple(map(tuple, c)))] * self.K for c in constraints]
        self.alive = list(range(n))  # original index of each sentence still searching
        self.finished: list[list[tuple[ConstraintState, Hypothesis]]] = [[] for _ in range(n)]

    def room(self, limit: torch.Tensor) -> torch.Tensor:
        return limit + self.lengths  # each sentence gets room for its phrases

    def choose(self, log_probs: torch.Tensor, step: Step) -> Choice:
        K, alive, finished, states = self.K, self.alive, self.finished, self.states
        at_limit = step.at_limit[::K].tolist()
        may_end = [at_limit[i] and not finished[s] and not any(st.all_met for st in states[i])
                   for i, s in enumerate(alive)]  # else only a beam with every phrase may end
        candidates = step_candidates(log_probs, self.scores, states, may_end, K)
        chosen_rows, chosen_tokens, done = [], [], []
        for i, sentence_candidates in enumerate(candidates):
            ranked = allocate(sentence_candidates, 2 * K)
            set_aside(ranked[:K], self.tokens, i, K, finished[alive[i]], self.cfg)
            going_on = [c for c in ranked if c.token != EOS_ID][:K]
            going_on += [Candidate(NEG_INF, 0, EOS_ID, states[i][0])] * (K - len(going_on))
            self.scores[i] = [c.score for c in going_on]
            states[i] = [c.state for c in going_on]
            chosen_rows += [i * K + c.beam for c in going_on]
            chosen_tokens += [c.token for c in going_on]
            nothing_left = self.scores[i][0] == NEG_INF  # no candidate could go on
            done.append(len(finished[alive[i]]) >= K or at_limit[i] or nothing_left)
        rows = torch.tensor(chosen_rows, dtype=torch.long)  # (N*K,)
        new = torch.tensor(chosen_tokens, dtype=torch.long, device=self.device)  # (N*K,)
        keep = [i for i, d in enumerate(done) if not d]
        keep_rows = torch.tensor([i * K + k for i in keep for k in range(K)], dtype=torch.long)
        self.alive = [alive[i] for i in keep]
        self.scores, self.states = [self.scores[i] for i in keep], [states[i] for i in keep]
        index = keep_rows.to(self.device)
        self.tokens = torch.cat([self.tokens[rows.to(self.device)], new[:, None]], dim=1)[index]
        return Choice(rows[keep_rows], new[index])  # (N'*K,) each

    def hypotheses(self) -> list[list[Hypothesis]]:
        return [best_first(hyps)[: self.cfg.nbest] for hyps in self.finished]


def constrained_beam_search(model: Transformer, src: torch.Tensor, cfg: SearchConfig,
                            constraints: list[list[Phrase]],
                            prefixes: Sequence[Prefix] | None = None) -> list[list[Hypothesis]]:
    """Beam search in which each sentence's phrases all appear in its translations.

    src: (N, S) ids ending with EOS; constraints: per sentence, its phrases (piece ids, each
    non-empty). Returns each sentence's `nbest` hypotheses, best first. Should a sentence reach
    its length limit before every phrase fits (only a model that will not produce them), its
    best hypotheses are returned anyway, those meeting more constraints first. Only hypotheses
    meeting every phrase are returned otherwise, so a sentence may get fewer than `nbest`.
    """
    return run_search(model, src, cfg, Constrained(cfg, constraints, src.device), prefixes)


def step_candidates(log_probs: torch.Tensor, scores: list[list[float]],
                    states: list[list[ConstraintState]], may_end: list[bool],
                    K: int) -> list[list[Candidate]]:
    """Each sentence's candidates: from every live beam its 2K best next tokens and the tokens
    that advance its phrases. EOS only from a beam that has met them all, or from any beam of a
    sentence in `may_end` (at its limit with no such beam: it must end with something)."""
    C = min(2 * K, log_probs.size(-1))
    best_lp, best_token = (t.tolist() for t in log_probs.topk(C, dim=-1))  # (N*K, C)
    flat = [state for beams in states for state in beams]
    nexts = [state.next_tokens() for state in flat]  # per row: the tokens that advance a phrase
    wanted = [(r, token) for r, tokens in enumerate(nexts) for token in tokens]
    proposals = [list(zip(t, lp)) for t, lp in zip(best_token, best_lp)]
    if wanted:
        index = torch.tensor(wanted, dtype=torch.long, device=log_probs.device)
        for (r, token), lp in zip(wanted, log_probs[index[:, 0], index[:, 1]].tolist()):
            proposals[r].append((token, lp))
    result = []
    for i, beam_scores in enumerate(scores):
        sentence = []
        for k, score in enumerate(beam_scores):
            if score == NEG_INF:
                continue
            state, seen = flat[i * K + k], set()
            # a token that neither continues nor begins a phrase leaves the state as it is
            moving = state.current >= 0
            relevant = set(nexts[i * K + k])
            for token, lp in proposals[i * K + k]:
                if lp == NEG_INF or token in seen:
                    continue
                seen.add(token)
                if token == EOS_ID:
                    if state.all_met or may_end[i]:
                        sentence.append(Candidate(score + lp, k, token, state))
                elif moving or token in relevant:
                    sentence.append(Candidate(score + lp, k, token, state.advance(token)))
                else:
                    sentence.append(Candidate(score + lp, k, token, state))
        result.append(sentence)
    return result


def allocate(candidates: list[Candidate], size: int) -> list[Candidate]:
    """The first `size` candidates in dynamic beam allocation's order: round-robin over the
    banks (candidates with the same count of constraint tokens), most advanced bank first,
    each bank giving its best remaining candidate in turn."""
    by_score = sorted(candidates, key=lambda c: -c.score)  # stable: ties keep proposal order
    rank_in_bank: dict[int, int] = {}
    keyed = []
    for c in by_score:
        bank = c.state.count
        rank = rank_in_bank.get(bank, 0)
        rank_in_bank[bank] = rank + 1
        keyed.append((rank, -bank, c))
    keyed.sort(key=lambda x: (x[0], x[1]))  # stable: within a (rank, bank), by score
    return [c for _, _, c in keyed[:size]]


def set_aside(first: list[Candidate], tokens: torch.Tensor, i: int, K: int,
              finished: list[tuple[ConstraintState, Hypothesis]], cfg: SearchConfig) -> None:
    """Candidates ending in EOS among the first K allocated become finished hypotheses."""
    for c in first:
        if c.token == EOS_ID and len(finished) < K:
            ids = tokens[i * K + c.beam, 1:].tolist()  # without BOS
            score = length_penalty(c.score, len(ids) + 1, cfg.lenpen)
            finished.append((c.state, Hypothesis(ids, c.score, score)))


def best_first(finished: list[tuple[ConstraintState, Hypothesis]]) -> list[Hypothesis]:
    """Hypotheses meeting every constraint first (only a forced end leaves any unmet), then by
    score."""
    ranked = sorted(finished, key=lambda f: (-f[0].count, -f[1].score))
    return [hyp for _, hyp in ranked]

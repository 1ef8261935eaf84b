"""The validation set, and what training measures on it: loss, greedy translations, BLEU.

Validation pairs are encoded once (data.encode_validation), with the pairs that have no pieces on
a side dropped together with their references, so hypothesis i is always scored against
reference i. Training validates
with greedy search (fast, and it moves with beam search); BLEU comes from sacrebleu with its
signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import sacrebleu
import torch

from tinytrans.config import RunConfig
from tinytrans.data import (EncodedCorpus, ValidationSet, encode_validation, length_sorted_batches,
                            make_batch, with_tag)
from tinytrans.directions import direction_corpora, parse_directions, tag_id
from tinytrans.errors import UserError
from tinytrans.events import Event
from tinytrans.hardware import autocast
from tinytrans.model import Transformer
from tinytrans.objective import batch_loss
from tinytrans.config import SearchConfig
from tinytrans.search import greedy_search
from tinytrans.textio import read_parallel
from tinytrans.tokenizer import Tokenizer

Report = Callable[[dict[str, Any]], None]


# The validation sets of a run, by direction name ("en-de"); a run of one pair has one, named "".
ValidationSets = dict[str, ValidationSet]


def load_validation_data(cfg: RunConfig, src_tok: Tokenizer, tgt_tok: Tokenizer,
                         report: Report) -> ValidationSets | None:
    """The validation pairs with pieces on both sides, and their references, in one order: one
    set per direction of a multilingual run (each source with its target's tag), else one.

    A pair is dropped when either side encodes to no pieces (an empty or blank line, or only
    characters the tokenizer's normalisation removes, such as a zero-width space): a loss or a
    translation of nothing means nothing. Pairs and references are taken from the same kept list,
    so hypothesis i is always scored against reference i.
    """
    data = cfg.data
    if data.valid is None:
        return None
    if not data.multilingual:
        return {"": _validation_set(data.valid, data.src, data.tgt, cfg, src_tok, tgt_tok, report)}
    directions = parse_directions(data.directions)
    corpora = direction_corpora(data.valid, directions, "--valid")
    found = {}
    for direction in directions:
        valid = _validation_set(corpora[direction], direction.src, direction.tgt, cfg, src_tok,
                                tgt_tok, report)
        valid.corpus.src = with_tag(valid.corpus.src, tag_id(src_tok, direction.tgt))
        found[direction.name] = valid
    return found


def _validation_set(prefix: str, src: str, tgt: str, cfg: RunConfig, src_tok: Tokenizer,
                    tgt_tok: Tokenizer, report: Report) -> ValidationSet:
    pairs = list(read_parallel(prefix, src, tgt, cfg.data.utf8_errors))
    valid = encode_validation(pairs, src_tok, tgt_tok)
    if not valid.references:
        raise UserError(f"{prefix}: the validation set of {src}-{tgt} has no non-empty pairs")
    report({"event": Event.VALID_DATA, "read": len(pairs), "kept": len(valid.references)})
    return valid


@torch.inference_mode()
def validation_loss(model: Transformer, corpus: EncodedCorpus, batch_tokens: int,
                    device: torch.device, precision: str) -> float:
    """Mean NLL per target token with teacher forcing (no label smoothing)."""
    total = tokens = 0.0
    for indices in length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, batch_tokens, 0, 0):
        batch = make_batch(corpus, indices)
        moved = batch.to(device)
        _, nll = batch_loss(model, moved.src, moved.tgt_in, moved.tgt_out, 0.0, precision)
        total, tokens = total + float(nll), tokens + batch.n_tgt_tokens
    return total / tokens


@torch.inference_mode()
def greedy_translations(model: Transformer, corpus: EncodedCorpus, tokenizer: Tokenizer,
                        batch_tokens: int, device: torch.device, precision: str) -> list[str]:
    """Greedy translations of the corpus' source side, in corpus order."""
    outputs: list[str] = [""] * len(corpus)
    for indices in length_sorted_batches(corpus.src.lengths, corpus.tgt.lengths, batch_tokens, 0, 0):
        src = make_batch(corpus, indices).src.to(device)
        with autocast(device, precision):
            hyps = greedy_search(model, src, SearchConfig(beam=1))
        for index, text in zip(indices, tokenizer.decode([h.tokens for h in hyps])):
            outputs[index] = text
    return outputs


def validate(model: Transformer, valid: ValidationSets, tgt_tok: Tokenizer, cfg: RunConfig,
             device: torch.device, precision: str) -> dict[str, Any]:
    """Loss, BLEU and a sample translation; for several directions, their unweighted means
    (what train.best_metric compares) and each direction's own under "directions"."""
    if list(valid) == [""]:
        return validate_one(model, valid[""], tgt_tok, cfg, device, precision)
    each = {name: validate_one(model, one, tgt_tok, cfg, device, precision)
            for name, one in valid.items()}
    loss = sum(s["loss"] for s in each.values()) / len(each)
    first = next(iter(each.values()))
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)),
            "bleu": sum(s["bleu"] for s in each.values()) / len(each),
            "bleu_signature": first["bleu_signature"], "sample": first["sample"],
            "directions": {name: {"loss": s["loss"], "bleu": s["bleu"]}
                           for name, s in each.items()}}


def validate_one(model: Transformer, valid: ValidationSet, tgt_tok: Tokenizer, cfg: RunConfig,
                 device: torch.device, precision: str) -> dict[str, Any]:
    model.eval()
    loss = validation_loss(model, valid.corpus, cfg.train.batch_tokens, device, precision)
    hyps = greedy_translations(model, valid.corpus, tgt_tok, cfg.train.batch_tokens, device, precision)
    model.train()
    # force: a corpus that is already tokenized (Multi30k's tok/) is scored as it is, without
    # sacrebleu's "forgot to detokenize?" warning at every validation; the score is the same
    bleu = sacrebleu.BLEU(force=True)
    score = bleu.corpus_score(hyps, [valid.references])
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bleu": score.score,
            "bleu_signature": str(bleu.get_signature()), "sample": hyps[0]}

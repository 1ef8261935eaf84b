"""Label-smoothed cross-entropy (Szegedy et al., 2016) over the non-padding target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL of (N, V) logits against (N,) target ids.

    The smoothed target puts 1 - epsilon on the reference token and spreads epsilon uniformly
    over the vocabulary, which keeps the model from growing over-confident. The plain NLL is
    what perplexity is computed from.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    nll = -log_probs.gather(1, target[:, None]).sum()
    uniform = -log_probs.mean(dim=-1).sum()
    return (1.0 - epsilon) * nll + epsilon * uniform, nll.detach()

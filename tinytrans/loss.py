"""Label-smoothed cross-entropy (Szegedy et al., 2016) over the non-padding target tokens.

The smoothed target puts 1 - epsilon on the reference token and spreads epsilon uniformly over
the vocabulary, which keeps the model from growing over-confident. The loss is written as its
own autograd function because its gradient has a closed form, softmax(z) - smoothed target:
computing that directly touches the (tokens x vocabulary) matrix a few times instead of the
many passes and temporaries of log_softmax + gather + mean and their backward (measured in
bench/RESULTS.md; this matrix is the largest tensor of a training step).
"""

from __future__ import annotations

import torch


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, epsilon: float):
        # logits (N, V) fp32, target (N,)
        log_z = torch.logsumexp(logits, dim=-1)  # (N,) log of the softmax normaliser
        nll = log_z - logits.gather(1, target[:, None]).squeeze(1)  # -log p(reference)
        uniform = log_z - logits.mean(dim=-1)  # -mean_v log p(v)
        ctx.save_for_backward(logits, log_z, target)
        ctx.epsilon = epsilon
        loss = (1.0 - epsilon) * nll.sum() + epsilon * uniform.sum()
        return loss, nll.sum()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, grad_nll: torch.Tensor):
        logits, log_z, target = ctx.saved_tensors
        epsilon, vocab = ctx.epsilon, logits.size(-1)
        grad = (logits - log_z[:, None]).exp_()  # softmax(z), (N, V)
        grad.sub_(epsilon / vocab)
        grad.scatter_add_(1, target[:, None],
                          torch.full_like(target[:, None], -(1.0 - epsilon), dtype=grad.dtype))
        return grad.mul_(grad_loss), None, None


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor,
                       epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL (detached) of (N, V) logits against (N,) ids.

    The plain NLL is what perplexity is computed from.
    """
    loss, nll = _SmoothedCrossEntropy.apply(logits.float(), target, epsilon)
    return loss, nll.detach()

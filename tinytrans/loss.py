"""Label-smoothed cross-entropy (Szegedy et al., 2016) over the non-padding target tokens.

The smoothed target puts 1 - epsilon on the reference token and spreads epsilon uniformly over
the vocabulary, which keeps the model from growing over-confident. Per token:

    loss = (1 - epsilon) * -log p(reference) + epsilon * mean_v -log p(v)

which is what `F.cross_entropy(..., label_smoothing=epsilon)` computes. Two implementations give
the same numbers: `fused_smoothed_loss`, an autograd function whose backward is the closed form
softmax(z) - smoothed target (a few passes over the (tokens x vocabulary) matrix, the largest
tensor of a training step), and `torch_smoothed_loss`, PyTorch's own, the reference. Training
uses the first (`label_smoothed_nll`): bench/loss_speed.py measured it about 2x as fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, epsilon: float):
        # logits (N, V), target (N,). log_softmax is one fused pass over each row; a
        # logsumexp followed by a subtraction would write the (N, V) matrix twice more.
        log_probs = logits.log_softmax(dim=-1)  # (N, V)
        nll = -log_probs.gather(1, target[:, None]).squeeze(1)  # (N,) -log p(reference)
        uniform = -log_probs.mean(dim=-1)  # (N,) -mean_v log p(v)
        ctx.save_for_backward(log_probs, target)
        ctx.epsilon = epsilon
        nll_sum = nll.sum()
        loss = (1.0 - epsilon) * nll_sum + epsilon * uniform.sum()
        ctx.mark_non_differentiable(nll_sum)  # reported, never trained on: backward ignores it
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, grad_nll: torch.Tensor):
        # d loss / d logits = softmax(z) - smoothed target, scaled by the incoming gradient
        log_probs, target = ctx.saved_tensors
        epsilon, vocab = ctx.epsilon, log_probs.size(-1)
        grad = log_probs.exp().mul_(grad_loss)  # softmax(z) x grad, (N, V)
        grad.sub_(grad_loss * (epsilon / vocab))
        reference = (-(1.0 - epsilon) * grad_loss).expand(target.size(0), 1).to(grad.dtype)
        return grad.scatter_add_(1, target[:, None], reference), None, None


def fused_smoothed_loss(logits: torch.Tensor, target: torch.Tensor,
                        epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The hand-written autograd function: (summed smoothed loss, summed NLL)."""
    return _SmoothedCrossEntropy.apply(logits, target, epsilon)


def torch_smoothed_loss(logits: torch.Tensor, target: torch.Tensor,
                        epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's cross-entropy: (summed smoothed loss, summed NLL). The NLL costs one more pass
    over the logits, without gradient."""
    loss = F.cross_entropy(logits, target, label_smoothing=epsilon, reduction="sum")
    if epsilon == 0.0:  # validation: the loss is the NLL
        return loss, loss.detach()
    with torch.no_grad():
        nll = F.cross_entropy(logits, target, reduction="sum")
    return loss, nll


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor,
                       epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL (detached) of (N, V) logits against (N,) ids.

    The plain NLL is what perplexity is computed from. Logits are taken to fp32 first: bf16
    logits (from autocast) keep about three significant digits, too few for a log-softmax.
    """
    # The hand-written one: bench/loss_speed.py measured it about 2x as fast as PyTorch's;
    # torch_smoothed_loss stays as the reference it is tested (tests/test_loss.py) and timed against.
    loss, nll = fused_smoothed_loss(logits.float(), target, epsilon)
    return loss, nll.detach()

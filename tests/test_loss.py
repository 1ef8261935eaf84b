"""The label-smoothed loss: its hand-written backward is the true gradient, and both
implementations agree with PyTorch's F.cross_entropy(label_smoothing=...)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinytrans.loss import fused_smoothed_loss, label_smoothed_nll, torch_smoothed_loss


def random_problem(seed: int, n: int = 7, vocab: int = 11, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, vocab, generator=generator, dtype=dtype)).requires_grad_()
    target = torch.randint(0, vocab, (n,), generator=generator)
    target[1] = target[0]  # a repeated reference id: scatter_add must not mix rows
    return logits, target


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_fused_backward_passes_gradcheck(epsilon: float):
    logits, target = random_problem(0, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: fused_smoothed_loss(z, target, epsilon)[0], (logits,))


@pytest.mark.parametrize("implementation", [fused_smoothed_loss, torch_smoothed_loss])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("seed", [1, 2])
def test_loss_and_gradient_equal_pytorch_cross_entropy(implementation, epsilon: float, seed: int):
    logits, target = random_problem(seed)
    expected = F.cross_entropy(logits, target, label_smoothing=epsilon, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected / len(target), logits)
    loss, nll = implementation(logits, target, epsilon)
    (grad,) = torch.autograd.grad(loss / len(target), logits)  # scaled as train_step does
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    torch.testing.assert_close(nll, F.cross_entropy(logits, target, reduction="sum"))


def test_label_smoothed_nll_reports_plain_nll_without_gradient():
    logits, target = random_problem(3)
    loss, nll = label_smoothed_nll(logits.bfloat16(), target, 0.1)
    assert loss.dtype == nll.dtype == torch.float32 and loss.requires_grad and not nll.requires_grad
    torch.testing.assert_close(nll, F.cross_entropy(logits.bfloat16().float(), target,
                                                    reduction="sum"))

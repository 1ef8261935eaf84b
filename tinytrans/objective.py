"""The training objective: the label-smoothed loss of a teacher-forced batch.

Teacher forcing: the decoder reads the reference shifted right (BOS, y1, ..., yn-1) and is scored
on predicting each next token (y1, ..., yn, EOS), all positions at once. Training and validation
compute the same loss here; loss.py holds the cross-entropy itself.
"""

from __future__ import annotations

import torch

from tinytrans.hardware import autocast
from tinytrans.loss import label_smoothed_nll
from tinytrans.model import Transformer, padding_mask
from tinytrans.tokenizer import PAD_ID


def batch_loss(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
               label_smoothing: float, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced summed smoothed loss and summed NLL of one batch (data.Batch's tensors:
    src (B, S), tgt_in and tgt_out (B, T), on the model's device)."""
    with autocast(src.device, precision):
        src_mask = padding_mask(src)
        states = model.decode(tgt_in, model.encode(src, src_mask), src_mask)  # (B, T, D)
        keep = tgt_out != PAD_ID
        # Only real tokens get an output projection: padding would waste the largest matmul.
        logits = model.logits(states[keep])  # (tokens, V)
    return label_smoothed_nll(logits, tgt_out[keep], label_smoothing)


class TeacherForcing(torch.nn.Module):
    """The training objective as a module: forward(a batch's tensors) -> (summed smoothed loss,
    summed NLL), by batch_loss.

    DistributedDataParallel synchronises the gradients of what runs inside the forward of the
    module it wraps, so training wraps this, the whole loss, rather than the Transformer (whose
    encode and decode are called separately). It holds no weights of its own.
    """

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
                label_smoothing: float, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_loss(self.model, src, tgt_in, tgt_out, label_smoothing, precision)

"""Optimisation: Adam, and the learning rate of each update.

Both schedules warm up, then decay: with 1/sqrt(step) (Vaswani et al., 2017), or in a straight
line to zero at the end of a step or time budget, which is better when training is cut short.
"""

from __future__ import annotations

import math

import torch

from tinytrans.config import RunConfig, TrainConfig
from tinytrans.model import Transformer


def make_optimizer(model: Transformer, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam, fused (one kernel updates every parameter) where this PyTorch has it for the
    model's device (GPUs, and CPUs from torch 2.4); elsewhere the multi-tensor one, the same
    maths."""
    t = cfg.train
    settings = dict(lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps,
                    weight_decay=t.weight_decay)
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **settings)
    except RuntimeError:  # "fused=True requires ... tensors of supported devices"
        return torch.optim.Adam(model.parameters(), foreach=True, **settings)


def learning_rate(step: int, peak: float, warmup: int, schedule: str = "inverse_sqrt",
                  progress: float = 0.0) -> float:
    """The learning rate of update number `step` (counted from 1).

    Both schedules warm up linearly to `peak` over `warmup` updates (Vaswani et al. §5.3, with
    the peak given directly instead of through d_model^-0.5), then
    - inverse_sqrt: decay with 1/sqrt(step), as in the paper;
    - linear: decay along a straight line from the peak to zero at the end of the budget.
      `progress` is the fraction of the budget (steps or time) used before this update; it is
      below 1 for every update that is made, so the rate only reaches zero when training stops.
    """
    step, warmup = max(step, 1), max(warmup, 1)
    if step <= warmup:
        return peak * step / warmup
    if schedule == "inverse_sqrt":
        return peak * math.sqrt(warmup / step)
    if schedule != "linear":
        raise ValueError(f"unknown learning rate schedule {schedule!r}")
    if progress >= 1.0:
        return 0.0
    # The line starts where warmup ended, at progress * warmup / done of the budget: exact for
    # a step budget, and for a time budget while updates take equally long.
    done = step - 1  # the updates `progress` measures
    return peak * (1.0 - progress) / (1.0 - progress * warmup / done)


def budget_progress(t: TrainConfig, step: int, elapsed: float) -> float:
    """Fraction of the training budget used after `step` updates and `elapsed` seconds: steps or
    time, whichever is further along."""
    by_steps = step / t.max_steps if t.max_steps else 0.0
    by_time = elapsed / (t.max_time * 60) if t.max_time else 0.0
    return max(by_steps, by_time)

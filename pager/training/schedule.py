"""Learning-rate schedule of PaGeR training: warm-up, then exponential decay (the reference's ``IterExponential``).

The multiplier of the base learning rate at optimisation step ``n`` (0-based) of ``total_steps`` is

* ``(n + 1) / W`` during the warm-up, ``n < W`` with ``W = int(total_steps * warmup_ratio)``;
* ``final_ratio ** ((n - W) / (total_steps - W))`` afterwards: an exponential decay from 1 to
  ``final_ratio`` (0.01 by default) over the remaining steps;
* ``final_ratio`` from ``total_steps`` on.

``warmup_ratio`` is the config's ``lr_exp_warmup_steps`` (a share of the steps, e.g. 0.03 = 3 %).
The multiplier is a picklable object with plain attributes, so ``LambdaLR.state_dict()`` stores it and
a resumed run continues the same curve.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["ExponentialWarmupSchedule", "build_lr_scheduler"]


class ExponentialWarmupSchedule:
    """Callable ``step -> learning-rate multiplier`` (see the module docstring)."""

    def __init__(self, total_steps: int, warmup_ratio: float = 0.03, final_ratio: float = 0.01) -> None:
        if int(total_steps) < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0.0 <= float(warmup_ratio) < 1.0:
            raise ValueError(f"lr_exp_warmup_steps must be a share of the steps in [0, 1), got {warmup_ratio}")
        if not 0.0 < float(final_ratio) <= 1.0:
            raise ValueError(f"final learning-rate ratio must be in (0, 1], got {final_ratio}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(self.total_steps * float(warmup_ratio))
        self.final_ratio = float(final_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.final_ratio
        decay_steps = self.total_steps - self.warmup_steps
        return math.exp((step - self.warmup_steps) / decay_steps * math.log(self.final_ratio))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.03, final_ratio: float = 0.01
) -> LambdaLR:
    """A ``LambdaLR`` over :class:`ExponentialWarmupSchedule`; step it once per optimisation step."""
    return LambdaLR(optimizer, ExponentialWarmupSchedule(total_steps, warmup_ratio, final_ratio))

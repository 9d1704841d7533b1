"""Polynomial learning-rate decay with optional linear warm-up, per parameter group.

nnU-Net's ``PolyLRScheduler`` writes one learning rate into every parameter group. This
scheduler scales each group's own base learning rate, so a domain head or a fine-tuned
layer group may run at its own rate.

Example:
    >>> import torch
    >>> p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([{"params": [p1], "lr": 1e-2}, {"params": [p2], "lr": 1e-3}], lr=1e-2)
    >>> sched = PolyWarmupLR(opt, max_steps=100, exponent=0.9, warmup_steps=10)
    >>> sched.step(5); [round(g["lr"], 6) for g in opt.param_groups]
    [0.005455, 0.000545]
    >>> sched.step(10); [round(g["lr"], 6) for g in opt.param_groups]
    [0.01, 0.001]
"""

from __future__ import annotations

from typing import Optional

from torch.optim import Optimizer


def poly_warmup_factor(step: int, max_steps: int, exponent: float = 0.9, warmup_steps: int = 0) -> float:
    """Learning-rate factor at ``step``: linear ramp over ``warmup_steps``, then ``(1 - t)^exponent``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, max_steps - warmup_steps)
    progress = min(max(step - warmup_steps, 0), span) / span
    return (1.0 - progress) ** exponent


class PolyWarmupLR:
    """Drop-in for nnU-Net's ``PolyLRScheduler`` (``step(current_step)``) that respects group rates."""

    def __init__(self, optimizer: Optimizer, max_steps: int, exponent: float = 0.9, warmup_steps: int = 0):
        self.optimizer = optimizer
        self.max_steps = max_steps
        self.exponent = exponent
        self.warmup_steps = warmup_steps
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self.last_step = -1

    def step(self, current_step: Optional[int] = None) -> None:
        self.last_step = self.last_step + 1 if current_step is None else int(current_step)
        factor = poly_warmup_factor(self.last_step, self.max_steps, self.exponent, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]

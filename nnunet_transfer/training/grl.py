"""Gradient reversal (Ganin et al., 2016): identity forward, ``-lambda * grad`` backward,
and the schedules of its strength lambda over training (:func:`grl_schedule_lambda`).

Example:
    >>> import torch
    >>> x = torch.ones(3, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5, -0.5]
    >>> round(ganin_lambda(1.0), 4)
    0.9999
    >>> grl_schedule_lambda(0.5, "linear", delay=0.25, ramp=0.5)
    0.5
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GradientReversalFunction(torch.autograd.Function):
    """Autograd function behind :func:`grad_reverse`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.lambd * grad_output, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Return ``x`` unchanged; gradients flowing back through it are multiplied by ``-lambd``."""
    return GradientReversalFunction.apply(x, lambd)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``lambd`` is a plain attribute updated during training."""

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def ganin_lambda(progress: float, gamma: float = 10.0) -> float:
    """Reversal strength ``2 / (1 + exp(-gamma * p)) - 1`` for training progress ``p`` in [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


#: The reversal schedules :func:`grl_schedule_lambda` knows.
GRL_SCHEDULES = ("ganin", "linear", "constant")


def check_grl_schedule(schedule: str, max_lambda: float = 1.0, delay: float = 0.0, ramp: float = 0.5) -> None:
    """Raise a ``ValueError`` naming the bad parameter unless the schedule is one :func:`grl_schedule_lambda` runs.

    >>> check_grl_schedule("linear", 1.0, 0.1, 0.4)
    >>> check_grl_schedule("cosine")
    Traceback (most recent call last):
    ...
    ValueError: grl_schedule 'cosine' is unknown; choose one of 'ganin', 'linear', 'constant'
    """
    if schedule not in GRL_SCHEDULES:
        raise ValueError(f"grl_schedule {schedule!r} is unknown; choose one of "
                         f"{', '.join(map(repr, GRL_SCHEDULES))}")
    if not (math.isfinite(max_lambda) and max_lambda >= 0.0):
        raise ValueError(f"grl_max must be a finite number >= 0 (the reversal strength reached), got {max_lambda}")
    if not 0.0 <= delay < 1.0:
        raise ValueError(f"grl_delay must be within [0, 1) (the fraction of training without reversal), got {delay}")
    if not 0.0 <= ramp <= 1.0:
        raise ValueError(f"grl_ramp must be within [0, 1] (the fraction of training over which the linear schedule "
                         f"rises), got {ramp}")


def grl_schedule_lambda(progress: float, schedule: str = "ganin", gamma: float = 10.0, max_lambda: float = 1.0,
                        delay: float = 0.0, ramp: float = 0.5) -> float:
    """Reversal strength at training progress ``progress`` in [0, 1] (clipped).

    Lambda is 0 while ``progress < delay``; then

    - ``"ganin"``: ``max_lambda * (2 / (1 + exp(-gamma * q)) - 1)`` with ``q`` the progress
      through the rest of training, ``(progress - delay) / (1 - delay)`` (``q = progress``
      without delay: Ganin et al.'s schedule, this plugin's default);
    - ``"linear"``: rises linearly from 0 to ``max_lambda`` over the ``ramp`` fraction of
      training after the delay, then stays there (``ramp = 0``: a step);
    - ``"constant"``: ``max_lambda``.

    >>> grl_schedule_lambda(0.3) == ganin_lambda(0.3)
    True
    >>> [grl_schedule_lambda(p, "linear", delay=0.25, ramp=0.5) for p in (0.1, 0.25, 0.5, 0.75, 0.9)]
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> grl_schedule_lambda(0.1, "constant", max_lambda=0.3), grl_schedule_lambda(0.1, "constant", delay=0.5)
    (0.3, 0.0)
    >>> round(grl_schedule_lambda(0.55, "ganin", delay=0.1), 4) == round(ganin_lambda(0.5), 4)
    True
    """
    check_grl_schedule(schedule, max_lambda, delay, ramp)
    p = min(max(float(progress), 0.0), 1.0)
    if p < delay:
        return 0.0
    if schedule == "ganin":
        q = p if delay == 0.0 else (p - delay) / (1.0 - delay)
        return max_lambda * ganin_lambda(q, gamma)
    if schedule == "linear":
        rise = 1.0 if ramp == 0.0 else min((p - delay) / ramp, 1.0)
        return max_lambda * rise
    return float(max_lambda)

"""Gradient reversal (Ganin et al., 2016): identity forward, ``-lambda * grad`` backward.

Example:
    >>> import torch
    >>> x = torch.ones(3, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5, -0.5]
    >>> round(ganin_lambda(1.0), 4)
    0.9999
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

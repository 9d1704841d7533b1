"""Tversky loss, and Tversky + cross-entropy combined the way nnU-Net combines Dice and CE.

The Tversky index of a class weighs false positives and false negatives separately::

    TI = 2·TP / (2·TP + 2·alpha·FP + 2·beta·FN)      (with nnU-Net's smoothing term added)

``alpha`` weighs false positives, ``beta`` false negatives. ``alpha = beta = 0.5`` gives
the soft Dice of nnU-Net's ``MemoryEfficientSoftDiceLoss`` exactly (same smoothing); the
default ``alpha = 0.3, beta = 0.7`` penalises missed tumour voxels more than spurious ones,
which favours recall of the small tumour sub-regions (ET, NETC). Like nnU-Net's Dice loss
the value returned is the *negative* mean index (in [-1, 0]).

Example:
    >>> import torch
    >>> from nnunetv2.utilities.helpers import softmax_helper_dim1
    >>> loss = MemoryEfficientTverskyLoss(apply_nonlin=softmax_helper_dim1, do_bg=False, ddp=False)
    >>> logits = torch.zeros(1, 3, 4, 4, 4)
    >>> target = torch.zeros(1, 1, 4, 4, 4)
    >>> float(loss(logits, target)) <= 0
    True
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.ddp_allgather import AllGatherGrad
from torch import nn

DEFAULT_ALPHA = 0.3
DEFAULT_BETA = 0.7


class MemoryEfficientTverskyLoss(nn.Module):
    """Soft Tversky loss with the interface of nnU-Net's ``MemoryEfficientSoftDiceLoss``.

    Args:
        apply_nonlin: applied to the network output first (softmax for labels, sigmoid for regions).
        batch_dice: sum TP/FP/FN over the batch (and across DDP workers if ``ddp``) before the ratio.
        do_bg: include the background channel.
        smooth: added to numerator and denominator (as in nnU-Net's Dice).
        ddp: gather the sums across processes when ``batch_dice`` is used.
        alpha: weight of false positives.
        beta: weight of false negatives.
    """

    def __init__(self, apply_nonlin: Optional[Callable] = None, batch_dice: bool = False, do_bg: bool = True,
                 smooth: float = 1., ddp: bool = True, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA):
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta <= 0:
            raise ValueError(f"Tversky alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        self.apply_nonlin = apply_nonlin
        self.batch_dice = batch_dice
        self.do_bg = do_bg
        self.smooth = smooth
        self.ddp = ddp
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        axes = tuple(range(2, x.ndim))
        with torch.no_grad():
            if x.ndim != y.ndim:
                y = y.view((y.shape[0], 1, *y.shape[1:]))
            if x.shape == y.shape:  # already one-hot (regions)
                y_onehot = y.to(torch.float32)
            else:
                y_onehot = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
                y_onehot.scatter_(1, y.long(), 1)
            if not self.do_bg:
                y_onehot = y_onehot[:, 1:]
            sum_gt = y_onehot.sum(axes, dtype=torch.float32) if loss_mask is None else \
                (y_onehot * loss_mask).sum(axes, dtype=torch.float32)
        if not self.do_bg:
            x = x[:, 1:]
        if loss_mask is None:
            tp = (x * y_onehot).sum(axes, dtype=torch.float32)
            sum_pred = x.sum(axes, dtype=torch.float32)
        else:
            tp = (x * y_onehot * loss_mask).sum(axes, dtype=torch.float32)
            sum_pred = (x * loss_mask).sum(axes, dtype=torch.float32)
        if self.batch_dice:
            if self.ddp:
                tp = AllGatherGrad.apply(tp).sum(0, dtype=torch.float32)
                sum_pred = AllGatherGrad.apply(sum_pred).sum(0, dtype=torch.float32)
                sum_gt = AllGatherGrad.apply(sum_gt).sum(0, dtype=torch.float32)
            tp = tp.sum(0, dtype=torch.float32)
            sum_pred = sum_pred.sum(0, dtype=torch.float32)
            sum_gt = sum_gt.sum(0, dtype=torch.float32)
        fp = sum_pred - tp
        fn = sum_gt - tp
        denominator = 2 * tp + 2 * self.alpha * fp + 2 * self.beta * fn + self.smooth
        tversky = (2 * tp + self.smooth) / denominator.clamp_min(1e-8)
        return -tversky.mean()


class TverskyAndCELoss(DC_and_CE_loss):
    """nnU-Net's ``DC_and_CE_loss`` with the Dice term replaced by the Tversky loss.

    ``tversky_kwargs`` are those of :class:`MemoryEfficientTverskyLoss` (``batch_dice``,
    ``do_bg``, ``smooth``, ``ddp``, ``alpha``, ``beta``); ``ce_kwargs``, the weights and
    ``ignore_label`` mean what they mean for nnU-Net's loss.

    Example:
        >>> loss = TverskyAndCELoss({"batch_dice": True, "do_bg": False, "smooth": 1e-5, "ddp": False}, {})
        >>> loss.dc.alpha, loss.dc.beta
        (0.3, 0.7)
    """

    def __init__(self, tversky_kwargs: dict, ce_kwargs: dict, weight_ce: float = 1, weight_tversky: float = 1,
                 ignore_label: Optional[int] = None):
        super().__init__(tversky_kwargs, ce_kwargs, weight_ce=weight_ce, weight_dice=weight_tversky,
                         ignore_label=ignore_label, dice_class=MemoryEfficientTverskyLoss)


def _tversky_from_dice(dice: nn.Module, alpha: float, beta: float) -> nn.Module:
    compiled = hasattr(dice, "_orig_mod")
    original = dice._orig_mod if compiled else dice
    if isinstance(original, MemoryEfficientTverskyLoss):
        original.alpha, original.beta = float(alpha), float(beta)
        return dice
    tversky = MemoryEfficientTverskyLoss(
        apply_nonlin=original.apply_nonlin, batch_dice=original.batch_dice, do_bg=original.do_bg,
        smooth=original.smooth, ddp=getattr(original, "ddp", False), alpha=alpha, beta=beta)
    return torch.compile(tversky) if compiled else tversky


def use_tversky(loss: nn.Module, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA) -> nn.Module:
    """Swap the Dice term of an nnU-Net loss (as built by ``nnUNetTrainer._build_loss``) for Tversky.

    Works on ``DC_and_CE_loss`` (labels), ``DC_and_BCE_loss`` (regions) and either wrapped in
    ``DeepSupervisionWrapper``; the smoothing, ``batch_dice``, ``do_bg``, DDP and ignore-label
    handling, the CE term and the deep-supervision weights stay nnU-Net's. Returns ``loss``.

    Example:
        >>> base = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
        ...                       dice_class=MemoryEfficientSoftDiceLoss)
        >>> type(use_tversky(base).dc).__name__
        'MemoryEfficientTverskyLoss'
    """
    inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
    if not isinstance(inner, (DC_and_CE_loss, DC_and_BCE_loss)):
        raise TypeError(f"use_tversky expects nnU-Net's DC_and_CE_loss or DC_and_BCE_loss (optionally in a "
                        f"DeepSupervisionWrapper), got {type(inner).__name__}")
    inner.dc = _tversky_from_dice(inner.dc, alpha, beta)
    return loss

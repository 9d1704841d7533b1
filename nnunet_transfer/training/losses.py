"""Losses the plugin's trainers build in place of nnU-Net's, one fix each.

Example:
    >>> import torch
    >>> kwargs = {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False}
    >>> x, y = torch.randn(2, 3, 4, 4, 4), torch.rand(2, 3, 4, 4, 4) > 0.5
    >>> with_ignore = torch.cat([y, torch.zeros_like(y[:, :1])], 1)  # nothing ignored
    >>> masked = MaskedRegionLoss({}, kwargs, use_ignore_label=True)(x, with_ignore)
    >>> bool(torch.isclose(masked, DC_and_BCE_loss({}, kwargs)(x, y.float())))
    True
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from torch import nn


class MaskedRegionLoss(DC_and_BCE_loss):
    """nnU-Net's region loss (Dice + BCE) with the ignore mask, its BCE averaged over every unmasked value.

    nnU-Net's ``DC_and_BCE_loss`` with ``use_ignore_label`` sums the BCE over the region
    channels and divides by the number of unmasked *voxels*: with R regions its BCE weighs R
    times what it weighs without an ignore label, and on BraTS's three regions that tripled
    BCE held the small regions (TC, ET) at zero on the demo's budget. Here the BCE is
    divided by unmasked voxels x R, so with nothing masked the loss equals nnU-Net's loss
    without an ignore label, and masking removes a case's voxels without reweighting the rest.

    See the module docstring for an example.
    """

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.use_ignore_label:
            return super().forward(net_output, target)
        mask = ~target[:, -1:] if target.dtype == torch.bool else (1 - target[:, -1:]).bool()
        target_regions = target[:, :-1]
        dc_loss = self.dc(net_output, target_regions, loss_mask=mask)
        bce = self.ce(net_output, target_regions.float())  # reduction 'none' (set by nnU-Net's constructor)
        ce_loss = (bce * mask).sum() / torch.clip(mask.sum() * target_regions.shape[1], min=1e-8)
        return self.weight_ce * ce_loss + self.weight_dice * dc_loss


@contextlib.contextmanager
def masked_region_loss() -> Iterator[None]:
    """Within the block, ``nnUNetTrainer._build_loss`` builds :class:`MaskedRegionLoss` for region-based training."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    original = trainer_module.DC_and_BCE_loss
    trainer_module.DC_and_BCE_loss = MaskedRegionLoss
    try:
        yield
    finally:
        trainer_module.DC_and_BCE_loss = original


class LabelledSamplesDice(nn.Module):
    """nnU-Net's Dice averaged over the samples that hold a labelled voxel only.

    With ``batch_dice=False`` (nnU-Net's 3d_fullres default) nnU-Net averages one Dice per
    sample. A sample whose every voxel is masked (an unlabelled scan, or a case whose labels a
    run hides) scores smooth / smooth = 1 with no gradient, yet counts in that average: a batch
    of source cases and as many masked target cases gave the labelled half half the Dice
    gradient, while the (CE or BCE) term, averaged over unmasked voxels, kept its full weight,
    and the models under-segmented (unsupervised runs learnt little of the SSA oedema). Here
    such samples are left out of the average, so a batch of labelled cases plus masked ones
    trains its labelled cases as a batch of them alone would. With ``batch_dice=True`` masked
    samples add nothing to the summed counts already and nothing changes.

    Example:
        >>> from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
        >>> dice = MemoryEfficientSoftDiceLoss(batch_dice=False, do_bg=True, smooth=1e-5)
        >>> x, y = torch.rand(2, 2, 4, 4, 4), (torch.rand(2, 2, 4, 4, 4) > 0.5).float()
        >>> mask = torch.ones(2, 1, 4, 4, 4, dtype=torch.bool); mask[1] = False  # sample 1 unlabelled
        >>> bool(torch.isclose(LabelledSamplesDice(dice)(x, y, loss_mask=mask), dice(x[:1], y[:1])))
        True
    """

    def __init__(self, dice: nn.Module):
        super().__init__()
        self.dice = dice

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask=None) -> torch.Tensor:
        if loss_mask is None:
            return self.dice(x, y)
        labelled = loss_mask.flatten(1).any(1)
        if bool(labelled.all()) or not bool(labelled.any()):  # nothing to leave out; or nnU-Net's -1, no gradient
            return self.dice(x, y, loss_mask=loss_mask)
        return self.dice(x[labelled], y[labelled], loss_mask=loss_mask[labelled])


def average_dice_over_labelled_samples(loss: nn.Module, batch_dice: bool) -> nn.Module:
    """Give ``loss`` (nnU-Net's compound loss, or its deep-supervision wrapper) a :class:`LabelledSamplesDice`.

    Only needed, and only done, with per-sample Dice (``batch_dice=False``); returns ``loss``.
    """
    inner = getattr(loss, "loss", loss)  # DeepSupervisionWrapper keeps the compound loss as .loss
    if not batch_dice and isinstance(getattr(inner, "dc", None), nn.Module):
        inner.dc = LabelledSamplesDice(inner.dc)
    return loss

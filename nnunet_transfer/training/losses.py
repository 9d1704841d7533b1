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

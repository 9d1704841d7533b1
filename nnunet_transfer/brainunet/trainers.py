"""BrainUNet's ``-tr`` trainers: Tversky + CE loss and k-space artifact augmentation.

============================================  =====================================================
``-tr`` name                                  idea
============================================  =====================================================
nnUNetTrainerBrainUNet                        BrainUNet training (pre-training on the source domain,
                                              or training from scratch)
nnUNetTrainerBrainUNetFineTune                ... fine-tuning from ``-pretrained_weights``: lr 1e-3
                                              with linear warm-up, segmentation head kept when the
                                              labels match (the plugin's ``FineTuneMixin``)
============================================  =====================================================

Use them with BrainUNet plans (``nnunet-transfer brainunet-plans``), which select the
attention residual U-Net and keep nnU-Net's preprocessing; with other plans they train
that plans' network with BrainUNet's loss and augmentation. Intensities are clipped at
conversion (``nnunet-transfer convert --clip-percentiles 0.5 99.5``), not here.

Example:
    nnunet-transfer convert /data/BraTS-SSA -d 233 -n BraTSSSA --clip-percentiles 0.5 99.5
    nnUNetv2_extract_fingerprint -d 233 && nnUNetv2_plan_experiment -d 233
    nnunet-transfer brainunet-plans 233
    nnUNetv2_preprocess -d 233 -plans_name nnUNetPlans_BrainUNet -c 3d_fullres
    nnUNetv2_train 233 3d_fullres all -tr nnUNetTrainerBrainUNet -p nnUNetPlans_BrainUNet
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import numpy as np
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

from nnunet_transfer.brainunet.losses import DEFAULT_ALPHA, DEFAULT_BETA, use_tversky
from nnunet_transfer.brainunet.plans import NETWORK_CLASS
from nnunet_transfer.brainunet.transforms import GhostingArtifactTransform, MotionArtifactTransform
from nnunet_transfer.training.mixins import FineTuneMixin, TransferTrainerBase


def insert_artifact_transforms(pipeline: BasicTransform, artifacts: List[BasicTransform]) -> BasicTransform:
    """Insert ``artifacts`` into nnU-Net's training pipeline, after the intensity augmentation.

    They go before mirroring (or the masking / label clean-up when there is no mirroring),
    so they act on the cropped, intensity-augmented patch and the outside-brain masking
    still applies afterwards, as it does for nnU-Net's own transforms.
    """
    transforms = pipeline.transforms
    for kind in (MirrorTransform, MaskImageTransform, RemoveLabelTansform):
        index = next((i for i, t in enumerate(transforms) if isinstance(t, kind)), None)
        if index is not None:
            break
    else:
        raise RuntimeError("nnU-Net's training transforms have changed: found no MirrorTransform, "
                           "MaskImageTransform or RemoveLabelTansform to insert the artifact transforms before")
    transforms[index:index] = artifacts
    return pipeline


class BrainUNetMixin:
    """Tversky + CE loss and motion / ghosting augmentation on top of nnU-Net's training.

    ``tversky_alpha`` weighs false positives, ``tversky_beta`` false negatives (0.3 / 0.7).
    ``motion_probability`` and ``ghosting_probability`` are the chances that a training
    patch gets the artifact (each channel then independently); ``motion_translation`` (voxels)
    and ``ghosting_intensity`` set their strength (0 disables them).
    """

    tversky_alpha: float = DEFAULT_ALPHA
    tversky_beta: float = DEFAULT_BETA
    motion_probability: float = 0.1
    motion_translation: RandomScalar = (1.0, 6.0)
    motion_corrupted_fraction: RandomScalar = (0.05, 0.3)
    ghosting_probability: float = 0.1
    ghosting_num_ghosts: RandomScalar = (2, 8)
    ghosting_intensity: RandomScalar = (0.3, 0.9)

    def initialize(self):
        super().initialize()
        name = self.configuration_manager.network_arch_class_name
        if name != NETWORK_CLASS:
            self.print_to_log_file(
                f"nnunet-transfer: plans {self.plans_manager.plans_name!r} use {name}, not BrainUNet's network; "
                f"derive BrainUNet plans with `nnunet-transfer brainunet-plans` and train with -p to get it")
        partner = "BCE" if self.label_manager.has_regions else "CE"  # region-based datasets: nnU-Net's BCE
        self.print_to_log_file(f"nnunet-transfer: Tversky + {partner} loss (alpha {self.tversky_alpha}, beta "
                               f"{self.tversky_beta}); motion p={self.motion_probability}, ghosting "
                               f"p={self.ghosting_probability}")

    def _build_loss(self):
        return use_tversky(super()._build_loss(), self.tversky_alpha, self.tversky_beta)

    @classmethod
    def artifact_transforms(cls) -> List[BasicTransform]:
        """The artifact transforms, each wrapped in a ``RandomTransform`` with its probability."""
        return [
            RandomTransform(MotionArtifactTransform(translation=cls.motion_translation,
                                                    corrupted_fraction=cls.motion_corrupted_fraction),
                            apply_probability=cls.motion_probability),
            RandomTransform(GhostingArtifactTransform(num_ghosts=cls.ghosting_num_ghosts,
                                                      intensity=cls.ghosting_intensity),
                            apply_probability=cls.ghosting_probability),
        ]

    @classmethod
    def get_training_transforms(
            cls,
            patch_size: Union[np.ndarray, Tuple[int]],
            rotation_for_DA: RandomScalar,
            deep_supervision_scales: Union[List, Tuple, None],
            mirror_axes: Tuple[int, ...],
            do_dummy_2d_data_aug: bool,
            use_mask_for_norm: Optional[List[bool]] = None,
            is_cascaded: bool = False,
            foreground_labels: Union[Tuple[int, ...], List[int], None] = None,
            regions: Optional[List[Union[List[int], Tuple[int, ...], int]]] = None,
            ignore_label: Optional[int] = None,
    ) -> BasicTransform:
        """nnU-Net's training transforms with the motion and ghosting transforms inserted.

        A classmethod (nnU-Net's is a staticmethod; both are called as
        ``self.get_training_transforms(...)``) so that ``super()`` follows the trainer's MRO
        and subclasses can change the artifact knobs.
        """
        pipeline = super(BrainUNetMixin, cls).get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=is_cascaded, foreground_labels=foreground_labels,
            regions=regions, ignore_label=ignore_label)
        return insert_artifact_transforms(pipeline, cls.artifact_transforms())


class nnUNetTrainerBrainUNet(BrainUNetMixin, TransferTrainerBase):
    """BrainUNet training: Tversky + CE, nnU-Net's augmentation plus motion and ghosting."""


class nnUNetTrainerBrainUNetFineTune(BrainUNetMixin, FineTuneMixin, TransferTrainerBase):
    """BrainUNet fine-tuning from ``-pretrained_weights`` (lower learning rate with warm-up)."""


__all__ = ["nnUNetTrainerBrainUNet", "nnUNetTrainerBrainUNetFineTune"]

"""BrainUNet: an attention residual 3D U-Net strategy for nnU-Net (issue 5).

Modules: ``network`` (the architecture), ``losses`` (Tversky, Tversky + CE), ``transforms``
(k-space motion and ghosting augmentation), ``plans`` (derive BrainUNet plans from nnU-Net
plans) and ``trainers`` (``nnUNetTrainerBrainUNet``, ``nnUNetTrainerBrainUNetFineTune``).
The percentile clipping happens at conversion
(``nnunet_transfer.dataset_conversion.intensity``, ``nnunet-transfer convert
--clip-percentiles 0.5 99.5``); the z-score within the brain is nnU-Net's own
``ZScoreNormalization``. Nothing is imported here, so importing a submodule stays cheap.
See docs/brainunet.md.
"""

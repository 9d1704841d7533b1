"""BrainUNet: an attention residual 3D U-Net strategy for nnU-Net (issue 5).

Modules: ``network`` (the architecture), ``losses`` (Tversky, Tversky + CE), ``transforms``
(k-space motion and ghosting augmentation), ``normalization`` (percentile clipping then
z-score), ``plans`` (derive BrainUNet plans from nnU-Net plans) and ``trainers``
(``nnUNetTrainerBrainUNet``, ``nnUNetTrainerBrainUNetFineTune``). Nothing is imported here,
so importing a submodule stays cheap. See docs/brainunet.md.
"""

"""BrainUNet trainers: loss swap, augmentation pipeline, class layout (no training here)."""

from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.brainunet import trainers
from nnunet_transfer.brainunet.transforms import GhostingArtifactTransform, MotionArtifactTransform
from nnunet_transfer.training.mixins import FineTuneMixin


def _pipeline(cls, **kwargs):
    return cls.get_training_transforms((32, 32, 32), (0.0, 0.0), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1, 2), False,
                                       use_mask_for_norm=[True, True, True], foreground_labels=[1, 2, 3], **kwargs)


def test_artifacts_inserted_before_mirroring_and_rest_is_nnunets():
    ours = _pipeline(trainers.nnUNetTrainerBrainUNet).transforms
    base = _pipeline(nnUNetTrainer).transforms
    inner = [t.transform for t in ours if isinstance(t, RandomTransform)]
    kinds = [type(t) for t in inner]
    assert MotionArtifactTransform in kinds and GhostingArtifactTransform in kinds
    mirror = next(i for i, t in enumerate(ours) if isinstance(t, MirrorTransform))
    motion = next(i for i, t in enumerate(ours) if isinstance(t, RandomTransform)
                  and isinstance(t.transform, MotionArtifactTransform))
    assert motion == mirror - 2
    assert len(ours) == len(base) + 2
    assert [type(t) for t in ours if not (isinstance(t, RandomTransform) and type(t.transform) in
                                          (MotionArtifactTransform, GhostingArtifactTransform))] == \
        [type(t) for t in base]


def test_pipeline_runs_on_a_sample():
    import torch

    pipeline = _pipeline(trainers.nnUNetTrainerBrainUNet)
    image = torch.randn(3, 40, 40, 40)
    seg = torch.randint(0, 4, (1, 40, 40, 40)).to(torch.int16)
    out = pipeline(image=image, segmentation=seg)
    assert out["image"].shape == (3, 32, 32, 32)
    assert isinstance(out["segmentation"], list) and out["segmentation"][1].shape == (1, 16, 16, 16)


def test_subclass_knobs_reach_the_static_pipeline():
    class NoArtifacts(trainers.nnUNetTrainerBrainUNet):
        motion_probability = 0.0
        ghosting_probability = 0.0

    probabilities = [t.apply_probability for t in _pipeline(NoArtifacts).transforms
                     if isinstance(t, RandomTransform) and isinstance(t.transform, (MotionArtifactTransform,
                                                                                      GhostingArtifactTransform))]
    assert probabilities == [0.0, 0.0]


def test_trainer_classes_and_exports():
    assert trainers.__all__ == ["nnUNetTrainerBrainUNet", "nnUNetTrainerBrainUNetFineTune"]
    assert issubclass(trainers.nnUNetTrainerBrainUNet, nnUNetTrainer)
    assert issubclass(trainers.nnUNetTrainerBrainUNetFineTune, FineTuneMixin)
    assert trainers.nnUNetTrainerBrainUNet.tversky_alpha == 0.3 and trainers.nnUNetTrainerBrainUNet.tversky_beta == 0.7
    assert trainers.nnUNetTrainerBrainUNetFineTune.fine_tune_initial_lr < 1e-2

"""Trainers instantiated in-process on hand-made plans: one training step with deep supervision on and off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_transfer.training import trainers as T

KEYS = ["BraTS-GLI-00000-000", "BraTS-SSA-00000-000"]
DATASET_JSON = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
                "numTraining": 2, "file_ending": ".nii.gz"}


def tiny_plans(features=(4, 8, 16)) -> dict:
    arch = {"n_stages": 3, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1] * 3,
            "n_conv_per_stage_decoder": [1] * 2, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "patch_size": [16, 16, 16], "median_image_size_in_voxels": [16, 16, 16],
              "spacing": [1, 1, 1], "normalization_schemes": ["ZScoreNormalization"] * 2,
              "use_mask_for_norm": [False] * 2, "batch_dice": False,
              "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                               "arch_kwargs": arch,
                               "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}
    return {"dataset_name": "Dataset998_InProcess", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1, 1, 1], "original_median_shape_after_transp": [16, 16, 16],
            "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {}, "configurations": {"3d_fullres": config}}


@pytest.fixture
def folders(nnunet_env, tmp_path):
    data = tmp_path / "nnunet" / "preprocessed" / "Dataset998_InProcess" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "placeholder.b2nd").touch()  # lets nnU-Net infer its dataset class; no data is read
    return nnunet_env


def uninitialised(cls, features=(4, 8, 16)):
    """A trainer of ``cls`` on the hand-made plans, its split checked, not yet initialised."""
    trainer = cls({**tiny_plans(features), "continue_training": False}, "3d_fullres", 0, DATASET_JSON,
                  torch.device("cpu"))
    trainer._split = (KEYS, KEYS[:1])
    trainer.check_training_cases(KEYS, KEYS[:1])
    return trainer


def make(cls, deep_supervision: bool, features=(4, 8, 16)):
    trainer = uninitialised(cls, features)
    trainer.enable_deep_supervision = deep_supervision
    trainer.initialize()
    trainer.network.train()
    trainer._step_in_epoch = 0
    return trainer


def batch_for(trainer) -> dict:
    torch.manual_seed(0)
    seg = torch.randint(0, 4, (2, 1, 16, 16, 16)).float()
    scales = trainer._get_deep_supervision_scales()
    target = seg if scales is None else [torch.nn.functional.interpolate(seg, scale_factor=tuple(s)) for s in scales]
    return {"data": torch.randn(2, 2, 16, 16, 16), "target": target, "keys": KEYS}


@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("cls", [T.nnUNetTrainerDANN, T.nnUNetTrainerMixedDomain, T.nnUNetTrainerDANNNoGRL_PaperRecipe])
def test_one_step_with_and_without_deep_supervision(folders, cls, deep_supervision):
    trainer = make(cls, deep_supervision)
    assert trainer.network.decoder.deep_supervision is deep_supervision
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    out = trainer.train_step(batch_for(trainer))
    assert np.isfinite(out["loss"])
    assert any(not torch.equal(p, before[n]) for n, p in trainer.network.named_parameters())
    if hasattr(trainer, "domain_head"):
        assert np.isfinite(out["domain_loss"])
        assert all(p.grad is not None for p in trainer.domain_head.parameters())
        if trainer.reverse_gradients:
            assert 0.0 <= out["grl_lambda"] <= 1.0
        else:  # no reversal is applied, so none is logged
            assert "grl_lambda" not in out


def textured_batch(rng: np.random.Generator, trainer, keys) -> dict:
    """Both domains' images hold the same tumour; the SSA-like one's noise is smoothed, as a blurrier
    low-field scan's is after resampling (mean and variance are equal: only texture tells them apart)."""
    seg = torch.zeros(len(keys), 1, 16, 16, 16)
    seg[:, :, 5:11, 5:11, 5:11] = 2
    seg[:, :, 7:9, 7:9, 7:9] = 3
    images = []
    for key in keys:
        noise = torch.from_numpy(rng.normal(size=(2, 16, 16, 16)).astype(np.float32))
        if "SSA" in key:
            noise = torch.nn.functional.avg_pool3d(noise[None], 3, stride=1, padding=1)[0]
            noise = noise / noise.std()
        images.append(noise + seg[0].repeat(2, 1, 1, 1))
    scales = trainer._get_deep_supervision_scales()
    target = seg if scales is None else [torch.nn.functional.interpolate(seg, scale_factor=tuple(s)) for s in scales]
    return {"data": torch.stack(images), "target": target, "keys": list(keys)}


STEPS = 100


def test_classifier_learns_separable_domains_through_the_real_trainer(folders):
    """Without reversal, DANN's classifier must learn domains that texture separates (not only their mean)."""
    torch.manual_seed(0)
    trainer = make(T.nnUNetTrainerDANNNoGRL, deep_supervision=True, features=(8, 16, 32))
    rng = np.random.default_rng(0)
    accuracy = []
    for step in range(STEPS):
        keys = [KEYS[0], KEYS[1]] if step % 2 else [KEYS[1], KEYS[0]]
        accuracy.append(float(trainer.train_step(textured_batch(rng, trainer, keys))["domain_acc"]))
    assert np.mean(accuracy[-20:]) >= 0.9, accuracy
    assert np.mean(accuracy[:10]) < 0.9  # it learnt: it did not start there


def test_misspelt_target_domain_is_refused_with_the_domains_that_exist(folders):
    class Misspelt(T.nnUNetTrainerMixedDomain):
        target_domain = "ssa"

    with pytest.raises(RuntimeError, match=r"target_domain is 'ssa'.*\['GLI', 'SSA'\].*'GLI', 'SSA'"):
        make(Misspelt, deep_supervision=True)


def test_encoder_hook_keeps_only_the_used_levels_and_only_in_training(folders):
    trainer = make(T.nnUNetTrainerDANN, deep_supervision=True)
    data = batch_for(trainer)["data"]
    trainer.network.eval()
    with torch.no_grad():
        trainer.network(data)
    assert trainer._features is None  # validation keeps nothing alive
    trainer.network.train()
    trainer.network(data)
    assert len(trainer._features) == len(trainer.head_config["levels"]) == len(trainer.domain_feature_levels)
    trainer._features = None
    trainer.train_step(batch_for(trainer))
    assert trainer._features is None  # released after the step


def test_trainers_honour_omp_num_threads_on_the_cpu(folders, monkeypatch):
    """nnUNetv2_train gives torch every core; with OMP_NUM_THREADS (``run --jobs``) the trainers take that many."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        T.nnUNetTrainerMixedDomain({**tiny_plans(), "continue_training": False}, "3d_fullres", 0, DATASET_JSON,
                                   torch.device("cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

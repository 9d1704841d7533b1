"""Deriving BrainUNet plans from nnU-Net plans."""

import copy
import json

import logging

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_transfer.brainunet.network import AttentionResidualUNet
from nnunet_transfer.brainunet.plans import (CHECKPOINT_LIMIT_MB, NETWORK_CLASS, count_parameters,
                                             derive_brainunet_plans, estimate_checkpoint_mb)


def brats_plans():
    """nnU-Net's 3d_fullres plans for BraTS (1 mm, 128^3 patch, 6 stages, 32..320 features)."""
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
            "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    return {
        "dataset_name": "Dataset233_BraTS", "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "normalization_schemes": ["ZScoreNormalization"] * 4,
                   "architecture": {**copy.deepcopy(arch), "arch_kwargs": {
                       **arch["arch_kwargs"], "conv_op": "torch.nn.modules.conv.Conv2d",
                       "kernel_sizes": [[3, 3]] * 6, "strides": [[1, 1]] + [[2, 2]] * 5,
                       "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d"}}},
            "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [128, 128, 128],
                           "batch_size": 2, "spacing": [1.0, 1.0, 1.0],
                           "normalization_schemes": ["ZScoreNormalization"] * 4,
                           "use_mask_for_norm": [True] * 4, "architecture": copy.deepcopy(arch)},
            "3d_cascade_like": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_cascade"},
        },
        "foreground_intensity_properties_per_channel": {},
    }


DATASET_JSON = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
                "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": 6, "file_ending": ".nii.gz"}


def test_brats_plans_fit_the_checkpoint_budget_and_keep_preprocessing():
    plans = brats_plans()
    before = json.dumps(plans, sort_keys=True)
    new = derive_brainunet_plans(plans, configurations=["3d_fullres"], dataset_json=DATASET_JSON)
    assert json.dumps(plans, sort_keys=True) == before  # input untouched
    cfg = new["configurations"]["3d_fullres"]
    kwargs = cfg["architecture"]["arch_kwargs"]
    assert new["plans_name"] == "nnUNetPlans_BrainUNet"
    assert cfg["architecture"]["network_class_name"] == NETWORK_CLASS
    assert kwargs["features_per_stage"][0] == 16 and max(kwargs["features_per_stage"]) <= 160
    assert kwargs["attention_gates"] is True
    assert (cfg["patch_size"], cfg["batch_size"], cfg["spacing"]) == ([128, 128, 128], 2, [1.0, 1.0, 1.0])
    assert kwargs["strides"] == plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"]
    # nnU-Net's preprocessing is kept (z-score within the brain), in the plans' own data folder
    before_cfg = plans["configurations"]["3d_fullres"]
    for key in ("normalization_schemes", "use_mask_for_norm", "spacing"):
        assert cfg[key] == before_cfg[key]
    assert cfg["data_identifier"] == "nnUNetPlans_BrainUNet_3d_fullres"
    # inheriting configurations get their own data too, untouched others keep theirs
    assert new["configurations"]["3d_cascade_like"]["data_identifier"] == "nnUNetPlans_BrainUNet_3d_cascade_like"
    assert new["configurations"]["2d"] == plans["configurations"]["2d"]
    info = new["brainunet"]["configurations"]["3d_fullres"]
    assert info["estimated_checkpoint_mb"] < CHECKPOINT_LIMIT_MB
    # the estimate matches the real network nnU-Net builds from the derived plans
    net = get_network_from_plans(NETWORK_CLASS, kwargs, cfg["architecture"]["_kw_requires_import"], 4, 4,
                                 allow_init=False, deep_supervision=True)
    assert isinstance(net, AttentionResidualUNet)
    assert sum(p.numel() for p in net.parameters()) == info["parameters"]


def test_much_smaller_than_nnunet_default():
    plans = brats_plans()
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    default = count_parameters(arch["arch_kwargs"], 4, 4, network_class=arch["network_class_name"])
    assert estimate_checkpoint_mb(default) > 200  # nnU-Net's default would not fit
    new = derive_brainunet_plans(plans, configurations=["3d_fullres"])
    assert new["brainunet"]["configurations"]["3d_fullres"]["parameters"] < default / 2.5


def test_tighter_budget_removes_blocks_then_features():
    new = derive_brainunet_plans(brats_plans(), configurations=["3d_fullres"], max_checkpoint_mb=30)
    kwargs = new["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert kwargs["n_blocks_per_stage"] == [1] * 6
    assert max(kwargs["features_per_stage"]) < 160
    assert new["brainunet"]["configurations"]["3d_fullres"]["estimated_checkpoint_mb"] <= 30


def test_default_converts_all_configurations():
    new = derive_brainunet_plans(brats_plans())
    for name in ("2d", "3d_fullres"):
        cfg = new["configurations"][name]
        assert cfg["architecture"]["network_class_name"] == NETWORK_CLASS
        assert cfg["data_identifier"] == f"nnUNetPlans_BrainUNet_{name}"
        assert cfg["normalization_schemes"] == ["ZScoreNormalization"] * 4
    net = get_network_from_plans(NETWORK_CLASS, new["configurations"]["2d"]["architecture"]["arch_kwargs"],
                                 ["conv_op", "norm_op", "dropout_op", "nonlin"], 4, 4, deep_supervision=False)
    assert net(torch.zeros(1, 4, 64, 64)).shape == (1, 4, 64, 64)


def test_normalization_other_than_zscore_within_the_brain_is_kept_with_a_warning(caplog):
    plans = brats_plans()
    cfg = plans["configurations"]["3d_fullres"]
    cfg["normalization_schemes"][1] = "CTNormalization"
    cfg["use_mask_for_norm"][2] = False
    with caplog.at_level(logging.WARNING, logger="nnunet_transfer.brainunet.plans"):
        new = derive_brainunet_plans(plans, configurations=["3d_fullres"])["configurations"]["3d_fullres"]
    assert new["normalization_schemes"] == cfg["normalization_schemes"]
    assert new["use_mask_for_norm"] == [True, True, False, True]
    assert "channel 1: CTNormalization" in caplog.text and "channel 2: ZScoreNormalization without" in caplog.text
    assert "channel 0" not in caplog.text


def test_intensity_clipping_of_the_dataset_is_recorded_or_warned_about(caplog):
    clipping = {"percentiles": [0.5, 99.5], "within": "nonzero"}
    with caplog.at_level(logging.WARNING, logger="nnunet_transfer.brainunet.plans"):
        new = derive_brainunet_plans(brats_plans(), configurations=["3d_fullres"],
                                     dataset_json={**DATASET_JSON, "intensity_clipping": clipping})
    assert new["brainunet"]["intensity_clipping"] == clipping and "clip" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="nnunet_transfer.brainunet.plans"):
        new = derive_brainunet_plans(brats_plans(), configurations=["3d_fullres"], dataset_json=DATASET_JSON)
    assert new["brainunet"]["intensity_clipping"] is None and "--clip-percentiles 0.5 99.5" in caplog.text


def test_unknown_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match="3d_lowres"):
        derive_brainunet_plans(brats_plans(), configurations=["3d_lowres"])


def test_plain_unet_baseline_kwargs_still_build():
    arch = brats_plans()["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 4, 4, allow_init=False, deep_supervision=False)
    assert isinstance(net, PlainConvUNet)

"""``nnunet_transfer.planning``: shrinking plain and residual-encoder (ResEnc) plans."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from nnunet_transfer.planning import shrink_plans, write_plans

RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def plans_like_nnunet(network: str, n_stages: int, features, blocks=None, name: str = "nnUNetResEncUNetMPlans") -> dict:
    """A 3d_fullres configuration as nnU-Net 2.8's planners write it (ResEnc M/L, or the plain U-Net)."""
    kwargs = {"n_stages": n_stages, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
              "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
              "n_conv_per_stage_decoder": [1 if blocks else 2] * (n_stages - 1), "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if blocks:
        kwargs["n_blocks_per_stage"] = list(blocks)
    else:
        kwargs["n_conv_per_stage"] = [2] * n_stages
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [128, 160, 112],
              "architecture": {"network_class_name": network, "arch_kwargs": kwargs,
                               "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}
    return {"plans_name": name, "experiment_planner_used": "nnUNetPlannerResEncM",
            "configurations": {"3d_fullres": config}}


def resenc_m() -> dict:
    return plans_like_nnunet(RESENC, 6, [32, 64, 128, 256, 320, 320], blocks=[1, 3, 4, 6, 6, 6])


def arch(plans: dict) -> dict:
    return plans["configurations"]["3d_fullres"]["architecture"]


def build(plans: dict, deep_supervision: bool = True) -> torch.nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    a = arch(plans)
    return get_network_from_plans(a["network_class_name"], a["arch_kwargs"], a["_kw_requires_import"],
                                  input_channels=4, output_channels=3, deep_supervision=deep_supervision)


def test_resenc_per_stage_lists_follow_n_stages():
    original = resenc_m()
    before = copy.deepcopy(original)
    small = shrink_plans(original, "nnUNetResEncUNetMPlansTiny", max_features=32, n_stages=3,
                         patch_size=(30, 40, 33), batch_size=2)
    kwargs = arch(small)["arch_kwargs"]
    assert kwargs["n_stages"] == 3
    assert kwargs["n_blocks_per_stage"] == [1, 3, 4], "the encoder keeps its shallow stages' residual blocks"
    assert kwargs["n_conv_per_stage_decoder"] == [1, 1], "one decoder stage per resolution change"
    assert len(kwargs["kernel_sizes"]) == len(kwargs["strides"]) == 3
    assert kwargs["features_per_stage"] == [8, 16, 32]
    assert "n_conv_per_stage" not in kwargs, "ResEnc kwargs got the plain U-Net's key"
    config = small["configurations"]["3d_fullres"]
    assert config["patch_size"] == [28, 40, 32] and config["batch_size"] == 2  # multiples of the total stride 4
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres", "the data of the original plans is reused"
    assert small["plans_name"] == "nnUNetResEncUNetMPlansTiny" and arch(small)["network_class_name"] == RESENC
    assert original == before, "shrink_plans changed its input"


def test_shrunken_resenc_plans_build_and_run():
    small = shrink_plans(resenc_m(), "Tiny", max_features=16, n_stages=3, patch_size=(16, 16, 16))
    network = build(small)
    outputs = network(torch.zeros(1, 4, 16, 16, 16))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 16, 16, 16), (1, 3, 8, 8, 8)]  # deep supervision
    assert len(network.encoder.stages) == 3 and any(n.startswith("encoder.stem.") for n, _ in
                                                    network.named_parameters())
    assert build(small, deep_supervision=False)(torch.zeros(1, 4, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


def test_resenc_l_plans_and_plain_plans_shrink_alike():
    large = plans_like_nnunet(RESENC, 6, [32, 64, 128, 256, 320, 320], blocks=[1, 3, 4, 6, 6, 6],
                              name="nnUNetResEncUNetLPlans")
    kwargs = arch(shrink_plans(large, "LTiny", n_stages=4, width_divisor=4))["arch_kwargs"]
    assert kwargs["n_blocks_per_stage"] == [1, 3, 4, 6] and len(kwargs["n_conv_per_stage_decoder"]) == 3
    assert kwargs["features_per_stage"] == [8, 16, 32, 64]
    plain = plans_like_nnunet(PLAIN, 5, [32, 64, 128, 256, 320], name="nnUNetPlans")
    kwargs = arch(shrink_plans(plain, "PlainTiny", n_stages=3, max_features=32))["arch_kwargs"]
    assert kwargs["n_conv_per_stage"] == [2, 2, 2] and kwargs["n_conv_per_stage_decoder"] == [2, 2]
    assert "n_blocks_per_stage" not in kwargs


def test_more_stages_than_planned_keep_the_plans():
    kwargs = arch(shrink_plans(resenc_m(), "Same", n_stages=8))["arch_kwargs"]
    assert kwargs["n_stages"] == 6 and len(kwargs["n_blocks_per_stage"]) == 6


def test_bad_stage_counts_are_clear_errors():
    broken = resenc_m()
    arch(broken)["arch_kwargs"]["n_blocks_per_stage"] = [1, 3, 4]
    with pytest.raises(ValueError, match=r"arch_kwargs.n_blocks_per_stage has 3 entries but n_stages=6 needs 6"):
        shrink_plans(broken, "Tiny", n_stages=3)
    with pytest.raises(ValueError, match="at least 2 stages"):
        shrink_plans(resenc_m(), "Tiny", n_stages=1)


def test_write_plans_names_the_file_after_the_plans(tmp_path):
    small = shrink_plans(resenc_m(), "nnUNetResEncUNetMPlansTiny", n_stages=3)
    target = write_plans(tmp_path, small)
    assert target == tmp_path / "nnUNetResEncUNetMPlansTiny.json"
    assert json.loads(target.read_text()) == small and not list(tmp_path.glob("*.tmp"))

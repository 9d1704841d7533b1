"""AttentionResidualUNet: attention gates, deep supervision, rebuilding from plans."""

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunet_transfer.brainunet.network import AttentionGate, AttentionResidualUNet

ARCH_KWARGS = {
    "n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [1, 2, 2]],
    "n_blocks_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True}, "attention_gates": True, "attention_reduction": 2,
}
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
NETWORK = "nnunet_transfer.brainunet.network.AttentionResidualUNet"


def build(deep_supervision=True, **overrides):
    return get_network_from_plans(NETWORK, {**ARCH_KWARGS, **overrides}, REQ_IMPORT, 3, 4,
                                  allow_init=True, deep_supervision=deep_supervision)


def test_gate_shapes_and_coefficients_in_unit_interval():
    gate = AttentionGate(nn.Conv3d, skip_channels=8, gating_channels=16, inter_channels=4, stride=[1, 2, 2])
    x, g = torch.randn(2, 8, 6, 10, 12), torch.randn(2, 16, 6, 5, 6)
    out, alpha = gate.forward_with_coefficients(x, g)
    assert out.shape == x.shape
    assert alpha.shape == (2, 1, 6, 10, 12)
    assert float(alpha.detach().min()) >= 0 and float(alpha.detach().max()) <= 1
    # the gate scales the skip features voxel-wise by alpha
    torch.testing.assert_close(out, x * alpha)


def test_rebuilt_from_plans_with_nnunet_conventions():
    net = build()
    assert isinstance(net, AttentionResidualUNet)
    assert len(net.decoder.attention_gates) == 2 and all(isinstance(g, AttentionGate) for g in net.decoder.attention_gates)
    names = [n for n, _ in net.named_parameters()]
    assert any(n.startswith("decoder.seg_layers.") for n in names)
    assert any(n.startswith("encoder.stem.") for n in names)
    # nnU-Net's initialisation: the last norm of every residual block starts at zero
    assert torch.all(net.encoder.stages[0].blocks[0].conv2.norm.weight == 0)


def test_deep_supervision_on_and_off():
    net = build(deep_supervision=True)
    x = torch.randn(1, 3, 8, 16, 16)
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) == 2
    assert outputs[0].shape == (1, 4, 8, 16, 16)  # highest resolution first
    assert outputs[1].shape == (1, 4, 4, 8, 8)
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (1, 4, 8, 16, 16)
    torch.testing.assert_close(single, outputs[0])


def test_gradients_reach_attention_gates():
    net = build()
    # start from random weights everywhere so every path carries signal
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    out = net(torch.randn(1, 3, 8, 16, 16))
    sum(o.square().mean() for o in out).backward()
    for gate in net.decoder.attention_gates:
        for name, p in gate.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_without_attention_is_a_residual_unet():
    net = build(attention_gates=False)
    assert all(isinstance(g, nn.Identity) for g in net.decoder.attention_gates)
    assert net(torch.randn(1, 3, 8, 16, 16))[0].shape == (1, 4, 8, 16, 16)


def test_state_dict_loads_with_and_without_deep_supervision():
    trained = build(deep_supervision=True)
    inference = build(deep_supervision=False)
    inference.load_state_dict(trained.state_dict())  # seg layers exist in both


def test_wrong_block_counts_are_clear():
    with pytest.raises(ValueError, match="n_blocks_per_stage"):
        build(n_blocks_per_stage=[1, 1])
    with pytest.raises(ValueError, match="n_conv_per_stage_decoder"):
        build(n_conv_per_stage_decoder=[1, 1, 1])


def test_feature_map_size_grows_with_patch_for_nnunet_planners():
    net = build()
    small, large = net.compute_conv_feature_map_size((8, 16, 16)), net.compute_conv_feature_map_size((16, 32, 32))
    assert 0 < small < large
    with pytest.raises(ValueError, match="spatial"):
        net.compute_conv_feature_map_size((1, 8, 16, 16))

"""The domain classifier's inputs: stage indices and decoder stages of nnU-Net's and BrainUNet's networks."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunet_transfer.brainunet.network import AttentionResidualUNet
from nnunet_transfer.training.domain_head import DomainClassifier, decoder_stages, resolve_stages

FEATURES = (4, 8, 16, 32)
STRIDES = (1, 2, 2, 2)


def plain() -> nn.Module:
    return PlainConvUNet(2, 4, FEATURES, nn.Conv3d, 3, STRIDES, 1, 3, 1, True, nn.InstanceNorm3d, {"affine": True},
                         nonlin=nn.LeakyReLU, deep_supervision=True)


def residual() -> nn.Module:
    return ResidualEncoderUNet(2, 4, FEATURES, nn.Conv3d, 3, STRIDES, 1, 3, 1, True, nn.InstanceNorm3d,
                               {"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=False)


def brainunet() -> nn.Module:
    return AttentionResidualUNet(2, 4, FEATURES, nn.Conv3d, 3, STRIDES, 1, 3, 1, True, nn.InstanceNorm3d,
                                 {"affine": True}, nonlin=nn.LeakyReLU)


def test_resolve_stages_counts_negative_from_the_end_and_refuses_out_of_range():
    assert resolve_stages((0, -1, 1, 0), 4, "domain_feature_levels") == [0, 1, 3]
    assert resolve_stages((), 3, "domain_decoder_stages") == []
    assert resolve_stages((-3,), 3, "domain_decoder_stages") == [0]
    for bad in (3, -4):
        with pytest.raises(ValueError, match=rf"domain_decoder_stages = \({bad},\): stage {bad} is out of range "
                                             rf"for a network with 3 such stages \(valid: -3..2\)"):
            resolve_stages((bad,), 3, "domain_decoder_stages")


@pytest.mark.parametrize("build", [plain, residual, brainunet])
def test_decoder_stage_hooks_capture_each_stage_at_its_resolution(build):
    net = build()
    stages = decoder_stages(net)
    assert len(stages) == len(FEATURES) - 1
    captured = {}
    for s in range(len(stages)):
        stages[s].register_forward_hook(lambda m, i, o, s=s: captured.__setitem__(s, o))
    net(torch.randn(2, 2, 16, 16, 16))
    sizes = [16 // 2 ** k for k in range(len(FEATURES))]  # encoder stage k's edge: 16, 8, 4, 2
    for s in range(len(stages)):  # stage 0 sits above the bottleneck, the last at full resolution
        level = len(FEATURES) - 2 - s
        assert captured[s].shape == (2, FEATURES[level], *(3 * [sizes[level]]))
        assert stages[s].output_channels == FEATURES[level]
    head = DomainClassifier([stages[s].output_channels for s in (0, 2)], n_domains=3)
    assert head([captured[0], captured[2]]).shape == (2, 3)


def test_a_network_without_decoder_stages_is_named():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = nn.Identity(), nn.Conv3d(2, 3, 1)

    with pytest.raises(ValueError, match="Flat has no decoder.stages.*domain_decoder_stages = \\(\\)"):
        decoder_stages(Flat())

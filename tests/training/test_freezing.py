"""``freezing``: parts of nnU-Net's residual-encoder U-Net (ResEnc presets) selected by name."""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from nnunet_transfer.training.freezing import freeze_parameters, part_parameter_names


def tiny_resenc() -> ResidualEncoderUNet:
    """ResEnc M's building blocks at 3 stages and a few features (as ``shrink_plans`` makes them)."""
    return ResidualEncoderUNet(
        input_channels=4, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2], n_blocks_per_stage=[1, 3, 4], num_classes=3, n_conv_per_stage_decoder=[1, 1],
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def test_resenc_stem_is_encoder_and_parts_cover_the_network():
    net = tiny_resenc()
    encoder, decoder = part_parameter_names(net, "encoder"), part_parameter_names(net, "decoder")
    stem = {n for n, _ in net.named_parameters() if n.startswith("encoder.stem.")}
    assert stem and stem <= encoder, "the ResEnc stem must be frozen with the encoder"
    assert encoder.isdisjoint(decoder)
    assert encoder | decoder == {n for n, _ in net.named_parameters()}, "a parameter belongs to neither part"
    assert all(n.startswith(("decoder.stages.", "decoder.transpconvs.", "decoder.seg_layers.")) for n in decoder)


def test_frozen_resenc_encoder_and_stem_stay_bitwise_equal():
    torch.manual_seed(0)
    net = tiny_resenc()
    names = part_parameter_names(net, "encoder")
    assert freeze_parameters(net, names) == sum(p.numel() for n, p in net.named_parameters() if n in names)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        sum(o.square().mean() for o in net(torch.randn(1, 4, 16, 16, 16))).backward()
        optimizer.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith(("encoder.", "decoder.encoder.")))
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("decoder.stages."))

"""BrainUNet's network: a residual 3D U-Net with attention gates on the skip connections.

The encoder is dynamic_network_architectures' ``ResidualEncoder`` (``BasicBlockD`` residual
blocks), the decoder stacks residual blocks too, and every skip connection passes through
an additive attention gate (Oktay et al., 2018, "Attention U-Net") driven by the coarser
decoder features. The constructor follows dynamic_network_architectures' conventions, so
nnU-Net builds it from the plans (``architecture.network_class_name`` =
``"nnunet_transfer.brainunet.network.AttentionResidualUNet"``) with
``get_network_from_plans``, toggles deep supervision through ``decoder.deep_supervision``
and skips the ``decoder.seg_layers`` when loading pre-trained weights.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = AttentionResidualUNet(4, 3, [8, 16, 32], nn.Conv3d, 3, [1, 2, 2], [1, 1, 1], 4, [1, 1],
    ...                             norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
    ...                             nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    >>> net(torch.zeros(1, 4, 16, 16, 16)).shape
    torch.Size([1, 4, 16, 16, 16])
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, Union

import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_convtransp
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, StackedResidualBlocks
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

IntOrSeq = Union[int, List[int], Tuple[int, ...]]


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al.) for one skip connection.

    The skip features ``x`` are projected with a strided convolution to the resolution of
    the gating signal ``g`` (the coarser decoder features), added to a 1x1 projection of
    ``g``, passed through ReLU, a 1x1 convolution to one channel and a sigmoid. The
    resulting coefficients (one per voxel, in [0, 1]) are upsampled to ``x``'s resolution
    and multiply ``x``.

    Example:
        >>> gate = AttentionGate(nn.Conv3d, skip_channels=8, gating_channels=16, inter_channels=4, stride=[2, 2, 2])
        >>> out, alpha = gate.forward_with_coefficients(torch.ones(1, 8, 8, 8, 8), torch.ones(1, 16, 4, 4, 4))
        >>> tuple(out.shape), tuple(alpha.shape)
        ((1, 8, 8, 8, 8), (1, 1, 8, 8, 8))
    """

    def __init__(self, conv_op: Type[_ConvNd], skip_channels: int, gating_channels: int, inter_channels: int,
                 stride: Sequence[int]):
        super().__init__()
        stride = [int(s) for s in stride]
        self.theta_x = conv_op(skip_channels, inter_channels, kernel_size=stride, stride=stride, padding=0, bias=False)
        self.phi_g = conv_op(gating_channels, inter_channels, kernel_size=1, stride=1, padding=0, bias=True)
        self.psi = conv_op(inter_channels, 1, kernel_size=1, stride=1, padding=0, bias=True)
        self.mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[convert_conv_op_to_dim(conv_op)]

    def forward_with_coefficients(self, x: torch.Tensor, g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the gated skip features and the attention coefficients (shape ``(B, 1, *x.shape[2:])``)."""
        theta = self.theta_x(x)
        phi = self.phi_g(g)
        if phi.shape[2:] != theta.shape[2:]:
            phi = F.interpolate(phi, size=theta.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        if alpha.shape[2:] != x.shape[2:]:
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        return x * alpha, alpha

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.forward_with_coefficients(x, g)[0]


class AttentionResidualDecoder(nn.Module):
    """U-Net decoder with residual blocks and an attention gate on every skip connection.

    Stages are ordered by computation (lowest resolution first), like
    dynamic_network_architectures' ``UNetResDecoder``. Each stage upsamples the coarser
    features (transposed convolution), concatenates them with the gated skip, fuses the
    concatenation with a 1x1 convolution (``fusions``) and refines it with residual blocks
    whose shortcuts are identities; this costs about a third less than residual blocks on
    the concatenation itself, which matters at full resolution. Segmentation heads exist for
    every stage (``seg_layers``) so checkpoints load with and without deep supervision.
    """

    def __init__(self, encoder: ResidualEncoder, num_classes: int, n_conv_per_stage: IntOrSeq,
                 deep_supervision: bool, attention_gates: bool = True, attention_reduction: int = 2):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.encoder = encoder
        self.num_classes = num_classes
        n_stages_encoder = len(encoder.output_channels)
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * (n_stages_encoder - 1)
        if len(n_conv_per_stage) != n_stages_encoder - 1:
            raise ValueError(f"n_conv_per_stage_decoder needs {n_stages_encoder - 1} entries (one less than the "
                             f"encoder's {n_stages_encoder} stages), got {list(n_conv_per_stage)}")
        if attention_reduction < 1:
            raise ValueError(f"attention_reduction must be >= 1, got {attention_reduction}")
        transpconv_op = get_matching_convtransp(conv_op=encoder.conv_op)
        stages, transpconvs, gates, fusions, seg_layers = [], [], [], [], []
        for s in range(1, n_stages_encoder):
            below = encoder.output_channels[-s]
            skip = encoder.output_channels[-(s + 1)]
            stride = encoder.strides[-s]
            transpconvs.append(transpconv_op(below, skip, stride, stride, bias=encoder.conv_bias))
            gates.append(AttentionGate(encoder.conv_op, skip, below, max(1, skip // attention_reduction), stride)
                         if attention_gates else nn.Identity())
            fusions.append(ConvDropoutNormReLU(
                encoder.conv_op, 2 * skip, skip, 1, 1, encoder.conv_bias, encoder.norm_op, encoder.norm_op_kwargs,
                None, None, encoder.nonlin, encoder.nonlin_kwargs))
            stages.append(StackedResidualBlocks(
                n_blocks=n_conv_per_stage[s - 1], conv_op=encoder.conv_op, input_channels=skip,
                output_channels=skip, kernel_size=encoder.kernel_sizes[-(s + 1)], initial_stride=1,
                conv_bias=encoder.conv_bias, norm_op=encoder.norm_op, norm_op_kwargs=encoder.norm_op_kwargs,
                dropout_op=encoder.dropout_op, dropout_op_kwargs=encoder.dropout_op_kwargs,
                nonlin=encoder.nonlin, nonlin_kwargs=encoder.nonlin_kwargs, block=BasicBlockD))
            seg_layers.append(encoder.conv_op(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.attention_gates = nn.ModuleList(gates)
        self.fusions = nn.ModuleList(fusions)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
        lres_input = skips[-1]
        seg_outputs = []
        for s in range(len(self.stages)):
            skip = skips[-(s + 2)]
            gate = self.attention_gates[s]
            gated = skip if isinstance(gate, nn.Identity) else gate(skip, lres_input)
            x = self.fusions[s](torch.cat((self.transpconvs[s](lres_input), gated), 1))
            x = self.stages[s](x)
            if self.deep_supervision:
                seg_outputs.append(self.seg_layers[s](x))
            elif s == len(self.stages) - 1:
                seg_outputs.append(self.seg_layers[-1](x))
            lres_input = x
        seg_outputs = seg_outputs[::-1]  # highest resolution first
        return seg_outputs if self.deep_supervision else seg_outputs[0]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Rough number of feature-map voxels the decoder stores (nnU-Net's VRAM heuristics)."""
        skip_sizes = []
        for s in range(len(self.encoder.strides) - 1):
            skip_sizes.append([i // j for i, j in zip(input_size, self.encoder.strides[s])])
            input_size = skip_sizes[-1]
        total = 0
        for s in range(len(self.stages)):
            size = skip_sizes[-(s + 1)]
            channels = self.encoder.output_channels[-(s + 2)]
            total += int(self.stages[s].compute_conv_feature_map_size(size))
            voxels = int(torch.tensor(size).prod())
            total += channels * voxels * 4  # transposed conv output, gated skip (concatenated), fusion
            if self.deep_supervision or s == len(self.stages) - 1:
                total += self.num_classes * voxels
        return total


class AttentionResidualUNet(AbstractDynamicNetworkArchitectures):
    """Residual U-Net with attention-gated skip connections, built like nnU-Net's networks.

    Arguments match dynamic_network_architectures' ``ResidualEncoderUNet`` (so the plans'
    ``arch_kwargs`` of a residual-encoder configuration carry over), plus:

    ``attention_gates``
        Put an attention gate on each skip connection (``False`` gives a residual U-Net).
    ``attention_reduction``
        The gates' intermediate channels are ``skip_channels // attention_reduction``.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: IntOrSeq,
        conv_op: Type[_ConvNd],
        kernel_sizes: IntOrSeq,
        strides: IntOrSeq,
        n_blocks_per_stage: IntOrSeq,
        num_classes: int,
        n_conv_per_stage_decoder: IntOrSeq,
        conv_bias: bool = False,
        norm_op: Optional[Type[nn.Module]] = None,
        norm_op_kwargs: Optional[dict] = None,
        dropout_op: Optional[Type[_DropoutNd]] = None,
        dropout_op_kwargs: Optional[dict] = None,
        nonlin: Optional[Type[nn.Module]] = None,
        nonlin_kwargs: Optional[dict] = None,
        deep_supervision: bool = False,
        attention_gates: bool = True,
        attention_reduction: int = 2,
        stem_channels: Optional[int] = None,
    ):
        super().__init__()
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem"
        self.keys_to_in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        if len(n_blocks_per_stage) != n_stages:
            raise ValueError(f"n_blocks_per_stage needs {n_stages} entries (one per stage), got {list(n_blocks_per_stage)}")
        self.encoder = ResidualEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, n_blocks_per_stage,
            conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
            block=BasicBlockD, return_skips=True, disable_default_stem=False, stem_channels=stem_channels)
        self.decoder = AttentionResidualDecoder(self.encoder, num_classes, n_conv_per_stage_decoder,
                                                deep_supervision, attention_gates, attention_reduction)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Feature-map voxels for an input patch (spatial size only), as nnU-Net's planners use it."""
        if len(input_size) != convert_conv_op_to_dim(self.encoder.conv_op):
            raise ValueError("give the spatial patch size only, e.g. (128, 128, 128)")
        return int(self.encoder.compute_conv_feature_map_size(input_size)) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation, with the last norm of each residual branch at zero (identity blocks)."""
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)

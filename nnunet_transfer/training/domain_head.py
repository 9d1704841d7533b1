"""Domain classifiers on encoder and decoder features: a pooled MLP, or small strided convolutions first.

nnU-Net normalises every channel of every stage per case (instance norm), so the spatial
*mean* of a feature map carries almost no domain information: a classifier on
global-average-pooled features stays at chance. The default here (``kind="conv"``) runs two
strided 3x3x3 convolutions per feature level (no normalisation, so texture statistics such as
blur and noise survive) and pools their mean *and* standard deviation; ``kind="mlp"`` pools
mean and standard deviation of the features themselves (``pooling=("mean",)`` is the old
global-average-pooled head).

Example:
    >>> import torch
    >>> head = DomainClassifier([8, 16], n_domains=2)
    >>> feats = [torch.randn(2, 8, 8, 8, 8), torch.randn(2, 16, 4, 4, 4)]
    >>> head(feats).shape
    torch.Size([2, 1])
    >>> DomainClassifier([8], n_domains=3, kind="mlp")([torch.randn(2, 8, 4, 4, 4)]).shape
    torch.Size([2, 3])

:func:`resolve_stages` turns a knob's stage indices (negative from the end) into the sorted
indices the run keeps; :func:`decoder_stages` finds the decoder stages whose outputs a
forward hook hands to the classifier.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("conv", "mlp")
POOLINGS = ("mean", "std", "max")


def resolve_stages(indices: Sequence[int], n_stages: int, knob: str) -> List[int]:
    """Sorted unique non-negative stage indices; negative ones count from the end.

    >>> resolve_stages((0, 1, -1), 5, "domain_feature_levels")
    [0, 1, 4]
    >>> resolve_stages((2,), 2, "domain_decoder_stages")
    Traceback (most recent call last):
    ...
    ValueError: domain_decoder_stages = (2,): stage 2 is out of range for a network with 2 such stages (valid: -2..1)
    """
    bad = [int(i) for i in indices if not -n_stages <= int(i) < n_stages]
    if bad:
        raise ValueError(f"{knob} = {tuple(indices)}: stage {bad[0]} is out of range for a network with {n_stages} "
                         f"such stages (valid: {-n_stages}..{n_stages - 1})")
    return sorted({int(i) % n_stages for i in indices})


def decoder_stages(network: nn.Module) -> nn.ModuleList:
    """``network.decoder.stages``: nnU-Net's ``UNetDecoder`` (PlainConvUNet, ResidualEncoderUNet), BrainUNet's.

    Stage ``s`` runs at the resolution of encoder stage ``n - 2 - s`` (stage 0 just above the
    bottleneck, the last one at full resolution); each stage's ``output_channels`` sizes the
    classifier's input.
    """
    stages = getattr(getattr(network, "decoder", None), "stages", None)
    if not isinstance(stages, nn.ModuleList) or not all(hasattr(s, "output_channels") for s in stages):
        raise ValueError(
            f"{type(network).__name__} has no decoder.stages (an nn.ModuleList of blocks with output_channels, as "
            f"nnU-Net's UNetDecoder and BrainUNet's decoder have), so the domain classifier cannot see decoder "
            f"features. Fix: set domain_decoder_stages = () or use such a network.")
    return stages


def pool(feature: torch.Tensor, pooling: Sequence[str]) -> torch.Tensor:
    """``(batch, channels * len(pooling))``: the requested statistics over the spatial axes.

    >>> pool(torch.ones(2, 3, 4, 4, 4), ("mean", "std")).tolist()[0]
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    flat = feature.flatten(2).float()
    stats = {"mean": lambda: flat.mean(dim=2), "std": lambda: flat.std(dim=2, unbiased=False),
             "max": lambda: flat.amax(dim=2)}
    return torch.cat([stats[name]() for name in pooling], dim=1)


class DomainClassifier(nn.Module):
    """Classify the domain of each sample from one or more encoder feature maps.

    Args:
        in_channels: channels of each feature map given to ``forward`` (one entry per level).
        n_domains: two give one logit (BCE); more give one logit per domain (cross-entropy).
        hidden: width of the MLP's hidden layer, and the most channels a level's convolutions get
            (a level's convolutions are as wide as the level itself when it is narrower).
        kind: ``"conv"`` (two stride-2 convolutions per level, then pooling) or ``"mlp"``
            (pooling of the features themselves).
        pooling: statistics pooled per channel: any of ``"mean"``, ``"std"``, ``"max"``.
        dropout: dropout before the last layer.
    """

    def __init__(self, in_channels: Sequence[int], n_domains: int = 2, hidden: int = 64, kind: str = "conv",
                 pooling: Sequence[str] = ("mean", "std"), dropout: float = 0.2):
        super().__init__()
        if n_domains < 2:
            raise ValueError(f"a domain classifier needs at least two domains, got {n_domains}")
        if kind not in KINDS:
            raise ValueError(f"unknown domain classifier kind {kind!r}; choose one of {', '.join(KINDS)}")
        unknown = [p for p in pooling if p not in POOLINGS]
        if unknown or not pooling:
            raise ValueError(f"pooling {tuple(pooling)!r}: choose one or more of {', '.join(POOLINGS)}")
        self.n_domains = n_domains
        self.kind = kind
        self.pooling: Tuple[str, ...] = tuple(pooling)
        if kind == "conv":  # each level's convolutions as wide as the level, at most ``hidden``
            widths = [min(int(c), hidden) for c in in_channels]
            self.convs = nn.ModuleList(self._conv_block(int(c), w) for c, w in zip(in_channels, widths))
            pooled = sum(widths) * len(self.pooling)
        else:
            self.convs = nn.ModuleList()
            pooled = int(sum(in_channels)) * len(self.pooling)
        self.mlp = nn.Sequential(
            nn.Linear(pooled, hidden),
            nn.LeakyReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1 if n_domains == 2 else n_domains),
        )

    @staticmethod
    def _conv_block(channels: int, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Conv3d(channels, hidden, 3, stride=2, padding=1), nn.LeakyReLU(inplace=True),
                             nn.Conv3d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(inplace=True))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.kind == "conv":
            features = [self._convolve(conv, f) for conv, f in zip(self.convs, features)]
        pooled: List[torch.Tensor] = [pool(f, self.pooling) for f in features]
        return self.mlp(torch.cat(pooled, dim=1))

    @staticmethod
    def _convolve(conv: nn.Module, feature: torch.Tensor) -> torch.Tensor:
        if feature.dim() == 4:  # 2D networks: run the 3D convolutions on a singleton depth axis
            return conv(feature.unsqueeze(2))
        return conv(feature)

    def loss(self, logits: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        """BCE for two domains (index 1 is the positive class), cross-entropy otherwise."""
        if self.n_domains == 2:
            return F.binary_cross_entropy_with_logits(logits.squeeze(1).float(), domain_index.float())
        return F.cross_entropy(logits.float(), domain_index.long())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Domain index per sample."""
        if self.n_domains == 2:
            return (logits.squeeze(1) > 0).long()
        return logits.argmax(dim=1)

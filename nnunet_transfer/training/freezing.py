"""Select and freeze network parameters by name.

nnU-Net's ``UNetDecoder`` keeps a reference to the encoder, so ``network.decoder.parameters()``
also yields encoder weights. Parts are therefore selected by parameter *name*:
``named_parameters`` lists each shared tensor once, under its first name (``encoder.*``).

Example:
    >>> from torch import nn
    >>> net = nn.Module(); net.encoder = nn.Linear(2, 2); net.decoder = nn.Module()
    >>> net.decoder.encoder = net.encoder; net.decoder.seg_layers = nn.Linear(2, 1)
    >>> sorted(part_parameter_names(net, "decoder"))
    ['decoder.seg_layers.bias', 'decoder.seg_layers.weight']
    >>> freeze_parameters(net, part_parameter_names(net, "encoder"))
    6
"""

from __future__ import annotations

from typing import Iterable, List, Set

from torch import nn

ENCODER_PREFIXES = ("encoder.", "decoder.encoder.")
SEGMENTATION_HEAD = ".seg_layers."


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module behind DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(network, "module") and isinstance(getattr(network, "module"), nn.Module):
            network = network.module  # DistributedDataParallel
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod  # torch.compile's OptimizedModule
        else:
            return network


def _in_part(name: str, part: str) -> bool:
    in_encoder = name.startswith(ENCODER_PREFIXES)
    if part == "encoder":
        return in_encoder
    if part == "decoder":
        return name.startswith("decoder.") and not in_encoder
    raise ValueError(f"unknown network part {part!r}; choose 'encoder' or 'decoder'")


def part_parameter_names(network: nn.Module, part: str, include_segmentation_head: bool = True) -> Set[str]:
    """Names of the parameters of ``part`` ("encoder" or "decoder"), selected by name."""
    return {name for name, _ in unwrap(network).named_parameters()
            if _in_part(name, part) and (include_segmentation_head or SEGMENTATION_HEAD not in f".{name}")}


def freeze_parameters(network: nn.Module, names: Iterable[str]) -> int:
    """Set ``requires_grad=False`` on the named parameters; returns how many values were frozen."""
    wanted = set(names)
    count = 0
    for name, param in unwrap(network).named_parameters():
        if name in wanted:
            param.requires_grad_(False)
            count += param.numel()
    return count


def trainable_parameters(network: nn.Module) -> List[nn.Parameter]:
    """Parameters that still require gradients."""
    return [p for p in unwrap(network).parameters() if p.requires_grad]

"""oneDNN for single-sample 3D convolutions on the CPU.

PyTorch runs a float32 CPU convolution through oneDNN, except when the batch holds one
sample and channels x height x width of the input is at most 20480: that rule, written for
2D images, ignores a 3D input's depth and sends the convolution to PyTorch's reference
kernel, about 8x slower on a 16-channel 32^3 input (one thread, measured: 50 ms against
6 ms). nnU-Net's sliding window predicts one tile at a time, so every validation and
``nnUNetv2_predict`` on the CPU hits it at the deep levels of any 3D U-Net and at every
level of a small one; so does training with batch size 1 (the paper's recipe).

:class:`OneDNNConv3d` is ``torch.nn.Conv3d`` that calls oneDNN itself for those inputs
(``torch.mkldnn_convolution``, the kernel PyTorch picks for every other batch size; it has a
backward); :func:`single_sample_onednn` switches a network's ``Conv3d`` modules to it in
place. Parameters, state-dict keys and ``isinstance(m, nn.Conv3d)`` are unchanged. Outputs
agree with PyTorch's kernel to float32 rounding (about 1e-6), not bitwise. Everything else
runs PyTorch's own path: GPUs, other dtypes, padding modes other than zeros, CPU autocast,
and tracing, scripting or compiling (an exported ONNX graph keeps its standard ``Conv`` nodes).

Example:
    >>> import torch
    >>> net = single_sample_onednn(torch.nn.Sequential(torch.nn.Conv3d(4, 16, 3, padding=1)))
    >>> type(net[0]).__name__
    'OneDNNConv3d'
    >>> net(torch.zeros(1, 4, 32, 32, 32)).shape
    torch.Size([1, 16, 32, 32, 32])
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def _onednn_enabled() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` running single-sample float32 CPU inputs through oneDNN (see the module)."""

    def takes_onednn(self, input: torch.Tensor) -> bool:
        """Whether ``input`` goes through oneDNN here rather than PyTorch's own kernel selection."""
        if input.device.type != "cpu":
            return False  # first: the GPU path pays one comparison per convolution
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False  # before any shape test: a traced graph records no Python branch
        if torch.is_autocast_enabled("cpu"):
            return False  # autocast casts inside PyTorch's convolution, not around this call
        return (input.dim() == 5 and input.shape[0] == 1 and input.dtype == torch.float32
                and self.weight.dtype == torch.float32 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and _onednn_enabled())

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]):
        if self.takes_onednn(input):
            return torch.mkldnn_convolution(input.contiguous(), weight.contiguous(), bias, self.padding,
                                            self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def single_sample_onednn(network: nn.Module) -> nn.Module:
    """Switch every plain ``nn.Conv3d`` of ``network`` to :class:`OneDNNConv3d`, in place; returns it.

    Subclasses of ``Conv3d`` are left as they are (their own forward may matter).
    """
    for module in network.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = OneDNNConv3d
    return network

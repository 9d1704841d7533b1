"""``OneDNNConv3d``: single-sample CPU convolutions through oneDNN, the same results, PyTorch's path elsewhere."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch
from torch import nn

from nnunet_transfer.training.onednn import OneDNNConv3d, single_sample_onednn
from nnunet_transfer.training import trainers as T
from tests.training.test_trainers_inprocess import folders, uninitialised  # noqa: F401


def _pair(**kwargs):
    torch.manual_seed(0)
    plain = nn.Conv3d(4, 16, 3, **{"padding": 1, **kwargs})
    fast = single_sample_onednn(copy.deepcopy(plain))
    return plain, fast


def test_single_samples_take_onednn_with_the_same_outputs_and_gradients():
    plain, fast = _pair()
    assert type(fast) is OneDNNConv3d and isinstance(fast, nn.Conv3d)
    x = torch.randn(1, 4, 20, 24, 16, requires_grad=True)
    assert fast.takes_onednn(x) and not fast.takes_onednn(torch.randn(2, 4, 8, 8, 8))
    y_plain, y_fast = plain(x), fast(x)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    g_plain = torch.autograd.grad(y_plain.square().sum(), [x, plain.weight, plain.bias])
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, fast.weight, fast.bias])
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_strided_and_dilated_convolutions_agree_too():
    torch.manual_seed(0)
    for kwargs in ({"stride": 2, "padding": 1}, {"dilation": 2, "padding": 2}, {"padding": 0}):
        plain = nn.Conv3d(8, 8, 3, **kwargs)
        fast = single_sample_onednn(copy.deepcopy(plain))
        x = torch.randn(1, 8, 17, 12, 9)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["batch 2", "float64", "reflect padding", "same padding"])
def test_everything_else_runs_pytorchs_own_path(case):
    kwargs = {"reflect padding": {"padding": 1, "padding_mode": "reflect"},
              "same padding": {"padding": "same"}}.get(case, {"padding": 1})
    plain, fast = _pair(**kwargs)
    x = torch.randn(2 if case == "batch 2" else 1, 4, 9, 9, 9)
    if case == "float64":
        plain, fast, x = plain.double(), fast.double(), x.double()
    assert not fast.takes_onednn(x)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)


def test_a_traced_network_keeps_standard_convolutions_and_exports_to_onnx():
    fast = single_sample_onednn(nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.LeakyReLU()))
    example = torch.randn(1, 4, 8, 8, 8)
    graph = str(torch.jit.trace(fast, example).inlined_graph)
    assert "mkldnn_convolution" not in graph and "aten::_convolution" in graph
    pytest.importorskip("onnx")
    buffer = io.BytesIO()
    torch.onnx.export(fast.eval(), (example,), buffer, dynamo=False)
    assert len(buffer.getvalue()) > 0


def test_cpu_autocast_runs_pytorchs_own_path():
    plain, fast = _pair()
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        assert not fast.takes_onednn(x)
        y_fast, y_plain = fast(x), plain(x)
    assert y_fast.dtype == y_plain.dtype == torch.bfloat16
    torch.testing.assert_close(y_fast, y_plain, rtol=0, atol=0)


def test_disabling_mkldnn_is_respected():
    _, fast = _pair()
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not fast.takes_onednn(x)
    assert fast.takes_onednn(x)


def test_only_plain_conv3d_modules_switch_and_the_state_dict_is_unchanged():
    class Custom(nn.Conv3d):
        pass

    net = nn.Sequential(nn.Conv3d(1, 2, 3), Custom(2, 2, 3), nn.ConvTranspose3d(2, 2, 2, stride=2), nn.Conv2d(2, 2, 1))
    keys = list(net.state_dict())
    single_sample_onednn(net)
    assert [type(m).__name__ for m in net] == ["OneDNNConv3d", "Custom", "ConvTranspose3d", "Conv2d"]
    assert list(net.state_dict()) == keys
    assert type(copy.deepcopy(net)[0]) is OneDNNConv3d


def test_the_plugin_trainers_build_their_networks_with_it(folders):
    """Training, the final validation and nnUNetv2_predict (which inspects the signature) share the builder."""
    signature = inspect.signature(T.nnUNetTrainerDANN.build_network_architecture)
    assert list(signature.parameters)[:2] == ["plans_manager", "configuration_manager"]
    trainer = uninitialised(T.nnUNetTrainerDANN)
    trainer.initialize()
    convs = [m for m in trainer.network.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)

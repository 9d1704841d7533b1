"""segment --engine openvino / onnxruntime: nnU-Net's predictor with the network exported, against PyTorch."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.inference import SegmentOptions, segment
from tests.inference.conftest import make_case

ENGINES = ["openvino", "onnxruntime"]


def need(engine: str) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip(engine)


@pytest.fixture
def restore_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # --threads sets torch's process-wide thread count


def labels(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("engine", ENGINES)
def test_exported_network_runs_each_weight_set_like_torch(engine):
    need(engine)
    import torch

    from nnunet_transfer.inference.engines import ExportedNetwork

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.InstanceNorm3d(8, affine=True), torch.nn.LeakyReLU(0.01),
        torch.nn.Conv3d(8, 8, 3, stride=2, padding=1), torch.nn.InstanceNorm3d(8, affine=True),
        torch.nn.LeakyReLU(0.01), torch.nn.ConvTranspose3d(8, 3, 2, stride=2)).eval()
    folds = []
    for seed in (1, 2):  # two folds: different weights, the norms' affine parameters too
        torch.manual_seed(seed)
        folds.append({k: torch.randn_like(v) * 0.5 if v.ndim == 1 else torch.randn_like(v) * 0.2
                      for k, v in network.state_dict().items()})
    x = torch.randn(1, 2, 8, 12, 10)
    fast = ExportedNetwork(network, engine, threads=1)
    fast.prepare(folds, x.shape)
    assert len(fast._runners) == 2 and fast.export_seconds > 0
    with torch.inference_mode():  # as nnU-Net's predictor calls it
        for weights in folds * 2:
            fast.load_state_dict(weights)
            got = fast(x)
            network.load_state_dict(weights)
            expected = network(x)
            assert got.dtype == torch.float32 and got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(fast(torch.flip(x, (2, 4))), network(torch.flip(x, (2, 4))), atol=1e-4,
                                       rtol=1e-4)
    assert len(fast._runners) == 2  # nothing exported again: one model per weight set and shape


@pytest.mark.parametrize("engine", ENGINES)
def test_segment_with_an_engine_agrees_with_torch(engine, four_channel_model, tmp_path, restore_threads):
    """Two folds, mirroring: the engine's labels and probabilities are PyTorch's but for float rounding."""
    need(engine)
    case = four_channel_model.source / four_channel_model.test_cases[0]
    common = dict(device="cpu", save_probabilities=True)
    reference = segment(case, four_channel_model.folder, tmp_path / "torch", SegmentOptions(**common))
    report = segment(case, four_channel_model.folder, tmp_path / engine,
                     SegmentOptions(engine=engine, threads=1, **common))
    assert report.engine == engine and report.export_seconds > 0 and report.device == "cpu"
    assert f"on cpu with {engine}, loaded in" in report.summary() and "network export" in report.summary()
    (case_id, path), = report.written.items()
    expected, got = labels(reference.written[case_id]), labels(path)
    assert len(np.unique(expected)) > 1
    assert (got == expected).mean() > 0.999
    p_torch = np.load(tmp_path / "torch" / f"{case_id}.npz")["probabilities"]
    p_engine = np.load(tmp_path / engine / f"{case_id}.npz")["probabilities"]
    np.testing.assert_allclose(p_engine, p_torch, atol=2e-3)
    import torch

    assert torch.get_num_threads() == 1  # --threads 1


def test_engine_and_threads_from_the_command_line(four_channel_model, tmp_path, capsys, restore_threads):
    need("onnxruntime")
    from nnunet_transfer.cli import main

    cases = tmp_path / "new"
    make_case(cases, "BraTS-SSA-00017-000", labeled=False)
    assert main(["segment", str(cases), "-m", str(four_channel_model.folder), "-o", str(tmp_path / "labels"),
                 "-device", "cpu", "--no-mirroring", "-f", "0", "--engine", "onnxruntime", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "segmented 1 case(s), refused 0" in out and "on cpu with onnxruntime" in out
    assert (tmp_path / "labels" / "BraTS-SSA-00017-000.nii.gz").is_file()


def test_engine_errors_are_clear(four_channel_model, tmp_path, monkeypatch, caplog):
    from nnunet_transfer.cli import main
    from nnunet_transfer.inference.engines import EngineMissingError

    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        SegmentOptions(engine="tensorrt")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        SegmentOptions(threads=0)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(EngineMissingError, match=r'pip install "nnunet-transfer\[openvino\]"'):
        SegmentOptions(engine="openvino", device="cpu")
    with pytest.raises(ImportError):  # an ImportError too
        SegmentOptions(engine="openvino")
    case = make_case(tmp_path, "BraTS-SSA-00019-000", labeled=False)
    assert main(["segment", str(case), "-m", str(four_channel_model.folder), "-o", str(tmp_path / "o"),
                 "--engine", "openvino"]) == 1
    assert "nnunet-transfer[openvino]" in caplog.text
    assert not (tmp_path / "o").exists()
    if "onnxruntime" in sys.modules or _installed("onnxruntime"):
        with pytest.raises(ValueError, match="runs the network on the CPU"):
            SegmentOptions(engine="onnxruntime", device="cuda")


def _installed(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None and find_spec("onnx") is not None

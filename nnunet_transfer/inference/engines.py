"""Run the network of nnU-Net's predictor with OpenVINO or ONNX Runtime on the CPU (``segment --engine``).

nnU-Net's ``nnUNetPredictor`` does everything around the network: preprocessing, the sliding
window with Gaussian weighting, the test-time mirroring (flips of each tile), the average of
the folds, the export. ``ExportedNetwork`` takes the place of its ``network``: it keeps the
torch network for the weights (the predictor calls ``load_state_dict`` with each fold's weights
before predicting with that fold), exports it to ONNX (torch's TorchScript exporter, traced at
the tile shape the predictor feeds, the plans' patch size) once per fold, and runs each tile
with the chosen engine:

- ``openvino``: OpenVINO's CPU plugin, in float32. About 3x faster than PyTorch per 128^3 tile
  for BrainUNet and the default 3d_fullres U-Net on an AVX2 CPU (``docs/segment.md``);
- ``onnxruntime``: ONNX Runtime's CPU provider (about 1.5x faster than PyTorch there).

Everything else is nnU-Net's, so the segmentations equal PyTorch's but for float rounding
(the engines' convolutions sum in another order: logits differ by about 1e-3 of their scale,
labels on a tiny fraction of near-tie voxels). The export costs about one tile's PyTorch time
per fold, once per process (in the model loading time). The engines are optional:
``pip install "nnunet-transfer[openvino]"`` or ``"nnunet-transfer[onnxruntime]"``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1), torch.nn.LeakyReLU()).eval()
    >>> fast = ExportedNetwork(net, "openvino", threads=1)  # doctest: +SKIP
    >>> x = torch.randn(1, 2, 8, 8, 8)
    >>> bool((fast(x) - net(x)).abs().max() < 1e-4)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import importlib
import io
import logging
import time
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: ``segment --engine`` choices: the network run by PyTorch (nnU-Net's own), OpenVINO or ONNX Runtime.
ENGINES = ("torch", "openvino", "onnxruntime")
#: the Python packages each engine needs (onnx: torch's ONNX exporter writes through it)
_PACKAGES = {"openvino": ("openvino", "onnx"), "onnxruntime": ("onnxruntime", "onnx")}
ONNX_OPSET = 17

Runner = Callable[[np.ndarray], np.ndarray]


class EngineMissingError(ImportError, RuntimeError):
    """An engine's Python packages are not installed (the message says what to pip install)."""


def check_engine(engine: str) -> None:
    """Raise ValueError for an unknown engine and EngineMissingError (an ImportError, with the pip command)
    when its packages are missing."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    missing = []
    for package in _PACKAGES.get(engine, ()):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise EngineMissingError(f"--engine {engine} needs the Python package(s) {', '.join(missing)}: "
                          f"pip install \"nnunet-transfer[{engine}]\" (or use --engine torch)")


def export_onnx(network: torch.nn.Module, shape: Sequence[int]) -> bytes:
    """The ONNX model of ``network`` (eval mode, its current weights) for inputs of exactly ``shape``."""
    example = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's notices, tracer warnings on shape checks
        torch.onnx.export(network, (example,), buffer, input_names=["x"], output_names=["y"],
                          opset_version=ONNX_OPSET, dynamo=False)
    return buffer.getvalue()


def compile_onnx(model: bytes, engine: str, threads: int) -> Runner:
    """A function running the ONNX ``model`` with ``engine`` on ``threads`` CPU threads: array in, array out."""
    if engine == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(io.BytesIO(model)), "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # no bf16/f16 shortcuts where the CPU has them
            # OpenVINO pins its threads (the calling one too) to cores by default: on a shared machine a thread
            # pinned to a busy core cannot move to a free one (measured: 10x slower wall time at load 10 on 2 cores)
            "ENABLE_CPU_PINNING": False})
        request = compiled.create_infer_request()

        def run_openvino(array: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: array})[0])  # a copy: the request reuses its output buffer

        return run_openvino
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        def run_onnxruntime(array: np.ndarray) -> np.ndarray:
            return session.run(None, {"x": array})[0]

        return run_onnxruntime
    raise ValueError(f"no exported engine {engine!r}; use one of {', '.join(ENGINES[1:])}")


class ExportedNetwork(torch.nn.Module):
    """A torch network run by OpenVINO or ONNX Runtime, usable as ``nnUNetPredictor.network``.

    ``load_state_dict`` loads into the wrapped torch network and selects that weight set; a call
    runs the exported model of the selected weights for the input's shape, exporting and
    compiling it on first use (``prepare`` does it ahead). Weight sets are told apart by object
    identity, as nnU-Net's predictor keeps one dict per fold for its lifetime: load a new dict
    (not the same dict changed in place) to change weights. CPU tensors only; the output is a
    float32 CPU tensor.
    """

    def __init__(self, network: torch.nn.Module, engine: str, threads: Optional[int] = None):
        super().__init__()
        check_engine(engine)
        if engine == "torch":
            raise ValueError("ExportedNetwork is for the exported engines; use the network itself for torch")
        network = getattr(network, "_orig_mod", network)  # a torch.compile'd network: its module
        object.__setattr__(self, "_network", network.eval())  # not a submodule: its weights stay its own
        self.engine = engine
        self.threads = int(threads or torch.get_num_threads())
        self._weights: Optional[dict] = None  # the dict loaded last (None: the network's own weights)
        self._runners: List[Tuple[Optional[dict], Tuple[int, ...], Runner]] = []
        self.export_seconds = 0.0

    @property
    def network(self):
        """The wrapped torch network."""
        return self._network

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = self._network.load_state_dict(state_dict, strict=strict, assign=assign)
        self._weights = state_dict
        return result

    def state_dict(self, *args, **kwargs):
        return self._network.state_dict(*args, **kwargs)

    def runner(self, shape: Sequence[int]) -> Runner:
        """The compiled model for the current weights and input ``shape`` (exported on first use)."""
        shape = tuple(int(s) for s in shape)
        for weights, known, run in self._runners:
            if weights is self._weights and known == shape:
                return run
        start = time.perf_counter()
        run = compile_onnx(export_onnx(self._network, shape), self.engine, self.threads)
        seconds = time.perf_counter() - start
        self.export_seconds += seconds
        logger.info("exported the network for %s (input %s) in %.1f s", self.engine, shape, seconds)
        self._runners.append((self._weights, shape, run))
        return run

    def prepare(self, weight_sets: Sequence[dict], shape: Sequence[int]) -> None:
        """Export and compile every weight set (e.g. nnU-Net's ``list_of_parameters``) for ``shape`` now."""
        for weights in weight_sets:
            self.load_state_dict(weights)
            self.runner(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"--engine {self.engine} runs on the CPU; got a tensor on {x.device}")
        array = x.detach().to(torch.float32).contiguous().numpy()
        return torch.from_numpy(self.runner(array.shape)(array))

"""oneDNN for single-sample CPU convolutions: nnU-Net's sliding window and a batch-1 training step, both ways.

PyTorch sends a float32 CPU convolution of one sample with channels x height x width <= 20480
to its reference kernel (``nnunet_transfer/training/onednn.py`` explains the rule); the plugin
trainers build their networks with ``OneDNNConv3d``, which calls oneDNN for those inputs. This
script measures, in one run, on the same network and weights, with nnU-Net's plain ``Conv3d``
and with the switched one, interleaved:

- nnU-Net's ``nnUNetPredictor.predict_sliding_window_return_logits`` on one random case (tile
  step 0.5, Gaussian weighting, no mirroring): the demo's half-width 4-stage network on a
  46 x 38 x 38 case with 32^3 tiles (what every demo validation predicts, 8 tiles), and
  nnU-Net's default BraTS 3d_fullres network (six stages, 32..320 features) on a 140 x 171 x 137
  case with 128^3 tiles (8 tiles);
- a training step (forward, deep-supervision loss, backward) with batch size 1, the paper's
  recipe, on each network's patch;

and prints the seconds (median of ``--repeats``), the ratio oneDNN / plain, and how far the
logits (one tile in float32; the whole case as nnU-Net accumulates it, in float16), the argmax
labels and the gradients of the two paths differ.

    python benchmarks/bench_onednn.py                        # demo network, 5 repeats
    python benchmarks/bench_onednn.py --networks demo default --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_brainunet_inference import brats_plans  # noqa: E402

NETWORKS = {
    # the demo's plans (nnUNetPlansTiny: 16..128 features, 4 stages, 32^3 patches) and case size
    "demo": {"features": [16, 32, 64, 128], "patch": [32, 32, 32], "case": [46, 38, 38]},
    # nnU-Net's default 3d_fullres for BraTS (1 mm, 128^3 patch), a median BraTS brain box
    "default": {"features": [32, 64, 128, 256, 320, 320], "patch": [128, 128, 128], "case": [140, 171, 137]},
}
DATASET_JSON = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
                "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": 1, "file_ending": ".nii.gz"}


def plans_for(name: str) -> dict:
    spec = NETWORKS[name]
    plans = brats_plans()
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = list(spec["patch"])
    arch = config["architecture"]["arch_kwargs"]
    n = len(spec["features"])
    arch.update(n_stages=n, features_per_stage=list(spec["features"]), kernel_sizes=[[3, 3, 3]] * n,
                strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
                n_conv_per_stage_decoder=[2] * (n - 1))
    return plans


def networks(plans: dict, deep_supervision: bool):
    """nnU-Net's network (plain Conv3d) and a copy switched to OneDNNConv3d, as the plugin trainers build it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_transfer.training.onednn import single_sample_onednn

    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    torch.manual_seed(0)
    plain = nnUNetTrainer.build_network_architecture(manager, config, 4, 4, deep_supervision)  # 4 labels
    fast = single_sample_onednn(copy.deepcopy(plain))
    return manager, config, plain, fast


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median seconds of each function, run alternately (one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def sliding_window(name: str, repeats: int) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    manager, config, plain, fast = networks(plans_for(name), deep_supervision=False)
    case = torch.randn(4, *NETWORKS[name]["case"], generator=torch.Generator().manual_seed(1))
    predictors = {}
    for key, net in (("plain", plain), ("onednn", fast)):
        net.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=False, device=torch.device("cpu"),
                                    verbose=False, allow_tqdm=False)
        predictor.manual_initialization(net, manager, config, [net.state_dict()], DATASET_JSON,
                                        "nnUNetTrainer", None)
        predictors[key] = predictor
    out = {}

    def run(key):
        out[key] = predictors[key].predict_sliding_window_return_logits(case)

    seconds = interleaved({k: (lambda k=k: run(k)) for k in predictors}, repeats)
    diff = (out["onednn"] - out["plain"]).abs().max().item()
    scale = out["plain"].abs().max().item()
    tile = case[predictors["plain"]._internal_get_sliding_window_slicers(case.shape[1:])[0]][None]
    with torch.inference_mode():
        tile_diff = (fast(tile) - plain(tile)).abs().max().item()
    agree = (out["onednn"].argmax(0) == out["plain"].argmax(0)).float().mean().item()
    print(f"  sliding window, {name} network, case {' x '.join(map(str, NETWORKS[name]['case']))}, "
          f"tiles {' x '.join(map(str, NETWORKS[name]['patch']))}: plain {seconds['plain']:.2f} s, "
          f"oneDNN {seconds['onednn']:.2f} s, ratio {seconds['onednn'] / seconds['plain']:.3f}; "
          f"max |logit difference| {tile_diff:.1e} on one tile (float32), {diff:.1e} in the case's logits "
          f"(nnU-Net accumulates them in {out['plain'].dtype}; max |logit| {scale:.1f}), argmax agreement {agree:.6f}")


def training_step(name: str, repeats: int) -> None:
    _, config, plain, fast = networks(plans_for(name), deep_supervision=True)
    patch = NETWORKS[name]["patch"]
    generator = torch.Generator().manual_seed(2)
    data = torch.randn(1, 4, *patch, generator=generator)
    grads = {}

    def step(key, net):
        net.train()
        net.zero_grad(set_to_none=True)
        loss = sum(o.square().mean() for o in net(data))
        loss.backward()
        grads[key] = torch.cat([p.grad.flatten() for p in net.parameters()])

    seconds = interleaved({"plain": lambda: step("plain", plain), "onednn": lambda: step("onednn", fast)}, repeats)
    rel = ((grads["onednn"] - grads["plain"]).norm() / grads["plain"].norm()).item()
    print(f"  training step, batch 1, {name} network, patch {' x '.join(map(str, patch))}: "
          f"plain {seconds['plain']:.2f} s, oneDNN {seconds['onednn']:.2f} s, "
          f"ratio {seconds['onednn'] / seconds['plain']:.3f}; relative gradient difference {rel:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["demo"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per path (median; default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: one per job, as the demo runs two jobs on 2 cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats}, plain and oneDNN interleaved")
    for name in args.networks:
        sliding_window(name, args.repeats)
        training_step(name, args.repeats)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inference time of BrainUNet vs nnU-Net's default 3d_fullres network on one BraTS-sized case.

Both networks come from plans for a BraTS-like dataset (1 mm spacing, 128^3 patch, 6 stages,
32..320 features, 4 channels, 4 classes): nnU-Net's default PlainConvUNet, and the BrainUNet
plans derived from them by ``derive_brainunet_plans``. Each predicts one 4 x 155 x 240 x 240
case of random-ish data with nnU-Net's sliding-window predictor
(``nnUNetPredictor.predict_sliding_window_return_logits``, tile step 0.5, Gaussian weighting,
no mirroring), in the same run. Prints parameters, checkpoint sizes (fp32 weights + SGD
momentum, as nnU-Net saves them, measured by serialising), times and the ratio.

On a small CPU the full case takes minutes for the default network; ``--crop`` predicts a
crop instead and extrapolates per tile (time / tiles of the crop x tiles of the full case):
the output says which was measured.

Usage:
    python benchmarks/bench_brainunet_inference.py                      # full case, CPU
    python benchmarks/bench_brainunet_inference.py --crop 128 128 192   # 2 tiles, extrapolated
    python benchmarks/bench_brainunet_inference.py --device cuda        # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import os
import sys
import time
from typing import List, Sequence, Tuple

import torch

FULL_SHAPE = (155, 240, 240)  # BraTS volume, nnU-Net axis order (z, y, x)


def brats_plans() -> dict:
    """nnU-Net's 3d_fullres plans as nnUNetv2_plan_experiment writes them for BraTS."""
    return {
        "dataset_name": "Dataset999_BraTSLike", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [140, 171, 137],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [128, 128, 128], "median_image_size_in_voxels": [140, 171, 137],
            "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"] * 4,
            "use_mask_for_norm": [True] * 4, "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_probabilities":
                "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities_kwargs": {}, "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                    "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
                    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
                    "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}},
        "foreground_intensity_properties_per_channel": {},
    }


DATASET_JSON = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
                "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": 1, "file_ending": ".nii.gz"}


def n_tiles(shape: Sequence[int], patch: Sequence[int], step: float = 0.5) -> int:
    """Number of sliding-window tiles nnU-Net uses for ``shape`` (after padding to the patch)."""
    total = 1
    for s, p in zip(shape, patch):
        s = max(s, p)
        total *= 1 if s == p else math.ceil((s - p) / (p * step)) + 1
    return total


def checkpoint_mb(network: torch.nn.Module) -> float:
    """Serialised size of network weights + SGD momentum state, like nnU-Net's checkpoint."""
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    for p in network.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    buffer = io.BytesIO()
    torch.save({"network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict()}, buffer)
    for p in network.parameters():
        p.grad = None
    return buffer.tell() / 1e6


def build(plans: dict, device: torch.device):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(copy.deepcopy(plans))
    configuration = manager.get_configuration("3d_fullres")
    network = get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                     configuration.network_arch_init_kwargs_req_import, 4, 4, allow_init=True,
                                     deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type != "cpu", device=device, allow_tqdm=False)
    predictor.manual_initialization(network, manager, configuration, None, DATASET_JSON, "nnUNetTrainer", None)
    return network, predictor


def time_prediction(predictor, image: torch.Tensor, repeats: int, device: torch.device) -> Tuple[float, float]:
    """Best wall-clock and process CPU seconds of ``repeats`` sliding-window predictions."""
    walls: List[float] = []
    cpus: List[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            logits = predictor.predict_sliding_window_return_logits(image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
        assert logits.shape[1:] == image.shape[1:]
    return min(walls), min(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="predict this crop and extrapolate per tile (e.g. 128 128 192 = 2 tiles)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per network (the minimum counts)")
    parser.add_argument("--max-checkpoint-mb", type=float, default=85.0, help="BrainUNet plans' size budget")
    args = parser.parse_args(argv)

    from nnunet_transfer.brainunet.plans import derive_brainunet_plans

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plans = brats_plans()
    brain_plans = derive_brainunet_plans(plans, configurations=["3d_fullres"], dataset_json=DATASET_JSON,
                                         max_checkpoint_mb=args.max_checkpoint_mb)
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    shape = tuple(args.crop) if args.crop else FULL_SHAPE
    full_tiles, tiles = n_tiles(FULL_SHAPE, patch), n_tiles(shape, patch)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((4, *shape), generator=generator)  # z-scored-like intensities
    image[:, :, :20] = 0  # some background, as around a skull-stripped brain

    print(f"device {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}")
    print(f"case 4 x {' x '.join(map(str, FULL_SHAPE))}: {full_tiles} tiles of {patch} at step 0.5, no mirroring")
    if args.crop:
        print(f"MEASURED: a 4 x {' x '.join(map(str, shape))} crop ({tiles} tiles); full-case times are "
              f"EXTRAPOLATED as time / {tiles} x {full_tiles}")
    rows = []
    for name, p in (("nnU-Net 3d_fullres (PlainConvUNet)", plans), ("BrainUNet (AttentionResidualUNet)", brain_plans)):
        network, predictor = build(p, device)
        n_params = sum(t.numel() for t in network.parameters())
        size = checkpoint_mb(network)
        warm = torch.randn((4, *[min(s, 64) for s in patch]))
        with torch.no_grad():
            network.to(device).eval()(warm[None].to(device))  # kernel selection outside the timing
        seconds, cpu = time_prediction(predictor, image.to(device) if device.type != "cpu" else image,
                                       args.repeats, device)
        full, full_cpu = seconds / tiles * full_tiles, cpu / tiles * full_tiles
        rows.append((name, n_params, size, full, full_cpu))
        print(f"{name}: {n_params / 1e6:.2f} M parameters, checkpoint {size:.1f} MB, "
              f"{'crop' if args.crop else 'case'} {seconds:.1f} s wall / {cpu:.1f} s CPU, per tile {seconds / tiles:.2f} "
              f"s wall, full case {full:.1f} s wall / {full_cpu:.1f} s CPU{' (extrapolated)' if args.crop else ''}")
        del network, predictor
    print(f"RATIO BrainUNet / default: wall time {rows[1][3] / rows[0][3]:.3f}, CPU time {rows[1][4] / rows[0][4]:.3f} "
          f"(goal <= 0.5), parameters {rows[1][1] / rows[0][1]:.3f}, checkpoint {rows[1][2]:.1f} MB vs "
          f"{rows[0][2]:.1f} MB (goal < 90 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

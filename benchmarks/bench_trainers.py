"""Time one training step (forward, backward, optimizer) of each transfer trainer vs nnUNetTrainer.

All trainers get the same plans and the same batch; steps are interleaved (trainer A, B, C,
A, B, C, ...) so that machine load affects all alike. Prints the median step time per
trainer and its ratio to plain ``nnUNetTrainer`` measured in the same run.

    python benchmarks/bench_trainers.py                      # quarter-width net, patch 48x64x64 (CPU)
    python benchmarks/bench_trainers.py --width 1 --device cuda --patch 128 128 128 --batch 2

Goals (issue 2): DANN <= 1.05x, MixedDomain <= 1.02x, frozen decoder < 1.0x.

``--memory`` also measures peak memory per trainer, each in a fresh process (CUDA max
allocated where a GPU is present, otherwise the process's peak RSS), over a training step, a
validation forward pass (eval mode, no grad) and another training step: the pattern in which
DANN's encoder hook used to keep the validation batch's skip tensors alive. Goal (issue 11):
DANN <= 1.05x plain ``nnUNetTrainer``.

    python benchmarks/bench_trainers.py --memory --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def plans_for(width_divisor: int, patch, batch_size: int) -> dict:
    features = [max(2, f // width_divisor) for f in (32, 64, 128, 256, 320, 320)]
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    n_stages = 6 if min(patch) >= 64 else 5
    return {
        "dataset_name": "Dataset999_Bench", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
        "original_median_shape_after_transp": [155, 240, 240], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": batch_size, "patch_size": list(patch), "median_image_size_in_voxels": [155, 240, 240],
            "spacing": [1, 1, 1], "normalization_schemes": ["ZScoreNormalization"] * 4,
            "use_mask_for_norm": [True] * 4, "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
            "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {}, "batch_dice": False,
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {
                                 "n_stages": n_stages, "features_per_stage": features[:n_stages],
                                 "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n_stages,
                                 "strides": strides[:n_stages], "n_conv_per_stage": [2] * n_stages,
                                 "n_conv_per_stage_decoder": [2] * (n_stages - 1), "conv_bias": True,
                                 "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                 "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                 "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                 "nonlin_kwargs": {"inplace": True}},
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


DATASET_JSON = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
                "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": 4, "file_ending": ".nii.gz"}
KEYS = ["BraTS-GLI-00000-000", "BraTS-SSA-00000-000", "BraTS-GLI-00001-000", "BraTS-SSA-00001-000"]


def fake_nnunet_folders(prefix: str) -> Path:
    """Temporary nnU-Net folders (set in the environment) with an empty preprocessed dataset."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(tmp / name)
    data_folder = tmp / "nnUNet_preprocessed" / "Dataset999_Bench" / "nnUNetPlans_3d_fullres"
    data_folder.mkdir(parents=True)
    (data_folder / "placeholder.b2nd").touch()  # lets nnU-Net infer its dataset class; no data is read
    os.environ.setdefault("nnUNet_compile", "f")
    return tmp


def make_trainer(cls, plans: dict, device: torch.device, pretrained: str = None):
    trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, DATASET_JSON, device)
    if hasattr(trainer, "check_training_cases"):
        trainer._split = (KEYS, KEYS[:1])
        trainer.check_training_cases(KEYS, KEYS[:1])
    if pretrained is not None:
        trainer.pretrained_weights_file = pretrained
    trainer.initialize()
    trainer.network.train()
    if hasattr(trainer, "domain_head"):
        trainer._step_in_epoch = 0
    return trainer


def make_batch(trainer, batch_size: int, patch, device) -> dict:
    torch.manual_seed(0)
    data = torch.randn(batch_size, 4, *patch)
    seg = torch.randint(0, 4, (batch_size, 1, *patch)).float()
    scales = trainer._get_deep_supervision_scales()
    target = [torch.nn.functional.interpolate(seg, scale_factor=tuple(s), mode="nearest") for s in scales]
    return {"data": data, "target": target, "keys": (KEYS * batch_size)[:batch_size]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=4, help="divide nnU-Net's features by this (default 4)")
    parser.add_argument("--patch", type=int, nargs=3, default=(48, 64, 64))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed steps per trainer first (more with nnUNet_compile=t, which compiles then)")
    parser.add_argument("--trainers", nargs="+", metavar="NAME",
                        help="time only these (nnUNetTrainer is always timed: it is the reference)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory, one process per trainer")
    parser.add_argument("--memory-repeats", type=int, default=5, help="processes per trainer for --memory (median)")
    parser.add_argument("--memory-child", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)

    tmp = fake_nnunet_folders("bench_trainers_")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_transfer.training import trainers as T

    device = torch.device(args.device)
    if device.type == "cuda":
        # Several trainers share this process, so dynamo must not reuse the graph compiled for one
        # network (traced without DANN's encoder hook) for another: make it guard on hooks.
        import torch._dynamo as dynamo
        dynamo.config.skip_nnmodule_hook_guards = False
    plans = plans_for(args.width, args.patch, args.batch)
    plain = make_trainer(nnUNetTrainer, plans, device)
    pretrained = str(tmp / "pretrained.pth")
    plain.save_checkpoint(pretrained)
    factories = {
        "nnUNetTrainerMixedDomain": lambda: make_trainer(T.nnUNetTrainerMixedDomain, plans, device),
        "nnUNetTrainerDANN": lambda: make_trainer(T.nnUNetTrainerDANN, plans, device),
        "nnUNetTrainerFineTune": lambda: make_trainer(T.nnUNetTrainerFineTune, plans, device, pretrained),
        "nnUNetTrainerFineTuneFrozenDecoder": lambda: make_trainer(T.nnUNetTrainerFineTuneFrozenDecoder, plans,
                                                                   device, pretrained),
        "nnUNetTrainerFineTuneFrozenEncoder": lambda: make_trainer(T.nnUNetTrainerFineTuneFrozenEncoder, plans,
                                                                   device, pretrained),
    }
    selected = [n for n in args.trainers or factories if n != "nnUNetTrainer"]
    unknown = set(selected) - set(factories)
    if unknown:
        parser.error(f"unknown trainer(s) {sorted(unknown)}; choose from {sorted(['nnUNetTrainer', *factories])}")
    candidates = {"nnUNetTrainer": plain, **{name: factories[name]() for name in factories if name in selected}}
    batch = make_batch(plain, args.batch, args.patch, device)
    times = {name: [] for name in candidates}
    for name, trainer in candidates.items():  # warm-up (and compilation, with nnUNet_compile=t on a GPU)
        for _ in range(args.warmup):
            trainer.train_step(batch)
    for _ in range(args.repeats):
        for name, trainer in candidates.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["nnUNetTrainer"])
    params = sum(p.numel() for p in plain.network.parameters())
    compiled = device.type == "cuda" and os.environ.get("nnUNet_compile", "t").lower() in ("t", "true", "1")
    print(f"device {device}, patch {tuple(args.patch)}, batch {args.batch}, {params / 1e6:.2f}M parameters, "
          f"torch.compile {'on' if compiled else 'off'}, median of {args.repeats} interleaved steps")
    print(f"{'trainer':40s} {'step [s]':>9s} {'ratio':>7s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40s} {median:9.3f} {median / base:7.3f}")
    if args.memory:
        print_memory(args, [n for n in candidates if n in MEMORY_TRAINERS])


MEMORY_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerMixedDomain", "nnUNetTrainerDANN", "nnUNetTrainerDANNNoGRL")


def print_memory(args, names) -> None:
    """Peak memory of each trainer, measured in a fresh process so that peaks do not mix."""
    runs = {name: [] for name in names}
    for _ in range(args.memory_repeats):  # interleaved, as the timings: machine state affects all alike
        for name in names:
            command = [sys.executable, __file__, "--memory-child", name, "--width", str(args.width), "--patch",
                       *map(str, args.patch), "--batch", str(args.batch), "--device", args.device]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    peaks = {name: {"mb": statistics.median(r["mb"] for r in values),
                    "steps_mb": statistics.median(r["steps_mb"] for r in values), "what": values[0]["what"]}
             for name, values in runs.items()}
    unit = peaks[names[0]]["what"]
    print(f"peak memory ({unit}, median of {args.memory_repeats} processes per trainer; train step, validation "
          f"forward, train step); "
          f"'steps' is the peak above the memory held when the steps began (model, optimizer, libraries)")
    print(f"{'trainer':40s} {'peak [MB]':>9s} {'ratio':>7s} {'steps [MB]':>10s} {'ratio':>7s}")
    base = peaks["nnUNetTrainer"]
    for name, peak in peaks.items():
        print(f"{name:40s} {peak['mb']:9.1f} {peak['mb'] / base['mb']:7.3f} {peak['steps_mb']:10.1f} "
              f"{peak['steps_mb'] / base['steps_mb']:7.3f}")


def memory_child(args) -> None:
    fake_nnunet_folders("bench_memory_")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_transfer.training import trainers as T

    device = torch.device(args.device)
    cls = nnUNetTrainer if args.memory_child == "nnUNetTrainer" else getattr(T, args.memory_child)
    trainer = make_trainer(cls, plans_for(args.width, args.patch, args.batch), device)
    batch = make_batch(trainer, args.batch, args.patch, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
        start = _status_kb("VmRSS") * 1024
    trainer.train_step(batch)
    trainer.network.eval()
    with torch.no_grad():
        trainer.network(batch["data"].to(device))
    trainer.network.train()
    trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        top = torch.cuda.max_memory_allocated()
        what = "CUDA max allocated"
    else:
        top = _status_kb("VmHWM") * 1024
        what = "peak RSS"
    print(json.dumps({"mb": top / 2 ** 20, "steps_mb": (top - start) / 2 ** 20, "what": what}))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


if __name__ == "__main__":
    main()

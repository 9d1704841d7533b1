"""Sub-minute CPU inference: ``nnunet-transfer segment`` against ``nnUNetv2_predict``, end to end, one case.

For each model (``--models brainunet default``) this builds, without training, a model of the
real BraTS configuration and measures one 240 x 240 x 155 case, end to end from the raw BraTS
case folder to the BraTS label file, on this machine's CPU:

- ``nnunet-transfer segment CASE -m bundle.zip -o OUT -device cpu -f 0`` (one process: bundle
  extraction, model loading, checks, clipping, nnU-Net preprocessing, prediction, label file),
  with nnU-Net's test-time mirroring (nnU-Net's default: 8 network passes per tile in 3D) and
  with ``--no-mirroring`` (1 pass per tile); model loading is reported separately;
- nnU-Net's own way: ``nnunet-transfer convert`` of the case (timed), ``nnUNetv2_predict``
  with its defaults (``-device cpu`` and ``-f 0`` aside: its default device is cuda and its
  default folds 0-4; tile step 0.5, mirroring, 3 preprocessing and 3 export workers), and
  ``nnunet-transfer to-brats`` (timed), and ``nnUNetv2_predict --disable_tta`` likewise, the
  same computation as ``segment --no-mirroring``;

then prints the seconds, the ratios, the per-region (WT, TC, ET) Dice agreement between the
label files of the two paths, the checkpoint and bundle sizes, and the goals (BrainUNet
``segment`` under 60 s, agreement >= 0.99 per region, bundle under 90 MB) as met or MISSED
with the gap.

The models
----------
nnU-Net's default 3d_fullres plans as ``nnUNetv2_plan_experiment`` writes them for BraTS (1 mm
spacing, 128^3 patch, six stages of 32..320 features; ``bench_brainunet_inference.brats_plans``)
on a four-channel dataset (T1, T1Gd, T2, FLAIR) converted by ``nnunet-transfer convert``; the
BrainUNet plans derived from them by ``nnunet-transfer brainunet-plans`` on a three-channel
(FLAIR, T1Gd, T2) dataset converted with ``--clip-percentiles 0.5 99.5``. The weights are the
trainer's own seeded initialisation (``trainer.initialize()``, one SGD step on zero gradients
so that the momentum buffers exist as after training, segmentation-head biases zeroed so the
labels follow the image rather than one class), saved with the trainer's own
``save_checkpoint`` as ``fold_0/checkpoint_final.pth``, so checkpoint and bundle sizes are
real. Timing does not depend on the weights. **Untrained weights give near-random labels**: the
Dice agreement between the two paths is a check that they compute the same thing, not a measure
of segmentation quality (nor of what dropping mirroring costs a trained model).

The case
--------
``nnunet-transfer synth --domain SSA --shape 240 240 155`` (1 mm). Its synthetic brains are a
little short in z (about 128 mm, one tile of 128), so by default the case is stretched about
the brain's centre until the brain's bounding box is at least that of a median BraTS case
(140 x 171 x 137 voxels z, y, x, as nnU-Net's plans record for BraTS): nnU-Net then predicts
2 x 2 x 2 = 8 tiles, as for most real cases (``--no-stretch``: the synthetic case as it is).

Usage:
    python benchmarks/bench_segment_cpu.py                                   # both models, full size
    python benchmarks/bench_segment_cpu.py --models brainunet --mirroring off # the fast path only
    python benchmarks/bench_segment_cpu.py --shape 96 96 64 --workdir /tmp/b --keep   # quick, small case

The machine's load average is printed before and after every timed command: on a shared
machine the wall times depend on it (process CPU seconds are printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FULL_SHAPE = (240, 240, 155)  # x, y, z as synth takes it
#: nnU-Net's median image size for BraTS (z, y, x voxels at 1 mm; its plans' median_image_size_in_voxels)
BRATS_MEDIAN_BRAIN_MM = (140.0, 171.0, 137.0)
CASE_ID = "BraTS-SSA-00000-000"
TRAIN_CASE_ID = "BraTS-SSA-00001-000"
REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
GOAL_SECONDS = 60.0
GOAL_DICE = 0.99
GOAL_BUNDLE_MB = 90.0
CONFIGURATION = "3d_fullres"


@dataclass
class ModelSpec:
    key: str
    title: str
    dataset_id: int
    name: str
    modalities: Optional[List[str]]
    clip: Optional[Tuple[float, float]]
    trainer: str
    plans: str

    @property
    def dataset(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def n_channels(self) -> int:
        return len(self.modalities) if self.modalities else 4


MODELS = {
    "brainunet": ModelSpec("brainunet", "BrainUNet (3 ch, clipped, nnUNetTrainerBrainUNet)", 902,
                           "BenchBrainUNet3chClip", ["t2f", "t1c", "t2w"], (0.5, 99.5), "nnUNetTrainerBrainUNet",
                           "nnUNetPlans_BrainUNet"),
    "default": ModelSpec("default", "nnU-Net default 3d_fullres (4 ch, nnUNetTrainer)", 901, "BenchDefault4ch",
                         None, None, "nnUNetTrainer", "nnUNetPlans"),
}


# ----------------------------------------------------------------------------------------------- helpers

def loadavg() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timed:
    command: List[str]
    seconds: float
    cpu_seconds: float
    load_before: str
    load_after: str
    stdout: str


def run(command: Sequence[str], env: Dict[str, str], log: Path, what: str) -> Timed:
    """Run ``command``, timed (wall and children's CPU), its output kept in ``log``; exit on failure."""
    command = [str(c) for c in command]
    before, cpu = loadavg(), children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    timed = Timed(command, seconds, children_cpu() - cpu, before, loadavg(), result.stdout)
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n{result.stdout}\n[{what}: exit {result.returncode}, "
                     f"{seconds:.1f} s]\n\n")
    if result.returncode != 0:
        sys.exit(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout[-4000:]}")
    return timed


def nnunet_env(workdir: Path) -> Dict[str, str]:
    from nnunet_transfer import config

    env = dict(os.environ)
    env.update({"nnUNet_raw": str(workdir / "nnUNet_raw"), "nnUNet_preprocessed": str(workdir / "nnUNet_preprocessed"),
                "nnUNet_results": str(workdir / "nnUNet_results"), "nnUNet_compile": "f",
                config.EXT_TRAINER: config.ext_trainer_search_path()})
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def cli(*args) -> List[str]:
    return [sys.executable, "-m", "nnunet_transfer.cli", *map(str, args)]


def read_labels(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def region_dice(a: np.ndarray, b: np.ndarray) -> Dict[str, Optional[float]]:
    """Dice per BraTS region between two label arrays (labels 1-3); None when the region is empty in both.

    Also ``"differing voxels"``: how many voxels have different labels (0: identical files' labels).
    """
    out: Dict[str, Optional[float]] = {}
    for region, labels in REGIONS.items():
        x, y = np.isin(a, labels), np.isin(b, labels)
        total = int(x.sum()) + int(y.sum())
        out[region] = None if total == 0 else 2.0 * int((x & y).sum()) / total
    out["differing voxels"] = int((a != b).sum())
    return out


def fmt_dice(d: Dict[str, Optional[float]]) -> str:
    text = ", ".join(f"{k} {'empty in both' if v is None else f'{v:.5f}'}" for k, v in d.items() if k in REGIONS)
    differing = d.get("differing voxels")
    return text + (" (identical labels)" if differing == 0 else f" ({differing} voxels differ)")


def dice_ok(d: Dict[str, Optional[float]]) -> bool:
    return all(v is None or v >= GOAL_DICE for k, v in d.items() if k in REGIONS)


# ----------------------------------------------------------------------------------------------- the case

def stretch_case(folder: Path, target_mm: Sequence[float]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Stretch every image of ``folder`` about the brain's centre (in place) so that the brain's
    bounding box is at least ``target_mm`` (z, y, x); returns the bounding box before and after (voxels)."""
    import SimpleITK as sitk
    from scipy.ndimage import affine_transform

    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii")) and "-seg." not in p.name)
    images = [sitk.ReadImage(str(p)) for p in files]
    arrays = [sitk.GetArrayFromImage(i) for i in images]
    spacing = np.array(images[0].GetSpacing()[::-1])

    def bbox(arrs) -> Tuple[np.ndarray, np.ndarray]:
        mask = np.any([a != 0 for a in arrs], axis=0)
        nz = np.argwhere(mask)
        return nz.min(0), nz.max(0)

    lo, hi = bbox(arrays)
    before = tuple(int(v) for v in hi - lo + 1)
    factor = np.maximum(1.0, np.asarray(target_mm) / ((hi - lo + 1) * spacing))
    if np.all(factor == 1.0):
        return before, before
    factor = factor * 1.01  # interpolation trims the border a little
    centre = (lo + hi) / 2.0
    stretched = []
    for image, array, path in zip(images, arrays, files):
        out = affine_transform(array.astype(np.float32), 1.0 / factor, offset=centre - centre / factor, order=1,
                               mode="constant", cval=0.0)
        if np.issubdtype(array.dtype, np.integer):
            out = np.rint(out)
        stretched.append(out.astype(array.dtype))
        new = sitk.GetImageFromArray(stretched[-1])
        new.CopyInformation(image)
        sitk.WriteImage(new, str(path), useCompression=True)
    lo, hi = bbox(stretched)
    return before, tuple(int(v) for v in hi - lo + 1)


def make_cases(workdir: Path, env: Dict[str, str], shape: Sequence[int], stretch: bool, log: Path) -> dict:
    """The synthetic training case (for dataset.json) and the unlabeled test case, in their own folders."""
    source = workdir / "source"
    synth = source / "synth"
    run(cli("synth", synth, "--domain", "SSA", "-n", 2, "--shape", *shape), env, log, "synth")
    (source / "train").mkdir(exist_ok=True)
    (source / "test").mkdir(exist_ok=True)
    shutil.move(str(synth / TRAIN_CASE_ID), source / "train" / TRAIN_CASE_ID)
    case = source / "test" / CASE_ID
    shutil.move(str(synth / CASE_ID), case)
    for seg in case.glob("*-seg.nii*"):
        seg.unlink()  # a new case: no segmentation
    before = after = None
    if stretch:
        before, after = stretch_case(case, BRATS_MEDIAN_BRAIN_MM)
    return {"train": source / "train", "test": source / "test", "case": case, "bbox_before": before,
            "bbox_after": after}


def case_geometry(case: Path) -> Tuple[List[float], List[int], Tuple[int, ...]]:
    """Spacing and shape (z, y, x) of the case, and its brain's bounding box (voxels)."""
    import SimpleITK as sitk

    files = sorted(p for p in case.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    image = sitk.ReadImage(str(files[0]))
    mask = np.any([sitk.GetArrayFromImage(sitk.ReadImage(str(p))) != 0 for p in files], axis=0)
    nz = np.argwhere(mask)
    return list(image.GetSpacing()[::-1]), list(image.GetSize()[::-1]), tuple(int(v) for v in nz.max(0) - nz.min(0) + 1)


# ----------------------------------------------------------------------------------------------- the models

def default_plans(dataset: str, n_channels: int, spacing: Sequence[float]) -> dict:
    """nnU-Net's 3d_fullres plans for BraTS (bench_brainunet_inference.brats_plans), complete, for ``dataset``."""
    from bench_brainunet_inference import brats_plans

    plans = brats_plans()
    plans["dataset_name"] = dataset
    plans["original_median_spacing_after_transp"] = list(spacing)
    plans["experiment_planner_used"] = "ExperimentPlanner"
    plans["label_manager"] = "LabelManager"
    plans["foreground_intensity_properties_per_channel"] = {
        str(c): {"max": 5000.0, "mean": 1000.0, "median": 1000.0, "min": 0.0, "percentile_00_5": 100.0,
                 "percentile_99_5": 3000.0, "std": 400.0} for c in range(n_channels)}
    conf = plans["configurations"][CONFIGURATION]
    conf["spacing"] = list(spacing)
    conf["normalization_schemes"] = ["ZScoreNormalization"] * n_channels
    conf["use_mask_for_norm"] = [True] * n_channels
    conf["resampling_fn_data_kwargs"] = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    conf["resampling_fn_seg_kwargs"] = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    conf["resampling_fn_probabilities_kwargs"] = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    return plans


def write_checkpoint(spec: ModelSpec, folder: Path, plans: dict, dataset_json: dict, seed: int) -> Tuple[Path, int]:
    """The trainer's own initialised network and optimiser, saved by the trainer's ``save_checkpoint``."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunet_transfer import config

    with config.plugin_trainers_on_path():
        trainer_class = recursive_find_trainer_class_by_name(spec.trainer)
    torch.manual_seed(seed)
    trainer = trainer_class(plans={**plans, "continue_training": False}, configuration=CONFIGURATION, fold=0, dataset_json=dataset_json,
                            device=torch.device("cpu"))
    # initialize() infers the preprocessed data format from the data folder's file endings
    data = Path(trainer.preprocessed_dataset_folder)
    data.mkdir(parents=True, exist_ok=True)
    (data / "placeholder.b2nd").touch()
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # sets inference_allowed_mirroring_axes
    with torch.no_grad():  # untrained heads without bias: the labels then follow the image, not one class
        for name, tensor in trainer.network.state_dict().items():
            if "seg_layers" in name and name.endswith("bias"):
                tensor.zero_()
    for p in trainer.network.parameters():  # momentum buffers exist after training: one step on zero gradients
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.current_epoch = trainer.num_epochs - 1  # checkpoint_final says current_epoch = num_epochs
    path = folder / "fold_0" / "checkpoint_final.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(path))
    return path, sum(p.numel() for p in trainer.network.parameters())


def build_model(spec: ModelSpec, workdir: Path, env: Dict[str, str], cases: dict, spacing: Sequence[float],
                seed: int, log: Path) -> dict:
    """Convert the training case, write the plans, the model folder, the checkpoint and the bundle."""
    args = ["convert", cases["train"], "-d", spec.dataset_id, "-n", spec.name]
    if spec.modalities:
        args += ["--modalities", *spec.modalities]
    if spec.clip:
        args += ["--clip-percentiles", *spec.clip]
    run(cli(*args), env, log, f"convert training case ({spec.key})")
    raw = workdir / "nnUNet_raw" / spec.dataset
    dataset_json = json.loads((raw / "dataset.json").read_text())
    pre = workdir / "nnUNet_preprocessed" / spec.dataset
    pre.mkdir(parents=True, exist_ok=True)
    plans = default_plans(spec.dataset, spec.n_channels, spacing)
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(raw / "dataset.json", pre / "dataset.json")
    if spec.plans != "nnUNetPlans":
        out = run(cli("brainunet-plans", spec.dataset_id, "-o", spec.plans, "-c", CONFIGURATION), env, log,
                  "brainunet-plans")
        print("  brainunet-plans: " + "; ".join(line.strip() for line in out.stdout.splitlines()
                                                 if line.strip().startswith(CONFIGURATION)))
        plans = json.loads((pre / f"{spec.plans}.json").read_text())
    folder = workdir / "nnUNet_results" / spec.dataset / f"{spec.trainer}__{spec.plans}__{CONFIGURATION}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(raw / "dataset.json", folder / "dataset.json")
    (folder / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [list(spacing)]}))
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint, n_params = write_checkpoint(spec, folder, plans, dataset_json, seed)
    with open(log, "a") as handle:
        handle.write(f"[checkpoint ({spec.key})]\n{chatter.getvalue()}\n")
    bundle = workdir / f"{spec.key}.zip"
    run(cli("export", folder, bundle, "-f", 0), env, log, f"export ({spec.key})")
    return {"folder": folder, "dataset_json": dataset_json, "checkpoint": checkpoint, "bundle": bundle, "params": n_params,
            "checkpoint_mb": checkpoint.stat().st_size / 1e6, "bundle_mb": bundle.stat().st_size / 1e6}


# ----------------------------------------------------------------------------------------------- the runs

@dataclass
class Result:
    label: str
    seconds: float
    cpu_seconds: float
    load: str
    labels_file: Path
    parts: Dict[str, float] = field(default_factory=dict)


def run_segment(spec: ModelSpec, model: dict, cases: dict, env: Dict[str, str], out: Path, mirroring: bool,
                engine: str, log: Path, extra: Sequence[str] = ()) -> Result:
    args = ["segment", cases["case"], "-m", model["bundle"], "-o", out, "-device", "cpu", "-f", 0]
    if engine != "torch":
        args += ["--engine", engine]
    if not mirroring:
        args.append("--no-mirroring")
    timed = run(cli(*args, *extra), env, log, f"segment ({spec.key})")
    loaded = re.search(r"loaded in ([\d.]+) s", timed.stdout)
    exported = re.search(r"network export ([\d.]+) s", timed.stdout)
    per_case = re.search(r"([\d.]+) s per case", timed.stdout)
    parts = {"model loading": float(loaded.group(1)) if loaded else float("nan"),
             "case (read, check, clip, predict, write)": float(per_case.group(1)) if per_case else float("nan")}
    parts["start-up, bundle extraction, rest"] = timed.seconds - sum(parts.values())
    if exported:
        parts[f"of the model loading: {engine} export"] = float(exported.group(1))
    label = "segment" + ("" if engine == "torch" else f" --engine {engine}") + ("" if mirroring else " --no-mirroring")
    return Result(label + (" " + " ".join(extra) if extra else ""), timed.seconds, timed.cpu_seconds,
                  f"{timed.load_before} -> {timed.load_after}", out / f"{CASE_ID}.nii.gz", parts)


#: ``nnunet-transfer convert`` for one case: its own per-case code (the CLI wants a dataset with training cases)
CONVERT_ONE = """
import json, sys
from pathlib import Path
from nnunet_transfer.dataset_conversion.convert import convert_case_images
from nnunet_transfer.inference.cases import find_cases
case, images, modalities, clip, ending = sys.argv[1:]
modalities, clip = json.loads(modalities), json.loads(clip)
Path(images).mkdir(parents=True)
(found,) = find_cases([case], modalities)
files, defects = convert_case_images(found, modalities, Path(images), clip=tuple(clip) if clip else None,
                                     file_ending=ending)
assert files and not defects, defects
"""
ALL4 = ["t1n", "t1c", "t2w", "t2f"]


def run_nnunet(spec: ModelSpec, model: dict, cases: dict, env: Dict[str, str], root: Path, tta: bool,
               log: Path) -> Result:
    """Convert the case (timed), nnUNetv2_predict with its defaults (timed), to-brats (timed)."""
    images = root / "imagesTs"
    convert = run([sys.executable, "-c", CONVERT_ONE, cases["case"], images, json.dumps(spec.modalities or ALL4),
                   json.dumps(spec.clip), model["dataset_json"]["file_ending"]], env, log, "convert test case")
    pred, brats = root / "nnunet_pred", root / "brats"
    command = ["nnUNetv2_predict", "-i", images, "-o", pred, "-d", spec.dataset_id, "-tr", spec.trainer, "-p",
               spec.plans, "-c", CONFIGURATION, "-f", 0, "-device", "cpu"]
    if not tta:
        command.append("--disable_tta")
    predict = run(command, env, log, "nnUNetv2_predict")
    to_brats = run(cli("to-brats", pred, brats), env, log, "to-brats")
    parts = {"convert": convert.seconds, "nnUNetv2_predict": predict.seconds, "to-brats": to_brats.seconds}
    cpu = convert.cpu_seconds + predict.cpu_seconds + to_brats.cpu_seconds
    return Result(f"convert + nnUNetv2_predict{'' if tta else ' --disable_tta'} + to-brats", sum(parts.values()),
                  cpu, f"{convert.load_before} -> {to_brats.load_after}", brats / f"{CASE_ID}.nii.gz", parts)


def describe(result: Result) -> str:
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.parts.items())
    return (f"    {result.label}: {result.seconds:.1f} s wall ({parts}); {result.cpu_seconds:.1f} s process CPU; "
            f"load {result.load}")


# ----------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (models, cases, labels, logs)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=["brainunet", "default"])
    parser.add_argument("--mirroring", choices=["both", "on", "off"], default="both",
                        help="test-time mirroring runs: both (default), on (nnU-Net's default) or off")
    parser.add_argument("--shape", type=int, nargs=3, default=list(FULL_SHAPE), metavar=("X", "Y", "Z"),
                        help="case size in voxels for synth (default 240 240 155, 1 mm; smaller for a quick check)")
    parser.add_argument("--no-stretch", action="store_true",
                        help="use the synthetic case as it is (its brain is about 128 mm in z: fewer tiles than a "
                             "median BraTS case)")
    parser.add_argument("--engines", nargs="+", choices=["torch", "openvino", "onnxruntime"], default=None,
                        help="segment --engine values to time (default: torch, and openvino when installed)")
    parser.add_argument("--skip-nnunet", action="store_true", help="time segment only (no Dice agreement)")
    parser.add_argument("--segment-args", nargs=argparse.REMAINDER, default=[],
                        help="further arguments for every segment run (last on the command line)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    if args.engines is None:
        from importlib.util import find_spec

        args.engines = ["torch"] + (["openvino"] if find_spec("openvino") and find_spec("onnx") else [])

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_segment_cpu_")).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"{workdir} is not empty; give a new or empty --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(workdir)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_compile"):
        os.environ[key] = env[key]  # for the checkpoints written in this process (nnunetv2.paths reads them once)
    log = workdir / "commands.log"
    results: dict = {"models": {}}
    try:
        import torch

        print(f"bench_segment_cpu: {os.cpu_count()} CPU(s), torch {torch.__version__} ({torch.get_num_threads()} "
              f"threads), load average {loadavg()} (1/5/15 min); work folder {workdir}")
        start = time.perf_counter()
        cases = make_cases(workdir, env, args.shape, not args.no_stretch, log)
        spacing, shape, brain = case_geometry(cases["case"])
        from bench_brainunet_inference import n_tiles

        patch = [128, 128, 128]
        tiles = n_tiles(brain, patch)  # the plans' spacing is the case's: no resampling
        stretch = (f"; brain stretched from {' x '.join(map(str, cases['bbox_before']))} to reach a median BraTS "
                   f"case's {' x '.join(f'{v:g}' for v in BRATS_MEDIAN_BRAIN_MM)} mm"
                   if cases["bbox_before"] and cases["bbox_before"] != cases["bbox_after"] else "")
        print(f"case {CASE_ID}: {' x '.join(map(str, shape))} voxels (z, y, x), spacing "
              f"{' x '.join(f'{s:g}' for s in spacing)} mm, brain {' x '.join(map(str, brain))} voxels{stretch}; "
              f"{tiles} tile(s) of 128^3 at step 0.5 (prepared in {time.perf_counter() - start:.0f} s)")
        results.update(case=str(cases["case"]), shape=shape, spacing=spacing, brain_bbox=brain, tiles=tiles)
        mirror_runs = {"both": [True, False], "on": [True], "off": [False]}[args.mirroring]
        engines = list(dict.fromkeys(args.engines))
        summary = []
        for key in args.models:
            spec = MODELS[key]
            print(f"\n== {spec.title}: {spec.dataset}/{spec.trainer}__{spec.plans}__{CONFIGURATION}, fold 0 ==")
            model = build_model(spec, workdir, env, cases, spacing, args.seed, log)
            print(f"  {model['params'] / 1e6:.2f} M parameters; checkpoint_final.pth {model['checkpoint_mb']:.1f} MB "
                  f"(trainer.save_checkpoint: weights + SGD momentum + logs); bundle (export, fold 0) "
                  f"{model['bundle_mb']:.1f} MB")
            record = {"params": model["params"], "checkpoint_mb": model["checkpoint_mb"],
                      "bundle_mb": model["bundle_mb"], "runs": {}}
            runs: Dict[Tuple[str, bool], Result] = {}
            for mirroring in mirror_runs:
                tag = "mirroring" if mirroring else "no_mirroring"
                for engine in engines:
                    root = workdir / "runs" / key / tag / engine
                    root.mkdir(parents=True)
                    runs[engine, mirroring] = run_segment(spec, model, cases, env, root / "segment", mirroring,
                                                          engine, log, args.segment_args)
                if not args.skip_nnunet:
                    root = workdir / "runs" / key / tag / "nnunet"
                    root.mkdir(parents=True)
                    runs["nnunet", mirroring] = run_nnunet(spec, model, cases, env, root, mirroring, log)
            dices: Dict[Tuple[str, bool], Dict[str, Optional[float]]] = {}
            for mirroring in mirror_runs:
                tag = "mirroring" if mirroring else "no_mirroring"
                print("  with test-time mirroring (nnU-Net's default, 8 network passes per tile):" if mirroring else
                      "  without mirroring (1 network pass per tile):")
                ref = runs.get(("nnunet", mirroring))
                if ref is not None:
                    print(describe(ref))
                    record["runs"][f"nnunet_{tag}"] = {"seconds": ref.seconds, "parts": ref.parts,
                                                      "cpu_seconds": ref.cpu_seconds, "load": ref.load}
                for engine in engines:
                    seg = runs[engine, mirroring]
                    print(describe(seg))
                    entry = {"seconds": seg.seconds, "parts": seg.parts, "cpu_seconds": seg.cpu_seconds,
                             "load": seg.load}
                    if ref is not None:
                        dice = dices[engine, mirroring] = region_dice(read_labels(seg.labels_file),
                                                                      read_labels(ref.labels_file))
                        print(f"      -> {ref.seconds / seg.seconds:.2f}x nnU-Net's speed (ratio segment / nnU-Net "
                              f"{seg.seconds / ref.seconds:.3f}); Dice agreement with nnU-Net (same settings): "
                              f"{fmt_dice(dice)}")
                        entry["dice_vs_nnunet_same_settings"] = dice
                    record["runs"][f"segment_{engine}_{tag}"] = entry
            if ("nnunet", True) in runs and False in mirror_runs:
                ref = runs["nnunet", True]
                print("  segment without mirroring vs nnUNetv2_predict with its defaults (mirroring):")
                for engine in engines:
                    seg = runs[engine, False]
                    dice = region_dice(read_labels(seg.labels_file), read_labels(ref.labels_file))
                    print(f"    {seg.label}: {ref.seconds / seg.seconds:.1f}x faster ({seg.seconds:.1f} s vs "
                          f"{ref.seconds:.1f} s); Dice {fmt_dice(dice)} (untrained weights: not what mirroring is "
                          f"worth to a trained model)")
                    record["runs"][f"segment_{engine}_no_mirroring"]["dice_vs_nnunet_default"] = dice
            labels = read_labels(next(r.labels_file for r in runs.values()))
            print("  labels of the untrained model: " + ", ".join(
                f"{name} {int(np.isin(labels, v).sum())} voxels" for name, v in REGIONS.items()))
            results["models"][key] = record
            if key == "brainunet":
                fast = False if False in mirror_runs else True
                for engine in engines:
                    seg = runs[engine, fast]
                    gap = seg.seconds - GOAL_SECONDS
                    summary.append(f"GOAL BrainUNet {seg.label} end to end < {GOAL_SECONDS:.0f} s: "
                                   f"{'met' if gap < 0 else 'MISSED'} ({seg.seconds:.1f} s wall, "
                                   f"{'-' if gap < 0 else '+'}{abs(gap):.1f} s, at load {seg.load}; "
                                   f"{seg.cpu_seconds:.1f} s process CPU over all its threads)")
                for (engine, mirroring), dice in dices.items():
                    worst = min((v for k, v in dice.items() if k in REGIONS and v is not None), default=1.0)
                    summary.append(f"GOAL BrainUNet Dice agreement >= {GOAL_DICE} per region, {runs[engine, mirroring].label} "
                                   f"vs nnUNetv2_predict{'' if mirroring else ' --disable_tta'}: "
                                   f"{'met' if dice_ok(dice) else 'MISSED'} ({fmt_dice(dice)}"
                                   f"{'' if dice_ok(dice) else f'; gap {GOAL_DICE - worst:.4f}'})")
                gap = model["bundle_mb"] - GOAL_BUNDLE_MB
                summary.append(f"GOAL BrainUNet bundle (one fold) < {GOAL_BUNDLE_MB:.0f} MB: "
                               f"{'met' if gap < 0 else 'MISSED'} ({model['bundle_mb']:.1f} MB, "
                               f"{'-' if gap < 0 else '+'}{abs(gap):.1f} MB)")
        if "brainunet" in results["models"] and "default" in results["models"]:
            b, d = results["models"]["brainunet"]["runs"], results["models"]["default"]["runs"]
            print()
            for name in b:
                if name in d:
                    print(f"BrainUNet / default, {name.replace('_', ' ')}: {b[name]['seconds'] / d[name]['seconds']:.3f} "
                          f"(wall)")
        print()
        for line in summary:
            print(line)
        print(f"load average at the end {loadavg()}; total {time.perf_counter() - start:.0f} s")
        results["summary"] = summary
        (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    finally:
        if args.keep:
            print(f"kept {workdir} (results.json, commands.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

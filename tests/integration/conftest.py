"""The tiny two-domain dataset the trainer integration tests share (built once per session)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer.planning import shrink_plans, write_plans
from tests.conftest import nnunet_folders, run_cmd

DATASET = "Dataset901_TinyTwoDomain"
PLANS = "nnUNetPlansTiny"
SHORT = {"nnUNetTransfer_num_epochs": "2", "nnUNetTransfer_iterations_per_epoch": "2",
         "nnUNetTransfer_val_iterations_per_epoch": "1"}
GLI = [f"BraTS-GLI-{i:05d}-000" for i in range(5)]
SSA = [f"BraTS-SSA-{i:05d}-000" for i in range(3)]


def _write_case(root: Path, case: str, rng: np.random.Generator, ssa: bool) -> None:
    shape = (32, 32, 32)
    zz, yy, xx = np.ogrid[:32, :32, :32]
    centre = rng.integers(11, 21, 3)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    seg = np.zeros(shape, np.uint8)
    seg[r < 9] = 2
    seg[r < 6] = 3
    seg[r < 3] = 1
    for channel in range(4):
        noise = rng.normal(0, 0.6 if ssa else 0.3, shape)
        image = (100 + 20 * channel + 15 * seg * (channel + 1) + 30 * noise).astype(np.float32)
        itk = sitk.GetImageFromArray(image)
        itk.SetSpacing((1.0, 1.0, 1.5 if ssa else 1.0))
        sitk.WriteImage(itk, str(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz"))
    label = sitk.GetImageFromArray(seg)
    label.SetSpacing((1.0, 1.0, 1.5 if ssa else 1.0))
    sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.nii.gz"))


def build_two_domain_dataset(env: dict, dataset_id: int, name: str, gli, ssa, seed: int, **dataset_json) -> Path:
    """Write, plan (tiny network, plans ``PLANS``) and preprocess a two-domain dataset; its preprocessed folder.

    ``gli``/``ssa`` are the case ids of each domain; ``dataset_json`` adds entries to dataset.json.
    """
    raw = Path(env["nnUNet_raw"]) / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    for case in list(gli) + list(ssa):
        _write_case(raw, case, rng, case in ssa)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
        "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "numTraining": len(gli) + len(ssa),
        "file_ending": ".nii.gz", "domains": {c: ("SSA" if c in ssa else "GLI") for c in list(gli) + list(ssa)},
        **dataset_json}))
    run_cmd([sys.executable, "-c", "from nnunet_transfer.planning import extract_fingerprint; "
             f"extract_fingerprint({dataset_id}, foreground_voxels=1e4)"], env)
    run_cmd(["nnUNetv2_plan_experiment", "-d", str(dataset_id)], env)
    pre = Path(env["nnUNet_preprocessed"]) / name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    write_plans(pre, shrink_plans(plans, PLANS, max_features=16, n_stages=3, patch_size=(32, 32, 32), batch_size=2))
    run_cmd(["nnUNetv2_preprocess", "-d", str(dataset_id), "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"], env)
    return pre


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Raw, planned (tiny network) and preprocessed two-domain dataset with SSA-only folds."""
    env = nnunet_folders(tmp_path_factory.mktemp("trainers"))
    pre = build_two_domain_dataset(env, 901, DATASET, GLI, SSA, seed=0)
    splits = [{"train": GLI + [s for s in SSA if s != v], "val": [v]} for v in SSA]
    splits.append({"train": GLI, "val": SSA})  # fold 3: a single training domain
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return {"env": env, "raw": Path(env["nnUNet_raw"]) / DATASET, "results": Path(env["nnUNet_results"]) / DATASET}


def train(tiny, trainer: str, fold: str = "0", *extra: str, check: bool = True, **env):
    return run_cmd(["nnUNetv2_train", "901", "3d_fullres", fold, "-tr", trainer, "-p", PLANS, "-device", "cpu",
                    *extra], {**tiny["env"], **SHORT, **env}, check=check)


def fold_dir(tiny, trainer: str, fold: str = "0") -> Path:
    return tiny["results"] / f"{trainer}__{PLANS}__3d_fullres" / f"fold_{fold}"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)



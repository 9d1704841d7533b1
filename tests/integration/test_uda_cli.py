"""Few or no target labels end to end: every regime through `nnunet-transfer run`, then `nnUNetv2_predict`.

A tiny plan on synthetic data whose target folder holds five SSA cases, two of them without a
segmentation: `convert --unlabelled` makes those training cases holding only nnU-Net's ignore
label, `splits` folds over the three labelled ones, and the plan trains the source-only model,
supervised, semi-supervised (one labelled SSA case per fold) and unsupervised DANN, and
fine-tuning on the labelled subset, with nnU-Net's real commands on the CPU, before the
comparison. Then stock `nnUNetv2_predict` segments a case with the unsupervised model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nnunet_transfer.training.checkpoints import CHECKPOINT_KEY
from tests.conftest import cli, nnunet_folders, run_cmd
from tests.integration.test_demo_cli import dump_toml

pytestmark = pytest.mark.integration

UNLABELLED = ["BraTS-SSA-00003-000", "BraTS-SSA-00004-000"]
LABELS = {"baseline": "Source only", "dann": "DANN (supervised)", "dann_semi": "DANN (semi-supervised)",
          "dann_unsupervised": "DANN (unsupervised)", "finetune_labelled": "Fine-Tuning (labelled subset)"}


def uda_plan(target_folder: Path) -> dict:
    synth_args = {"shape": [32, 32, 24], "convert_args": ["--regions"]}
    return {
        "name": "uda_ci", "configuration": "3d_fullres", "folds": 3, "target_domain": "SSA", "plans": "nnUNetPlans",
        "transferred_plans": "nnUNetPlansTiny_from951", "split_seed": 12345, "device": "cpu", "num_processes": 1,
        "reference": "baseline", "test_time_mirroring": False,
        "datasets": {
            "source": {"id": 951, "name": "UdaGLI", "source": "synth", "domain": "GLI", "n": 4, "seed": 0,
                       **synth_args},
            "target": {"id": 952, "name": "UdaSSA", "source": str(target_folder), "domain": "SSA",
                       "convert_args": ["--regions", "--unlabelled"]},
            "combined": {"id": 953, "name": "UdaGLISSA", "combine": ["source", "target"]},
        },
        "overrides": {
            "fingerprint_voxels": 1e4,
            "shrink": {"plans_name": "nnUNetPlansTiny", "max_features": 16, "n_stages": 3,
                       "patch_size": [32, 32, 24], "batch_size": 2},
            "env": {"nnUNetTransfer_num_epochs": 1, "nnUNetTransfer_iterations_per_epoch": 2,
                    "nnUNetTransfer_val_iterations_per_epoch": 1},
        },
        "strategies": {
            "baseline": {"label": LABELS["baseline"], "trainer": "nnUNetTrainerSourceOnly", "dataset": "source",
                         "fold": "all", "evaluate": "cross-domain"},
            "dann": {"label": LABELS["dann"], "trainer": "nnUNetTrainerDANN", "dataset": "combined"},
            "dann_semi": {"label": LABELS["dann_semi"], "trainer": "nnUNetTrainerDANNSemiSupervised",
                          "dataset": "combined", "env": {"nnUNetTransfer_labelled_target_cases": "1"}},
            "dann_unsupervised": {"label": LABELS["dann_unsupervised"], "trainer": "nnUNetTrainerDANNUnsupervised",
                                  "dataset": "combined"},
            "finetune_labelled": {"label": LABELS["finetune_labelled"],
                                  "trainer": "nnUNetTrainerFineTuneLabelledSubset", "dataset": "target",
                                  "init": "baseline", "env": {"nnUNetTransfer_labelled_target_cases": "1"}},
        },
    }


def run_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)[CHECKPOINT_KEY]["run"]


def test_every_regime_runs_end_to_end_and_predicts(tmp_path):
    env = nnunet_folders(tmp_path / "nnunet")
    target = tmp_path / "ssa"
    run_cmd(cli("synth", str(target), "--domain", "SSA", "-n", "5", "--shape", "32", "32", "24"), env)
    for case in UNLABELLED:  # a hospital's scans nobody segmented
        (target / case / f"{case}-seg.nii.gz").unlink()
    plan_file = tmp_path / "uda_ci.toml"
    plan_file.write_text(dump_toml(uda_plan(target)))
    workdir = tmp_path / "work"
    run_cmd(cli("run", str(plan_file), "--workdir", str(workdir), "--folds", "0", "--quiet"), env, timeout=1500)

    raw = json.loads((Path(env["nnUNet_raw"]) / "Dataset953_UdaGLISSA" / "dataset.json").read_text())
    assert raw["unlabelled"] == UNLABELLED and raw["labels"]["ignore"] == 4
    splits = json.loads((Path(env["nnUNet_preprocessed"]) / "Dataset953_UdaGLISSA" / "splits_final.json").read_text())
    assert len(splits) == 3 and not set(UNLABELLED) & {c for f in splits for c in f["val"]}
    assert all(set(UNLABELLED) <= set(f["train"]) for f in splits)

    comparison = json.loads((workdir / "comparison" / "comparison.json").read_text())
    assert set(LABELS.values()) <= set(comparison["table"])

    results = Path(env["nnUNet_results"])
    unsupervised = results / "Dataset953_UdaGLISSA" / "nnUNetTrainerDANNUnsupervised__nnUNetPlansTiny_from951__3d_fullres"
    fold = unsupervised / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_best.pth").exists()
    assert run_state(fold / "checkpoint_final.pth")["target_labels"]["labelled"] == []
    semi = results / "Dataset953_UdaGLISSA" / "nnUNetTrainerDANNSemiSupervised__nnUNetPlansTiny_from951__3d_fullres"
    semi_state = run_state(semi / "fold_0" / "checkpoint_final.pth")["target_labels"]
    subset = results / "Dataset952_UdaSSA" / "nnUNetTrainerFineTuneLabelledSubset__nnUNetPlansTiny_from951__3d_fullres"
    subset_state = run_state(subset / "fold_0" / "checkpoint_final.pth")["target_labels"]
    assert len(semi_state["labelled"]) == 1 and semi_state["labelled"] == subset_state["labelled"]
    assert not set(UNLABELLED) & set(semi_state["labelled"])

    # stock nnU-Net segments a new case with the unsupervised model
    images = tmp_path / "predict_in"
    images.mkdir()
    case = splits[0]["val"][0]
    for source in (Path(env["nnUNet_raw"]) / "Dataset952_UdaSSA" / "imagesTr").glob(f"{case}_*.nii.gz"):
        shutil.copy(source, images / source.name)
    out = tmp_path / "predict_out"
    run_cmd(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", "953", "-c", "3d_fullres",
             "-tr", "nnUNetTrainerDANNUnsupervised", "-p", "nnUNetPlansTiny_from951", "-f", "0",
             "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env)
    assert (out / f"{case}.nii.gz").is_file()

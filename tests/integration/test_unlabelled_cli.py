"""The unsupervised DANN through nnU-Net's console scripts, with the target training labels deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import run_cmd
from tests.integration.conftest import DATASET, PLANS, SHORT, SSA, load

pytestmark = pytest.mark.integration
TRAINER = "nnUNetTrainerDANNUnsupervised"


@pytest.fixture
def without_target_labels(tiny, tmp_path):
    """A copy of the tiny dataset's preprocessed folder without the segmentations of fold 0's SSA training cases."""
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(Path(tiny["env"]["nnUNet_preprocessed"]) / DATASET, preprocessed / DATASET, symlinks=True)
    hidden = SSA[1:]  # fold 0 validates SSA[0] and trains on the others
    for case in hidden:
        for path in (preprocessed / DATASET).glob(f"*/{case}_seg.b2nd"):
            path.unlink()
        (preprocessed / DATASET / "gt_segmentations" / f"{case}.nii.gz").unlink()
    env = {**tiny["env"], "nnUNet_preprocessed": str(preprocessed), "nnUNet_results": str(tmp_path / "results")}
    return env, hidden


def test_unsupervised_dann_trains_without_target_labels_and_keeps_no_best_checkpoint(tiny, without_target_labels,
                                                                                     tmp_path):
    env, hidden = without_target_labels
    train = ["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"]
    proc = run_cmd(train, {**env, **SHORT})
    model = Path(env["nnUNet_results"]) / DATASET / f"{TRAINER}__{PLANS}__3d_fullres"
    fold = model / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_best.pth").exists()
    assert (fold / "validation" / "summary.json").is_file()  # the final validation of the (labelled) val case
    assert f"0 of 2 target training cases keep their labels (labelled_target_cases = 0, seed 12345): []; 2 hidden" \
           in proc.stdout
    assert proc.stdout.count("no checkpoint_best.pth") == 1
    assert "No annotated pixels" not in proc.stderr  # random crops of hidden cases are by design, not warned about
    decision = load(fold / "checkpoint_final.pth")["nnunet_transfer"]["run"]["target_labels"]
    assert decision["labelled"] == [] and decision["hidden"] == hidden and decision["setting"] == 0
    assert json.loads((model / "dataset.json").read_text())["labels"] == {"background": 0, "NCR": 1, "ED": 2,
                                                                           "ET": 3, "ignore": 4}

    # a different setting on re-validation is refused, naming what the checkpoint decided
    refused = run_cmd(train + ["--val"], {**env, "nnUNetTransfer_labelled_target_cases": "1"}, check=False)
    assert refused.returncode != 0
    assert "the checkpoint's run decided labelled_target_cases = 0" in refused.stdout + refused.stderr

    # stock nnUNetv2_predict reads the results folder's dataset.json (with its ignore label)
    images = tmp_path / "in"
    images.mkdir()
    for f in (tiny["raw"] / "imagesTr").glob(f"{SSA[0]}_*.nii.gz"):
        (images / f.name).symlink_to(f)
    run_cmd(["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "out"), "-d", "901", "-c", "3d_fullres",
             "-f", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], env)
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{SSA[0]}.nii.gz")))
    assert prediction.shape == (32, 32, 32) and set(np.unique(prediction)) <= {0, 1, 2, 3}

    # its checkpoint fine-tunes (-pretrained_weights) with the head kept: labels compare without the ignore label;
    # here on the original data (labels present), one labelled SSA training case, the other dropped
    tuned = run_cmd(["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", "nnUNetTrainerFineTuneLabelledSubset", "-p",
                     PLANS, "-device", "cpu", "-pretrained_weights", str(fold / "checkpoint_final.pth")],
                    {**tiny["env"], **SHORT, "nnUNet_results": env["nnUNet_results"],
                     "nnUNetTransfer_labelled_target_cases": "1"})
    assert "segmentation head (4 tensors) loaded because the label sets match" in tuned.stdout
    assert "1 of 2 target training cases keep their labels" in tuned.stdout
    assert "fold 0 trains on 6 labelled cases (dropped 1 without labels)" in tuned.stdout
    tuned_fold = Path(env["nnUNet_results"]) / DATASET / f"nnUNetTrainerFineTuneLabelledSubset__{PLANS}__3d_fullres"
    assert (tuned_fold / "fold_0" / "checkpoint_final.pth").is_file()

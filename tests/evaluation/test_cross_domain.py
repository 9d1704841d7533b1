"""predict_folds with a mocked nnU-Net predictor on a real nnU-Net folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.cli import main
from nnunet_transfer.evaluation import cross_domain
from nnunet_transfer.evaluation.cross_domain import predict_folds

CASES = ["BraTS-SSA-00001-000", "BraTS-SSA-00002-000", "BraTS-SSA-00003-000", "BraTS-SSA-00004-000"]
DATASET = "Dataset990_SSAtest"


def label_map(seed):
    rng = np.random.default_rng(seed)
    lab = np.zeros((8, 12, 12), np.uint8)
    c = rng.integers(4, 7)
    lab[2:6, c - 3:c + 3, 3:9] = 2
    lab[3:5, c - 1:c + 2, 5:8] = 3
    lab[3, c, 6] = 1
    return lab


def write(path, array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.5))
    sitk.WriteImage(image, str(path))


@pytest.fixture
def layout(nnunet_env):
    raw = Path(nnunet_env["nnUNet_raw"]) / DATASET
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    dataset_json = {"channel_names": {"0": "T1", "1": "FLAIR"},
                    "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
                    "numTraining": len(CASES), "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    for i, case in enumerate(CASES):
        lab = label_map(i)
        write(raw / "labelsTr" / f"{case}.nii.gz", lab)
        for ch in range(2):
            write(raw / "imagesTr" / f"{case}_{ch:04d}.nii.gz", (lab * 10 + ch).astype(np.float32))
    pre = Path(nnunet_env["nnUNet_preprocessed"]) / DATASET
    pre.mkdir(parents=True)
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": CASES[2:], "val": CASES[:2]}, {"train": CASES[:2], "val": CASES[2:]}]))
    model = Path(nnunet_env["nnUNet_results"]) / "Dataset989_GLI" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (model / "fold_all").mkdir(parents=True)
    (model / "fold_all" / "checkpoint_final.pth").write_bytes(b"not a real checkpoint")
    (model / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    (model / "dataset.json").write_text(json.dumps(dataset_json))
    return raw, pre, model


class FakePredictor:
    """Writes the image's first channel / 10 as label map (perfect, or shifted for one case)."""

    calls = []

    def predict_from_files_sequential(self, list_of_lists, outputs, save_probabilities=False, overwrite=True):
        for files, out in zip(list_of_lists, outputs):
            FakePredictor.calls.append(Path(files[0]).name)
            image = sitk.ReadImage(files[0])
            lab = (sitk.GetArrayFromImage(image) // 10).astype(np.uint8)
            if "00002" in files[0]:
                lab = np.roll(lab, 1, axis=2)
            result = sitk.GetImageFromArray(lab)
            result.CopyInformation(image)
            sitk.WriteImage(result, out + ".nii.gz")


@pytest.fixture
def fake(monkeypatch):
    FakePredictor.calls = []
    created = []

    def make(model_dir, model_folds, checkpoint_name, use_mirroring, device):
        created.append((Path(model_dir), model_folds, use_mirroring))
        return FakePredictor()

    monkeypatch.setattr(cross_domain, "_make_predictor", make)
    return created


def test_predicts_validation_cases_per_fold_and_resumes(layout, fake, tmp_path):
    raw, pre, model = layout
    out = tmp_path / "baseline"
    summaries = predict_folds(model, 990, out_dir=out, use_mirroring=False)
    assert fake == [(model, None, False)]
    assert sorted(summaries) == ["0", "1"]
    for fold, cases in (("0", CASES[:2]), ("1", CASES[2:])):
        validation = out / f"fold_{fold}" / "validation"
        assert sorted(p.name for p in validation.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]
        summary = json.loads((validation / "summary.json").read_text())
        assert summary["case_ids"] == cases
        assert not list(validation.glob(".predict.*"))
    per_case = {e["case_id"]: e["metrics"] for e in summaries["0"]["metric_per_case"]}
    assert per_case[CASES[0]]["WT"]["Dice"] == 1.0 and per_case[CASES[0]]["ET"]["HD95"] == 0.0
    assert per_case[CASES[1]]["WT"]["Dice"] < 1.0
    assert len(FakePredictor.calls) == 4
    # rerun: nothing predicted again; a deleted prediction is redone
    (out / "fold_1" / "validation" / f"{CASES[3]}.nii.gz").unlink()
    predict_folds(model, DATASET, folds=[0, 1], out_dir=out, use_mirroring=False)
    assert len(FakePredictor.calls) == 5 and FakePredictor.calls[-1].startswith(CASES[3])


def test_cli_and_compare_on_the_output(layout, fake, tmp_path, capsys):
    raw, pre, model = layout
    out = tmp_path / "baseline"
    assert main(["predict-folds", str(model), DATASET, "-o", str(out), "-f", "0", "--no-mirroring"]) == 0
    assert "fold 0: 2 cases" in capsys.readouterr().out
    assert fake[-1][2] is False
    assert main(["compare", "-s", f"Baseline={out}", "-s", f"Same={out}", "-r", "Baseline",
                 "-o", str(tmp_path / "cmp")]) == 0
    assert "| Same |" in capsys.readouterr().out


def test_errors(layout, fake, tmp_path):
    raw, pre, model = layout
    with pytest.raises(ValueError, match="Fold 5 does not exist"):
        predict_folds(model, DATASET, folds=[5], out_dir=tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="checkpoint_final.pth"):
        predict_folds(model, DATASET, out_dir=tmp_path / "o", model_folds=[0])
    (raw / "imagesTr" / f"{CASES[1]}_0001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=CASES[1]):
        predict_folds(model, DATASET, folds=[0], out_dir=tmp_path / "o")
    model_json = json.loads((model / "dataset.json").read_text())
    model_json["channel_names"] = {"0": "T1"}
    (model / "dataset.json").write_text(json.dumps(model_json))
    with pytest.raises(ValueError, match="input channels"):
        predict_folds(model, DATASET, out_dir=tmp_path / "o")

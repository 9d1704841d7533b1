"""Finding fold predictions and references as nnU-Net's find_best_configuration does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_transfer.postprocessing.sources import collect_cases, dataset_name, fold_folders, reference_folder
from tests.postprocessing.conftest import DATASET, speck_cases, write_label, write_results_folder


def test_folds_sorted_numerically_and_fold_all_skipped(tmp_path):
    for fold in ("0", "2", "10", "all"):
        (tmp_path / f"fold_{fold}" / "validation").mkdir(parents=True)
    assert list(fold_folders(tmp_path)) == ["0", "2", "10"]
    assert list(fold_folders(tmp_path, [10, 0])) == ["10", "0"]
    with pytest.raises(FileNotFoundError, match="has no fold_3"):
        fold_folders(tmp_path, [3])
    (tmp_path / "fold_4").mkdir()
    with pytest.raises(FileNotFoundError, match="fold_4 has no validation folder"):
        fold_folders(tmp_path, [4])
    assert fold_folders(tmp_path / "fold_0" / "validation") == {}  # flat


def test_references_gt_segmentations_first_then_labels_tr(tmp_path, monkeypatch):
    model, gt = write_results_folder(tmp_path, speck_cases())
    raw = tmp_path / "nnUNet_raw" / DATASET / "labelsTr"
    raw.mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    assert dataset_name(model) == DATASET and reference_folder(model) == gt
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "elsewhere"))
    assert reference_folder(model) == raw
    assert reference_folder(model, labels=gt) == gt
    monkeypatch.delenv("nnUNet_raw")
    with pytest.raises(FileNotFoundError, match=r"No reference segmentations found .*--labels"):
        reference_folder(model)


def test_dataset_from_plans_and_gt_recorded_by_a_summary(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    folder = tmp_path / "ensemble"
    (folder / "fold_0" / "validation").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"dataset_name": "Dataset123_X"}))
    assert dataset_name(folder) == "Dataset123_X"
    (tmp_path / "gt").mkdir()
    summary = {"config": {"gt_dir": str(tmp_path / "gt")}}
    (folder / "fold_0" / "validation" / "summary.json").write_text(json.dumps(summary))
    assert reference_folder(folder, prediction_folders=[folder / "fold_0" / "validation"]) == tmp_path / "gt"


def test_collect_cases_and_its_errors(speck_folder, tmp_path):
    model, gt = speck_folder
    pairs = collect_cases(model)
    assert [(p.fold, p.case_id) for p in pairs][:3] == [("0", "case00"), ("0", "case03"), ("1", "case01")]
    assert all(p.reference_file.parent == gt for p in pairs)
    flat = collect_cases(model / "fold_1" / "validation", labels=gt)
    assert {p.fold for p in flat} == {"all"} and len(flat) == 2
    # the same case in two folds
    write_label(model / "fold_2" / "validation" / "case00.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="Case case00 is predicted in fold 0 and in fold 2"):
        collect_cases(model)
    # a reference missing
    (model / "fold_2" / "validation" / "case00.nii.gz").unlink()
    (gt / "case01.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"Case case01 \(fold 1\): the reference .*case01.nii.gz does not"):
        collect_cases(model)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_cases(tmp_path / "nothing")
    empty = tmp_path / "empty" / "fold_0" / "validation"
    empty.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No predictions ending in '.nii.gz'"):
        collect_cases(tmp_path / "empty", labels=gt)


def test_a_fold_all_model_has_nothing_to_tune_on(tmp_path):
    (tmp_path / "fold_all" / "validation").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds only fold_all.*predict-folds"):
        collect_cases(tmp_path, labels=tmp_path)

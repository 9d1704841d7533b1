"""Fold-by-fold ensembles with nnU-Net's merge_files, on hand-made probabilities."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.cli import main
from nnunet_transfer.evaluation.ensemble import MARKER, ensemble_folds, ensemble_members

LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
FOLDS = {"0": ["a", "b"], "1": ["c"]}
SHAPE = (4, 5, 6)


def write_member(root, seed, labels=LABELS, folds=FOLDS):
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    (root / "plans.json").write_text(json.dumps({"dataset_name": "Dataset990_X", "plans_name": "P",
                                                 "image_reader_writer": "SimpleITKIO", "configurations": {}}))
    probabilities = {}
    for fold, cases in folds.items():
        validation = root / f"fold_{fold}" / "validation"
        validation.mkdir(parents=True)
        for case in cases:
            p = rng.random((4, *SHAPE)).astype(np.float32)
            p /= p.sum(0, keepdims=True)
            np.savez_compressed(validation / f"{case}.npz", probabilities=p)
            props = {"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0),
                                    "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}
            (validation / f"{case}.pkl").write_bytes(pickle.dumps(props))
            probabilities[case] = p
    return probabilities


def test_each_fold_is_the_argmax_of_the_mean_probabilities(tmp_path):
    a = write_member(tmp_path / "A", 0)
    b = write_member(tmp_path / "B", 1)
    out = ensemble_folds([tmp_path / "A", tmp_path / "B"], tmp_path / "ens")
    assert sorted(p.name for p in (out / "fold_0" / "validation").glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz"]
    for case in ("a", "b", "c"):
        fold = "1" if case == "c" else "0"
        image = sitk.ReadImage(str(out / f"fold_{fold}" / "validation" / f"{case}.nii.gz"))
        assert image.GetSpacing() == (1.0, 1.0, 2.0)
        assert np.array_equal(sitk.GetArrayFromImage(image), np.argmax((a[case] + b[case]) / 2, 0))
    assert ensemble_members(out) == [str(tmp_path / "A"), str(tmp_path / "B")]
    assert (out / "plans.json").is_file() and (out / "dataset.json").is_file()
    stamp = (out / MARKER).stat().st_mtime_ns
    assert main(["ensemble-folds", str(tmp_path / "A"), str(tmp_path / "B"), "-o", str(out)]) == 0  # current
    assert (out / MARKER).stat().st_mtime_ns == stamp
    ensemble_folds([tmp_path / "A", tmp_path / "B"], out, folds=[1], overwrite=True)
    assert not (out / "fold_0").exists() and json.loads((out / MARKER).read_text())["folds"] == ["1"]


def test_errors_name_what_is_missing_or_different(tmp_path):
    write_member(tmp_path / "A", 0)
    write_member(tmp_path / "B", 1, folds={"0": ["a"], "1": ["c"]})
    with pytest.raises(ValueError, match=r"fold 0: .* validated different cases .*\['b'\]"):
        ensemble_folds([tmp_path / "A", tmp_path / "B"], tmp_path / "o")
    write_member(tmp_path / "C", 2, labels={"background": 0, "tumour": 1})
    with pytest.raises(ValueError, match="only models of the same label set"):
        ensemble_folds([tmp_path / "A", tmp_path / "C"], tmp_path / "o")
    write_member(tmp_path / "D", 3)
    for npz in (tmp_path / "D").rglob("*.npz"):
        npz.unlink()
    with pytest.raises(FileNotFoundError, match=r"no .npz probabilities; .*--val --npz"):
        ensemble_folds([tmp_path / "A", tmp_path / "D"], tmp_path / "o")
    with pytest.raises(ValueError, match="at least two members"):
        ensemble_folds([tmp_path / "A"], tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="not an nnU-Net results folder: dataset.json is missing"):
        ensemble_folds([tmp_path / "A", tmp_path / "A" / "fold_0"], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_members_whose_labels_differ_only_by_the_ignore_label_are_ensembled(tmp_path):
    a = write_member(tmp_path / "A", 0)
    b = write_member(tmp_path / "B", 1, labels={**LABELS, "ignore": 4})  # trained with unlabelled cases
    out = ensemble_folds([tmp_path / "A", tmp_path / "B"], tmp_path / "ens")
    image = sitk.ReadImage(str(out / "fold_0" / "validation" / "a.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), np.argmax((a["a"] + b["a"]) / 2, 0))

"""Rules applied to flat and fold-structured folders: geometry kept, staged output, marker, reruns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.postprocessing.folders import MARKER, apply_to_folder, is_current
from nnunet_transfer.postprocessing.rules import Rules
from tests.postprocessing.conftest import read_label, speck, tumour, write_label


def test_flat_folder_keeps_geometry_and_pixel_type(tmp_path):
    seg = tumour()
    speck(seg, (26, 2, 2), 2)
    write_label(tmp_path / "in" / "a.nii.gz", seg, spacing_xyz=(1.0, 1.0, 2.0), origin=(3.0, -2.0, 1.0))
    (tmp_path / "in" / "dataset.json").write_text("{}")
    out = apply_to_folder(tmp_path / "in", tmp_path / "out", Rules({"WT": 20}))
    image = sitk.ReadImage(str(out / "a.nii.gz"))
    assert image.GetSpacing() == (1.0, 1.0, 2.0) and image.GetOrigin() == (3.0, -2.0, 1.0)
    assert sitk.GetArrayFromImage(image).dtype == np.uint8
    assert np.array_equal(read_label(out / "a.nii.gz"), tumour())  # 16 mm³ speck removed
    assert (out / "dataset.json").is_file()
    marker = json.loads((out / MARKER).read_text())
    assert marker["cases"] == {".": ["a"]} and marker["source"] == str(tmp_path / "in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging folder left


def test_fold_structure_is_mirrored_and_reruns_are_cheap_or_redone(speck_folder):
    model, _ = speck_folder
    out = model / "brats_postprocessed"
    apply_to_folder(model, out, Rules({"WT": 30}))
    assert sorted(p.name for p in out.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]
    assert sorted(p.name for p in (out / "fold_1" / "validation").iterdir()) == ["case01.nii.gz", "case04.nii.gz"]
    assert not read_label(out / "fold_1" / "validation" / "case01.nii.gz")[26:, :5, :5].any()
    assert is_current(out, Rules({"WT": 30}), model) and not is_current(out, Rules({"WT": 5}), model)
    stamp = (out / "fold_0" / "validation" / "case00.nii.gz").stat().st_mtime_ns
    (out / "fold_0" / "validation" / "summary_brats.json").write_text("{}")
    apply_to_folder(model, out, Rules({"WT": 30}))  # current: nothing redone
    assert (out / "fold_0" / "validation" / "case00.nii.gz").stat().st_mtime_ns == stamp
    apply_to_folder(model, out, Rules({"WT": 5}), folds=[0])  # other rules: redone, stale files gone
    assert not (out / "fold_0" / "validation" / "summary_brats.json").exists()
    assert read_label(out / "fold_0" / "validation" / "case00.nii.gz")[26:, :5, :5].any()
    assert not (out / "fold_1").exists()
    assert json.loads((out / MARKER).read_text())["rules"]["min_component_mm3"]["WT"] == 5


def test_errors_name_the_case_and_file(tmp_path, speck_folder):
    model, _ = speck_folder
    with pytest.raises(ValueError, match="would overwrite the predictions"):
        apply_to_folder(model, model, Rules())
    with pytest.raises(ValueError, match="would overwrite the predictions"):
        apply_to_folder(model, model / "fold_0" / "validation", Rules())
    bad = tmp_path / "bad"
    write_label(bad / "b1.nii.gz", np.full((4, 4, 4), 7, np.uint8))
    with pytest.raises(ValueError, match=r"Case b1: .*b1.nii.gz: the prediction holds label\(s\) \[7\]"):
        apply_to_folder(bad, tmp_path / "bad_out", Rules())
    assert not (tmp_path / "bad_out").exists() and sorted(p.name for p in tmp_path.iterdir()).count("bad") == 1
    (bad / "b1.nii.gz").write_text("not an image")
    with pytest.raises(ValueError, match="Case b1: cannot read"):
        apply_to_folder(bad, tmp_path / "bad_out", Rules())
    with pytest.raises(FileNotFoundError, match="No predictions ending"):
        apply_to_folder(tmp_path / "bad", tmp_path / "o", Rules(), ending=".mha")

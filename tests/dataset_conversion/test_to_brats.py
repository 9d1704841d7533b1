"""to_brats: labels back to the BraTS conventions, round trip through convert."""

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.dataset_conversion import convert_brats, to_brats
from tests.dataset_conversion.conftest import label_array, make_brats


def arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_round_trip_2021(tmp_path, nnunet_env):
    ids = ["BraTS2021_00001", "BraTS2021_00002"]
    source = make_brats(tmp_path / "b21", ids, layout="2021")
    out = convert_brats(source, 21, "B21")
    (out / "labelsTr" / "plans.json").write_text("{}")  # nnU-Net leaves json files next to predictions
    written = to_brats(out / "labelsTr", tmp_path / "submission", style="2021")
    assert [p.name for p in written] == [f"{i}.nii.gz" for i in ids]
    for seed, case in enumerate(ids):
        result = sitk.ReadImage(str(tmp_path / "submission" / f"{case}.nii.gz"))
        original = sitk.ReadImage(str(source / case / f"{case}_seg.nii.gz"))
        assert result.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result), label_array(seed, et_value=4))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(original))
        assert np.allclose(result.GetOrigin(), original.GetOrigin(), atol=1e-4)


def test_style_2023_keeps_labels_and_rerun_replaces(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 1:4] = [1, 2, 3]
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(pred / "BraTS-SSA-00002-000.nii.gz"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.nii.gz").write_bytes(b"old")
    to_brats(pred, out)
    assert sorted(p.name for p in out.iterdir()) == ["BraTS-SSA-00002-000.nii.gz"]
    np.testing.assert_array_equal(arr(out / "BraTS-SSA-00002-000.nii.gz"), labels)
    np.testing.assert_array_equal(arr(to_brats(pred, out, style="2021")[0]), np.where(labels == 3, 4, labels))


def test_errors(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    with pytest.raises(FileNotFoundError, match="no .nii.gz or .nii prediction files"):
        to_brats(pred, tmp_path / "out")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), 7, np.uint8)), str(pred / "c.nii.gz"))
    with pytest.raises(ValueError, match=r"c.nii.gz: unexpected label value\(s\) 7"):
        to_brats(pred, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown BraTS style"):
        to_brats(pred, tmp_path / "out", style="2019")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))

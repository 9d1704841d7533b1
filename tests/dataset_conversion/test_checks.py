"""Per-file checks: labels, NaN, geometry, truncation, raw voxel reading."""

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.dataset_conversion.checks import (Header, convert_labels, finite_problem, geometry_problem,
                                                        read_header, read_voxels, truncation_problem)

BRATS21 = {0: 0, 1: 1, 2: 2, 4: 3}


def test_convert_labels_maps_and_types():
    labels, problem = convert_labels(np.array([[0.0, 1.0], [2.0, 4.0]]), BRATS21)
    assert problem is None and labels.dtype == np.uint8 and labels.tolist() == [[0, 1], [2, 3]]
    assert convert_labels(np.array([0, 3], dtype=np.int16), BRATS21)[1] == "unexpected label value(s) 3 (expected 0, 1, 2, 4)"
    assert "unexpected label value(s) -1" in convert_labels(np.array([0, -1]), BRATS21)[1]
    assert "300" in convert_labels(np.array([0, 300]), BRATS21)[1]
    assert "NaN" in convert_labels(np.array([0, np.nan]), BRATS21)[1]


def test_finite_problem():
    assert finite_problem(np.array([1, 2], dtype=np.int16)) is None
    assert finite_problem(np.array([1.0, np.inf, np.nan, np.nan])) == "2 NaN and 1 infinite voxel(s)"


def test_geometry_problem_uses_tolerances():
    ref = Header((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), sitk.sitkInt16, 1)
    near = Header((4, 5, 6), (1.00001, 1.0, 1.0), (0.0001, 0.0, 0.0), ref.direction, sitk.sitkFloat64, 1)
    assert geometry_problem(ref, near, "t1n") is None and not ref.same_geometry(near)
    far = Header((4, 5, 6), (1.0, 1.0, 1.0), (0.5, 0.0, 0.0), ref.direction, sitk.sitkInt16, 1)
    assert "origin" in geometry_problem(ref, far, "t1n")
    assert geometry_problem(ref, Header((4, 5, 7), *(ref.spacing, ref.origin, ref.direction, 2, 1)), "x.nii") == \
        "shape 4x5x7 differs from x.nii's 4x5x6"


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_read_voxels_keeps_nan_and_detects_truncation(tmp_path, ending):
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    array[1, 2, 3] = np.nan
    path = tmp_path / f"x{ending}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=ending == ".nii.gz")
    voxels = read_voxels(path)
    assert voxels.shape == (3, 4, 5) and np.isnan(voxels[1, 2, 3])
    np.testing.assert_array_equal(np.nan_to_num(voxels), np.nan_to_num(array))
    assert truncation_problem(path) is None and read_header(path)[1] is None
    path.write_bytes(path.read_bytes()[:-30])
    assert "truncated" in truncation_problem(path)
    header, problem = read_header(path)
    assert header is None and "truncated" in problem


def test_unreadable_file(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(b"not an image")
    header, problem = read_header(path)
    assert header is None and problem.startswith("unreadable")

"""Finding the cases to segment: case folders and folders of them, every layout, each case once."""

from __future__ import annotations

import pytest

from nnunet_transfer.inference.cases import find_cases
from tests.inference.conftest import make_case

ALL = ["t1n", "t1c", "t2w", "t2f"]


def test_single_case_folders_of_both_layouts_and_endings(tmp_path):
    a = make_case(tmp_path / "a", "BraTS-SSA-00001-000", labeled=False)
    b = make_case(tmp_path / "b", "BraTS2021_00007", layout="2021", ending=".nii", labeled=False)
    make_case(tmp_path / "a", "BraTS-SSA-00002-000")  # a sibling: not segmented when only `a` is given
    cases = find_cases([a, b], ALL)
    assert [c.case_id for c in cases] == ["BraTS-SSA-00001-000", "BraTS2021_00007"]
    assert cases[1].images["t1c"].name == "BraTS2021_00007_t1ce.nii" and not cases[1].missing


def test_folder_of_cases_one_level_down_and_only_the_model_modalities(tmp_path):
    root = tmp_path / "download"
    make_case(root / "wrapped", "BraTS-GLI-00003-000", skip=["t1n"])  # no T1: fine for a 3-channel model
    make_case(root / "wrapped", "BraTS-GLI-00004-000")
    (root / "README.txt").write_text("x")
    cases = find_cases(root, ["t2f", "t1c", "t2w"])
    assert [c.case_id for c in cases] == ["BraTS-GLI-00003-000", "BraTS-GLI-00004-000"]
    assert all(not c.missing and list(c.images) == ["t2f", "t1c", "t2w"] for c in cases)
    assert find_cases(root, ALL)[0].missing == ["BraTS-GLI-00003-000-t1n.nii.gz"]  # a defect for 4 channels


def test_the_same_case_twice_is_segmented_once_but_two_folders_with_one_id_are_refused(tmp_path):
    case = make_case(tmp_path / "x", "BraTS-GLI-00005-000")
    assert len(find_cases([case, tmp_path / "x"], ALL)) == 1
    other = make_case(tmp_path / "y", "BraTS-GLI-00005-000")
    with pytest.raises(ValueError, match="BraTS-GLI-00005-000 is given twice"):
        find_cases([case, other], ALL)


def test_paths_that_hold_no_case_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_cases([tmp_path / "nope"], ALL)
    (tmp_path / "patients" / "anon01").mkdir(parents=True)
    with pytest.raises(ValueError, match="neither a BraTS case folder nor a folder of case folders"):
        find_cases([tmp_path / "patients"], ALL)

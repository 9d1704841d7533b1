"""Layout recognition and modality names."""

import pytest

from nnunet_transfer.dataset_conversion.layouts import canonical_modalities, discover
from tests.dataset_conversion.conftest import make_brats, make_case


def test_brats2023_layout_with_stray_files(tmp_path):
    source = make_brats(tmp_path / "dl", ["BraTS-PED-00001-000", "BraTS-PED-00003-000"])
    (source / "notes").mkdir()
    (source / "BraTS-PED-00001-000" / "._BraTS-PED-00001-000-t1n.nii.gz").write_bytes(b"mac junk")
    layout, cases = discover(source, ["t1n", "t2f"])
    assert layout.name == "brats2023"
    assert [c.case_id for c in cases] == ["BraTS-PED-00001-000", "BraTS-PED-00003-000"]
    assert cases[0].images["t2f"].name == "BraTS-PED-00001-000-t2f.nii.gz" and set(cases[0].images) == {"t1n", "t2f"}
    assert cases[0].seg.name == "BraTS-PED-00001-000-seg.nii.gz" and cases[0].missing == []


def test_brats2021_layout_nested_one_level_and_missing_files(tmp_path):
    wrapper = tmp_path / "download"
    make_case(wrapper / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData", "BraTS2021_00000", layout="2021", ending=".nii")
    make_case(wrapper / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData", "BraTS2021_00005", layout="2021",
              skip=["t1c"], labeled=False)
    layout, cases = discover(wrapper, ["t1n", "t1c", "t2w", "t2f"])
    assert layout.name == "brats2021" and layout.label_map == {0: 0, 1: 1, 2: 2, 4: 3}
    assert cases[0].images["t1c"].name == "BraTS2021_00000_t1ce.nii" and cases[0].labeled
    assert cases[1].missing == ["BraTS2021_00005_t1ce.nii.gz"] and not cases[1].labeled


def test_mixed_or_absent_layouts_are_refused(tmp_path):
    make_case(tmp_path / "mixed", "BraTS2021_00000", layout="2021")
    make_case(tmp_path / "mixed", "BraTS-GLI-00000-000")
    with pytest.raises(ValueError, match="mixes BraTS layouts"):
        discover(tmp_path / "mixed", ["t1n"])
    (tmp_path / "other" / "case1").mkdir(parents=True)
    with pytest.raises(ValueError, match="no BraTS case folders"):
        discover(tmp_path / "other", ["t1n"])


def test_canonical_modalities():
    assert canonical_modalities(None) == ["t1n", "t1c", "t2w", "t2f"]
    assert canonical_modalities(["FLAIR", "t1gd", "t2"]) == ["t2f", "t1c", "t2w"]
    with pytest.raises(ValueError, match="given twice"):
        canonical_modalities(["t1c", "t1ce"])
    with pytest.raises(ValueError, match="at least one"):
        canonical_modalities([])

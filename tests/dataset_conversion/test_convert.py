"""convert_brats: channels, labels, geometry, dataset.json, domains, defects, idempotence."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.dataset_conversion import DefectiveCasesError, clip_to_percentiles, convert_brats
from tests.dataset_conversion.conftest import (DIRECTION, MODALITY_BASE, ORIGIN, SHAPE, SPACING, gli_ids,
                                               label_array, make_brats, make_case, ssa_ids, write_image)


def read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def test_channels_labels_geometry_and_dataset_json(gli_folder, nnunet_env):
    out = convert_brats(gli_folder, 231, "BraTS23GLI")
    assert out.name == "Dataset231_BraTS23GLI" and str(out.parent) == nnunet_env["nnUNet_raw"]
    cases = gli_ids(3)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    assert not (out / "imagesTs").exists()
    for i, case in enumerate(cases):
        for channel, modality in enumerate(["t1n", "t1c", "t2w", "t2f"]):
            image, data = read(out / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
            assert data.dtype == np.int16 and MODALITY_BASE[modality] <= data.min() and data.max() < MODALITY_BASE[modality] + 500
        label, values = read(out / "labelsTr" / f"{case}.nii.gz")
        assert label.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(values, label_array(i).astype(np.uint8))
        assert set(np.unique(values)) == {0, 1, 2, 3}
        # labels carry the image's geometry exactly (the source seg was shifted by 1e-5)
        assert label.GetOrigin() == image.GetOrigin() == ORIGIN
        assert np.allclose(label.GetSpacing(), SPACING) and label.GetDirection() == DIRECTION
        assert values.shape == SHAPE
    data = json.loads((out / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}
    assert data["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    assert data["numTraining"] == 3 and data["file_ending"] == ".nii.gz"
    assert data["domains"] == {c: "GLI" for c in cases}
    assert "regions_class_order" not in data
    assert data["conversion"]["layout"] == "brats2023" and data["conversion"]["skipped"] == {}
    assert "intensity_clipping" not in data


def test_brats2021_layout_labels_4_become_3(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "BraTS2021", ["BraTS2021_00000", "BraTS2021_00002"], layout="2021")
    out = convert_brats(source, 21, "BraTS21")
    _, values = read(out / "labelsTr" / "BraTS2021_00002.nii.gz")
    np.testing.assert_array_equal(values, label_array(1, et_value=3).astype(np.uint8))
    _, flair = read(out / "imagesTr" / "BraTS2021_00000_0003.nii.gz")
    assert flair.min() >= MODALITY_BASE["t2f"]
    data = json.loads((out / "dataset.json").read_text())
    assert data["domains"] == {"BraTS2021_00000": "GLI", "BraTS2021_00002": "GLI"}
    assert data["conversion"]["layout"] == "brats2021"


def test_modalities_subset_regions_and_domain_override(ssa_folder, nnunet_env):
    out = convert_brats(ssa_folder, 232, "SSA3", modalities=["t2f", "t1ce", "t2w"], regions=True, domain="LowField")
    case = ssa_ids(1)[0]
    files = sorted(p.name for p in (out / "imagesTr").iterdir() if p.name.startswith(case))
    assert files == [f"{case}_0000.nii.gz", f"{case}_0001.nii.gz", f"{case}_0002.nii.gz"]
    for channel, modality in enumerate(["t2f", "t1c", "t2w"]):
        _, data = read(out / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
        assert MODALITY_BASE[modality] <= data.min() < MODALITY_BASE[modality] + 500
    data = json.loads((out / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "FLAIR", "1": "T1Gd", "2": "T2"}
    assert data["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
    assert data["regions_class_order"] == [2, 1, 3]
    assert set(data["domains"].values()) == {"LowField"}


def test_unlabeled_cases_go_to_imagesTs_and_nii_is_kept(tmp_path, nnunet_env):
    source = tmp_path / "mixed"
    make_case(source, "BraTS-MEN-00001-000", ending=".nii")
    make_case(source, "BraTS-MEN-00002-000", ending=".nii", labeled=False, seed=1)
    out = convert_brats(source, 5, "MEN")
    data = json.loads((out / "dataset.json").read_text())
    assert data["file_ending"] == ".nii" and data["numTraining"] == 1
    assert (out / "imagesTs" / "BraTS-MEN-00002-000_0003.nii").is_file()
    assert not (out / "labelsTr" / "BraTS-MEN-00002-000.nii").exists()
    assert data["domains"] == {"BraTS-MEN-00001-000": "MEN", "BraTS-MEN-00002-000": "MEN"}


def test_mixed_endings_are_rewritten_to_nii_gz(tmp_path, nnunet_env):
    source = tmp_path / "endings"
    make_case(source, "BraTS-MET-00001-000", ending=".nii")
    make_case(source, "BraTS-MET-00002-000", seed=1)
    out = convert_brats(source, 6, "MET")
    assert json.loads((out / "dataset.json").read_text())["file_ending"] == ".nii.gz"
    image, data = read(out / "imagesTr" / "BraTS-MET-00001-000_0001.nii.gz")
    assert data.min() >= MODALITY_BASE["t1c"] and image.GetOrigin() == ORIGIN


def test_link_symlinks_images_that_need_no_rewrite(gli_folder, nnunet_env):
    out = convert_brats(gli_folder, 7, "Linked", link=True)
    image = out / "imagesTr" / "BraTS-GLI-00000-000_0000.nii.gz"
    assert image.is_symlink()
    assert os.path.realpath(image) == str((gli_folder / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz").resolve())
    assert not (out / "labelsTr" / "BraTS-GLI-00000-000.nii.gz").is_symlink()  # float64 labels are rewritten


def test_clip_percentiles_clips_every_image_of_training_and_test_cases(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "ssa", ssa_ids(2))
    make_case(source, "BraTS-SSA-00050-000", labeled=False, seed=50)
    # a skull-stripped-like FLAIR: zero outside the brain, one hot voxel inside
    hot = np.zeros(SHAPE, dtype=np.int16)
    hot[2:8, 3:11, 2:10] = MODALITY_BASE["t2f"] + np.random.default_rng(3).integers(0, 500, (6, 8, 8))
    hot[4, 6, 5] = 32000
    write_image(hot, source / "BraTS-SSA-00000-000" / "BraTS-SSA-00000-000-t2f.nii.gz")
    plain = convert_brats(source, 240, "SSAplain", modalities=["t2f", "t1c", "t2w"])
    out = convert_brats(source, 241, "SSAclip", modalities=["t2f", "t1c", "t2w"], clip_percentiles=(0.5, 99.5))
    suffixes = ["t2f", "t1c", "t2w"]
    for subset, case in [("imagesTr", "BraTS-SSA-00000-000"), ("imagesTr", "BraTS-SSA-00001-000"),
                         ("imagesTs", "BraTS-SSA-00050-000")]:
        for channel, suffix in enumerate(suffixes):
            image, data = read(out / subset / f"{case}_{channel:04d}.nii.gz")
            _, original = read(source / case / f"{case}-{suffix}.nii.gz")
            assert image.GetPixelID() == sitk.sitkFloat32
            assert image.GetOrigin() == ORIGIN and image.GetDirection() == DIRECTION
            assert np.allclose(image.GetSpacing(), SPACING)
            np.testing.assert_array_equal(data, clip_to_percentiles(original, None, 0.5, 99.5))
            assert data.max() < original.max()  # every image has its own top 0.5 % clipped
    _, flair = read(out / "imagesTr" / "BraTS-SSA-00000-000_0000.nii.gz")
    assert flair[4, 6, 5] < MODALITY_BASE["t2f"] + 500 and np.all(flair[hot == 0] == 0)
    for case in ("BraTS-SSA-00000-000", "BraTS-SSA-00001-000"):  # labels are not touched
        assert read(out / "labelsTr" / f"{case}.nii.gz")[1].tolist() == \
            read(plain / "labelsTr" / f"{case}.nii.gz")[1].tolist()
    data = json.loads((out / "dataset.json").read_text())
    assert data["intensity_clipping"] == {"percentiles": [0.5, 99.5], "within": "nonzero"}
    assert data["numTraining"] == 2 and data["channel_names"] == {"0": "FLAIR", "1": "T1Gd", "2": "T2"}
    # idempotent
    before = (out / "imagesTs" / "BraTS-SSA-00050-000_0001.nii.gz").read_bytes()
    again = convert_brats(source, 241, "SSAclip", modalities=["t2f", "t1c", "t2w"], clip_percentiles=(0.5, 99.5))
    assert again == out
    assert (out / "imagesTs" / "BraTS-SSA-00050-000_0001.nii.gz").read_bytes() == before


def test_clip_percentiles_refuses_link_and_bad_percentiles(gli_folder, nnunet_env):
    with pytest.raises(ValueError, match="--link.*cannot be combined with.*--clip-percentiles"):
        convert_brats(gli_folder, 242, "X", link=True, clip_percentiles=(0.5, 99.5))
    with pytest.raises(ValueError, match="0 <= LOW < HIGH <= 100"):
        convert_brats(gli_folder, 242, "X", clip_percentiles=(99.5, 0.5))
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []


def test_clip_percentiles_reports_nan_as_a_defect(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "src", ssa_ids(1))
    make_case(source, "BraTS-SSA-00007-000", seed=7, float_images=True)
    array = np.full(SHAPE, 100.0, dtype=np.float32)
    array[0, 0, 0] = np.nan
    write_image(array, source / "BraTS-SSA-00007-000" / "BraTS-SSA-00007-000-t1n.nii.gz")
    with pytest.raises(DefectiveCasesError, match="BraTS-SSA-00007-000-t1n.nii.gz: 1 NaN"):
        convert_brats(source, 243, "Y", clip_percentiles=(0.5, 99.5))


@pytest.mark.parametrize("defect, file_part, message", [
    (dict(skip=["t1c"]), "t1c", "missing"),
    (dict(shapes={"t2w": (10, 14, 13)}), "t2w", "shape 13x14x10 differs from"),
    (dict(seg=np.full((10, 14, 12), 5.0)), "seg", "unexpected label value(s) 5"),
    (dict(seg=np.full((10, 14, 12), 1.5)), "seg", "non-integer label value(s) 1.5"),
])
def test_defective_case_stops_with_clear_error_and_leaves_nothing(tmp_path, nnunet_env, defect, file_part, message):
    source = make_brats(tmp_path / "src", ssa_ids(2))
    bad = "BraTS-SSA-00009-000"
    make_case(source, bad, seed=9, **defect)
    with pytest.raises(DefectiveCasesError) as info:
        convert_brats(source, 232, "BraTS23SSA")
    text = str(info.value)
    assert bad in text and f"{bad}-{file_part}" in text and message in text
    assert [d.case_id for d in info.value.defects] == [bad]
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []


def test_nan_in_float_image_and_truncated_file_are_defects(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "src", ssa_ids(1))
    make_case(source, "BraTS-SSA-00007-000", seed=7, float_images=True)
    nan_file = source / "BraTS-SSA-00007-000" / "BraTS-SSA-00007-000-t2f.nii.gz"
    image = sitk.ReadImage(str(nan_file))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(nan_file), useCompression=True)
    make_case(source, "BraTS-SSA-00008-000", seed=8)
    cut = source / "BraTS-SSA-00008-000" / "BraTS-SSA-00008-000-t1n.nii.gz"
    cut.write_bytes(cut.read_bytes()[:-200])
    with pytest.raises(DefectiveCasesError) as info:
        convert_brats(source, 3, "Bad")
    assert "BraTS-SSA-00008-000-t1n.nii.gz: truncated or corrupt" in str(info.value)
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []
    out = convert_brats(source, 3, "Bad", skip_bad=True)
    skipped = json.loads((out / "dataset.json").read_text())["conversion"]["skipped"]
    assert sorted(skipped) == ["BraTS-SSA-00007-000", "BraTS-SSA-00008-000"]
    assert "1 NaN" in skipped["BraTS-SSA-00007-000"][0]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["BraTS-SSA-00000-000.nii.gz"]


@pytest.mark.parametrize("float_images", [False, True])
def test_blank_modality_is_a_defect_naming_case_and_file(tmp_path, nnunet_env, float_images):
    source = make_brats(tmp_path / "src", ssa_ids(2))
    bad = "BraTS-SSA-00009-000"
    make_case(source, bad, seed=9, float_images=float_images)
    blank = source / bad / f"{bad}-t2w.nii.gz"
    write_image(np.zeros(SHAPE, np.float32 if float_images else np.int16), blank)
    with pytest.raises(DefectiveCasesError) as info:
        convert_brats(source, 232, "BraTS23SSA")
    assert f"{bad}: {bad}-t2w.nii.gz: blank image: all {int(np.prod(SHAPE))} voxels are 0" in str(info.value)
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []
    out = convert_brats(source, 232, "BraTS23SSA", skip_bad=True)
    skipped = json.loads((out / "dataset.json").read_text())["conversion"]["skipped"]
    assert list(skipped) == [bad] and "blank image" in skipped[bad][0]


def test_scaled_label_file_reports_the_values_it_holds(tmp_path, nnunet_env):
    """A uint8 label file with scl_inter -1 holds -1 (stored 0): report -1, not 255."""
    source = make_brats(tmp_path / "src", ssa_ids(1), ending=".nii")
    bad = "BraTS-SSA-00009-000"
    make_case(source, bad, seed=9, ending=".nii")
    seg = source / bad / f"{bad}-seg.nii"
    write_image(label_array(9).astype(np.uint8) + 1, seg)  # stored values 1..4 read as 0..3, and 0 as -1
    raw = bytearray(seg.read_bytes())
    raw[112:120] = np.array([1.0, -1.0], "<f4").tobytes()  # scl_slope 1, scl_inter -1 (little-endian NIfTI-1)
    seg.write_bytes(bytes(raw))
    assert convert_brats(source, 232, "Fine")  # every value of the scaled file is a label
    data = bytearray(seg.read_bytes())
    offset = int(np.frombuffer(bytes(data[108:112]), "<f4")[0])
    data[offset] = 0  # one voxel now reads -1
    seg.write_bytes(bytes(data))
    with pytest.raises(DefectiveCasesError) as info:
        convert_brats(source, 233, "Bad")
    assert f"{bad}-seg.nii: unexpected label value(s) -1 (expected 0, 1, 2, 3)" in str(info.value)


def test_skip_bad_converts_the_rest(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "src", ssa_ids(3))
    make_case(source, "BraTS-SSA-00010-000", seed=10, skip=["t2f"])
    out = convert_brats(source, 232, "BraTS23SSA", skip_bad=True)
    data = json.loads((out / "dataset.json").read_text())
    assert data["numTraining"] == 3 and "BraTS-SSA-00010-000" not in data["domains"]
    assert data["conversion"]["skipped"] == {"BraTS-SSA-00010-000": ["BraTS-SSA-00010-000-t2f.nii.gz: missing"]}
    only_bad = tmp_path / "only_bad"
    make_case(only_bad, "BraTS-SSA-00011-000", seed=11, skip=["t1n"])
    with pytest.raises(DefectiveCasesError, match="No case was left to convert"):
        convert_brats(only_bad, 239, "OnlyBad", skip_bad=True)
    assert not list(out.parent.glob("*239*"))


def test_rerun_is_idempotent_and_id_clash_is_refused(ssa_folder, nnunet_env):
    out = convert_brats(ssa_folder, 232, "BraTS23SSA")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "imagesTr" / "stray.nii.gz").write_bytes(b"left over")
    assert convert_brats(ssa_folder, 232, "BraTS23SSA") == out
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(nnunet_env["nnUNet_raw"])) == ["Dataset232_BraTS23SSA"]
    with pytest.raises(FileExistsError, match="232 is already used by Dataset232_BraTS23SSA"):
        convert_brats(ssa_folder, 232, "OtherName")


def test_user_errors(tmp_path, nnunet_env):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_brats(tmp_path / "nowhere", 1, "X")
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(ValueError, match="no BraTS case folders"):
        convert_brats(tmp_path / "empty", 1, "X")
    with pytest.raises(ValueError, match="unknown modality 'dwi'"):
        convert_brats(tmp_path / "empty", 1, "X", modalities=["t1n", "dwi"])
    with pytest.raises(ValueError, match="dataset name"):
        convert_brats(tmp_path / "empty", 1, "bad name")


def test_two_workers_give_the_same_dataset(tmp_path, nnunet_env):
    source = make_brats(tmp_path / "src", gli_ids(4))
    one = convert_brats(source, 11, "One")
    two = convert_brats(source, 12, "Two", num_processes=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.nii.gz")) and len(files) == 20
    for rel in files:
        np.testing.assert_array_equal(read(one / rel)[1], read(two / rel)[1])


@pytest.mark.integration
def test_converted_dataset_passes_nnunet_integrity_check(gli_folder, ssa_folder, nnunet_env, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunet_transfer.dataset_conversion import combine_datasets

    ssa = convert_brats(ssa_folder, 232, "BraTS23SSA")
    convert_brats(gli_folder, 231, "BraTS23GLI", regions=True, link=True)
    convert_brats(ssa_folder, 234, "BraTS23SSAregions", regions=True)
    combined = combine_datasets([231, 234], 233, "GLI_SSA")
    for out in (ssa, combined):
        verify_dataset_integrity(str(out), num_processes=1)
    printed = capsys.readouterr().out
    assert "Error" not in printed and "WARNING" not in printed


UNLABELLED = ["BraTS-SSA-00050-000", "BraTS-SSA-00051-000", "BraTS-SSA-00052-000"]


@pytest.fixture
def semi_folder(tmp_path):
    """Two annotated SSA cases and three without a segmentation."""
    source = make_brats(tmp_path / "semi", ssa_ids(2))
    for i, case in enumerate(UNLABELLED):
        make_case(source, case, labeled=False, seed=50 + i)
    return source


@pytest.mark.parametrize("regions", [False, True])
def test_unlabelled_cases_become_training_cases_with_ignore_only_labels(semi_folder, nnunet_env, regions):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    plain = convert_brats(semi_folder, 240, "SSAplain", regions=regions)
    out = convert_brats(semi_folder, 241, "SSAsemi", regions=regions, unlabelled=True)
    assert not (out / "imagesTs").exists()
    training = sorted(ssa_ids(2) + UNLABELLED)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in training]
    assert len(list((out / "imagesTr").iterdir())) == 4 * len(training)
    for case in UNLABELLED:
        image, _ = read(out / "imagesTr" / f"{case}_0000.nii.gz")
        label, values = read(out / "labelsTr" / f"{case}.nii.gz")
        assert label.GetPixelID() == sitk.sitkUInt8 and values.shape == SHAPE and np.all(values == 4)
        assert label.GetOrigin() == image.GetOrigin() == ORIGIN and label.GetDirection() == DIRECTION
        assert label.GetSpacing() == image.GetSpacing()
        for channel in range(4):  # the images are the same files as in the plain conversion's imagesTs
            assert (out / "imagesTr" / f"{case}_{channel:04d}.nii.gz").read_bytes() == \
                (plain / "imagesTs" / f"{case}_{channel:04d}.nii.gz").read_bytes()
    for case in ssa_ids(2):  # annotated cases are untouched
        assert read(out / "labelsTr" / f"{case}.nii.gz")[1].tolist() == read(plain / "labelsTr" / f"{case}.nii.gz")[1].tolist()
    data, before = (json.loads((d / "dataset.json").read_text()) for d in (out, plain))
    assert data["labels"] == {**before["labels"], "ignore": 4} and "ignore" not in before["labels"]
    assert data["unlabelled"] == UNLABELLED and "unlabelled" not in before
    assert data["numTraining"] == 5 and before["numTraining"] == 2
    assert data["domains"] == before["domains"]
    manager = LabelManager(data["labels"], regions_class_order=data.get("regions_class_order"))
    assert manager.ignore_label == 4 and manager.has_regions == regions


def test_unlabelled_list_picks_cases_and_leaves_the_rest_in_imagesTs(semi_folder, tmp_path, nnunet_env):
    listing = tmp_path / "adapt.txt"
    listing.write_text(f"# cases to adapt on\n{UNLABELLED[2]}\n\n  {UNLABELLED[0]}  # first scanner\n{UNLABELLED[0]}\n")
    out = convert_brats(semi_folder, 242, "SSAlist", unlabelled_list=listing)
    data = json.loads((out / "dataset.json").read_text())
    assert data["unlabelled"] == [UNLABELLED[0], UNLABELLED[2]] and data["numTraining"] == 4
    assert np.all(read(out / "labelsTr" / f"{UNLABELLED[2]}.nii.gz")[1] == 4)
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [f"{UNLABELLED[1]}_{c:04d}.nii.gz" for c in range(4)]
    assert not (out / "labelsTr" / f"{UNLABELLED[1]}.nii.gz").exists()


def test_unlabelled_list_errors_name_the_case_and_the_file(semi_folder, tmp_path, nnunet_env):
    listing = tmp_path / "adapt.txt"
    listing.write_text(f"{UNLABELLED[0]}\nBraTS-SSA-00999-000\nBraTS-SSA-00001-000\n")
    with pytest.raises(ValueError) as info:
        convert_brats(semi_folder, 243, "X", unlabelled_list=listing)
    text = str(info.value)
    assert str(listing) in text and f"not a case of {semi_folder}: BraTS-SSA-00999-000" in text
    assert "has a segmentation: BraTS-SSA-00001-000 (BraTS-SSA-00001-000-seg.nii.gz)" in text
    listing.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match=f"{listing} lists no case id"):
        convert_brats(semi_folder, 243, "X", unlabelled_list=listing)
    listing.write_text(f"{UNLABELLED[0]} {UNLABELLED[1]}\n")
    with pytest.raises(ValueError, match=f"{listing}, line 1: .* holds 2 words; give one case id a line"):
        convert_brats(semi_folder, 243, "X", unlabelled_list=listing)
    with pytest.raises(FileNotFoundError, match="case list .*missing.txt does not exist"):
        convert_brats(semi_folder, 243, "X", unlabelled_list=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not both"):
        convert_brats(semi_folder, 243, "X", unlabelled=True, unlabelled_list=listing)
    assert os.listdir(nnunet_env["nnUNet_raw"]) == []


def test_unlabelled_changes_nothing_when_every_case_is_labelled(ssa_folder, nnunet_env):
    out = convert_brats(ssa_folder, 232, "BraTS23SSA")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert convert_brats(ssa_folder, 232, "BraTS23SSA", unlabelled=True) == out
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    data = json.loads((out / "dataset.json").read_text())
    assert "ignore" not in data["labels"] and "unlabelled" not in data


def test_only_unlabelled_cases_make_a_dataset_for_combining(tmp_path, nnunet_env, caplog):
    source = tmp_path / "hospital"
    for i, case in enumerate(UNLABELLED):
        make_case(source, case, labeled=False, seed=i)
    with pytest.raises(ValueError, match="no case with a segmentation.*--unlabelled"):
        convert_brats(source, 244, "Hospital")
    out = convert_brats(source, 244, "Hospital", unlabelled=True)
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    assert "every training case is unlabelled" in caplog.text


def test_convert_cli_unlabelled_flags(semi_folder, tmp_path, nnunet_env, capsys, caplog):
    from nnunet_transfer.cli import main

    assert main(["convert", str(semi_folder), "-d", "245", "-n", "Semi", "--unlabelled"]) == 0
    assert "5 training (3 unlabelled), 0 test case(s)" in capsys.readouterr().out
    listing = tmp_path / "list.txt"
    listing.write_text("BraTS-SSA-00000-000\n")
    assert main(["convert", str(semi_folder), "-d", "246", "-n", "Semi2", "--unlabelled-list", str(listing)]) == 1
    assert "has a segmentation: BraTS-SSA-00000-000" in caplog.text and "Traceback" not in caplog.text
    with pytest.raises(SystemExit):
        main(["convert", str(semi_folder), "-d", "246", "-n", "Semi2", "--unlabelled", "--unlabelled-list", "x"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.integration
def test_unlabelled_dataset_passes_nnunet_plan_and_preprocess(tmp_path, nnunet_env):
    """Stock nnUNetv2_plan_and_preprocess --verify_dataset_integrity on label- and region-based datasets."""
    import sys
    from pathlib import Path

    from nnunet_transfer.synth import write_brats_cases
    from tests.conftest import cli, run_cmd

    source = tmp_path / "synth"
    cases = write_brats_cases(source, domain="SSA", n=4, shape=(32, 32, 24))
    for folder in cases[2:]:
        (folder / f"{folder.name}-seg.nii.gz").unlink()
    unlabelled = [f.name for f in cases[2:]]
    run_cmd(cli("convert", str(source), "-d", "250", "-n", "SemiSSA", "--unlabelled"), env=nnunet_env)
    run_cmd(cli("convert", str(source), "-d", "251", "-n", "SemiSSAregions", "--regions", "--unlabelled"),
            env=nnunet_env)
    for dataset in (250, 251):  # the tests' small fingerprint sample; plan_and_preprocess keeps an existing one
        run_cmd([sys.executable, "-c", "from nnunet_transfer.planning import extract_fingerprint; "
                 f"extract_fingerprint({dataset}, foreground_voxels=1e4)"], env=nnunet_env)
    done = run_cmd(["nnUNetv2_plan_and_preprocess", "-d", "250", "251", "--verify_dataset_integrity",
                    "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env=nnunet_env)
    assert done.stdout.count("verify_dataset_integrity Done") == 2
    assert "Error" not in done.stdout and "Warning" not in done.stdout
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    pre = Path(nnunet_env["nnUNet_preprocessed"])
    for name in ("Dataset250_SemiSSA", "Dataset251_SemiSSAregions"):
        data = json.loads((pre / name / "dataset.json").read_text())
        assert data["labels"]["ignore"] == 4 and data["unlabelled"] == unlabelled and data["numTraining"] == 4
        folder = str(pre / name / "nnUNetPlans_3d_fullres")
        preprocessed = infer_dataset_class(folder)(folder)
        assert sorted(preprocessed.identifiers) == sorted(f.name for f in cases)
        for case in unlabelled:
            assert np.all(read(pre / name / "gt_segmentations" / f"{case}.nii.gz")[1] == 4)
            _, seg, _, _ = preprocessed.load_case(case)
            assert np.unique(np.asarray(seg)).tolist() == [4]  # every voxel ignored by nnU-Net's losses

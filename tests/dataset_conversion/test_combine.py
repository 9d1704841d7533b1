"""combine_datasets: merged cases and domains, symlinks, refusals."""

import json
import os
from pathlib import Path

import pytest

from nnunet_transfer.dataset_conversion import combine_datasets, convert_brats
from tests.dataset_conversion.conftest import gli_ids, make_brats, make_case, ssa_ids


@pytest.fixture
def converted(gli_folder, ssa_folder, nnunet_env):
    make_case(ssa_folder, "BraTS-SSA-00050-000", labeled=False, seed=50)
    return convert_brats(gli_folder, 231, "GLI"), convert_brats(ssa_folder, 232, "SSA")


def test_combine_links_cases_and_merges_domains(converted, nnunet_env):
    gli, ssa = converted
    out = combine_datasets([231, 232], 233, "GLI_SSA")
    assert out.name == "Dataset233_GLI_SSA"
    data = json.loads((out / "dataset.json").read_text())
    assert data["numTraining"] == 7
    assert data["channel_names"] == json.loads((gli / "dataset.json").read_text())["channel_names"]
    expected = {**{c: "GLI" for c in gli_ids(3)}, **{c: "SSA" for c in ssa_ids(4)}, "BraTS-SSA-00050-000": "SSA"}
    assert data["domains"] == expected and data["combined_from"] == [gli.name, ssa.name]
    assert "target_domain" not in data
    label = out / "labelsTr" / "BraTS-SSA-00001-000.nii.gz"
    assert label.is_symlink() and os.path.realpath(label) == str((ssa / "labelsTr" / label.name).resolve())
    assert len(list((out / "imagesTr").iterdir())) == 28
    assert (out / "imagesTs" / "BraTS-SSA-00050-000_0002.nii.gz").is_symlink()
    # idempotent, and copies when asked
    assert combine_datasets([231, 232], 233, "GLI_SSA", link=False) == out
    assert not label.is_symlink() and label.read_bytes() == (ssa / "labelsTr" / label.name).read_bytes()


def test_combine_refuses_different_channels_and_colliding_ids(converted, tmp_path, nnunet_env):
    gli, _ = converted
    convert_brats(tmp_path / "BraTS2023-SSA", 234, "SSA3",
                  modalities=["t2f", "t1c", "t2w"])
    with pytest.raises(ValueError, match="channel_names differ"):
        combine_datasets([231, 234], 235, "X")
    convert_brats(tmp_path / "BraTS2023-GLI", 236, "GLIagain", regions=True)
    with pytest.raises(ValueError, match="labels differ"):
        combine_datasets([231, 236], 235, "X")
    make_brats(tmp_path / "dup", gli_ids(1, start=2))
    convert_brats(tmp_path / "dup", 237, "Dup")
    with pytest.raises(ValueError, match="case ids collide.*BraTS-GLI-00002-000"):
        combine_datasets([231, 237], 235, "X")
    with pytest.raises(ValueError, match="is one of the inputs"):
        combine_datasets([231, 232], 231, "GLI")
    with pytest.raises(FileNotFoundError, match="no nnU-Net raw dataset 299"):
        combine_datasets([231, 299], 235, "X")
    assert not list(gli.parent.glob("Dataset235_*"))


def test_combine_refuses_different_intensity_clipping_and_keeps_a_shared_one(gli_folder, ssa_folder, nnunet_env):
    clip = (0.5, 99.5)
    convert_brats(gli_folder, 231, "GLI", clip_percentiles=clip)
    convert_brats(ssa_folder, 232, "SSA")
    with pytest.raises(ValueError, match=r"intensity_clipping differ.*--clip-percentiles"):
        combine_datasets([231, 232], 233, "GLI_SSA")
    convert_brats(ssa_folder, 234, "SSAclip", clip_percentiles=clip)
    out = combine_datasets([231, 234], 235, "GLI_SSAclip")
    assert json.loads((out / "dataset.json").read_text())["intensity_clipping"] == {"percentiles": [0.5, 99.5],
                                                                                    "within": "nonzero"}


@pytest.fixture
def semi(gli_folder, ssa_folder, nnunet_env):
    """GLI (one case without a segmentation, in imagesTs) and SSA with one unlabelled training case."""
    make_case(gli_folder, "BraTS-GLI-00060-000", labeled=False, seed=60)
    make_case(ssa_folder, "BraTS-SSA-00050-000", labeled=False, seed=50)
    return convert_brats(gli_folder, 231, "GLI"), convert_brats(ssa_folder, 232, "SSA", unlabelled=True)


def test_combine_keeps_the_ignore_label_and_the_unlabelled_cases(semi, gli_folder, nnunet_env):
    gli, ssa = semi
    out = combine_datasets([231, 232], 233, "GLI_SSA")
    data = json.loads((out / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3, "ignore": 4}
    assert data["unlabelled"] == ["BraTS-SSA-00050-000"] and data["numTraining"] == 8
    label = out / "labelsTr" / "BraTS-SSA-00050-000.nii.gz"  # the ignore-only label file, linked like the others
    assert label.is_symlink() and os.path.realpath(label) == str((ssa / "labelsTr" / label.name).resolve())
    assert (out / "imagesTr" / "BraTS-SSA-00050-000_0003.nii.gz").is_symlink()
    assert (out / "imagesTs" / "BraTS-GLI-00060-000_0000.nii.gz").is_symlink()
    # input order does not matter; the union of the unlabelled lists, copied when asked
    convert_brats(gli_folder, 234, "GLIsemi", unlabelled=True)
    both = combine_datasets([232, 234], 235, "Both", link=False)
    data = json.loads((both / "dataset.json").read_text())
    assert data["unlabelled"] == ["BraTS-GLI-00060-000", "BraTS-SSA-00050-000"]
    assert list(data["labels"]) == ["background", "NCR", "ED", "ET", "ignore"] and data["labels"]["ignore"] == 4
    assert not (both / "imagesTs").exists() and data["numTraining"] == 9
    copied = both / "labelsTr" / "BraTS-GLI-00060-000.nii.gz"
    source_label = gli.parent / "Dataset234_GLIsemi" / "labelsTr" / copied.name
    assert not copied.is_symlink() and copied.read_bytes() == source_label.read_bytes()


def test_combine_without_unlabelled_cases_has_no_ignore_label(gli_folder, ssa_folder, nnunet_env):
    convert_brats(gli_folder, 231, "GLI")
    convert_brats(ssa_folder, 232, "SSA", unlabelled=True)  # every case labelled: nothing changes
    data = json.loads((combine_datasets([231, 232], 233, "GLI_SSA") / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3} and "unlabelled" not in data


def test_combine_compares_labels_without_ignore_and_refuses_real_differences(semi, gli_folder, nnunet_env):
    _, ssa = semi
    convert_brats(gli_folder, 236, "GLIregions", regions=True)
    with pytest.raises(ValueError, match="labels differ"):
        combine_datasets([232, 236], 237, "X")
    convert_brats(gli_folder, 238, "GLIsemi", unlabelled=True)
    odd_path = ssa.parent / "Dataset238_GLIsemi" / "dataset.json"
    data = json.loads(odd_path.read_text())
    odd_path.write_text(json.dumps({**data, "labels": {**data["labels"], "ignore": 5}}))
    with pytest.raises(ValueError, match="ignore labels differ .*Dataset232_SSA: 4.*Dataset238_GLIsemi: 5"):
        combine_datasets([232, 238], 237, "X")
    odd_path.write_text(json.dumps({**data, "unlabelled": ["BraTS-GLI-00999-000"]}))
    with pytest.raises(ValueError, match="Dataset238_GLIsemi: dataset.json lists unlabelled case.*BraTS-GLI-00999-000"):
        combine_datasets([232, 238], 237, "X")
    assert not list(ssa.parent.glob("Dataset237_*"))


@pytest.mark.integration
def test_combined_unlabelled_dataset_passes_nnunet_integrity_check(semi, nnunet_env, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    out = combine_datasets([231, 232], 233, "GLI_SSA")
    verify_dataset_integrity(str(out), num_processes=1)
    printed = capsys.readouterr().out
    assert "Error" not in printed and "WARNING" not in printed


def test_combine_records_the_target_domain_and_refuses_an_unknown_one(converted, nnunet_env):
    with pytest.raises(ValueError, match=r"target domain 'ssa' is not a domain .*GLI, SSA.*case-sensitive"):
        combine_datasets([231, 232], 234, "GLI_SSA_bad", target_domain="ssa")
    assert not list(Path(nnunet_env["nnUNet_raw"]).glob("Dataset234_*"))  # nothing half-written
    out = combine_datasets([231, 232], 235, "GLI_SSA_target", target_domain="SSA")
    assert json.loads((out / "dataset.json").read_text())["target_domain"] == "SSA"

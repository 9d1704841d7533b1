"""combine_datasets: merged cases and domains, symlinks, refusals."""

import json
import os

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

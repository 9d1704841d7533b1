"""Model bundles: what export packs, the manifest, reading back, and what nnU-Net's installer makes of it."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest

from nnunet_transfer import config
from nnunet_transfer.inference.bundle import MANIFEST, export_bundle, extract_bundle, opened_bundle, read_manifest
from tests.conftest import run_cmd
from tests.inference.test_model import CONVERTED

MODEL = "Dataset950_X/nnUNetTrainerBrainUNet__nnUNetPlans_BrainUNet__3d_fullres"


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A results folder with checkpoints holding nnU-Net's metadata keys, post-processing and clutter."""
    import torch

    folder = tmp_path / "results" / MODEL
    for fold in (0, 1, 2):
        (folder / f"fold_{fold}" / "validation").mkdir(parents=True)
        torch.save({"network_weights": {"w": torch.ones(3)}, "trainer_name": "nnUNetTrainerBrainUNet",
                    "init_args": {"configuration": "3d_fullres"}, "current_epoch": 7,
                    "inference_allowed_mirroring_axes": (0, 1, 2)}, folder / f"fold_{fold}" / "checkpoint_final.pth")
        (folder / f"fold_{fold}" / "checkpoint_best.pth").write_bytes(b"not exported")
        (folder / f"fold_{fold}" / "validation" / "case.nii.gz").write_bytes(b"not exported")
    for name, text in (("plans.json", "{}"), ("dataset_fingerprint.json", "{}"),
                       ("dataset.json", json.dumps({**CONVERTED, "intensity_clipping":
                                                    {"percentiles": [0.5, 99.5], "within": "nonzero"}}))):
        (folder / name).write_text(text)
    crossval = folder / "crossval_results_folds_0_1"
    crossval.mkdir()
    (crossval / "postprocessing.pkl").write_bytes(pickle.dumps(([], [])))
    (crossval / "summary.json").write_text("{}")
    (folder / "brats_postprocessing.json").write_text("{}")
    return folder


def test_export_packs_what_a_clinic_needs_with_a_manifest(model_folder, tmp_path):
    bundle = export_bundle(model_folder, tmp_path / "out" / "bundle.zip", folds=[0, 1])
    with zipfile.ZipFile(bundle) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"{MODEL}/{n}" for n in [
        "plans.json", "dataset.json", "dataset_fingerprint.json", "brats_postprocessing.json",
        "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "crossval_results_folds_0_1/postprocessing.pkl",
        MANIFEST])
    manifest = read_manifest(bundle)
    assert manifest["model_folder"] == MODEL and manifest["folds"] == [0, 1]
    assert manifest["trainer_names"] == ["nnUNetTrainerBrainUNet"] == manifest["plugin_trainers"]
    assert manifest["versions"]["nnunet_transfer"] and manifest["versions"]["nnunetv2"]
    assert manifest["channels"] == ["t1n", "t1c", "t2w", "t2f"]
    assert manifest["intensity_clipping"]["percentiles"] == [0.5, 99.5]
    assert manifest["checkpoints"]["fold_1"]["epoch"] == 7
    assert sorted(manifest["postprocessing"]) == ["brats_postprocessing.json",
                                                  "crossval_results_folds_0_1/postprocessing.pkl"]
    assert len(manifest["files"]["fold_0/checkpoint_final.pth"]["sha256"]) == 64
    assert not list(bundle.parent.glob(".*tmp*"))  # written under a temporary name, then moved


def test_bundle_reads_back_into_the_same_model(model_folder, tmp_path):
    bundle = export_bundle(model_folder, tmp_path / "bundle.zip")  # default: every trained fold
    with opened_bundle(bundle) as folder:
        assert folder.name == model_folder.name and folder.parent.name == "Dataset950_X"
        assert sorted(p.name for p in folder.glob("fold_*")) == ["fold_0", "fold_1", "fold_2"]
        assert (folder / "fold_2" / "checkpoint_final.pth").read_bytes() == \
            (model_folder / "fold_2" / "checkpoint_final.pth").read_bytes()
        extracted = folder
    assert not extracted.exists()  # the temporary folder is gone


def test_corrupt_or_foreign_zips_are_refused_clearly(model_folder, tmp_path):
    bundle = export_bundle(model_folder, tmp_path / "bundle.zip", folds=[0])
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[:-300])
    with pytest.raises(ValueError, match="not a readable zip file"):
        extract_bundle(truncated, tmp_path / "t")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"{\"changed\": 1}" if item.filename.endswith("plans.json") else data)
    with pytest.raises(ValueError, match="plans.json does not match its checksum"):
        extract_bundle(tampered, tmp_path / "x")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.txt", "x")
    with pytest.raises(ValueError, match="unsafe path"):
        extract_bundle(evil, tmp_path / "e")
    assert not (tmp_path.parent / "outside.txt").exists()
    with pytest.raises(ValueError, match="must sit in a DatasetXXX_Name folder"):
        export_bundle(model_folder.rename(tmp_path / "loose__nnUNetPlans__3d_fullres"), tmp_path / "b.zip")


def test_zip_exported_by_nnunet_without_manifest(model_folder, tmp_path):
    plain = tmp_path / "nnunet_export.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        for name in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
            zf.write(model_folder / name, f"{MODEL}/{name}")
    assert read_manifest(plain) is None
    assert extract_bundle(plain, tmp_path / "x") == tmp_path / "x" / MODEL
    with zipfile.ZipFile(plain, "a") as zf:
        zf.writestr("Dataset950_X/nnUNetTrainer__nnUNetPlans__2d/plans.json", "{}")
    with pytest.raises(ValueError, match="exactly one DatasetXXX/Trainer__Plans__Config model folder"):
        extract_bundle(plain, tmp_path / "y")


@pytest.mark.integration
def test_nnunet_installs_the_bundle_where_its_predict_finds_it(four_channel_model, tmp_path):
    bundle = export_bundle(four_channel_model.folder, tmp_path / "bundle.zip")
    results = tmp_path / "clinic_results"
    results.mkdir()
    run_cmd(["nnUNetv2_install_pretrained_model_from_zip", str(bundle)], {config.RESULTS: str(results)})
    installed = results / four_channel_model.folder.parent.name / four_channel_model.folder.name
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json", "fold_0/checkpoint_final.pth",
                 "fold_1/checkpoint_final.pth", MANIFEST):
        assert (installed / name).is_file(), name
    assert (installed / "fold_1" / "checkpoint_final.pth").read_bytes() == \
        (four_channel_model.folder / "fold_1" / "checkpoint_final.pth").read_bytes()

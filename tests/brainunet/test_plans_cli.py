"""``nnunet-transfer brainunet-plans`` and the BrainUNet flow leave nnU-Net's package untouched."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Set

import pytest
import torch

from nnunet_transfer.cli import brainunet_plans
from tests.brainunet.test_plans import DATASET_JSON, brats_plans

CLIPPING = {"percentiles": [0.5, 99.5], "within": "nonzero"}


def nnunet_package_listing() -> Set[str]:
    """Every file and folder under the installed nnunetv2 package (bytecode caches left out)."""
    import nnunetv2

    root = Path(nnunetv2.__path__[0])
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in dirs + [f for f in files if not f.endswith(".pyc")]:
            found.add(str((Path(folder) / name).relative_to(root)))
    return found


def cli_args(dataset: str, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    brainunet_plans.add_arguments(parser)
    args = parser.parse_args([dataset])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def preprocessed_dataset(nnunet_env, dataset_json: dict) -> Path:
    folder = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset233_BraTS"
    folder.mkdir(parents=True)
    plans = brats_plans()
    plans["configurations"]["3d_fullres"]["batch_dice"] = True
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    data = folder / "nnUNetPlans_BrainUNet_3d_fullres"  # trainer.initialize infers nnU-Net's dataset class from the files
    data.mkdir()
    (data / "BraTS-GLI-00000-000.b2nd").touch()
    return folder


def test_plans_cli_and_trainer_initialize_write_nothing_into_nnunet(nnunet_env, capsys):
    from nnunet_transfer.brainunet.trainers import nnUNetTrainerBrainUNet, nnUNetTrainerBrainUNetFineTune

    before = nnunet_package_listing()
    folder = preprocessed_dataset(nnunet_env, {**DATASET_JSON, "intensity_clipping": CLIPPING})
    assert brainunet_plans.run(cli_args("233", configurations=["3d_fullres"])) == 0
    out = capsys.readouterr().out
    assert "nnUNetPlans_BrainUNet.json" in out and "percentiles [0.5, 99.5]" in out
    plans = json.loads((folder / "nnUNetPlans_BrainUNet.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"] * 4 and cfg["use_mask_for_norm"] == [True] * 4
    assert cfg["data_identifier"] == "nnUNetPlans_BrainUNet_3d_fullres"
    for cls in (nnUNetTrainerBrainUNet, nnUNetTrainerBrainUNetFineTune):
        trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, DATASET_JSON,
                      device=torch.device("cpu"))
        trainer.initialize()
        assert type(trainer.network).__name__ == "AttentionResidualUNet"
    assert nnunet_package_listing() == before
    assert not [p for p in before if "nnunet_transfer" in p]  # no shim left from earlier versions


def test_plans_cli_notes_a_dataset_converted_without_clipping(nnunet_env, capsys):
    preprocessed_dataset(nnunet_env, DATASET_JSON)
    assert brainunet_plans.run(cli_args("Dataset233_BraTS", configurations=["3d_fullres"])) == 0
    assert "without --clip-percentiles" in capsys.readouterr().out


def test_removed_normalization_flags_are_rejected():
    parser = argparse.ArgumentParser()
    brainunet_plans.add_arguments(parser)
    for flag in ("--keep-normalization", "--no-install-scheme"):
        with pytest.raises(SystemExit):
            parser.parse_args(["233", flag])

"""The package surface: flat API, version guard, doctests, CLI front, trainer shim."""

from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys
from importlib import metadata

import pytest

import nnunet_transfer
from tests.conftest import cli, run_cmd

DOCTEST_MODULES = [
    "nnunet_transfer.config", "nnunet_transfer.domains", "nnunet_transfer.planning",
    "nnunet_transfer.training.grl", "nnunet_transfer.training.domain_head", "nnunet_transfer.training.sampling",
    "nnunet_transfer.training.freezing", "nnunet_transfer.training.lr_schedule", "nnunet_transfer.training.losses",
    "nnunet_transfer.training.labels", "nnunet_transfer.training.progress", "nnunet_transfer.dataset_conversion.labels",
    "nnunet_transfer.postprocessing", "nnunet_transfer.postprocessing.rules", "nnunet_transfer.postprocessing.io",
    "nnunet_transfer.postprocessing.sources",
]


@pytest.mark.parametrize("name", sorted(nnunet_transfer._API))
def test_flat_api_resolves(name):
    assert getattr(nnunet_transfer, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        nnunet_transfer.no_such_thing


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_old_nnunet_is_refused_with_a_fix(monkeypatch):
    monkeypatch.setattr(metadata, "version", lambda name: "2.5.1")
    with pytest.raises(ImportError, match=r"nnunetv2 2\.5\.1 is installed.*pip install --upgrade"):
        nnunet_transfer._check_nnunet_version()
    monkeypatch.setattr(metadata, "version", lambda name: "2.8.1")
    nnunet_transfer._check_nnunet_version()


def test_cli_help_lists_every_subcommand_without_importing_torch():
    code = ("import sys; from nnunet_transfer.cli import build_parser; "
            "h = build_parser().format_help(); print(h); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("env", "synth", "convert", "combine", "splits", "to-brats", "evaluate", "predict-folds", "compare",
                 "tune-postprocessing", "apply-postprocessing", "ensemble-folds", "segment", "export", "status", "brainunet-plans", "run", "demo"):
        assert name in out
    assert out.strip().endswith("False")  # the front stays light: heavy modules load per subcommand


def test_env_prints_trainer_folder_with_only_the_shim(tmp_path):
    out = run_cmd(cli("env", "--trainer-path")).stdout.strip()
    assert sorted(p for p in os.listdir(out) if p.endswith(".py")) == ["nnunet_transfer_trainers.py"]
    exports = run_cmd(cli("env"), {"nnUNet_raw": str(tmp_path)}).stdout
    assert f"export nnUNet_extTrainer={out}" in exports and f"export nnUNet_raw={tmp_path}" in exports


def test_nnunet_finds_every_trainer_through_the_shim(monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_transfer.training import trainers

    monkeypatch.setenv("nnUNet_extTrainer", str(nnunet_transfer.trainer_path()))
    for name in trainers.__all__ + ["nnUNetTrainerBrainUNet", "nnUNetTrainerBrainUNetFineTune"]:
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name and cls.__module__.startswith("nnunet_transfer.")
    # the classes stay the installed package's own (no duplicates imported under bare names)
    assert recursive_find_trainer_class_by_name("nnUNetTrainerDANN") is trainers.nnUNetTrainerDANN

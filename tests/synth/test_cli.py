"""The ``nnunet-transfer synth`` subcommand."""

from __future__ import annotations

import json

import SimpleITK as sitk

from nnunet_transfer.cli import main


def test_synth_cli_writes_cases(tmp_path, capsys):
    out = tmp_path / "ssa"
    assert main(["synth", str(out), "--domain", "ssa", "-n", "2", "--seed", "7", "--shape", "32", "32", "24"]) == 0
    assert "2 SSA cases" in capsys.readouterr().out
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["BraTS-SSA-00000-000", "BraTS-SSA-00001-000"]
    image = sitk.ReadImage(str(out / folders[0] / f"{folders[0]}-t2w.nii.gz"))
    assert image.GetSize() == (32, 32, 24)


def test_synth_cli_rejects_bad_shape(tmp_path):
    assert main(["synth", str(tmp_path), "-n", "1", "--shape", "4", "32", "32"]) == 1
    assert not any(tmp_path.iterdir())


def test_synth_cli_tumours_and_a_changed_setting(tmp_path, capsys, caplog):
    out = tmp_path / "ssa_scanner"
    args = ["synth", str(out), "--domain", "SSA", "-n", "1", "--shape", "32", "32", "24"]
    assert main([*args, "--tumours", "gli"]) == 0
    assert "1 SSA cases with GLI tumours" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["tumours"] == "GLI"
    assert main(args) == 1  # the folder holds GLI tumours: SSA's own are refused, with the fix
    err = caplog.text  # the CLI logs the error
    assert "synth.json" in err and "tumours 'GLI' there, 'SSA' asked" in err and "--overwrite" in err

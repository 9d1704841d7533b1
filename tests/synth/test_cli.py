"""The ``nnunet-transfer synth`` subcommand."""

from __future__ import annotations

import SimpleITK as sitk

from nnunet_transfer.cli import main


def test_synth_cli_writes_cases(tmp_path, capsys):
    out = tmp_path / "ssa"
    assert main(["synth", str(out), "--domain", "ssa", "-n", "2", "--seed", "7", "--shape", "32", "32", "24"]) == 0
    assert "2 SSA cases" in capsys.readouterr().out
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["BraTS-SSA-00000-000", "BraTS-SSA-00001-000"]
    image = sitk.ReadImage(str(out / folders[0] / f"{folders[0]}-t2w.nii.gz"))
    assert image.GetSize() == (32, 32, 24)


def test_synth_cli_rejects_bad_shape(tmp_path):
    assert main(["synth", str(tmp_path), "-n", "1", "--shape", "4", "32", "32"]) == 1
    assert not any(tmp_path.iterdir())

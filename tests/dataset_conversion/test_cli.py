"""The convert, combine, splits and to-brats subcommands, run as a user would."""

import json
from pathlib import Path

import pytest

from nnunet_transfer.cli import main
from tests.conftest import cli, run_cmd
from tests.dataset_conversion.conftest import gli_ids, make_brats, make_case, ssa_ids


@pytest.mark.integration
def test_cli_end_to_end(tmp_path, nnunet_env):
    gli = make_brats(tmp_path / "gli", gli_ids(2))
    ssa = make_brats(tmp_path / "ssa", ssa_ids(5))
    make_case(ssa, "BraTS-SSA-00099-000", seed=99, skip=["t2w"])
    failed = run_cmd(cli("convert", str(ssa), "-d", "232", "-n", "SSA"), env=nnunet_env, check=False)
    assert failed.returncode == 1
    assert "BraTS-SSA-00099-000: BraTS-SSA-00099-000-t2w.nii.gz: missing" in failed.stderr
    assert "Traceback" not in failed.stderr
    done = run_cmd(cli("convert", str(ssa), "-d", "232", "-n", "SSA", "--skip-bad", "--link"), env=nnunet_env)
    assert "5 training" in done.stdout and "skipped 1 defective case(s)" in done.stdout
    run_cmd(cli("convert", str(gli), "-d", "231", "-n", "GLI", "-np", "2"), env=nnunet_env)
    combined = run_cmd(cli("combine", "231", "232", "-d", "233", "-n", "GLI_SSA"), env=nnunet_env)
    assert "GLI=2, SSA=5" in combined.stdout
    run_cmd(cli("splits", "232", "233", "--target-domain", "SSA", "--folds", "5"), env=nnunet_env)
    pre = Path(nnunet_env["nnUNet_preprocessed"])
    a = json.loads((pre / "Dataset232_SSA" / "splits_final.json").read_text())
    b = json.loads((pre / "Dataset233_GLI_SSA" / "splits_final.json").read_text())
    assert [f["val"] for f in a] == [f["val"] for f in b] and len(a) == 5
    raw = Path(nnunet_env["nnUNet_raw"])
    out = run_cmd(cli("to-brats", str(raw / "Dataset231_GLI" / "labelsTr"), str(tmp_path / "sub"), "--style", "2021"),
                  env=nnunet_env)
    assert "wrote 2 BraTS 2021 label file(s)" in out.stdout
    too_many = run_cmd(cli("splits", "232", "--target-domain", "SSA", "--folds", "10"), env=nnunet_env, check=False)
    assert too_many.returncode == 1 and "cannot make 10 folds from 5 target case(s)" in too_many.stderr


def test_convert_clip_percentiles_flag(tmp_path, nnunet_env, capsys, caplog):
    ssa = make_brats(tmp_path / "ssa", ssa_ids(2))
    assert main(["convert", str(ssa), "-d", "232", "-n", "SSA", "--clip-percentiles", "0.5", "99.5"]) == 0
    assert "clipped to their 0.5th and 99.5th percentiles" in capsys.readouterr().out
    data = json.loads((Path(nnunet_env["nnUNet_raw"]) / "Dataset232_SSA" / "dataset.json").read_text())
    assert data["intensity_clipping"] == {"percentiles": [0.5, 99.5], "within": "nonzero"}
    assert main(["convert", str(ssa), "-d", "233", "-n", "SSA2", "--clip-percentiles", "0.5", "99.5", "--link"]) == 1
    assert "cannot be combined" in caplog.text and "Traceback" not in caplog.text

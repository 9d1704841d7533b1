"""The tune-postprocessing and apply-postprocessing subcommands."""

from __future__ import annotations

import json

import pytest

from nnunet_transfer.cli import build_parser, main
from nnunet_transfer.postprocessing.io import read_rules
from nnunet_transfer.postprocessing.rules import Rules
from tests.postprocessing.conftest import read_label


def test_help_explains_both_commands():
    parser = build_parser()
    text = parser.format_help()
    assert "tune-postprocessing" in text and "apply-postprocessing" in text and "ensemble-folds" in text
    sub = parser._subparsers._group_actions[0].choices
    tune_help = sub["tune-postprocessing"].format_help()
    assert "lesion-wise Dice" in tune_help and "brats_postprocessing.json" in tune_help and "mm^3" in tune_help
    assert "--rules" in sub["apply-postprocessing"].format_help()


def test_tune_then_apply(speck_folder, capsys):
    model, gt = speck_folder
    assert main(["tune-postprocessing", str(model), "--component-mm3", "5", "10", "30", "300",
                 "--et-volume-mm3", "--et-tc-ratio", "--structures", "WT", "--folds", "0", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "min_component_mm3.WT" in printed and "written:" in printed
    rules_file = model / "brats_postprocessing.json"
    assert read_rules(rules_file) == Rules({"WT": 30})
    assert main(["apply-postprocessing", str(model), str(model / "pp"), "--rules", str(rules_file)]) == 0
    assert not read_label(model / "pp" / "fold_2" / "validation" / "case02.nii.gz")[26:, :5, :5].any()
    # explicit predictions and labels, plain Dice, own output
    out = model.parent / "flat.json"
    assert main(["tune-postprocessing", "--predictions", str(model / "fold_0" / "validation"), "--labels", str(gt),
                 "--metric", "dice", "--structures", "WT", "--component-mm3", "10", "30", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["tuning"]["metric"] == "dice"


def test_cli_errors_are_one_line(speck_folder, tmp_path, caplog):
    model, _ = speck_folder
    assert main(["tune-postprocessing"]) == 1
    assert "give either MODEL_DIR or --predictions" in caplog.text
    assert main(["apply-postprocessing", str(model), str(tmp_path / "o"), "--rules", str(tmp_path / "none.json")]) == 1
    assert "does not exist" in caplog.text
    with pytest.raises(SystemExit):
        main(["tune-postprocessing", str(model), "--metric", "hd95"])

"""The export and segment subcommands: thin fronts, a summary, exit 1 when a case was refused."""

from __future__ import annotations

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.inference import SegmentOptions, segment
from tests.inference.conftest import make_case


def test_export_then_segment_from_the_bundle(four_channel_model, tmp_path, capsys):
    bundle = tmp_path / "clinic" / "model.zip"
    assert main(["export", str(four_channel_model.folder), str(bundle), "--folds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {bundle}" in out and "folds 1" in out and "nnUNetTrainer" in out
    cases = tmp_path / "new"
    make_case(cases, "BraTS-SSA-00007-000", labeled=False)
    make_case(cases, "BraTS-SSA-00008-000", skip=["t2f"])
    code = main(["segment", str(cases), "-m", str(bundle), "-o", str(tmp_path / "labels"), "-device", "cpu",
                 "--no-mirroring", "--style", "2021"])
    out = capsys.readouterr().out
    assert code == 1
    assert "segmented 1 case(s), refused 1" in out and "s per case" in out
    assert "refused BraTS-SSA-00008-000: BraTS-SSA-00008-000-t2f.nii.gz: missing" in out
    assert (tmp_path / "labels" / "BraTS-SSA-00007-000.nii.gz").is_file()
    assert main(["segment", str(cases / "BraTS-SSA-00007-000"), "-m", str(bundle), "-o", str(tmp_path / "again"),
                 "-device", "cpu", "--no-mirroring", "-f", "1"]) == 0


def test_bad_model_and_options_are_clear_errors(four_channel_model, tmp_path):
    case = make_case(tmp_path, "BraTS-SSA-00009-000", labeled=False)
    assert main(["segment", str(case), "-m", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 1
    with pytest.raises(FileNotFoundError, match=r"fold\(s\) 4 have no checkpoint_final.pth"):
        segment(case, four_channel_model.folder, tmp_path / "o", SegmentOptions(folds=[4]))
    with pytest.raises(ValueError, match="unknown BraTS style"):
        SegmentOptions(style="2019")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            segment(case, four_channel_model.folder, tmp_path / "o", SegmentOptions(device="cuda"))
    assert not (tmp_path / "o").exists()

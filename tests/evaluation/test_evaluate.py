"""Folder evaluation: nnU-Net summary layout, spacing order, errors, atomic output, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from medpy.metric.binary import dc, hd95 as medpy_hd95

from nnunet_transfer.cli import main
from nnunet_transfer.evaluation.evaluate import evaluate_folder

SPACING_XYZ = (0.8, 1.1, 2.5)  # SimpleITK order; arrays are z, y, x


def write(path, array, spacing_xyz=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_case(rng, shape=(16, 24, 22)):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, (5, 8, 7)))
    ref = np.zeros(shape, np.uint8)
    ref[dist <= 1] = 2
    ref[dist <= 0.4] = 3
    ref[dist <= 0.1] = 1
    pred = np.roll(ref, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
    pred[rng.random(shape) < 0.004] = 2
    return ref, pred


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    arrays = {}
    for case in ("BraTS-SSA-00002-000", "BraTS-SSA-00001-000"):
        r, p = make_case(rng)
        write(gt / f"{case}.nii.gz", r)
        write(pred / f"{case}.nii.gz", p)
        arrays[case] = (r, p)
    return gt, pred, arrays


def test_summary_layout_and_values_match_medpy(folders, tmp_path):
    gt, pred, arrays = folders
    out = tmp_path / "out" / "summary.json"
    summary = evaluate_folder(gt, pred, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    assert summary["case_ids"] == ["BraTS-SSA-00001-000", "BraTS-SSA-00002-000"]
    assert set(summary) >= {"metric_per_case", "mean", "foreground_mean", "config"}
    spacing_zyx = tuple(reversed(SPACING_XYZ))
    regions = {"NCR": (1,), "ED": (2,), "ET": (3,), "WT": (1, 2, 3), "TC": (1, 3), "ET-region": (3,)}
    for entry in summary["metric_per_case"]:
        assert entry["prediction_file"].endswith(entry["case_id"] + ".nii.gz")
        r, p = arrays[entry["case_id"]]
        for name, values in regions.items():
            rm, pm = np.isin(r, values), np.isin(p, values)
            m = entry["metrics"][name]
            assert m["Dice"] == pytest.approx(dc(pm, rm), abs=1e-6)
            assert m["HD95"] == pytest.approx(medpy_hd95(pm, rm, voxelspacing=spacing_zyx), abs=1e-6)
            assert (m["n_ref"], m["n_pred"]) == (int(rm.sum()), int(pm.sum()))
    for name in regions:
        assert summary["mean"][name]["HD95"] == pytest.approx(
            np.mean([e["metrics"][name]["HD95"] for e in summary["metric_per_case"]]))
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        np.mean([summary["mean"][k]["Dice"] for k in ("NCR", "ED", "ET")]))


def test_options_lesion_wise_brats2023_and_processes(folders):
    gt, pred, _ = folders
    summary = evaluate_folder(gt, pred, regions=False, hd95="brats2023", lesion_wise=True, num_processes=2)
    metrics = summary["metric_per_case"][0]["metrics"]
    assert set(metrics) == {"NCR", "ED", "ET"}
    assert {"LesionWise_Dice", "LesionWise_HD95", "Num_FP"} <= set(metrics["ED"])
    assert summary["config"]["hd95"] == "brats2023"


def test_missing_reference_names_the_case_and_writes_nothing(folders, tmp_path):
    gt, pred, _ = folders
    (gt / "BraTS-SSA-00002-000.nii.gz").unlink()
    out = tmp_path / "summary.json"
    with pytest.raises(FileNotFoundError, match="BraTS-SSA-00002-000"):
        evaluate_folder(gt, pred, out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="BraTS-SSA-00009-000"):
        evaluate_folder(gt, pred, out, case_ids=["BraTS-SSA-00001-000", "BraTS-SSA-00009-000"])


def test_geometry_mismatch_is_an_error(folders, tmp_path):
    gt, pred, arrays = folders
    r, p = arrays["BraTS-SSA-00001-000"]
    write(pred / "BraTS-SSA-00001-000.nii.gz", p, spacing_xyz=(1.0, 1.0, 1.0))
    out = tmp_path / "summary.json"
    with pytest.raises(ValueError, match="BraTS-SSA-00001-000.*spacing"):
        evaluate_folder(gt, pred, out)
    assert not out.exists() and not list(tmp_path.glob(".summary*"))
    write(pred / "BraTS-SSA-00001-000.nii.gz", p[:, :-1])
    with pytest.raises(ValueError, match="size"):
        evaluate_folder(gt, pred)


def test_cli_evaluate(folders, capsys):
    gt, pred, _ = folders
    assert main(["evaluate", str(gt), str(pred), "--hd95", "brats2023"]) == 0
    printed = capsys.readouterr().out
    assert "WT" in printed and "average" in printed
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["config"]["hd95"] == "brats2023"
    assert main(["evaluate", str(gt), str(pred / "missing")]) == 1

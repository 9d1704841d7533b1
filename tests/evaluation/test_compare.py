"""Table 2 and paired statistics on synthetic summary files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import stats

from nnunet_transfer.cli import main
from nnunet_transfer.evaluation.compare import CACHE_NAME, compare_strategies
from nnunet_transfer.evaluation.evaluate import summarize, write_json_atomic

LABELS = ("NCR", "ED", "ET")
FOLDS = {0: ["c01", "c02", "c03", "c04"], 1: ["c05", "c06", "c07", "c08"], 2: ["c09", "c10", "c11", "c12"]}


def write_strategy(root, rng, offset):
    """A results-folder-like strategy: fold_k/validation/summary.json with random metrics."""
    values = {}
    for fold, cases in FOLDS.items():
        entries = []
        for case in cases:
            metrics = {}
            for label in LABELS:
                d = float(np.clip(rng.uniform(0.5, 0.95) + offset, 0, 1))
                h = float(rng.uniform(1, 20) - 10 * offset)
                metrics[label] = {"Dice": d, "HD95": h}
                values[(case, label)] = (d, h)
            entries.append({"case_id": case, "reference_file": f"gt/{case}.nii.gz",
                            "prediction_file": f"p/{case}.nii.gz", "metrics": metrics})
        write_json_atomic(summarize(entries, {"hd95": "medpy"}), root / f"fold_{fold}" / "validation" / "summary.json")
    return values


@pytest.fixture
def strategies(tmp_path):
    rng = np.random.default_rng(0)
    values = {}
    for name, offset in (("Baseline", 0.0), ("FT", 0.1), ("DANN", 0.12)):
        values[name] = write_strategy(tmp_path / name, rng, offset)
    return tmp_path, values


def fold_means(values, metric, label):
    idx = 0 if metric == "Dice" else 1
    out = []
    for cases in FOLDS.values():
        if label == "Average":
            out.append(np.mean([np.mean([values[(c, l)][idx] for l in LABELS]) for c in cases]))
        else:
            out.append(np.mean([values[(c, label)][idx] for c in cases]))
    return np.array(out)


def case_values(values, metric, label):
    idx = 0 if metric == "Dice" else 1
    cases = [c for cs in FOLDS.values() for c in cs]
    if label == "Average":
        return np.array([np.mean([values[(c, l)][idx] for l in LABELS]) for c in cases])
    return np.array([values[(c, label)][idx] for c in cases])


def test_table_and_tests_match_scipy(strategies):
    root, values = strategies
    out = root / "cmp"
    result = compare_strategies({n: [root / n] for n in ("Baseline", "FT", "DANN")}, "Baseline", out)
    assert result["folds"] == ["0", "1", "2"]
    for name in ("Baseline", "FT", "DANN"):
        for metric in ("Dice", "HD95"):
            for label in (*LABELS, "Average"):
                means = fold_means(values[name], metric, label)
                cell = result["table"][name][metric][label]
                assert cell["mean"] == pytest.approx(means.mean())
                assert cell["std"] == pytest.approx(means.std(ddof=1))
    for name in ("FT", "DANN"):
        for metric in ("Dice", "HD95"):
            for label in (*LABELS, "Average"):
                a, b = fold_means(values[name], metric, label), fold_means(values["Baseline"], metric, label)
                t = result["tests"][name]["per_fold"][metric][label]
                assert t["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
                assert t["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
                a, b = case_values(values[name], metric, label), case_values(values["Baseline"], metric, label)
                t = result["tests"][name]["per_case"][metric][label]
                assert t["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
                assert t["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
                assert t["n"] == 12


def test_output_files_exist_and_parse(strategies):
    root, _ = strategies
    out = root / "cmp"
    result = compare_strategies({"Baseline": [root / "Baseline"], "FT": [root / "FT"]}, "Baseline", out)
    md = (out / "table2.md").read_text()
    assert md == result["markdown"] and "| FT |" in md and "Dice NCR" in md
    rows = list(csv.DictReader((out / "table2.csv").open()))
    assert [r["strategy"] for r in rows] == ["Baseline", "FT"]
    assert float(rows[1]["Dice_Average_mean"]) == pytest.approx(result["table"]["FT"]["Dice"]["Average"]["mean"],
                                                                rel=1e-5)
    data = json.loads((out / "comparison.json").read_text())
    assert data["reference"] == "Baseline" and data["tests"]["FT"]["per_case"]["HD95"]["ET"]["n"] == 12
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".compare.*"))


def test_summary_files_and_fold_subsets(strategies):
    root, _ = strategies
    files = {n: [root / n / f"fold_{k}" / "validation" / "summary.json" for k in (0, 1)] for n in ("Baseline", "FT")}
    result = compare_strategies(files, "Baseline", root / "cmp2")
    assert result["folds"] == ["0", "1"] and len(result["case_ids"]) == 8
    result = compare_strategies({n: root / n for n in ("Baseline", "FT")}, "Baseline", root / "cmp3", folds=[2])
    assert result["folds"] == ["2"] and result["table"]["FT"]["Dice"]["NCR"]["std"] == 0.0
    with pytest.raises(ValueError, match="'medpy' HD95 definition"):
        compare_strategies(files, "Baseline", root / "cmp4", hd95="brats2023")


def test_different_cases_are_an_error(strategies):
    root, _ = strategies
    summary_file = root / "FT" / "fold_1" / "validation" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["metric_per_case"][0]["case_id"] = "c99"
    summary_file.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"fold 1: FT was validated on a different case set.*c99"):
        compare_strategies({"Baseline": root / "Baseline", "FT": root / "FT"}, "Baseline", root / "cmp")
    assert not (root / "cmp" / "table2.md").exists()
    with pytest.raises(ValueError, match="reference"):
        compare_strategies({"Baseline": root / "Baseline"}, "Nope", root / "cmp")


def test_nnunet_fold_without_hd95_is_evaluated_and_cached(tmp_path):
    """An nnU-Net validation folder (Dice-only summary.json plus predictions) gets evaluated."""
    rng = np.random.default_rng(1)
    gt = tmp_path / "gt"
    gt.mkdir()
    for name in ("A", "B"):
        for fold, cases in ((0, ["x1", "x2"]), (1, ["x3", "x4"])):
            validation = tmp_path / name / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            (validation / "summary.json").write_text(json.dumps(
                {"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.5}},
                 "metric_per_case": [{"metrics": {"1": {"Dice": 0.5}}, "reference_file": f"{c}.nii.gz",
                                      "prediction_file": f"{c}.nii.gz"} for c in cases]}))
            for case in cases:
                ref = np.zeros((8, 10, 10), np.uint8)
                ref[2:6, 2:8, 2:8] = 2
                ref[3:5, 4:6, 4:6] = 3
                ref[3, 5, 5] = 1
                pred = np.roll(ref, int(rng.integers(0, 2)), axis=2)
                for folder, array in ((gt, ref), (validation, pred)):
                    sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{case}.nii.gz"))
    out = tmp_path / "cmp"
    assert main(["compare", "-s", f"A={tmp_path / 'A'}", "-s", f"B={tmp_path / 'B'}", "-r", "A",
                 "--gt-dir", str(gt), "-o", str(out)]) == 0
    cache = tmp_path / "A" / "fold_1" / "validation" / CACHE_NAME
    assert json.loads(cache.read_text())["case_ids"] == ["x3", "x4"]
    nnunet_summary = json.loads((tmp_path / "A" / "fold_1" / "validation" / "summary.json").read_text())
    assert "HD95" not in nnunet_summary["metric_per_case"][0]["metrics"]["1"]  # left untouched
    assert (out / "table2.md").is_file()


def test_notes_name_the_design_choice_each_pair_of_combined_rows_isolates(tmp_path):
    rng = np.random.default_rng(1)
    write_strategy(tmp_path / "Baseline", rng, 0.0)
    dataset = tmp_path / "results" / "Dataset233_BraTS23GLISSA"
    rows = {"Combined": "nnUNetTrainerMixedDomainUniform_PaperRecipe",
            "Combined (balanced batches)": "nnUNetTrainerMixedDomain_PaperRecipe",
            "DANN": "nnUNetTrainerDANN_PaperRecipe", "DANN without GRL": "nnUNetTrainerDANNNoGRL_PaperRecipe",
            "DANN (nnU-Net recipe)": "nnUNetTrainerDANN"}  # another recipe: compared with none of them
    for offset, (label, trainer) in enumerate(rows.items()):
        write_strategy(dataset / f"{trainer}__nnUNetPlans_from231__3d_fullres", rng, 0.01 * offset)
    paths = {"Baseline": tmp_path / "Baseline",
             **{label: dataset / f"{trainer}__nnUNetPlans_from231__3d_fullres" for label, trainer in rows.items()}}
    out = tmp_path / "cmp"
    notes = compare_strategies(paths, "Baseline", out)["notes"]
    assert [note.split(" isolates ")[0] for note in notes if " isolates " in note] == [
        "Combined vs Combined (balanced batches)", "Combined (balanced batches) vs DANN / DANN without GRL",
        "DANN vs DANN without GRL"]
    assert notes[0].startswith("Combined vs Combined (balanced batches) isolates the sampling: ")
    assert "Combined: cases drawn uniformly; Combined (balanced batches): domain-balanced batches" in notes[0]
    assert ("Combined (balanced batches) vs DANN / DANN without GRL isolates the domain loss: they share the "
            "sampler (domain-balanced batches, target share 0.5)") in notes[2]
    assert "Combined vs DANN / DANN without GRL differ in both the sampling and the domain loss" in notes[1]
    assert not any("nnU-Net recipe" in note for note in notes) and len(notes) == 4
    markdown = (out / "table2.md").read_text()
    assert "### Notes" in markdown and f"- {notes[0]}" in markdown
    assert json.loads((out / "comparison.json").read_text())["notes"] == notes
    # without two comparable combined-dataset rows there is nothing to say
    result = compare_strategies({"Baseline": tmp_path / "Baseline", "DANN": paths["DANN"]}, "Baseline", tmp_path / "c2")
    assert result["notes"] == [] and "### Notes" not in result["markdown"]


def test_notes_compare_label_hiding_rows_only_with_rows_that_used_the_same_target_labels(tmp_path):
    rng = np.random.default_rng(2)
    write_strategy(tmp_path / "Baseline", rng, 0.0)
    dataset = tmp_path / "results" / "Dataset943_DemoGLISSA"
    rows = {"Combined (balanced batches)": ("nnUNetTrainerMixedDomain", None),
            "DANN (supervised)": ("nnUNetTrainerDANN", None),
            "DANN (semi-supervised)": ("nnUNetTrainerDANNSemiSupervised", 2),
            "DANN (unsupervised)": ("nnUNetTrainerDANNUnsupervised", 0),
            "Combined (balanced, unsupervised)": ("nnUNetTrainerMixedDomainUnsupervised", 0),
            "No record": ("nnUNetTrainerDANNNoGRLUnsupervised", "missing")}
    paths = {"Baseline": tmp_path / "Baseline"}
    for offset, (label, (trainer, labelled)) in enumerate(rows.items()):
        folder = dataset / f"{trainer}__nnUNetPlansTiny_from941__3d_fullres"
        write_strategy(folder, rng, 0.01 * offset)
        if labelled not in (None, "missing"):  # nnU-Net's debug.json holds str(value) of the run state
            for fold in FOLDS:
                state = {"setting": labelled, "hidden_label_use": "mask",
                         "labelled": [f"SSA-{fold}-{i}" for i in range(labelled)], "hidden": []}
                (folder / f"fold_{fold}" / "debug.json").write_text(json.dumps({"target_labels": str(state)}))
        paths[label] = folder
    notes = compare_strategies(paths, "Baseline", tmp_path / "cmp")["notes"]
    design = [note for note in notes if " isolates " in note or " differ in " in note]
    # the supervised rows compare with each other; the unsupervised DANN only with its control, which it
    # differs from in the domain loss alone (the same per-domain batches, the same hidden labels)
    assert [note.split(" isolates ")[0].split(" differ in ")[0] for note in design] == [
        "Combined (balanced batches) vs DANN (supervised)", "DANN (unsupervised) vs Combined (balanced, unsupervised)"]
    assert ("isolates the domain loss: they share the sampler (a batch of source and one of target cases per "
            "step)") in design[1]
    assert not any("No record" in note or "semi-supervised" in note for note in design)

    # only the compared folds' runs count: not fold_all, not a fold left out of the table
    unsupervised, control = paths["DANN (unsupervised)"], paths["Combined (balanced, unsupervised)"]
    other = {"setting": 1, "hidden_label_use": "mask", "labelled": ["SSA-x"], "hidden": []}
    (unsupervised / "fold_all").mkdir()
    (unsupervised / "fold_all" / "debug.json").write_text(json.dumps({"target_labels": str(other)}))
    (control / "fold_2" / "debug.json").write_text(json.dumps({"target_labels": str(other)}))

    def pairs(**kwargs):
        notes = compare_strategies(paths, "Baseline", tmp_path / "cmp2", **kwargs)["notes"]
        return [n.split(" isolates ")[0] for n in notes if " isolates " in n]

    assert "DANN (unsupervised) vs Combined (balanced, unsupervised)" not in pairs()
    assert "DANN (unsupervised) vs Combined (balanced, unsupervised)" in pairs(folds=[0, 1])


def _pp_strategies(tmp_path, monkeypatch):
    """A baseline and an nnU-Net results folder whose predictions carry small false-positive specks."""
    from nnunet_transfer.postprocessing.io import write_rules
    from nnunet_transfer.postprocessing.rules import Rules
    from tests.postprocessing.conftest import speck_cases, write_label, write_results_folder

    folds = speck_cases()
    model, gt = write_results_folder(tmp_path, folds)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    baseline = tmp_path / "baseline"
    for fold, cases in folds.items():
        for case, reference, _ in cases:
            write_label(baseline / f"fold_{fold}" / "validation" / f"{case}.nii.gz", reference)
    write_rules(model / "brats_postprocessing.json", Rules({"WT": 30}))
    return baseline, model, gt


def test_post_processed_row_follows_its_strategy(tmp_path, monkeypatch):
    from nnunet_transfer.evaluation.compare import POSTPROCESSED_DIR

    baseline, model, gt = _pp_strategies(tmp_path, monkeypatch)
    result = compare_strategies({"Baseline": [baseline], "FT": [model]}, "Baseline", tmp_path / "cmp",
                                gt_dir=gt, postprocessing={"FT": None})
    assert result["strategies"] == ["Baseline", "FT", "FT + post-processing"]
    table = result["table"]
    assert table["FT"]["Dice"]["ED"]["mean"] < 1.0
    assert table["FT + post-processing"]["Dice"]["ED"]["mean"] == pytest.approx(1.0)
    assert table["FT + post-processing"]["HD95"]["Average"]["mean"] == pytest.approx(0.0)
    summary = model / POSTPROCESSED_DIR / "fold_1" / "validation" / CACHE_NAME
    assert summary.is_file() and "FT + post-processing" in result["markdown"]
    stamp = summary.stat().st_mtime_ns
    # a rerun reuses the post-processed folds; the CLI takes NAME or NAME=RULES_JSON
    assert main(["compare", "-s", f"Baseline={baseline}", "-s", f"FT={model}", "-r", "Baseline", "-o",
                 str(tmp_path / "cmp2"), "--gt-dir", str(gt), "--postprocessing", "FT"]) == 0
    assert summary.stat().st_mtime_ns == stamp
    assert "| FT + post-processing |" in (tmp_path / "cmp2" / "table2.md").read_text()


def test_post_processed_rows_need_predictions_and_a_known_strategy(tmp_path, monkeypatch):
    baseline, model, gt = _pp_strategies(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="'DANN', which is not among the strategies"):
        compare_strategies({"Baseline": [baseline], "FT": [model]}, "Baseline", tmp_path / "c", gt_dir=gt,
                           postprocessing={"DANN": None})
    with pytest.raises(FileNotFoundError, match="brats_postprocessing.json does not exist"):
        compare_strategies({"Baseline": [baseline], "FT": [model]}, "Baseline", tmp_path / "c", gt_dir=gt,
                           postprocessing={"Baseline": None})
    summary = tmp_path / "s.json"
    summary.write_text("{}")
    with pytest.raises(FileNotFoundError, match="not a folder of fold predictions"):
        compare_strategies({"Baseline": [baseline], "FT": [summary]}, "Baseline", tmp_path / "c", gt_dir=gt,
                           postprocessing={"FT": model / "brats_postprocessing.json"})

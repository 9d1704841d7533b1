"""Tuning on small synthetic fold sets where the right thresholds are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_transfer.postprocessing.io import read_rules_file
from nnunet_transfer.postprocessing.rules import Rules
from nnunet_transfer.postprocessing.sources import collect_cases
from nnunet_transfer.postprocessing.tune import (Candidates, Case, crop, load_cases, score_rules, score_step, tune,
                                               tune_folder, with_rule)
from tests.postprocessing.conftest import speck, speck_cases, tumour, write_label

WT_GRID = Candidates(component_mm3=(5, 10, 30, 50, 100, 300), et_volume_mm3=(), et_tc_ratio=(), structures=("WT",))


def cases_from(folds) -> list:
    return [Case(case, fold, ref, pred, (1.0, 1.0, 1.0)) for fold, items in folds.items() for case, ref, pred in items]


@pytest.mark.parametrize("metric", ["lesion-dice", "dice"])
def test_wt_threshold_between_false_specks_and_true_lesions(metric):
    result = tune(cases_from(speck_cases()), metric, WT_GRID)
    assert result.rules == Rules({"WT": 30})
    (step,) = result.steps
    assert step.rule == "min_component_mm3.WT" and step.accepted and step.threshold == 30
    assert step.candidates["5"] == pytest.approx(result.before)  # removes nothing
    assert step.candidates["10"] < step.candidates["30"] == step.candidates["50"] == step.candidates["100"]
    assert step.candidates["300"] < step.candidates["30"]  # would remove the real 216 mm³ lesions
    assert result.after == pytest.approx(1.0) and result.before < 1.0
    if metric == "lesion-dice":  # 1 lesion + 1 false positive: WT lesion Dice 1/2; TC and ET untouched
        assert result.regions_before == pytest.approx({"WT": (4 * 0.5 + 2 * (2 / 3)) / 6, "TC": 1.0, "ET": 1.0})
    assert result.regions_after == {"WT": 1.0, "TC": 1.0, "ET": 1.0}


def test_et_relabelled_as_ncr_where_the_reference_has_no_et():
    folds = {}
    for index in range(6):
        if index < 3:  # references without ET; the prediction calls a core of 8 or 27 mm³ ET
            reference = tumour(et=False)
            prediction = reference.copy()
            speck(prediction, (8, 8, 8), 2 if index % 2 else 3, label=3)
        else:          # references and predictions with a 208 mm³ ET
            reference = prediction = tumour()
        folds.setdefault(str(index % 2), []).append((f"c{index}", reference, prediction))
    grid = Candidates(et_volume_mm3=(10, 30, 100, 300), et_tc_ratio=(0.05, 0.2, 0.99), structures=())
    result = tune(cases_from(folds), "lesion-dice", grid)
    assert [s.rule for s in result.steps] == ["et_to_ncr.volume_mm3", "et_to_ncr.et_tc_ratio"]
    assert result.rules == Rules(et_to_ncr_volume_mm3=30)
    assert result.steps[0].candidates["300"] < result.steps[0].candidates["30"]  # would hit the real ET
    assert not result.steps[1].accepted  # nothing left to gain: the ratio rule is not kept
    assert result.steps[1].before == result.steps[1].after == pytest.approx(1.0)
    assert result.regions_before["ET"] == pytest.approx(0.5) and result.after == pytest.approx(1.0)


def test_nothing_kept_when_nothing_helps_and_rules_run_in_the_tuned_order():
    folds = {"0": [("a", tumour(), tumour())], "1": [("b", tumour(et=False), tumour(et=False))]}
    result = tune(cases_from(folds))
    assert result.rules.is_identity and result.before == result.after == 1.0
    assert [s.rule for s in result.steps] == ["min_component_mm3.WT", "min_component_mm3.TC", "min_component_mm3.ET",
                                              "et_to_ncr.volume_mm3", "et_to_ncr.et_tc_ratio"]
    assert not any(s.accepted for s in result.steps)
    labels = Candidates(structures=("ED", "WT", "NCR"))
    assert [r for r, _ in labels.steps()][:3] == ["min_component_mm3.WT", "min_component_mm3.NCR",
                                                  "min_component_mm3.ED"]


def test_deterministic_and_parallel_gives_the_same_result():
    cases = cases_from(speck_cases())
    first = tune(cases, "lesion-dice", WT_GRID)
    again = tune(list(cases), "lesion-dice", WT_GRID, num_processes=2)
    assert first.to_dict() == again.to_dict()


def test_cropping_changes_no_score():
    reference = np.zeros((40, 40, 40), np.uint8)
    reference[5:15, 5:15, 5:15] = tumour((10, 10, 10), (5, 5, 5))
    prediction = reference.copy()
    speck(prediction, (12, 14, 2), 2)  # a false positive near, but not touching, the lesion
    full = Case("x", "0", reference, prediction, (1.0, 1.0, 1.0))
    cropped = Case("x", "0", *crop(reference, prediction), (1.0, 1.0, 1.0))
    assert cropped.reference.shape < reference.shape
    rules = [Rules(), Rules({"WT": 10}), Rules({"ET": 500})]
    assert score_rules(full, rules, "lesion-dice", ("WT", "TC", "ET")) == \
        score_rules(cropped, rules, "lesion-dice", ("WT", "TC", "ET"))


def test_tune_folder_writes_the_rules_next_to_the_model(speck_folder):
    model, gt = speck_folder
    result = tune_folder(model, candidates=WT_GRID)
    document = read_rules_file(model / "brats_postprocessing.json")
    assert document["rules"] == result.rules == Rules({"WT": 30})
    tuning = document["tuning"]
    assert tuning["metric"] == "lesion-dice" and tuning["folds"] == ["0", "1", "2"] and tuning["n_cases"] == 6
    assert tuning["steps"][0]["before"] == pytest.approx(result.before)
    assert tuning["sources"] == {"predictions": str(model), "labels": str(gt)}
    # a subset of folds, another output file
    subset = tune_folder(model, folds=[1], candidates=WT_GRID, output=model / "other.json")
    assert subset.folds == ["1"] and len(subset.case_ids) == 2
    assert json.loads((model / "other.json").read_text())["tuning"]["folds"] == ["1"]


def test_bad_cases_are_clear_errors(speck_folder):
    model, gt = speck_folder
    write_label(gt / "case00.nii.gz", tumour(), spacing_xyz=(1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match=r"Case case00: the prediction .*case00.nii.gz does not match the geometry"):
        load_cases(collect_cases(model))
    write_label(gt / "case00.nii.gz", np.full((32, 32, 32), 5, np.uint8))
    with pytest.raises(ValueError, match=r"Case case00: .*gt_segmentations/case00.nii.gz: reference holds label"):
        load_cases(collect_cases(model))
    with pytest.raises(ValueError, match="unknown metric"):
        tune([], "hd95")
    with pytest.raises(ValueError, match="no validation cases"):
        tune([])
    with pytest.raises(ValueError, match="thresholds must be finite and > 0"):
        Candidates(component_mm3=(0, 10))


def test_shared_work_per_step_equals_applying_each_rule_set():
    rng = np.random.default_rng(3)
    reference = tumour()
    prediction = reference.copy()
    for corner, size, label in (((26, 2, 2), 2, 2), ((2, 26, 2), 3, 3), ((10, 10, 10), 1, 2), ((20, 20, 20), 4, 1)):
        speck(prediction, corner, size, label)
    noise = rng.random(prediction.shape) < 0.002
    prediction[noise] = rng.integers(1, 4, int(noise.sum()))
    case = Case("x", "0", reference, prediction, (1.0, 1.0, 1.5))
    regions = ("WT", "TC", "ET")
    for current, rule, thresholds in ((Rules(), "min_component_mm3.WT", (1, 5, 10, 40, 100)),
                                      (Rules({"WT": 5}), "min_component_mm3.TC", (2, 20, 200)),
                                      (Rules({"WT": 5, "ET": 3}), "et_to_ncr.volume_mm3", (10, 100, 1000)),
                                      (Rules({"TC": 4}, 50), "et_to_ncr.et_tc_ratio", (0.1, 0.5, 0.99)),
                                      (Rules({"ET": 5}), "min_component_mm3.WT", (2, 30))):  # out of order
        base, shared = score_step(case, current, rule, thresholds, "lesion-dice", regions)
        expected = score_rules(case, [current] + [with_rule(current, rule, t) for t in thresholds],
                               "lesion-dice", regions)
        assert [base, *shared] == expected, rule
        seeded = score_step(case, current, rule, thresholds, "lesion-dice", regions, current_scores=base)
        assert seeded == (base, shared)

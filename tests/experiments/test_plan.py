"""Plan files: the shipped plans load, and bad plans fail with errors naming the key."""

from __future__ import annotations

import copy

import pytest

from nnunet_transfer.experiments.plan import (PlanError, expand_source, load_plan, parse_plan, selected_strategies,
                                              shipped_plan, tomllib)


def _table2() -> dict:
    return tomllib.loads(shipped_plan("brats_ssa_table2").read_text())


def test_shipped_plans_load():
    plan = load_plan(shipped_plan("brats_ssa_table2"))
    assert plan.folds == 10 and plan.target_domain == "SSA"
    assert {r: d.id for r, d in plan.datasets.items()} == {"source": 231, "target": 232, "combined": 233}
    assert [s.trainer for s in plan.strategies.values()] == [
        "nnUNetTrainerSourceOnly", "nnUNetTrainerMixedDomainUniform", "nnUNetTrainerFineTune",
        "nnUNetTrainerFineTuneFrozenDecoder", "nnUNetTrainerDANN", "nnUNetTrainerDANNNoGRL"]
    assert plan.strategies["finetune"].init == "baseline"
    assert plan.strategies["baseline"].evaluate == "cross-domain"
    assert plan.target_plans == "nnUNetPlans_from231"
    demo = load_plan("demo")  # a shipped plan by name
    assert demo.source.is_synth and demo.training_plans == "nnUNetPlansTiny"
    assert demo.fingerprint_voxels == 1e5 and demo.env["nnUNetTransfer_num_epochs"] == "4"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(foldz=3), "brats_ssa_table2.toml: foldz: unknown key"),
    (lambda d: d.update(folds="ten"), "folds: must be int"),
    (lambda d: d.update(folds=1), "folds: invalid value 1"),
    (lambda d: d["datasets"].pop("target"), "datasets.target: missing"),
    (lambda d: d["datasets"].update(extra={"id": 5, "name": "x", "source": "y"}), "datasets.extra: unknown key"),
    (lambda d: d["datasets"]["target"].update(id=231), "datasets.target.id: 231 is also the id of datasets.source"),
    (lambda d: d["datasets"]["source"].update(id=1000), "datasets.source.id: invalid value 1000"),
    (lambda d: d["datasets"]["combined"].update(source="x"), "datasets.combined: give exactly one of"),
    (lambda d: d["datasets"]["source"].update(n=3), "datasets.source.n: only meaningful with source = \"synth\""),
    (lambda d: d["datasets"]["source"].update(source="synth", domain=None) or d["datasets"]["source"].pop("domain"),
     "datasets.source.domain: missing"),
    (lambda d: d["strategies"]["dann"].pop("trainer"), "strategies.dann.trainer: missing"),
    (lambda d: d["strategies"]["dann"].update(trainer="not a class"), "strategies.dann.trainer: invalid value"),
    (lambda d: d["strategies"]["dann"].update(dataset="tgt"), "strategies.dann.dataset: invalid value 'tgt'"),
    (lambda d: d["strategies"]["dann"].update(lr=1), "strategies.dann.lr: unknown key"),
    (lambda d: d["strategies"]["finetune"].update(init="basline"), "strategies.finetune.init: unknown strategy 'basline'"),
    (lambda d: d["strategies"]["finetune"].update(init="dann"), "strategies.finetune.init: strategy 'dann' is trained per fold"),
    (lambda d: d["strategies"]["baseline"].pop("fold"), "strategies.baseline.fold: strategies on the source dataset"),
    (lambda d: d["strategies"]["combined"].update(evaluate="cross-domain"), "strategies.combined.evaluate"),
    (lambda d: d["strategies"]["combined"].update(fold="3"), "strategies.combined.fold: invalid value '3'"),
    (lambda d: d.update(reference="nope"), "reference: unknown strategy 'nope'"),
    (lambda d: d.update(device="tpu"), "device: invalid value 'tpu'"),
    (lambda d: d.update(overrides={"shrink": {"features": 3}}), "overrides.shrink.features: unknown key"),
    (lambda d: d.update(overrides={"env": {"X": [1]}}), "overrides.env.X: must be a string or number"),
    (lambda d: d.update(strategies={}), "strategies: at least one strategy"),
])
def test_validation_errors_name_the_key(edit, message):
    data = copy.deepcopy(_table2())
    edit(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data, origin="brats_ssa_table2.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("brats_ssa_table2.toml: ")


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(PlanError, match="bad.toml: not valid TOML"):
        load_plan(bad)
    with pytest.raises(FileNotFoundError, match="shipped plans: brats_ssa_table2, demo"):
        load_plan(tmp_path / "missing.toml")


def test_unset_source_variable_is_named(monkeypatch):
    plan = load_plan(shipped_plan("brats_ssa_table2"))
    monkeypatch.delenv("BRATS_GLI", raising=False)
    with pytest.raises(ValueError, match=r"datasets.source.source '\$BRATS_GLI'.*BRATS_GLI is not set"):
        expand_source(plan.source)
    monkeypatch.setenv("BRATS_GLI", "/data/gli")
    assert expand_source(plan.source) == "/data/gli"


def test_selected_strategies_add_what_they_start_from():
    plan = load_plan(shipped_plan("brats_ssa_table2"))
    assert [s.key for s in selected_strategies(plan, ["finetune"])] == ["baseline", "finetune"]
    assert len(selected_strategies(plan)) == 6
    with pytest.raises(ValueError, match="unknown strategy fine"):
        selected_strategies(plan, ["fine"])

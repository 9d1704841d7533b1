"""Plan files: bad plans fail with errors naming the key (the shipped plans: tests/plans)."""

from __future__ import annotations

import copy

import pytest

from nnunet_transfer.experiments.plan import (PLANS_DIR, PlanError, expand_source, load_plan, parse_plan, selected_strategies,
                                              shipped_plan, tomllib)


def _table2() -> dict:
    return tomllib.loads(shipped_plan("brats_ssa_table2").read_text())


def _error_of_edited_table2(edit) -> str:
    data = copy.deepcopy(_table2())
    edit(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data, origin="brats_ssa_table2.toml")
    return str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(foldz=3), "brats_ssa_table2.toml: foldz: unknown key"),
    (lambda d: d.update(folds="ten"), "folds: must be int"),
    (lambda d: d.update(folds=1), "folds: invalid value 1"),
    (lambda d: d["datasets"].pop("target"), "datasets.target: missing"),
    (lambda d: d["datasets"].update(extra={"id": 5, "name": "x", "source": "y", "lr": 1}), "datasets.extra.lr: unknown key"),
    (lambda d: d["datasets"].update({"bad name": {"id": 5, "name": "x", "source": "y"}}), "datasets.bad name: dataset names"),
    (lambda d: d["datasets"]["target"].update(id=231), "datasets.target.id: 231 is also the id of datasets.source"),
    (lambda d: d["datasets"]["source"].update(id=1000), "datasets.source.id: invalid value 1000"),
    (lambda d: d["datasets"]["combined"].update(source="x"), "datasets.combined: give exactly one of"),
    (lambda d: d["datasets"]["source"].update(n=3), "datasets.source.n: only meaningful with source = \"synth\""),
    (lambda d: d["datasets"]["target"].update(tumours="GLI"),
     "datasets.target.tumours: only meaningful with source = \"synth\""),
    (lambda d: d["datasets"]["target"].update(source="synth", domain="SSA", tumours="adult"),
     "datasets.target.tumours: invalid value 'adult': GLI or SSA"),
    (lambda d: d["datasets"]["source"].update(source="synth", domain=None) or d["datasets"]["source"].pop("domain"),
     "datasets.source.domain: missing"),
    (lambda d: d["strategies"]["dann"].pop("trainer"), "strategies.dann.trainer: missing"),
    (lambda d: d["strategies"]["dann"].update(trainer="not a class"), "strategies.dann.trainer: invalid value"),
    (lambda d: d["strategies"]["dann"].update(dataset="tgt"), "strategies.dann.dataset: dataset 'tgt' is not defined"),
    (lambda d: d["strategies"]["dann"].update(lr=1), "strategies.dann.lr: unknown key"),
    (lambda d: d["strategies"]["finetune"].update(init="basline"), "strategies.finetune.init: unknown strategy 'basline'"),
    (lambda d: d["strategies"]["finetune"].update(init="dann"), "strategies.finetune.init: strategy 'dann' is trained per fold"),
    (lambda d: d["strategies"]["baseline"].pop("fold"), "strategies.baseline.fold: strategies on a source dataset ('source') train once"),
    (lambda d: d["strategies"]["combined"].update(evaluate="cross-domain"), "strategies.combined.evaluate"),
    (lambda d: d["strategies"]["combined"].update(fold="3"), "strategies.combined.fold: invalid value '3'"),
    (lambda d: d.update(reference="nope"), "reference: unknown strategy 'nope'"),
    (lambda d: d.update(device="tpu"), "device: invalid value 'tpu'"),
    (lambda d: d.update(overrides={"shrink": {"features": 3}}), "overrides.shrink.features: unknown key"),
    (lambda d: d.update(overrides={"env": {"X": [1]}}), "overrides.env.X: must be a string or number"),
    (lambda d: d["strategies"]["dann"].update(env={"nnUNetTransfer_num_epochs": True}),
     "strategies.dann.env.nnUNetTransfer_num_epochs: must be a string or number"),
    (lambda d: d["strategies"]["dann"].update(env={"1BAD": 2}), "strategies.dann.env.1BAD: is not a valid"),
    (lambda d: d["strategies"]["dann"].update(env=3), "strategies.dann.env: must be dict"),
    (lambda d: d.update(test_time_mirroring="no"), "test_time_mirroring: must be bool"),
    (lambda d: d.update(strategies={}), "strategies: at least one strategy"),
])
def test_validation_errors_name_the_key(edit, message):
    error = _error_of_edited_table2(edit)
    assert message in error
    assert error.startswith("brats_ssa_table2.toml: ")


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(PlanError, match="bad.toml: not valid TOML"):
        load_plan(bad)
    shipped = ", ".join(sorted(p.stem for p in PLANS_DIR.glob("*.toml")))  # the error lists every shipped plan
    assert "brats_ssa_table2, brats_ssa_table2_nnunet_recipe, brats_ssa_uda, demo" in shipped
    with pytest.raises(FileNotFoundError, match=f"shipped plans: {shipped}\\)"):
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
    assert [s.key for s in selected_strategies(plan, ["brainunet_finetune"])] == ["brainunet", "brainunet_finetune"]
    assert len(selected_strategies(plan)) == 9
    with pytest.raises(ValueError, match="unknown strategy fine"):
        selected_strategies(plan, ["fine"])


def _family(d: dict) -> dict:
    return d["plans_families"]["brainunet"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(plans_families=[1]), "plans_families: must be dict"),
    (lambda d: _family(d).update(derive="magic"), "plans_families.brainunet.derive: invalid value 'magic'"),
    (lambda d: _family(d).pop("derive"), "plans_families.brainunet.derive: missing"),
    (lambda d: _family(d).pop("name"), "plans_families.brainunet.name: missing"),
    (lambda d: _family(d).update(nme="x"), "plans_families.brainunet.nme: unknown key"),
    (lambda d: _family(d).update(source="src3"), "plans_families.brainunet.source: dataset 'src3' is not defined"),
    (lambda d: _family(d).update(target="source_3ch"), "plans_families.brainunet.target: the target dataset must"),
    (lambda d: _family(d).update(target="target"), "plans_families.brainunet.target: dataset 'target' has channels"),
    (lambda d: _family(d).update(name="nnUNetPlans"), "plans_families.brainunet.name: the derived plans need"),
    (lambda d: _family(d).update(base="nnUNetResEncUNetMPlans"),
     "plans_families.brainunet.base: no step makes plans 'nnUNetResEncUNetMPlans' for dataset 'source_3ch'"),
    (lambda d: _family(d).update(args=["-o", "X"]), "plans_families.brainunet.args: -o is set by the plan: use the family's 'name'"),
    (lambda d: _family(d).update(args=[3]), "plans_families.brainunet.args: must be a list of strings"),
    (lambda d: _family(d).update(shrink={"max_features": 8}), "plans_families.brainunet.shrink: only with derive"),
    (lambda d: _family(d).update(derive="shrink"), "plans_families.brainunet.shrink: missing (required with derive"),
    (lambda d: _family(d).update(derive="shrink", shrink={"plans_name": "x"}), "plans_families.brainunet.shrink.plans_name"),
    (lambda d: _family(d).update(derive="shrink", shrink={"size": 2}), "plans_families.brainunet.shrink.size: unknown key"),
    (lambda d: d["plans_families"].update(default={"derive": "shrink"}), "plans_families.default: 'default' is the plan's own"),
    (lambda d: d["plans_families"].update(b2=dict(_family(d))), "plans_families.brainunet.name: 'nnUNetPlans_BrainUNet' is also"),
    (lambda d: d["plans_families"].update(b2=dict(_family(d), name="B2", base="B3"), b3=dict(_family(d), name="B3", base="B2")),
     "base: circular derivation"),
    (lambda d: d["strategies"]["brainunet"].update(plans="brainunt"), "strategies.brainunet.plans: unknown plans family 'brainunt' (known: default, brainunet)"),
    (lambda d: d["strategies"]["brainunet_finetune"].update(dataset="target"),
     "strategies.brainunet_finetune.dataset: dataset 'target' has channels ['t1n', 't1c', 't2w', 't2f'] but plans family 'brainunet'"),
    (lambda d: d["strategies"]["brainunet_finetune"].update(init="baseline"),
     "strategies.brainunet_finetune.init: strategy 'baseline' trains with plans family 'default'"),
    (lambda d: d["strategies"]["brainunet"].pop("fold"), "strategies.brainunet.fold: strategies on a source dataset ('source_3ch')"),
    (lambda d: d["strategies"]["brainunet"].update(label="Baseline"), "strategies.brainunet.label: 'Baseline' is also the label of strategies.baseline"),
    (lambda d: d["datasets"]["target_3ch"].update(convert_args=["--modalities", "t1n"]),
     "datasets.target_3ch.convert_args: --modalities is set by the plan: use the dataset's 'modalities' key"),
    (lambda d: d["datasets"]["target_3ch"].update(convert_args="--clip"), "datasets.target_3ch.convert_args: must be list"),
    (lambda d: d["datasets"]["combined"].update(convert_args=["--link"]), "datasets.combined.convert_args: only datasets converted"),
    (lambda d: d["datasets"]["combined"].update(combine=["source", "target_3ch"]), "datasets.combined.combine: the combined datasets have different channels"),
    (lambda d: d["datasets"]["combined"].update(combine=["source", "tgt"]), "datasets.combined.combine: dataset 'tgt' is not defined"),
])
def test_plans_family_errors_name_the_key(edit, message):
    assert message in _error_of_edited_table2(edit)


def test_family_derived_from_another_family_and_unused_families():
    data = copy.deepcopy(_table2())
    data["plans_families"]["tiny"] = {"source": "source_3ch", "target": "target_3ch", "derive": "shrink",
                                      "name": "nnUNetPlans_BrainUNetTiny", "base": "nnUNetPlans_BrainUNet",
                                      "shrink": {"patch_size": [64, 64, 64]}}
    plan = parse_plan(data)
    tiny = plan.families["tiny"]
    assert plan.base_family(tiny) is plan.families["brainunet"]
    assert plan.data_plans(tiny) == "nnUNetPlans_BrainUNet"  # shrunken plans share their base's data
    assert tiny.transferred_name == "nnUNetPlans_BrainUNetTiny_from234"
    # a family no strategy uses is allowed (e.g. a plan copy that keeps only some strategies)
    data["strategies"] = {k: v for k, v in data["strategies"].items() if k in ("baseline", "finetune")}
    data.pop("ensembles")  # its members are gone
    assert list(parse_plan(data).families) == ["default", "brainunet", "tiny"]

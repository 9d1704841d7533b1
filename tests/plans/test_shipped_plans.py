"""The plans shipped in plans/: each loads, builds its steps, and holds what its name promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_transfer.experiments.steps import build_steps
from nnunet_transfer.experiments.plan import PLANS_DIR, load_plan, shipped_plan

SHIPPED = sorted(p.stem for p in PLANS_DIR.glob("*.toml"))


def test_plans_folder_is_the_installed_package_folder():
    import nnunet_transfer.plans

    assert PLANS_DIR.is_dir() and not PLANS_DIR.is_symlink()
    assert PLANS_DIR == Path(nnunet_transfer.plans.__file__).resolve().parent
    assert {"brats_ssa_table2", "demo"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_plan_builds_its_steps(name, tmp_path, monkeypatch, nnunet_env):
    for variable in ("BRATS_GLI", "BRATS_SSA"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    steps = build_steps(load_plan(name), tmp_path / "work")
    assert steps and len({s.name for s in steps}) == len(steps)


def test_shipped_plans_load():
    plan = load_plan(shipped_plan("brats_ssa_table2"))
    assert plan.folds == 10 and plan.target_domain == "SSA"
    assert {r: d.id for r, d in plan.datasets.items()} == {"source": 231, "target": 232, "combined": 233,
                                                           "source_3ch": 234, "target_3ch": 235}
    assert [s.trainer for s in plan.strategies.values()] == [
        "nnUNetTrainerSourceOnly", "nnUNetTrainerMixedDomainUniform", "nnUNetTrainerFineTune",
        "nnUNetTrainerFineTuneFrozenDecoder", "nnUNetTrainerDANN", "nnUNetTrainerDANNNoGRL",
        "nnUNetTrainerBrainUNet", "nnUNetTrainerBrainUNetFineTune"]
    assert plan.strategies["finetune"].init == "baseline"
    assert plan.strategies["baseline"].evaluate == "cross-domain"
    assert plan.target_plans == "nnUNetPlans_from231"
    # BrainUNet: its own plans family on three-channel, clipped conversions
    brainunet = plan.families["brainunet"]
    assert (brainunet.source, brainunet.target, brainunet.derive) == ("source_3ch", "target_3ch", "brainunet-plans")
    assert brainunet.transferred_name == "nnUNetPlans_BrainUNet_from234"
    assert plan.datasets["target_3ch"].modalities == ("t2f", "t1c", "t2w")
    assert plan.datasets["target_3ch"].convert_args == ("--clip-percentiles", "0.5", "99.5")
    assert plan.plans_for(plan.strategies["brainunet"]) == "nnUNetPlans_BrainUNet"
    assert plan.plans_for(plan.strategies["brainunet_finetune"]) == "nnUNetPlans_BrainUNet_from234"
    assert plan.plans_for(plan.strategies["dann"]) == "nnUNetPlans_from231"
    demo = load_plan("demo")  # a shipped plan by name
    assert demo.source.is_synth and demo.training_plans == "nnUNetPlansTiny"
    assert demo.fingerprint_voxels == 1e5 and demo.env["nnUNetTransfer_num_epochs"] == "4"
    assert demo.strategies["finetune"].env == {"nnUNetTransfer_num_epochs": "2",
                                               "nnUNetTransfer_iterations_per_epoch": "30"}
    assert demo.strategies["dann"].env == {} and demo.test_time_mirroring is False
    assert plan.test_time_mirroring is True  # nnU-Net's default
    alone = load_plan("brainunet")
    assert [s.plans for s in alone.strategies.values()] == ["brainunet", "brainunet"]
    assert {r: d.id for r, d in alone.datasets.items()} == {"source": 234, "target": 235}  # shared with Table 2
    assert alone.families["brainunet"].name == brainunet.name



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
    assert {"brats_ssa_table2", "brats_ssa_table2_nnunet_recipe", "demo"} <= set(SHIPPED)


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
    # the paper's recipe for its six rows and the balanced-batch row; BrainUNet keeps its own
    assert {k: s.trainer for k, s in plan.strategies.items()} == {
        "baseline": "nnUNetTrainerSourceOnly_PaperRecipe", "combined": "nnUNetTrainerMixedDomainUniform_PaperRecipe",
        "combined_balanced": "nnUNetTrainerMixedDomain_PaperRecipe", "finetune": "nnUNetTrainerFineTune_PaperRecipe",
        "finetune_frozen_decoder": "nnUNetTrainerFineTuneFrozenDecoder_PaperRecipe",
        "dann": "nnUNetTrainerDANN_PaperRecipe", "dann_no_grl": "nnUNetTrainerDANNNoGRL_PaperRecipe",
        "brainunet": "nnUNetTrainerBrainUNet", "brainunet_finetune": "nnUNetTrainerBrainUNetFineTune"}
    assert plan.strategies["combined_balanced"].label == "Combined (balanced batches)"
    assert {plan.strategies[k].dataset for k in ("combined", "combined_balanced", "dann", "dann_no_grl")} == {"combined"}
    assert plan.strategies["finetune"].init == plan.strategies["finetune_frozen_decoder"].init == "baseline"
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
    # fine-tuning: the same 200 steps as training from scratch, at nnU-Net's learning rate; every training seeded
    assert demo.strategies["finetune"].env == demo.strategies["finetune_frozen_decoder"].env == {
        "nnUNetTransfer_initial_lr": "0.01"}
    assert demo.env["nnUNetTransfer_seed"] == "0"
    assert all(spec.convert_args == ("--regions",) for spec in demo.datasets.values() if not spec.combine)
    assert demo.strategies["dann"].env == {} and demo.test_time_mirroring is False
    assert demo.strategies["combined_balanced"].trainer == "nnUNetTrainerMixedDomain"
    assert demo.strategies["combined_balanced"].env == {}  # the from-scratch schedule of overrides.env
    assert plan.test_time_mirroring is True  # nnU-Net's default
    alone = load_plan("brainunet")
    assert [s.plans for s in alone.strategies.values()] == ["brainunet", "brainunet"]
    assert {r: d.id for r, d in alone.datasets.items()} == {"source": 234, "target": 235}  # shared with Table 2
    assert alone.families["brainunet"].name == brainunet.name


def test_the_nnunet_recipe_plan_is_table2_with_the_plain_trainers():
    paper, nnunet = load_plan("brats_ssa_table2"), load_plan("brats_ssa_table2_nnunet_recipe")
    assert nnunet.name == "brats_ssa_table2_nnunet_recipe" != paper.name  # default work dirs runs/<name> differ
    assert {r: nnunet.datasets[r] for r in nnunet.datasets} == {r: paper.datasets[r] for r in ("source", "target", "combined")}
    assert list(nnunet.strategies) == [k for k in paper.strategies if not k.startswith("brainunet")]
    for key, strategy in nnunet.strategies.items():
        mirror = paper.strategies[key]
        assert mirror.trainer == f"{strategy.trainer}_PaperRecipe"
        assert (strategy.label, strategy.dataset, strategy.fold, strategy.init, strategy.evaluate) == (
            mirror.label, mirror.dataset, mirror.fold, mirror.init, mirror.evaluate)
    assert (nnunet.folds, nnunet.split_seed, nnunet.plans, nnunet.target_plans) == (
        paper.folds, paper.split_seed, paper.plans, paper.target_plans)




@pytest.mark.parametrize("name", ["brats_ssa_table2", "brats_ssa_table2_nnunet_recipe"])
def test_table2_plans_post_process_every_row_and_ensemble_dann_with_fine_tuning(name):
    plan = load_plan(name)
    ensemble = plan.ensembles["dann_finetune"]
    assert (ensemble.members, ensemble.label) == (("dann", "finetune"), "DANN + Fine-Tuning")
    assert list(plan.ensembles) == ["dann_finetune"]
    assert plan.postprocessing == (*plan.strategies, "dann_finetune")  # postprocessing = true
    assert plan.postprocessing_metric == "lesion-dice"
    assert plan.ensemble_members == ("finetune", "dann")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_trainer_of_a_shipped_plan_exists(name):
    import nnunet_transfer.brainunet.trainers as brainunet
    import nnunet_transfer.training.trainers as trainers

    for key, strategy in load_plan(name).strategies.items():
        assert hasattr(trainers, strategy.trainer) or hasattr(brainunet, strategy.trainer), (name, key, strategy.trainer)


def test_the_uda_plans_run_every_regime_on_the_same_labelled_subset():
    from nnunet_transfer import config
    import nnunet_transfer.training.trainers as trainers

    for name, labelled in (("brats_ssa_uda", "10"), ("demo_uda", "2")):
        plan = load_plan(name)
        strategies = plan.strategies
        assert strategies["dann_unsupervised"].trainer.startswith("nnUNetTrainerDANNUnsupervised")
        # its control: the same batches on the same dataset, without the domain loss
        control = strategies["mixed_unsupervised"]
        assert control.trainer.startswith("nnUNetTrainerMixedDomainUnsupervised")
        assert control.dataset == strategies["dann_unsupervised"].dataset
        assert control.trainer.endswith("_PaperRecipe") == strategies["dann_unsupervised"].trainer.endswith("_PaperRecipe")
        dann, mixed = (getattr(trainers, strategies[k].trainer) for k in ("dann_unsupervised", "mixed_unsupervised"))
        for knob in ("labelled_target_cases", "batch_per_domain", "target_share", "hidden_label_use"):
            assert getattr(mixed, knob) == getattr(dann, knob), (name, knob)
        assert not hasattr(mixed, "domain_loss_weight")
        assert strategies["dann_semi"].trainer.startswith("nnUNetTrainerDANNSemiSupervised")
        assert strategies["finetune_labelled"].trainer.startswith("nnUNetTrainerFineTuneLabelledSubset")
        # semi-supervised DANN and its competitor see the same number of labelled target cases
        assert strategies["dann_semi"].env == strategies["finetune_labelled"].env == \
            {config.LABELLED_TARGET_CASES: labelled}
        assert strategies["finetune_labelled"].init == "baseline" and plan.reference == "baseline"
    assert all(s.trainer.endswith("_PaperRecipe") for s in load_plan("brats_ssa_uda").strategies.values())
    assert not any("Unsupervised" in s.trainer for s in load_plan("demo").strategies.values())  # demo_uda's

"""The step graph and its dry run for the Table 2 plan: order, arguments, the plans transfer."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import Layout, build_steps, dry_run, load_plan, shipped_plan
from nnunet_transfer.experiments.steps import _synth_done


@pytest.fixture
def table2(nnunet_env):
    return load_plan(shipped_plan("brats_ssa_table2"))


def _index(lines, prefix):
    matches = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert matches, f"no line starts with {prefix!r}"
    return matches[0]


def test_dry_run_table2_order_and_arguments(table2, tmp_path, nnunet_env):
    lines = [line for line in dry_run(table2, build_steps(table2, tmp_path / "work")).splitlines()
             if not line.startswith("export ")]
    first = lambda prefix: _index(lines, prefix)  # noqa: E731
    assert lines[0] == 'nnunet-transfer convert "$BRATS_GLI" -d 231 -n BraTS23GLI --domain GLI -np 8'
    # the combined dataset records the plan's target domain: trainers must not guess it from case counts
    assert first("nnunet-transfer combine 231 232 -d 233 -n BraTS23GLISSA --target-domain SSA") > \
        first("nnunet-transfer convert \"$BRATS_SSA\"")
    # fingerprint and plan every dataset, then move the source plans (source first, then target)
    transfer = "nnUNetv2_move_plans_between_datasets -s 231 -t {} -sp nnUNetPlans -tp nnUNetPlans_from231"
    for dataset in (232, 233):
        assert first(f"nnUNetv2_extract_fingerprint -d {dataset} -np 8") < first(f"nnUNetv2_plan_experiment -d {dataset}")
        assert first(f"nnUNetv2_plan_experiment -d {dataset}") < first(transfer.format(dataset))
        assert first(transfer.format(dataset)) < first(
            f"nnUNetv2_preprocess -d {dataset} -plans_name nnUNetPlans_from231 -c 3d_fullres -np 8")
    assert first("nnUNetv2_plan_experiment -d 231") < first(transfer.format(232))
    assert first("nnUNetv2_preprocess -d 231 -plans_name nnUNetPlans -c 3d_fullres") < first("nnunet-transfer splits")
    assert "nnunet-transfer splits 232 233 235 --target-domain SSA --folds 10 --seed 12345" in lines
    # the source model once, before everything that starts from it
    source_train = "nnUNetv2_train 231 3d_fullres all -tr nnUNetTrainerSourceOnly_PaperRecipe -p nnUNetPlans -device cuda"
    assert lines.count(source_train) == 1
    assert first("nnunet-transfer splits") < first(source_train) < first("nnUNetv2_train 232")
    checkpoint = (f"{nnunet_env['nnUNet_results']}/Dataset231_BraTS23GLI/"
                  "nnUNetTrainerSourceOnly_PaperRecipe__nnUNetPlans__3d_fullres/fold_all/checkpoint_final.pth")
    trains = [line for line in lines if line.startswith("nnUNetv2_train")]
    # the paper's six and the balanced-batch row, then BrainUNet pre-training and fine-tuning
    assert len(trains) == 1 + 6 * 10 + 1 + 10
    for fold in range(10):
        # the ensemble's members (DANN, fine-tuning) save their validation probabilities: --npz
        for trainer, npz in (("nnUNetTrainerFineTune_PaperRecipe", " --npz"),
                             ("nnUNetTrainerFineTuneFrozenDecoder_PaperRecipe", "")):
            assert (f"nnUNetv2_train 232 3d_fullres {fold} -tr {trainer} -p nnUNetPlans_from231 "
                    f"-pretrained_weights {checkpoint}{npz} -device cuda") in lines
        for trainer, npz in (("nnUNetTrainerMixedDomainUniform_PaperRecipe", ""),
                             ("nnUNetTrainerMixedDomain_PaperRecipe", ""), ("nnUNetTrainerDANN_PaperRecipe", " --npz"),
                             ("nnUNetTrainerDANNNoGRL_PaperRecipe", "")):
            assert f"nnUNetv2_train 233 3d_fullres {fold} -tr {trainer} -p nnUNetPlans_from231{npz} -device cuda" in lines
        assert any(line.startswith(f"nnunet-transfer predict-folds {checkpoint.rsplit('/fold_all', 1)[0]} 232 -o ")
                   and f" -f {fold} --model-folds all" in line for line in lines)
    assert sum(line.endswith("--npz -device cuda") for line in trains) == 20
    assert sum(line.startswith("nnunet-transfer evaluate ") for line in lines) == 6 * 10 + 10 + 10  # + the ensemble
    assert lines[-1].startswith("nnunet-transfer compare --strategy Baseline=")
    assert "--strategy 'BrainUNet Fine-Tuning=" in lines[-1]
    assert ("--strategy 'Combined (balanced batches)=" f"{nnunet_env['nnUNet_results']}/Dataset233_BraTS23GLISSA/"
            "nnUNetTrainerMixedDomain_PaperRecipe__nnUNetPlans_from231__3d_fullres'") in lines[-1]
    assert "--reference Baseline" in lines[-1] and lines[-1].endswith("--folds 0 1 2 3 4 5 6 7 8 9")
    assert max(i for i, line in enumerate(lines) if line.startswith("nnUNetv2_train")) < first("nnunet-transfer predict-folds")


def test_folds_and_strategies_restrict_the_chain(table2, tmp_path):
    steps = build_steps(table2, tmp_path, folds=[3], strategies=["finetune"])
    names = [s.name for s in steps]
    assert "train-baseline-fold_all" in names and "train-finetune-fold_3" in names
    assert not any("dann" in n or "fold_0" in n for n in names)
    assert names[-1] == "compare"
    with pytest.raises(ValueError, match="fold\\(s\\) 10 out of range"):
        build_steps(table2, tmp_path, folds=[10])


def test_dry_run_of_demo_shrinks_and_uses_small_fingerprints(nnunet_env, tmp_path, demo_with_strategy_env):
    plan = load_plan(demo_with_strategy_env)
    text = dry_run(plan, build_steps(plan, tmp_path))
    assert "export nnUNetTransfer_num_epochs=4" in text
    assert f"export nnUNet_extTrainer={nnunet_env['nnUNet_extTrainer']}" in text
    lines = text.splitlines()
    assert f"nnunet-transfer synth {tmp_path}/data/DemoSSA --domain SSA -n 12 --seed 0 --shape 64 64 48" in lines
    assert any(line.endswith("--step fingerprint-source") for line in lines)
    shrink = [i for i, line in enumerate(lines) if line.endswith("--step shrink-plans")][0]
    transfer = _index(lines, "nnUNetv2_move_plans_between_datasets -s 941 -t 942 -sp nnUNetPlansTiny -tp nnUNetPlansTiny_from941")
    assert _index(lines, "nnUNetv2_plan_experiment -d 941") < shrink < transfer
    # a strategy's own [env] leads its commands; the plan's overrides.env is exported once
    assert "nnUNetv2_train 941 3d_fullres all -tr nnUNetTrainerSourceOnly -p nnUNetPlansTiny -device cpu" in lines
    env = "nnUNetTransfer_initial_lr=0.01 nnUNetTransfer_num_epochs=2 nnUNetTransfer_iterations_per_epoch=30"
    assert any(line.startswith(f"{env} nnUNetv2_train 942 3d_fullres 0 -tr nnUNetTrainerFineTune ") for line in lines)
    assert "export nnUNetTransfer_test_time_mirroring=0" in text  # test_time_mirroring = false
    assert any(" predict-folds " in line and "--no-mirroring" in line for line in lines)


def test_synthetic_target_with_the_source_population_of_tumours(nnunet_env, tmp_path):
    """``tumours = "GLI"``: the synth step draws GLI's tumours; a folder of other settings reruns it."""
    from nnunet_transfer.synth import write_brats_cases

    text = shipped_plan("demo").read_text().replace("[datasets.target]\n", '[datasets.target]\ntumours = "gli"\n', 1)
    (tmp_path / "p.toml").write_text(text)
    plan = load_plan(tmp_path / "p.toml")
    assert plan.datasets["target"].tumours == "GLI" and plan.datasets["source"].tumours is None
    steps = {s.name: s for s in build_steps(plan, tmp_path / "work")}
    folder = tmp_path / "work" / "data" / "DemoSSA"
    assert steps["synth-target"].command[-8:] == ["--seed", "0", "--shape", "64", "64", "48", "--tumours", "GLI"]
    assert "--tumours" not in steps["synth-source"].command
    small = dataclasses.replace(plan.datasets["target"], n=1, shape=(32, 32, 24))
    done = _synth_done(folder, small)
    write_brats_cases(folder, "SSA", n=1, shape=(32, 32, 24))  # SSA's own tumours
    assert not done()
    write_brats_cases(folder, "SSA", n=1, shape=(32, 32, 24), tumours="GLI", overwrite=True)
    assert done()


def test_run_cli_dry_run_and_plan_error(nnunet_env, tmp_path, capsys):
    assert main(["run", "demo", "--dry-run", "--workdir", str(tmp_path), "--folds", "0"]) == 0
    out = capsys.readouterr().out
    assert "nnUNetv2_train 942 3d_fullres 0 -tr nnUNetTrainerFineTune" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(shipped_plan("demo").read_text().replace('dataset = "target"', 'dataset = "tgt"', 1))
    assert main(["run", str(bad), "--dry-run"]) == 1


def test_dry_run_brainunet_plan(nnunet_env, tmp_path):
    plan = load_plan("brainunet")
    lines = [line for line in dry_run(plan, build_steps(plan, tmp_path / "work")).splitlines()
             if not line.startswith("export ")]
    results = nnunet_env["nnUNet_results"]
    model = f"{results}/Dataset234_BraTS23GLI3chClip/nnUNetTrainerBrainUNet__nnUNetPlans_BrainUNet__3d_fullres"
    assert lines[:12] == [
        'nnunet-transfer convert "$BRATS_GLI" -d 234 -n BraTS23GLI3chClip --modalities t2f t1c t2w --domain GLI '
        '--clip-percentiles 0.5 99.5 -np 8',
        'nnunet-transfer convert "$BRATS_SSA" -d 235 -n BraTS23SSA3chClip --modalities t2f t1c t2w --domain SSA '
        '--clip-percentiles 0.5 99.5 -np 8',
        "nnUNetv2_extract_fingerprint -d 234 -np 8",
        "nnUNetv2_extract_fingerprint -d 235 -np 8",
        "nnUNetv2_plan_experiment -d 234",
        "nnUNetv2_plan_experiment -d 235",
        "nnunet-transfer brainunet-plans 234 -p nnUNetPlans -o nnUNetPlans_BrainUNet -c 3d_fullres",
        "nnUNetv2_move_plans_between_datasets -s 234 -t 235 -sp nnUNetPlans_BrainUNet -tp nnUNetPlans_BrainUNet_from234",
        "nnUNetv2_preprocess -d 234 -plans_name nnUNetPlans_BrainUNet -c 3d_fullres -np 8",
        "nnUNetv2_preprocess -d 235 -plans_name nnUNetPlans_BrainUNet_from234 -c 3d_fullres -np 8",
        "nnunet-transfer splits 235 --target-domain SSA --folds 10 --seed 12345",
        "nnUNetv2_train 234 3d_fullres all -tr nnUNetTrainerBrainUNet -p nnUNetPlans_BrainUNet -device cuda",
    ]
    for fold in range(10):
        assert lines[12 + fold] == (
            f"nnUNetv2_train 235 3d_fullres {fold} -tr nnUNetTrainerBrainUNetFineTune -p nnUNetPlans_BrainUNet_from234 "
            f"-pretrained_weights {model}/fold_all/checkpoint_final.pth -device cuda")
        assert lines[22 + fold] == (f"nnunet-transfer predict-folds {model} 235 -o {tmp_path}/work/predictions/brainunet "
                                    f"-f {fold} --model-folds all -device cuda")
        finetuned = (f"{results}/Dataset235_BraTS23SSA3chClip/nnUNetTrainerBrainUNetFineTune__"
                     f"nnUNetPlans_BrainUNet_from234__3d_fullres/fold_{fold}/validation")
        assert lines[32 + fold] == (f"nnunet-transfer evaluate {nnunet_env['nnUNet_preprocessed']}/Dataset235_BraTS23SSA3chClip/"
                                    f"gt_segmentations {finetuned} -o {finetuned}/summary_brats.json")
    assert len(lines) == 43
    assert lines[-1].startswith(f"nnunet-transfer compare --strategy 'BrainUNet (pre-trained on GLI)="
                                f"{tmp_path}/work/predictions/brainunet' --strategy 'BrainUNet Fine-Tuning=")
    assert "--reference 'BrainUNet (pre-trained on GLI)'" in lines[-1]


def test_strategies_of_one_family_prepare_only_their_datasets(table2, tmp_path):
    names = [s.name for s in build_steps(table2, tmp_path, folds=[0], strategies=["brainunet_finetune"])]
    chain = ["convert-source_3ch", "convert-target_3ch", "fingerprint-source_3ch", "fingerprint-target_3ch",
             "plan-source_3ch", "plan-target_3ch", "derive-plans-brainunet", "transfer-plans-target_3ch-brainunet",
             "preprocess-source_3ch-brainunet", "preprocess-target_3ch-brainunet", "splits"]
    assert [n for n in names if n in chain] == chain
    # the comparison's reference (the baseline) is added with what it needs: the source's plans and data,
    # the target's raw data to predict; not the combined dataset, not the target's preprocessed data
    assert [n for n in names if n.startswith("train-")] == [
        "train-baseline-fold_all", "train-brainunet-fold_all", "train-brainunet_finetune-fold_0"]
    assert {"preprocess-source", "predict-baseline-fold_0", "convert-target"} <= set(names)
    assert not any(n.endswith("-combined") or n == "preprocess-target" for n in names)
    # the paper's six (and the balanced-batch row) alone leave the three-channel datasets alone
    paper = ["baseline", "combined", "combined_balanced", "finetune", "finetune_frozen_decoder", "dann", "dann_no_grl"]
    names = [s.name for s in build_steps(table2, tmp_path, folds=[0], strategies=paper)]
    assert not any("3ch" in n or "brainunet" in n for n in names)
    assert "transfer-plans-combined" in names and "preprocess-source" in names


def test_family_chain_shrinks_derived_plans_and_shares_data(nnunet_env, tmp_path):
    from nnunet_transfer.experiments.plan import parse_plan, tomllib

    data = tomllib.loads(shipped_plan("brainunet").read_text())
    data["plans_families"]["tiny"] = {"derive": "shrink", "name": "nnUNetPlans_BrainUNetTiny",
                                      "base": "nnUNetPlans_BrainUNet", "shrink": {"patch_size": [64, 64, 64]}}
    data["strategies"] = {"pre": {"trainer": "nnUNetTrainerBrainUNet", "plans": "tiny", "dataset": "source",
                                  "fold": "all", "evaluate": "cross-domain"},
                          "ft": {"trainer": "nnUNetTrainerBrainUNetFineTune", "plans": "tiny", "dataset": "target",
                                 "init": "pre"}}
    data["reference"] = "pre"
    plan = parse_plan(data, path=tmp_path / "tiny.toml")
    steps = build_steps(plan, tmp_path / "work", folds=[0])
    names = [s.name for s in steps]
    # the base family is derived first, though no strategy trains with it
    assert names.index("derive-plans-brainunet") < names.index("derive-plans-tiny") < names.index(
        "transfer-plans-target-tiny")
    assert not any(n.startswith(("transfer-plans-target-brainunet", "preprocess-target-brainunet")) for n in names)
    text = dry_run(plan, steps)
    assert text.count(" --step derive-plans-tiny") == 1
    # shrunken plans train on the data of the plans they shrink
    assert "nnUNetv2_preprocess -d 234 -plans_name nnUNetPlans_BrainUNet -c 3d_fullres -np 8" in text
    assert "nnUNetv2_preprocess -d 235 -plans_name nnUNetPlans_BrainUNetTiny_from234 -c 3d_fullres -np 8" in text
    assert "nnUNetv2_train 234 3d_fullres all -tr nnUNetTrainerBrainUNet -p nnUNetPlans_BrainUNetTiny -device cuda" in text


def test_demo_brainunet_derives_a_tiny_brainunet_from_the_demo_plans(nnunet_env, tmp_path):
    demo, plan = load_plan("demo"), load_plan("demo_brainunet")
    assert {r: d for r, d in plan.datasets.items()} == {r: demo.datasets[r] for r in ("source", "target")}
    steps = build_steps(plan, tmp_path)
    lines = dry_run(plan, steps).splitlines()
    shrink = next(i for i, line in enumerate(lines) if line.endswith("--step shrink-plans"))
    derive = _index(lines, "nnunet-transfer brainunet-plans 941 -p nnUNetPlansTiny -o nnUNetPlansTiny_BrainUNet "
                           "-c 3d_fullres --width-divisor 1 --max-features 32")
    assert shrink < derive < _index(lines, "nnUNetv2_move_plans_between_datasets -s 941 -t 942 "
                                           "-sp nnUNetPlansTiny_BrainUNet -tp nnUNetPlansTiny_BrainUNet_from941")
    # the baseline is the demo's own model; only the BrainUNet plans move to the target
    baseline = "nnUNetv2_train 941 3d_fullres all -tr nnUNetTrainerSourceOnly -p nnUNetPlansTiny -device cpu"
    assert baseline in lines and baseline in dry_run(demo, build_steps(demo, tmp_path))
    assert not any(line.startswith("nnUNetv2_move_plans_between_datasets") and "-tp nnUNetPlansTiny_from941" in line
                   for line in lines)
    assert sum(line.startswith(("nnUNetv2_train", "nnUNetTransfer_")) for line in lines) == 1 + 1 + 2
    assert "--strategy 'BrainUNet Fine-Tuning=" in lines[-1] and "--reference Baseline" in lines[-1]


def test_demo_brainunet_shares_the_demo_plans_folds_and_schedule():
    # the two plans share datasets, splits_final.json, the shrunken plans and the baseline model
    demo, plan = load_plan("demo"), load_plan("demo_brainunet")
    assert (plan.folds, plan.shrink, plan.env, plan.split_seed, plan.test_time_mirroring) == (
        demo.folds, demo.shrink, demo.env, demo.split_seed, demo.test_time_mirroring)



def _dry_run(plan: str, tmp_path, monkeypatch, capsys) -> list:
    """The nnUNetv2_train lines of ``nnunet-transfer run PLAN --dry-run``, split into tokens."""
    for variable in ("BRATS_GLI", "BRATS_SSA"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    assert main(["run", plan, "--dry-run", "--workdir", str(tmp_path / plan)]) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("nnUNetv2_train ")]


def test_dry_runs_of_the_two_table2_plans_train_with_their_recipes(nnunet_env, tmp_path, monkeypatch, capsys):
    trainings = _dry_run("brats_ssa_table2", tmp_path, monkeypatch, capsys)
    paper = Counter(line[line.index("-tr") + 1] for line in trainings)
    # the paper's six rows and the balanced-batch row with the paper's recipe (one fold-all model, 10 folds
    # each for the others), BrainUNet's rows with BrainUNet's
    assert paper == {"nnUNetTrainerSourceOnly_PaperRecipe": 1, "nnUNetTrainerMixedDomainUniform_PaperRecipe": 10,
                     "nnUNetTrainerMixedDomain_PaperRecipe": 10, "nnUNetTrainerFineTune_PaperRecipe": 10,
                     "nnUNetTrainerFineTuneFrozenDecoder_PaperRecipe": 10, "nnUNetTrainerDANN_PaperRecipe": 10,
                     "nnUNetTrainerDANNNoGRL_PaperRecipe": 10, "nnUNetTrainerBrainUNet": 1,
                     "nnUNetTrainerBrainUNetFineTune": 10}
    starts = {line[line.index("-pretrained_weights") + 1].split("/")[-3] for line in trainings
              if "-pretrained_weights" in line and line[1] == "232"}
    assert starts == {"nnUNetTrainerSourceOnly_PaperRecipe__nnUNetPlans__3d_fullres"}
    trainings = _dry_run("brats_ssa_table2_nnunet_recipe", tmp_path, monkeypatch, capsys)
    nnunet = Counter(line[line.index("-tr") + 1] for line in trainings)
    assert nnunet == {name.replace("_PaperRecipe", ""): n for name, n in paper.items() if "BrainUNet" not in name}
    starts = {line[line.index("-pretrained_weights") + 1].split("/")[-3] for line in trainings
              if "-pretrained_weights" in line}
    assert starts == {"nnUNetTrainerSourceOnly__nnUNetPlans__3d_fullres"}


def test_a_work_dir_holding_another_models_predictions_is_refused(nnunet_env, tmp_path):
    paper, nnunet = load_plan("brats_ssa_table2"), load_plan("brats_ssa_table2_nnunet_recipe")
    shared = tmp_path / "shared"
    layout, baseline = Layout.from_env(nnunet, shared), nnunet.strategies["baseline"]
    predictions = layout.prediction_dir(baseline)
    predictions.mkdir(parents=True)  # what predict-folds records after predicting with the nnU-Net-recipe baseline
    (predictions / "dataset.json").write_text(json.dumps({"source_model": str(layout.model_dir(baseline))}))
    assert build_steps(nnunet, shared)  # its own predictions
    with pytest.raises(ValueError, match=r"predictions/baseline holds predictions of .*nnUNetTrainerSourceOnly__nnUNetPlans"
                                         r"__3d_fullres, not of .*nnUNetTrainerSourceOnly_PaperRecipe__.*'brats_ssa_table2'"
                                         r"\)\. Fix: run every plan in a work dir of its own"):
        build_steps(paper, shared)
    assert build_steps(paper, tmp_path / "runs" / paper.name)  # a work dir of its own
    assert build_steps(paper, shared, strategies=["combined"])  # neither predicts nor compares with the baseline
    with pytest.raises(ValueError, match="holds predictions of"):  # compared with the baseline, its reference
        build_steps(paper, shared, strategies=["combined", "dann"])


def test_a_comparison_of_other_rows_is_redone(nnunet_env, tmp_path):
    """A comparison of a subset (``--strategies finetune``) does not count as the full plan's."""
    plan = load_plan(shipped_plan("demo"))
    subset = {s.name: s for s in build_steps(plan, tmp_path, strategies=["finetune"])}["compare"]
    full = {s.name: s for s in build_steps(plan, tmp_path)}["compare"]
    out = tmp_path / "comparison"
    out.mkdir()
    (out / "table2.md").write_text("| table |\n")
    (out / "comparison.json").write_text(json.dumps({"table": {"Baseline": {}, "Fine-Tuning": {}}}))
    assert subset.done() and not full.done()
    labels = [s.label for s in plan.strategies.values()]
    (out / "comparison.json").write_text(json.dumps({"table": {label: {} for label in labels}}))
    assert full.done() and not subset.done()

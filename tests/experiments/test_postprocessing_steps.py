"""Post-processing and ensemble rows in plans: tune-postprocessing, ensemble-folds, --npz, compare rows."""

from __future__ import annotations

import copy
import json
import logging
import os

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import Layout, build_steps, dry_run, load_plan, parse_plan, shipped_plan
from nnunet_transfer.experiments.plan import POSTPROCESSED_LABEL, tomllib
from nnunet_transfer.experiments.steps import phase_of, steps_by_name


@pytest.fixture
def table2(nnunet_env):
    return load_plan(shipped_plan("brats_ssa_table2"))


def _table2_data() -> dict:
    return tomllib.loads(shipped_plan("brats_ssa_table2").read_text())


def test_the_row_label_is_compares():
    from nnunet_transfer.evaluation.compare import POSTPROCESSED_LABEL as COMPARE_LABEL

    assert POSTPROCESSED_LABEL == COMPARE_LABEL


def test_dry_run_of_table2_tunes_ensembles_and_compares_every_row(nnunet_env, tmp_path, monkeypatch, capsys):
    for variable in ("BRATS_GLI", "BRATS_SSA"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    work = tmp_path / "work"
    assert main(["run", "brats_ssa_table2", "--dry-run", "--workdir", str(work)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("export ")]
    results, pre = nnunet_env["nnUNet_results"], nnunet_env["nnUNet_preprocessed"]
    dann = f"{results}/Dataset233_BraTS23GLISSA/nnUNetTrainerDANN_PaperRecipe__nnUNetPlans_from231__3d_fullres"
    finetune = f"{results}/Dataset232_BraTS23SSA/nnUNetTrainerFineTune_PaperRecipe__nnUNetPlans_from231__3d_fullres"
    folds = "0 1 2 3 4 5 6 7 8 9"
    # the members train with --npz (nnU-Net saves the validation's probabilities), the others do not
    npz = [line for line in lines if line.startswith("nnUNetv2_train") and " --npz " in line]
    assert len(npz) == 20 and all("-tr nnUNetTrainerDANN_PaperRecipe " in line
                                  or "-tr nnUNetTrainerFineTune_PaperRecipe " in line for line in npz)
    ensemble = f"nnunet-transfer ensemble-folds {dann} {finetune} -o {work}/predictions/dann_finetune -f {folds} -np 8"
    assert ensemble in lines
    last_training = max(i for i, line in enumerate(lines) if line.startswith("nnUNetv2_train"))
    assert lines.index(ensemble) > last_training
    for fold in range(10):
        validation = f"{work}/predictions/dann_finetune/fold_{fold}/validation"
        assert (f"nnunet-transfer evaluate {pre}/Dataset233_BraTS23GLISSA/gt_segmentations {validation} "
                f"-o {validation}/summary_brats.json") in lines
    tune = "nnunet-transfer tune-postprocessing {} -f " + folds + " --metric lesion-dice -np 8 --labels {}"
    expected = [tune.format(f"{work}/predictions/baseline", f"{pre}/Dataset232_BraTS23SSA/gt_segmentations"),
                tune.format(finetune, f"{pre}/Dataset232_BraTS23SSA/gt_segmentations"),
                tune.format(dann, f"{pre}/Dataset233_BraTS23GLISSA/gt_segmentations"),
                tune.format(f"{work}/predictions/brainunet", f"{pre}/Dataset235_BraTS23SSA3chClip/gt_segmentations"),
                tune.format(f"{work}/predictions/dann_finetune", f"{pre}/Dataset233_BraTS23GLISSA/gt_segmentations")]
    for line in expected:
        assert line in lines
    tunes = [i for i, line in enumerate(lines) if line.startswith("nnunet-transfer tune-postprocessing ")]
    assert len(tunes) == 9 + 1  # every strategy and the ensemble (postprocessing = true)
    evaluations = [i for i, line in enumerate(lines) if line.startswith(("nnunet-transfer evaluate",
                                                                          "nnunet-transfer predict-folds"))]
    assert min(tunes) > max(evaluations) and max(tunes) < len(lines) - 1
    compare = lines[-1]
    assert compare.startswith("nnunet-transfer compare --strategy Baseline=")
    assert f"--strategy 'DANN + Fine-Tuning={work}/predictions/dann_finetune'" in compare
    for label in ("Baseline", "Combined", "'Combined (balanced batches)'", "Fine-Tuning",
                  "'Fine-Tuning (frozen decoder)'", "DANN", "'DANN without GRL'", "'BrainUNet (pre-trained on GLI)'",
                  "'BrainUNet Fine-Tuning'", "'DANN + Fine-Tuning'"):
        assert f" --postprocessing {label} " in compare
    assert compare.index("--strategy 'DANN + Fine-Tuning=") < compare.index("--postprocessing")
    assert compare.endswith(f"--reference Baseline -o {work}/comparison -np 8 --folds {folds}")


def test_after_of_the_new_steps(table2, tmp_path):
    steps = build_steps(table2, tmp_path / "w", folds=[0, 1])
    by_name = steps_by_name(steps)
    assert by_name["tune-postprocessing-finetune"].after == [
        "train-finetune-fold_0", "train-finetune-fold_1", "evaluate-finetune-fold_0", "evaluate-finetune-fold_1"]
    assert by_name["tune-postprocessing-baseline"].after == [
        "train-baseline-fold_all", "predict-baseline-fold_0", "predict-baseline-fold_1"]
    assert by_name["ensemble-dann_finetune"].after == [
        "train-dann-fold_0", "train-dann-fold_1", "train-finetune-fold_0", "train-finetune-fold_1"]
    assert by_name["evaluate-dann_finetune-fold_1"].after == ["ensemble-dann_finetune"]
    assert by_name["tune-postprocessing-dann_finetune"].after == [
        "ensemble-dann_finetune", "evaluate-dann_finetune-fold_0", "evaluate-dann_finetune-fold_1"]
    compare = by_name["compare"]
    assert {f"tune-postprocessing-{k}" for k in [*table2.strategies, "dann_finetune"]} <= set(compare.after)
    assert {"ensemble-dann_finetune", "evaluate-dann_finetune-fold_0"} <= set(compare.after)
    assert {by_name[n].job for n in by_name if n.startswith(("tune-", "ensemble-", "evaluate-dann_finetune"))} == {
        "compare"}
    assert (phase_of("tune-postprocessing-dann"), phase_of("ensemble-dann_finetune")) == ("evaluation", "prediction")
    assert not any(s.uses_gpu for s in steps if s.job == "compare")


def test_an_ensemble_is_selected_by_its_key_and_pulls_in_its_members(table2, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nnunet_transfer"):
        names = [s.name for s in build_steps(table2, tmp_path, folds=[0], strategies=["dann_finetune"])]
    assert [n for n in names if n.startswith("train-")] == ["train-baseline-fold_all", "train-finetune-fold_0",
                                                             "train-dann-fold_0"]
    assert names[-7:] == ["ensemble-dann_finetune", "evaluate-dann_finetune-fold_0", "tune-postprocessing-baseline",
                          "tune-postprocessing-finetune", "tune-postprocessing-dann",
                          "tune-postprocessing-dann_finetune", "compare"]
    assert "added strategy dann: a member of ensemble dann_finetune" in caplog.text
    assert "added strategy baseline: finetune starts from it; the comparison's reference" in caplog.text
    # the members alone: no ensemble row, but the same training commands (--npz)
    steps = steps_by_name(build_steps(table2, tmp_path, folds=[0], strategies=["finetune", "dann"]))
    assert not any(n.startswith(("ensemble-", "evaluate-dann_finetune", "tune-postprocessing-dann_finetune"))
                   for n in steps)
    assert "--npz" in steps["train-dann-fold_0"].command
    assert "'DANN + Fine-Tuning" not in steps["compare"].shell()
    with pytest.raises(ValueError, match="unknown strategy dan .*; ensembles: dann_finetune"):
        build_steps(table2, tmp_path, strategies=["dan"])


def test_a_cross_domain_row_whose_target_is_not_preprocessed_tunes_on_its_raw_labels(table2, tmp_path, nnunet_env):
    steps = steps_by_name(build_steps(table2, tmp_path, folds=[0], strategies=["brainunet_finetune"]))
    baseline = steps["tune-postprocessing-baseline"].command
    assert baseline[baseline.index("--labels") + 1] == f"{nnunet_env['nnUNet_raw']}/Dataset232_BraTS23SSA/labelsTr"
    brainunet = steps["tune-postprocessing-brainunet"].command
    assert brainunet[brainunet.index("--labels") + 1] == (f"{nnunet_env['nnUNet_preprocessed']}/"
                                                          "Dataset235_BraTS23SSA3chClip/gt_segmentations")


def _write(path, data="{}", mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_tuning_is_done_when_its_rules_are_newer_than_the_summaries_and_of_these_folds(table2, tmp_path):
    steps = steps_by_name(build_steps(table2, tmp_path, folds=[0, 1], strategies=["finetune"]))
    tune = steps["tune-postprocessing-finetune"]
    folder = Layout.from_env(table2, tmp_path).model_dir(table2.strategies["finetune"])
    assert tune.markers == [folder / "brats_postprocessing.json"] and not tune.done()
    _write(folder / "fold_0" / "validation" / "summary.json", mtime=1000)
    summary = _write(folder / "fold_1" / "validation" / "summary_brats.json", mtime=1000)
    rules = {"format": "nnunet-transfer BraTS post-processing", "schema_version": 1, "rules": {},
             "tuning": {"metric": "lesion-dice", "folds": ["0", "1"]}}
    _write(tune.markers[0], rules, mtime=2000)
    assert tune.done()
    os.utime(summary, (3000, 3000))  # a fold validated again since: tune again
    assert not tune.done()
    os.utime(tune.markers[0], (4000, 4000))
    assert tune.done()
    for tuning in ({"metric": "lesion-dice", "folds": ["0"]}, {"metric": "dice", "folds": ["0", "1"]}, {}):
        _write(tune.markers[0], {**rules, "tuning": tuning}, mtime=4000)
        assert not tune.done(), tuning
    _write(tune.markers[0], "not json", mtime=4000)
    assert not tune.done()


def test_an_ensemble_members_training_is_done_with_its_probabilities(table2, tmp_path):
    steps = steps_by_name(build_steps(table2, tmp_path, folds=[0]))
    member, other = steps["train-finetune-fold_0"], steps["train-finetune_frozen_decoder-fold_0"]
    for step in (member, other):
        _write(step.training.final)
        _write(step.training.summary)
        _write(step.training.summary.parent / "BraTS-SSA-00002-000.nii.gz", "")
    assert other.done() and not member.done()
    # a finished training without probabilities validates again, with them
    command = member.current_command()
    assert command[-1] == "--val" and "--npz" in command and "-pretrained_weights" not in command
    assert "--npz" not in other.command
    _write(member.training.summary.parent / "BraTS-SSA-00002-000.npz", "")
    assert not member.done()  # and the .pkl nnU-Net writes beside it
    _write(member.training.summary.parent / "BraTS-SSA-00002-000.pkl", "")
    assert member.done()


def test_the_ensemble_is_done_for_its_members_and_folds_when_newer_than_their_probabilities(table2, tmp_path):
    steps = steps_by_name(build_steps(table2, tmp_path, folds=[0, 1], strategies=["dann_finetune"]))
    step = steps["ensemble-dann_finetune"]
    layout = Layout.from_env(table2, tmp_path)
    members = [layout.model_dir(table2.strategies[k]) for k in ("dann", "finetune")]
    assert step.command[:4] == ["nnunet-transfer", "ensemble-folds", str(members[0]), str(members[1])]
    npz = [_write(m / f"fold_{f}" / "validation" / "case.npz", "", mtime=1000) for m in members for f in (0, 1)]
    marker = step.markers[0]
    assert marker == tmp_path / "predictions" / "dann_finetune" / "ensemble.json" and not step.done()
    record = {"members": [str(m) for m in members], "folds": ["0", "1"]}
    _write(marker, record, mtime=2000)
    assert step.done()
    os.utime(npz[-1], (3000, 3000))  # a member validated again
    assert not step.done()
    for other in ({**record, "folds": ["0"]}, {**record, "members": record["members"][::-1]}, {}):
        _write(marker, other, mtime=4000)
        assert not step.done(), other


def test_the_comparison_expects_the_post_processed_and_ensemble_rows(table2, tmp_path):
    compare = steps_by_name(build_steps(table2, tmp_path, folds=[0], strategies=["dann_finetune"]))["compare"]
    out = tmp_path / "comparison"
    rows = ["Baseline", "Fine-Tuning", "DANN", "DANN + Fine-Tuning"]
    _write(out / "table2.md", "| table |", mtime=2000)
    _write(out / "comparison.json", {"table": {r: {} for r in rows}})
    assert not compare.done()  # the post-processed rows are missing
    _write(out / "comparison.json", {"table": {n: {} for r in rows for n in (r, f"{r} + post-processing")}})
    assert compare.done()
    rules = Layout.from_env(table2, tmp_path).model_dir(table2.strategies["dann"]) / "brats_postprocessing.json"
    _write(rules, mtime=3000)  # tuned again since: compare again
    assert not compare.done()
    shell = compare.shell()
    assert shell.count("--postprocessing ") == 4 and "--postprocessing 'DANN + Fine-Tuning'" in shell


def test_postprocessing_of_some_rows_and_plans_without_it(nnunet_env, tmp_path):
    data = _table2_data()
    data["postprocessing"] = ["finetune"]
    data["postprocessing_metric"] = "dice"
    plan = parse_plan(data, path=tmp_path / "some.toml")
    steps = steps_by_name(build_steps(plan, tmp_path / "w", folds=[0]))
    assert [n for n in steps if n.startswith("tune-")] == ["tune-postprocessing-finetune"]
    assert "--metric dice" in steps["tune-postprocessing-finetune"].shell()
    assert steps["compare"].shell().count("--postprocessing") == 1
    assert "ensemble-dann_finetune" in steps  # the ensemble row, without post-processing
    demo = load_plan("demo")  # no post-processing, no ensembles: the chain as before
    text = dry_run(demo, build_steps(demo, tmp_path / "demo"))
    assert "tune-postprocessing" not in text and "ensemble-folds" not in text and "--npz" not in text
    compare = text.splitlines()[-1]
    assert compare.startswith("nnunet-transfer compare ") and " -np " not in compare


def _error(edit) -> str:
    from nnunet_transfer.experiments.plan import PlanError

    data = copy.deepcopy(_table2_data())
    edit(data)
    with pytest.raises(PlanError) as info:
        parse_plan(data, origin="brats_ssa_table2.toml")
    return str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(postprocessing=["finetune", "dan", "basline"]),
     "brats_ssa_table2.toml: postprocessing: unknown strategies 'dan', 'basline' (known: baseline, combined, "),
    (lambda d: d.update(postprocessing=["fine"]), "postprocessing: unknown strategy 'fine' (known: baseline"),
    (lambda d: d.update(postprocessing=["fine"]), "; ensembles: dann_finetune)"),
    (lambda d: d.update(postprocessing="all"), "postprocessing: must be true, false or a list"),
    (lambda d: d.update(postprocessing=["dann", "dann"]), "postprocessing: a strategy is named twice"),
    (lambda d: d.update(postprocessing_metric="hd95"), "postprocessing_metric: invalid value 'hd95': one of lesion-dice, dice"),
    (lambda d: d["ensembles"]["dann_finetune"].update(members=["dann", "finetun"]),
     "ensembles.dann_finetune.members: unknown strategy 'finetun' (known: baseline"),
    (lambda d: d["ensembles"]["dann_finetune"].update(members=["dann"]), "ensembles.dann_finetune.members: an ensemble needs"),
    (lambda d: d["ensembles"]["dann_finetune"].update(members=["dann", "dann"]), "members: a strategy is named twice"),
    (lambda d: d["ensembles"]["dann_finetune"].update(members=["dann", "baseline"]),
     "ensembles.dann_finetune.members: strategy 'baseline' is trained once"),
    (lambda d: d["ensembles"]["dann_finetune"].pop("members"), "ensembles.dann_finetune.members: missing"),
    (lambda d: d["ensembles"]["dann_finetune"].update(weights=[1, 2]), "ensembles.dann_finetune.weights: unknown key"),
    (lambda d: d["ensembles"]["dann_finetune"].update(label="DANN"),
     "ensembles.dann_finetune.label: 'DANN' is also the label of strategies.dann"),
    (lambda d: d["ensembles"]["dann_finetune"].update(label="DANN=FT"), "ensembles.dann_finetune.label: invalid label"),
    (lambda d: d["ensembles"].update(dann=d["ensembles"]["dann_finetune"]), "ensembles.dann: 'dann' is also a strategy"),
    (lambda d: d["strategies"]["dann"].update(label="DANN=1"), "strategies.dann.label: invalid label 'DANN=1'"),
    (lambda d: d["strategies"]["dann_no_grl"].update(label="DANN + post-processing"),
     "postprocessing: the post-processed row of 'dann', 'DANN + post-processing', is also the label of a row"),
])
def test_plan_errors_of_postprocessing_and_ensembles(edit, message):
    assert message in _error(edit)


def test_plan_keys_and_defaults():
    data = _table2_data()
    plan = parse_plan(copy.deepcopy(data))
    assert plan.postprocessing == (*plan.strategies, "dann_finetune") and plan.postprocessing_metric == "lesion-dice"
    assert plan.ensemble_members == ("finetune", "dann")
    assert plan.label_of("dann_finetune") == "DANN + Fine-Tuning" and plan.label_of("dann") == "DANN"
    data["ensembles"]["dann_finetune"].pop("label")
    data["postprocessing"] = False
    plan = parse_plan(data)
    assert plan.ensembles["dann_finetune"].label == "DANN + Fine-Tuning"  # the members' labels joined
    assert plan.postprocessing == ()


def _one_process(command):
    """A step's command for main(), in this process (``-np 1``: the same files, no worker pools)."""
    args = list(command[1:])
    if "-np" in args:
        args[args.index("-np") + 1] = "1"
    return args


def test_the_real_commands_leave_what_the_done_checks_want(table2, tmp_path):
    """ensemble-folds, evaluate and tune-postprocessing, run as the steps say, make their steps done."""
    import pickle

    import numpy as np
    import SimpleITK as sitk

    steps = steps_by_name(build_steps(table2, tmp_path / "w", folds=[0, 1], strategies=["dann_finetune"]))
    layout = Layout.from_env(table2, tmp_path / "w")
    folds = {"0": ["BraTS-SSA-00002-000", "BraTS-SSA-00005-000"], "1": ["BraTS-SSA-00007-000"]}
    shape, rng = (8, 12, 12), np.random.default_rng(0)
    gt = layout.pre_dir(table2.datasets["combined"]) / "gt_segmentations"
    gt.mkdir(parents=True)
    for key in ("dann", "finetune"):
        root = layout.model_dir(table2.strategies[key])
        root.mkdir(parents=True)
        (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
                                                       "file_ending": ".nii.gz"}))
        (root / "plans.json").write_text(json.dumps({"dataset_name": "Dataset233_BraTS23GLISSA", "plans_name": "P",
                                                     "image_reader_writer": "SimpleITKIO", "configurations": {}}))
        for fold, cases in folds.items():
            validation = root / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            for case in cases:
                p = rng.random((4, *shape)).astype(np.float32)
                p[2, 2:6, 3:9, 3:9] += 2  # a tumour: oedema around
                p[3, 3:5, 5:7, 5:7] += 4  # enhancing tumour
                np.savez_compressed(validation / f"{case}.npz", probabilities=p / p.sum(0, keepdims=True))
                (validation / f"{case}.pkl").write_bytes(pickle.dumps({"sitk_stuff": {
                    "spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}))
                reference = np.zeros(shape, np.uint8)
                reference[2:6, 3:9, 3:9], reference[3:5, 5:7, 5:7] = 2, 3
                sitk.WriteImage(sitk.GetImageFromArray(reference), str(gt / f"{case}.nii.gz"))
    ensemble = steps["ensemble-dann_finetune"]
    assert not ensemble.done()
    assert main(_one_process(ensemble.command)) == 0 and ensemble.done()
    for fold in folds:
        evaluate = steps[f"evaluate-dann_finetune-fold_{fold}"]
        assert main(_one_process(evaluate.command)) == 0 and evaluate.done()
    tune = steps["tune-postprocessing-dann_finetune"]
    assert not tune.done()
    assert main(_one_process(tune.command)) == 0 and tune.done()
    assert ensemble.done()  # tuning and evaluating leave the ensemble current
    npz = next((layout.model_dir(table2.strategies["dann"]) / "fold_1" / "validation").glob("*.npz"))
    stamp = (npz.stat().st_mtime - 10,) * 2
    os.utime(ensemble.markers[0], stamp)  # DANN's fold 1 validated again since the ensemble: ensemble again
    assert not ensemble.done()
    assert main(_one_process(ensemble.command)) == 0 and ensemble.done()
    assert not tune.done()  # its evaluations are gone with the old ensemble

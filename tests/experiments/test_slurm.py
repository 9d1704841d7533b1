"""SLURM scripts: job arrays, GPU lines, afterok dependencies, and runs with a stand-in sbatch.

The scripts' guards ask the runner itself whether a step is done (``nnunet-transfer run PLAN
... --step-done NAME``): the stand-in ``nnunet-transfer`` hands those calls to the real one.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import shlex

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import build_steps, emit_slurm, load_plan, shipped_plan
from nnunet_transfer.experiments.steps import NOT_DONE, Layout

# A stand-in sbatch: checks its options (--parsable, --kill-on-invalid-dep=yes) and that every
# afterok dependency already finished, then runs the script at once (each array task in turn)
# and prints a job id, like `sbatch --parsable` (FAKE_SBATCH_RUN=0: runs nothing).
FAKE_SBATCH = r'''#!{python}
import os, re, subprocess, sys
state = os.environ["FAKE_SLURM_STATE"]
done = open(state).read().split() if os.path.exists(state) else []
args = sys.argv[1:]
for option in ("--parsable", "--kill-on-invalid-dep=yes"):
    if option not in args:
        sys.exit(f"sbatch: submitted without {{option}}: {{args}}")
deps = [a.split("=", 1)[1] for a in args if a.startswith("--dependency=")]
for dep in deps:
    kind, *ids = dep.split(":")
    assert kind == "afterok", dep
    missing = [i for i in ids if i not in done]
    if missing:
        sys.exit(f"sbatch: dependency on unfinished job(s) {{missing}}")
script = [a for a in args if not a.startswith("-")][-1]
text = open(script).read()
array = re.search(r"^#SBATCH --array=(\S+)", text, re.M)
tasks = [None]
if array:
    tasks = []
    for part in array.group(1).split(","):
        lo, _, hi = part.partition("-")
        tasks += list(range(int(lo), int(hi or lo) + 1))
job = str(len(done) + 100)
for task in tasks if os.environ.get("FAKE_SBATCH_RUN", "1") == "1" else []:
    env = dict(os.environ, SLURM_JOB_ID=job)
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(task)
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(f"# job {{job}} {{os.path.basename(script)}} task {{task}}\n")
    if subprocess.run(["bash", script], env=env).returncode != 0:
        sys.exit(f"job {{job}} failed")
open(state, "a").write(job + "\n")
print(job + ";cluster")
'''

# stand-ins for nnU-Net's and the plugin's commands: they log their arguments (the plugin's
# done-checks, `nnunet-transfer run ... --step-done NAME`, go to the real command)
FAKE_COMMAND = '#!/bin/bash\necho "$(basename "$0") $*" >> "$FAKE_CALLS"\n'
FAKE_PLUGIN = ('#!/bin/bash\nfor a in "$@"; do [ "$a" = --step-done ] && exec {python} -m nnunet_transfer.cli "$@"; done\n'
               'echo "$(basename "$0") $*" >> "$FAKE_CALLS"\n')
# a stand-in squeue: logs its arguments, prints $FAKE_SQUEUE (the jobs still queued)
FAKE_SQUEUE = '#!/bin/bash\necho "$*" >> "$FAKE_CALLS.squeue"\n[ -z "${FAKE_SQUEUE:-}" ] || echo "$FAKE_SQUEUE"\n'


@pytest.fixture
def table2(nnunet_env):
    return load_plan(shipped_plan("brats_ssa_table2"))


def test_scripts_arrays_resources_and_dependencies(table2, tmp_path):
    steps = build_steps(table2, tmp_path / "work")
    written = emit_slurm(table2, steps, tmp_path / "jobs", options={"partition": "gpu", "time": "12:00:00"})
    names = [p.name for p in written]
    assert names == ["00_prepare.sbatch", "10_baseline.sbatch", "10_brainunet.sbatch", "10_combined.sbatch",
                     "10_combined_balanced.sbatch", "10_finetune.sbatch", "10_finetune_frozen_decoder.sbatch",
                     "10_dann.sbatch", "10_dann_no_grl.sbatch", "10_brainunet_finetune.sbatch", "90_compare.sbatch",
                     "submit.sh"]
    finetune = (tmp_path / "jobs" / "10_finetune.sbatch").read_text()
    assert "#SBATCH --array=0-9" in finetune
    assert "#SBATCH --gres=gpu:1" in finetune and "#SBATCH --partition=gpu" in finetune
    assert "#SBATCH --time=12:00:00" in finetune  # the option overrides the plan's 48:00:00
    assert "-pretrained_weights" in finetune and "--c" in finetune
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # the submitting shell's folders
        assert f"export {var}={shlex.quote(str(Path(os.environ[var]).absolute()))}\n" in finetune
    prepare = (tmp_path / "jobs" / "00_prepare.sbatch").read_text()
    assert "--gres" not in prepare and "#SBATCH --cpus-per-task=16" in prepare
    assert "nnUNetv2_move_plans_between_datasets -s 231 -t 232 -sp nnUNetPlans -tp nnUNetPlans_from231" in prepare
    baseline = (tmp_path / "jobs" / "10_baseline.sbatch").read_text()
    assert "--array" not in baseline and "nnunet-transfer predict-folds" in baseline
    submit = (tmp_path / "jobs" / "submit.sh").read_text()
    deps = dict(re.findall(r"^(job_\w+)=\$\(submit (.*?)\S+\.sbatch\)$", submit, re.M))
    assert deps["job_00_prepare"] == ""
    assert deps["job_10_dann"] == deps["job_10_combined_balanced"] == "--dependency=afterok:$job_00_prepare "
    balanced = (tmp_path / "jobs" / "10_combined_balanced.sbatch").read_text()
    assert "#SBATCH --array=0-9" in balanced and "-tr nnUNetTrainerMixedDomain_PaperRecipe " in balanced
    assert deps["job_10_finetune"] == "--dependency=afterok:$job_00_prepare:$job_10_baseline "
    assert deps["job_10_finetune_frozen_decoder"] == "--dependency=afterok:$job_00_prepare:$job_10_baseline "
    for key in ("baseline", "combined", "combined_balanced", "finetune", "finetune_frozen_decoder", "dann",
                "dann_no_grl", "brainunet", "brainunet_finetune"):
        assert f"$job_10_{key}" in deps["job_90_compare"]
    # BrainUNet: its plans are derived and moved in the prepare job; fine-tuning waits for its own pre-training
    assert ("nnunet-transfer brainunet-plans 234 -p nnUNetPlans -o nnUNetPlans_BrainUNet -c 3d_fullres; fi"
            in prepare)
    assert ("nnUNetv2_move_plans_between_datasets -s 234 -t 235 -sp nnUNetPlans_BrainUNet "
            "-tp nnUNetPlans_BrainUNet_from234" in prepare)
    assert deps["job_10_brainunet"] == "--dependency=afterok:$job_00_prepare "
    assert deps["job_10_brainunet_finetune"] == "--dependency=afterok:$job_00_prepare:$job_10_brainunet "
    brainunet_finetune = (tmp_path / "jobs" / "10_brainunet_finetune.sbatch").read_text()
    assert "#SBATCH --array=0-9" in brainunet_finetune
    assert ("-p nnUNetPlans_BrainUNet_from234 -pretrained_weights " in brainunet_finetune
            and "nnUNetTrainerBrainUNet__nnUNetPlans_BrainUNet__3d_fullres/fold_all/checkpoint_final.pth"
            in brainunet_finetune)
    assert "nnunet-transfer predict-folds" in (tmp_path / "jobs" / "10_brainunet.sbatch").read_text()


def _stand_ins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "squeue").write_text(FAKE_SQUEUE)
    (bin_dir / "nnunet-transfer").write_text(FAKE_PLUGIN.format(python=shlex.quote(sys.executable)))
    for name in ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment",
                 "nnUNetv2_move_plans_between_datasets", "nnUNetv2_preprocess", "nnUNetv2_train"):
        (bin_dir / name).write_text(FAKE_COMMAND)
    for path in bin_dir.iterdir():
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _env(tmp_path: Path, bin_dir: Path, **extra: str) -> dict:
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_CALLS=str(tmp_path / "calls.log"),
                FAKE_SLURM_STATE=str(tmp_path / "state"), BRATS_GLI="/data/gli", BRATS_SSA="/data/ssa", **extra)


def _submit(tmp_path: Path, bin_dir: Path) -> list:
    calls = tmp_path / "calls.log"
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh")], env=_env(tmp_path, bin_dir),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "90_compare: job" in proc.stdout
    return calls.read_text().splitlines()


def _run_script(tmp_path: Path, bin_dir: Path, name: str) -> subprocess.CompletedProcess:
    """Run one emitted script as its job would (calls.log starts afresh)."""
    (tmp_path / "calls.log").unlink(missing_ok=True)
    return subprocess.run(["bash", str(tmp_path / "jobs" / name)], env=_env(tmp_path, bin_dir), capture_output=True,
                          text=True, cwd=tmp_path / "jobs")


def _calls(tmp_path: Path) -> list:
    calls = tmp_path / "calls.log"
    return calls.read_text().splitlines() if calls.is_file() else []


def _leave_outputs(layout: Layout, steps) -> None:
    """Write what the prepare steps leave, enough for their done-checks (as a finished prepare job)."""
    from nnunet_transfer.synth import case_id

    plan = layout.plan
    for step in steps:
        if step.name.startswith("synth-"):
            spec = plan.datasets[step.name[len("synth-"):]]
            for index in range(spec.n):
                name = case_id(spec.domain or "GLI", index)
                (layout.synth_dir(spec) / name).mkdir(parents=True, exist_ok=True)
                (layout.synth_dir(spec) / name / f"{name}-seg.nii.gz").touch()
        elif step.command[0] == "nnUNetv2_preprocess":
            spec = next(s for s in plan.datasets.values() if str(s.id) == step.command[step.command.index("-d") + 1])
            plans = step.command[step.command.index("-plans_name") + 1]
            (layout.pre_dir(spec) / f"{plans}.json").write_text(json.dumps(
                {"configurations": {plan.configuration: {"data_identifier": f"data_{plans}"}}}))
            (layout.raw_dir(spec) / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
            (layout.raw_dir(spec) / "imagesTr").mkdir(exist_ok=True)
            (layout.raw_dir(spec) / "imagesTr" / "case_001_0000.nii.gz").touch()
            (layout.pre_dir(spec) / f"data_{plans}").mkdir(exist_ok=True)
            (layout.pre_dir(spec) / f"data_{plans}" / "case_001.pkl").touch()
        elif step.name == "splits":
            for marker in step.markers:
                marker.write_text(json.dumps([{"train": [], "val": []}] * plan.folds))
        else:
            for marker in step.markers:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text("{}")


def test_submit_brainunet_plan_with_stand_in_sbatch(nnunet_env, tmp_path):
    plan = load_plan("brainunet")
    emit_slurm(plan, build_steps(plan, tmp_path / "work", folds=[0, 1]), tmp_path / "jobs")
    lines = _submit(tmp_path, _stand_ins(tmp_path))
    jobs = [line.split()[3] for line in lines if line.startswith("# job")]
    assert jobs == ["00_prepare.sbatch", "10_brainunet.sbatch", "10_brainunet_finetune.sbatch",
                    "10_brainunet_finetune.sbatch", "90_compare.sbatch"]
    commands = [line for line in lines if not line.startswith("#")]
    assert commands[0] == ("nnunet-transfer convert /data/gli -d 234 -n BraTS23GLI3chClip --modalities t2f t1c t2w "
                           "--domain GLI --clip-percentiles 0.5 99.5 -np 8")
    first = lambda prefix: next(i for i, c in enumerate(commands) if c.startswith(prefix))  # noqa: E731
    assert (first("nnUNetv2_plan_experiment -d 234") < first("nnunet-transfer brainunet-plans 234")
            < first("nnUNetv2_move_plans_between_datasets -s 234 -t 235") < first("nnUNetv2_preprocess -d 235")
            < first("nnunet-transfer splits 235") < first("nnUNetv2_train 234 3d_fullres all -tr nnUNetTrainerBrainUNet")
            < first("nnunet-transfer predict-folds") < first("nnUNetv2_train 235 3d_fullres 0")
            < first("nnunet-transfer compare"))
    assert "-pretrained_weights" in commands[first("nnUNetv2_train 235 3d_fullres 1")]


def test_submit_runs_jobs_in_order_with_stand_in_sbatch(table2, tmp_path):
    bin_dir = _stand_ins(tmp_path)
    steps = build_steps(table2, tmp_path / "work", folds=[0, 1], strategies=["finetune", "dann"])
    # fold 1 of fine-tuning was interrupted earlier: its job must continue with --c
    interrupted = [s for s in steps if s.name == "train-finetune-fold_1"][0].training
    interrupted.fold_dir.mkdir(parents=True)
    interrupted.latest.touch()
    emit_slurm(table2, steps, tmp_path / "jobs")
    lines = _submit(tmp_path, bin_dir)
    jobs = [line.split()[3] for line in lines if line.startswith("# job")]
    assert jobs == ["00_prepare.sbatch", "10_baseline.sbatch", "10_finetune.sbatch", "10_finetune.sbatch",
                    "10_dann.sbatch", "10_dann.sbatch", "90_compare.sbatch"]
    commands = [line for line in lines if not line.startswith("#")]
    assert commands[0] == "nnunet-transfer convert /data/gli -d 231 -n BraTS23GLI --domain GLI -np 8"
    first = lambda prefix: next(i for i, c in enumerate(commands) if c.startswith(prefix))  # noqa: E731
    assert first("nnUNetv2_move_plans_between_datasets -s 231 -t 232") < first("nnUNetv2_preprocess -d 232")
    assert first("nnUNetv2_train 231 3d_fullres all") < first("nnUNetv2_train 232 3d_fullres 0")
    fold1 = [c for c in commands if c.startswith("nnUNetv2_train 232 3d_fullres 1")]
    assert len(fold1) == 1 and fold1[0].endswith("--c") and "-pretrained_weights" not in fold1[0]
    assert "-pretrained_weights" in [c for c in commands if c.startswith("nnUNetv2_train 232 3d_fullres 0")][0]
    assert commands[-1].startswith("nnunet-transfer compare --strategy Baseline=")
    assert sum(c.startswith("nnunet-transfer evaluate") for c in commands) == 4


def test_emit_cli_refuses_foreign_folder(nnunet_env, tmp_path, capsys, demo_with_strategy_env):
    out = tmp_path / "jobs"
    demo = str(demo_with_strategy_env)
    assert main(["run", demo, "--workdir", str(tmp_path / "w"), "--emit", "slurm", str(out), "--gres", "gpu:a100:1"]) == 0
    assert "submit with: bash" in capsys.readouterr().out
    assert "#SBATCH --gres=gpu:a100:1" in (out / "10_dann.sbatch").read_text()
    finetune = next(out.glob("*_finetune.sbatch")).read_text()  # a strategy's [env] leads its commands
    env = "nnUNetTransfer_initial_lr=0.01 nnUNetTransfer_num_epochs=2 nnUNetTransfer_iterations_per_epoch=30"
    assert f"else {env} nnUNetv2_train 942" in finetune and f"then {env} nnUNetv2_train 942" in finetune
    assert main(["run", demo, "--emit", "slurm", str(out)]) == 0  # its own folder: replaced
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["run", demo, "--emit", "slurm", str(foreign)]) == 1
    assert (foreign / "keep.txt").read_text() == "mine"


def test_rerun_of_prepare_job_skips_finished_steps(nnunet_env, tmp_path):
    """Each guard asks the runner's done-check: a resubmitted prepare job makes no data, preprocesses nothing."""
    plan = load_plan("demo")
    workdir = tmp_path / "work"
    steps = build_steps(plan, workdir, folds=[0], strategies=["finetune"])
    prepare = [s for s in steps if s.stage == "prepare"]
    assert {"synth-source", "synth-target", "preprocess-source", "preprocess-target"} <= {s.name for s in prepare}
    emit_slurm(plan, steps, tmp_path / "jobs")
    bin_dir = _stand_ins(tmp_path)
    first = _run_script(tmp_path, bin_dir, "00_prepare.sbatch")
    assert first.returncode == 0, first.stderr
    commands = _calls(tmp_path)
    assert len(commands) == len(prepare)  # nothing done yet: every step runs
    assert sum(c.startswith("nnunet-transfer synth ") for c in commands) == 2
    assert sum(c.startswith("nnUNetv2_preprocess ") for c in commands) == 2

    _leave_outputs(Layout.from_env(plan, workdir), prepare)
    assert all(s.done() for s in build_steps(plan, workdir, folds=[0], strategies=["finetune"])
               if s.stage == "prepare")
    second = _run_script(tmp_path, bin_dir, "00_prepare.sbatch")
    assert second.returncode == 0, second.stderr
    assert _calls(tmp_path) == []
    assert second.stdout.split("\n")[:-1] == [f"done: {s.name}" for s in prepare]
    assert "added strategy" not in second.stderr  # the checks do not log


def test_compare_guard_is_the_runners_check(nnunet_env, tmp_path):
    """A comparison of other rows (comparison.json) is redone, as the local runner would, though table2.md exists."""
    plan = load_plan("demo")
    steps = build_steps(plan, tmp_path / "work", folds=[0], strategies=["finetune"])
    compare = [s for s in steps if s.stage == "compare"][0]
    emit_slurm(plan, steps, tmp_path / "jobs")
    bin_dir = _stand_ins(tmp_path)
    out = compare.markers[0].parent
    out.mkdir(parents=True)
    (out / "table2.md").write_text("| old |")
    (out / "comparison.json").write_text(json.dumps({"table": {"Baseline": {}, "DANN": {}}}))
    proc = _run_script(tmp_path, bin_dir, "90_compare.sbatch")
    assert proc.returncode == 0, proc.stderr
    assert [c.split()[:2] for c in _calls(tmp_path)] == [["nnunet-transfer", "compare"]]
    (out / "comparison.json").write_text(json.dumps({"table": {"Baseline": {}, "Fine-Tuning": {}}}))
    assert compare.done()
    proc = _run_script(tmp_path, bin_dir, "90_compare.sbatch")
    assert (proc.returncode, proc.stdout, _calls(tmp_path)) == (0, "done: compare\n", [])


def test_done_check_cli_and_its_errors(nnunet_env, tmp_path):
    """run --step-done: 0 when done, NOT_DONE when not; an unknown step or a missing plan stops the job."""
    plan_file = tmp_path / "mine.toml"
    plan_file.write_text(shipped_plan("demo").read_text())
    plan = load_plan(plan_file)
    steps = build_steps(plan, tmp_path / "work", folds=[1], strategies=["dann"])
    convert = next(s for s in steps if s.name == "convert-source")
    assert convert.done_command[-2:] == ["--step-done", "convert-source"]
    assert convert.done_command[convert.done_command.index("--folds"):][:4] == ["--folds", "1", "--strategies", "dann"]
    assert main(convert.done_command[1:]) == NOT_DONE
    convert.markers[0].parent.mkdir(parents=True)
    convert.markers[0].write_text("{}")
    assert main(convert.done_command[1:]) == 0
    assert main(convert.done_command[1:-1] + ["no-such-step"]) == 1
    emit_slurm(plan, steps, tmp_path / "jobs")
    plan_file.unlink()
    proc = _run_script(tmp_path, _stand_ins(tmp_path), "00_prepare.sbatch")
    assert proc.returncode != 0 and _calls(tmp_path) == []
    assert "error: the done-check of a step failed" in proc.stderr and "mine.toml" in proc.stderr


def test_submit_refuses_while_jobs_of_the_plan_are_queued(nnunet_env, tmp_path):
    plan = load_plan("demo")
    emit_slurm(plan, build_steps(plan, tmp_path / "work", folds=[0], strategies=["finetune"]), tmp_path / "jobs")
    submit = (tmp_path / "jobs" / "submit.sh").read_text()
    assert "submit() { sbatch --parsable --kill-on-invalid-dep=yes " in submit
    bin_dir = _stand_ins(tmp_path)
    queued = "1234 1234_1 demo-finetune RUNNING /somewhere/jobs"
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh")], capture_output=True, text=True,
                          env=_env(tmp_path, bin_dir, FAKE_SQUEUE=queued))
    assert proc.returncode == 1 and "still queued or running" in proc.stderr and queued in proc.stderr
    assert "scancel 1234" in proc.stderr and "--force" in proc.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "jobs" / "job_ids.txt").exists()  # nothing submitted
    squeue = (tmp_path / "calls.log.squeue").read_text()
    assert "-n demo-prepare,demo-baseline,demo-finetune,demo-compare " in squeue and "-u " in squeue
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh"), "--force"], capture_output=True, text=True,
                          env=_env(tmp_path, bin_dir, FAKE_SQUEUE=queued, FAKE_SBATCH_RUN="0"))
    assert proc.returncode == 0, proc.stderr
    ids = (tmp_path / "jobs" / "job_ids.txt").read_text().split()
    assert ids[::2] == ["00_prepare", "10_baseline", "10_finetune", "90_compare"]
    assert f"scancel {' '.join(ids[1::2])}" in proc.stdout
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh"), "--frce"], capture_output=True, text=True,
                          env=_env(tmp_path, bin_dir))
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_ensemble_and_tuning_steps_run_in_the_compare_job(table2, tmp_path):
    """ensemble-folds, the ensemble's evaluations and tune-postprocessing: in 90_compare, before compare."""
    steps = build_steps(table2, tmp_path / "work", folds=[0, 1], strategies=["dann_finetune"])
    names = [p.name for p in emit_slurm(table2, steps, tmp_path / "jobs")]
    assert names == ["00_prepare.sbatch", "10_baseline.sbatch", "10_finetune.sbatch", "10_dann.sbatch",
                     "90_compare.sbatch", "submit.sh"]
    dann = (tmp_path / "jobs" / "10_dann.sbatch").read_text()
    assert "#SBATCH --array=0-1" in dann and "tune-postprocessing" not in dann and "ensemble-folds" not in dann
    # the members save probabilities, also when only the validation is redone
    assert re.search(r"^    elif \[ -f \S+/fold_0/checkpoint_final\.pth \]; then nnUNetv2_train 233 3d_fullres 0 "
                     r"-tr nnUNetTrainerDANN_PaperRecipe -p nnUNetPlans_from231 --npz -device cuda --val$", dann, re.M)
    compare = (tmp_path / "jobs" / "90_compare.sbatch").read_text()
    assert "--gres" not in compare
    guarded = re.findall(r"^# (\S+)$", compare, re.M)
    assert guarded == ["ensemble-dann_finetune", "evaluate-dann_finetune-fold_0", "evaluate-dann_finetune-fold_1",
                       "tune-postprocessing-baseline", "tune-postprocessing-finetune", "tune-postprocessing-dann",
                       "tune-postprocessing-dann_finetune", "compare"]
    assert "--step-done tune-postprocessing-dann_finetune; then" in compare
    deps = dict(re.findall(r"^(job_\w+)=\$\(submit (.*?)\S+\.sbatch\)$", (tmp_path / "jobs" / "submit.sh").read_text(),
                           re.M))
    assert deps["job_90_compare"] == ("--dependency=afterok:$job_00_prepare:$job_10_baseline:$job_10_finetune:"
                                      "$job_10_dann ")
    # run with the stand-ins: the compare job ensembles, evaluates, tunes, then compares
    lines = _submit(tmp_path, _stand_ins(tmp_path))
    jobs = [line.split()[3] for line in lines if line.startswith("# job")]
    assert jobs == ["00_prepare.sbatch", "10_baseline.sbatch", "10_finetune.sbatch", "10_finetune.sbatch",
                    "10_dann.sbatch", "10_dann.sbatch", "90_compare.sbatch"]
    tail = [line.split()[:2] for line in lines[lines.index(next(l for l in lines if "90_compare" in l)) + 1:]]
    assert tail == [["nnunet-transfer", "ensemble-folds"]] + [["nnunet-transfer", "evaluate"]] * 2 + [
        ["nnunet-transfer", "tune-postprocessing"]] * 4 + [["nnunet-transfer", "compare"]]

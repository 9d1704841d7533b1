"""SLURM scripts: job arrays, GPU lines, afterok dependencies, and a run with a stand-in sbatch."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import build_steps, emit_slurm, load_plan, shipped_plan

# A stand-in sbatch: checks that every afterok dependency already finished, then runs the
# script at once (each array task in turn) and prints a job id, like `sbatch --parsable`.
FAKE_SBATCH = r'''#!{python}
import os, re, subprocess, sys
state = os.environ["FAKE_SLURM_STATE"]
done = open(state).read().split() if os.path.exists(state) else []
args = sys.argv[1:]
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
for task in tasks:
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

# stand-ins for nnU-Net's and the plugin's commands: they log their arguments
FAKE_COMMAND = '#!/bin/bash\necho "$(basename "$0") $*" >> "$FAKE_CALLS"\n'


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
    for name in ("nnunet-transfer", "nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment",
                 "nnUNetv2_move_plans_between_datasets", "nnUNetv2_preprocess", "nnUNetv2_train"):
        (bin_dir / name).write_text(FAKE_COMMAND)
    for path in bin_dir.iterdir():
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _submit(tmp_path: Path, bin_dir: Path) -> list:
    calls = tmp_path / "calls.log"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_CALLS=str(calls),
               FAKE_SLURM_STATE=str(tmp_path / "state"), BRATS_GLI="/data/gli", BRATS_SSA="/data/ssa")
    proc = subprocess.run(["bash", str(tmp_path / "jobs" / "submit.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "90_compare: job" in proc.stdout
    return calls.read_text().splitlines()


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


def test_emit_cli_refuses_foreign_folder(nnunet_env, tmp_path, capsys):
    out = tmp_path / "jobs"
    assert main(["run", "demo", "--workdir", str(tmp_path / "w"), "--emit", "slurm", str(out), "--gres", "gpu:a100:1"]) == 0
    assert "submit with: bash" in capsys.readouterr().out
    assert "#SBATCH --gres=gpu:a100:1" in (out / "10_dann.sbatch").read_text()
    finetune = next(out.glob("*_finetune.sbatch")).read_text()  # a strategy's [env] leads its commands
    assert "else nnUNetTransfer_num_epochs=2 nnUNetTransfer_iterations_per_epoch=30 nnUNetv2_train 942" in finetune
    assert "then nnUNetTransfer_num_epochs=2 nnUNetTransfer_iterations_per_epoch=30 nnUNetv2_train 942" in finetune
    assert main(["run", "demo", "--emit", "slurm", str(out)]) == 0  # its own folder: replaced
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["run", "demo", "--emit", "slurm", str(foreign)]) == 1
    assert (foreign / "keep.txt").read_text() == "mine"

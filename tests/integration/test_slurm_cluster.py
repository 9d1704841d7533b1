"""The emitted SLURM scripts on a real one-node cluster (slurmctld and slurmd on this machine).

``scripts/slurm_cluster.sh`` starts the cluster (``.ci/run`` calls it before the tests). A
shortened demo plan (the source-only baseline on fold ``all``, fine-tuning from it on two
target folds) is emitted with ``nnunet-transfer run PLAN --emit slurm OUTDIR`` and submitted
with the real ``sbatch`` through ``submit.sh``. Checked: fine-tuning is a job array over the
folds, every job waits ``afterok`` for the ones it needs, ``submit.sh`` refuses to submit again
while they are queued, the jobs complete, and a fine-tuning task cancelled with ``scancel``
after its first checkpoint gets the comparison cancelled by SLURM (``--kill-on-invalid-dep=yes``,
``DependencyNeverSatisfied``); rerunning ``submit.sh`` then continues that training from its
checkpoint (``--c``), skips what is done (the prepare job neither makes data nor preprocesses
again), and the comparison runs.

Without ``sbatch``/``sinfo`` or a responding cluster the test is skipped with the reason
(including what ``scripts/slurm_cluster.sh`` wrote to its reason file); with
``NNUNET_TRANSFER_REQUIRE_SLURM=1`` it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List

import pytest
import torch

from tests.conftest import cli, nnunet_folders, run_cmd
from tests.integration.test_demo_cli import dump_toml, small_demo_plan

pytestmark = pytest.mark.integration

REASON_FILE = Path(os.environ.get("NNUNET_TRANSFER_SLURM_REASON", "/tmp/nnunet_transfer_slurm_unavailable"))
COMMANDS = ("sbatch", "sinfo", "squeue", "scontrol", "scancel")
USABLE = ("idle", "mixed", "allocated", "completing")
EPOCHS = 10  # fine-tuning: long enough to be cancelled between its first checkpoint and its end
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
TIMEOUT = 600


def unavailable(why: str) -> None:
    """Skip (or, with NNUNET_TRANSFER_REQUIRE_SLURM=1, fail) with ``why`` and the cluster script's reason."""
    if REASON_FILE.is_file():
        why += f"\n{REASON_FILE} (written by scripts/slurm_cluster.sh):\n{REASON_FILE.read_text().strip()}"
    else:
        why += f"\n(no {REASON_FILE}: start a one-node cluster with `bash scripts/slurm_cluster.sh`)"
    if os.environ.get("NNUNET_TRANSFER_REQUIRE_SLURM") == "1":
        pytest.fail(why)
    pytest.skip(why)


def cluster_node() -> Dict[str, int]:
    """The CPUs and memory (MB) of a usable node of the default partition, or skip with the reason."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        unavailable(f"no SLURM client command(s) {', '.join(missing)} on PATH")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%n %T %c %m"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        unavailable("`sinfo -h -o '%n %T %c %m'` did not answer within 30 s")
    if proc.returncode != 0:
        unavailable(f"`sinfo -h -o '%n %T %c %m'` failed ({proc.returncode}): {proc.stderr.strip()}")
    for line in proc.stdout.splitlines():
        name, state, cpus, mem = line.split()[:4]
        if state.rstrip("*~#$@+-") in USABLE:
            return {"cpus": int(cpus), "mem": int(re.sub(r"\D.*", "", mem))}
    unavailable(f"no usable SLURM node (sinfo: {proc.stdout.strip() or 'no nodes'})")


def jobs(ids: Iterable[str]) -> List[Dict[str, str]]:
    """``scontrol show job`` records (one per array task) of the jobs ``ids``, finished ones included."""
    ids = set(ids)
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30)
    records = []
    for line in out.stdout.splitlines():
        record = dict(field.partition("=")[::2] for field in line.split())
        if record.get("JobId") in ids or record.get("ArrayJobId") in ids:
            records.append(record)
    return records


def describe(ids: Iterable[str], jobs_dir: Path) -> str:
    """The jobs' states and the tails of their logs, for a failure message."""
    lines = [f"{r['JobId']} {r.get('JobName')} task={r.get('ArrayTaskId', '-')} {r['JobState']} "
             f"reason={r.get('Reason')} exit={r.get('ExitCode')} dependency={r.get('Dependency')}" for r in jobs(ids)]
    for log in sorted((jobs_dir / "logs").glob("*.out")):
        lines += [f"--- {log.name} ---", log.read_text(errors="replace")[-3000:]]
    return "\n".join(lines)


def wait_until(condition: Callable[[], bool], what: str, ids: Iterable[str], jobs_dir: Path,
               timeout: float = TIMEOUT, poll: float = 1.0) -> None:
    ids = list(ids)
    deadline = time.monotonic() + timeout
    while not condition():
        failed = [r for r in jobs(ids) if r["JobState"] in ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")]
        assert not failed, f"job(s) failed while waiting for {what}:\n{describe(ids, jobs_dir)}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s:\n{describe(ids, jobs_dir)}"
        time.sleep(poll)


def finished(ids: Iterable[str]) -> Callable[[], bool]:
    ids = list(ids)
    return lambda: all(r["JobState"] not in ACTIVE for r in jobs(ids))


def submit(jobs_dir: Path, env: Dict[str, str]) -> Dict[str, str]:
    """Run ``submit.sh``; the job id of each script."""
    proc = run_cmd(["bash", str(jobs_dir / "submit.sh")], env, timeout=120)
    return dict(re.findall(r"^(\w+): job (\d+)$", proc.stdout, re.M))


def afterok(record: Dict[str, str]) -> set:
    return set(re.findall(r"afterok:(\d+)", record.get("Dependency", "")))


def test_emitted_scripts_on_one_node_cluster(tmp_path, monkeypatch):
    node = cluster_node()
    env = nnunet_folders(tmp_path / "nnunet")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plan = small_demo_plan()
    plan["name"] = "slurm_ci"
    plan["strategies"]["finetune"]["env"] = {"nnUNetTransfer_num_epochs": EPOCHS, "nnUNetTransfer_save_every": 1}
    plan_file = tmp_path / "slurm_ci.toml"
    plan_file.write_text(dump_toml(plan))
    workdir, jobs_dir = tmp_path / "work", tmp_path / "jobs"
    mem = min(4096, node["mem"] // 3)
    run_cmd(cli("run", str(plan_file), "--workdir", str(workdir), "--emit", "slurm", str(jobs_dir),
                "--time", "00:30:00", "--cpus-per-task", "1", "--mem", f"{mem}M"), env)
    finetune_script = (jobs_dir / "10_finetune.sbatch").read_text()
    assert "#SBATCH --array=0-1" in finetune_script and "--c" in finetune_script
    assert f"#SBATCH --mem={mem}M" in finetune_script and "#SBATCH --cpus-per-task=1" in finetune_script

    first = submit(jobs_dir, env)
    assert list(first) == ["00_prepare", "10_baseline", "10_finetune", "90_compare"], first
    ids = list(first.values())
    try:
        _check_first_submission(first, jobs_dir)
        # a second submission while these are queued would train their folds twice at once: refused
        again = run_cmd(["bash", str(jobs_dir / "submit.sh")], env, timeout=120, check=False)
        ids += re.findall(r"^\w+: job (\d+)$", again.stdout, re.M)  # (none, unless the refusal failed)
        assert again.returncode == 1 and "still queued or running" in again.stderr, again.stdout + again.stderr
        cancel = re.search(r"scancel ([\d ]+)", again.stderr)
        assert cancel and first["90_compare"] in cancel.group(1).split(), again.stderr
        stopped = _cancel_finetune_fold_0(first, jobs_dir, env)
        # the comparison waits afterok for every training: it can never start now, and SLURM cancels it
        compare = first["90_compare"]
        wait_until(lambda: jobs([compare])[0]["JobState"] == "CANCELLED", "the comparison cancelled by SLURM",
                   ids, jobs_dir, timeout=120)
        assert jobs([compare])[0].get("Reason") == "DependencyNeverSatisfied", describe(ids, jobs_dir)
        states = {(r["JobId"], r.get("ArrayTaskId")): r["JobState"] for r in jobs(ids)}
        assert sorted(states.values()) == ["CANCELLED", "CANCELLED", "COMPLETED", "COMPLETED", "COMPLETED"], states

        # resubmission, as after any failure: what is done is skipped, fold 0 continues with --c
        second = submit(jobs_dir, env)
        ids += list(second.values())
        wait_until(finished(second.values()), "end of the resubmitted jobs", ids, jobs_dir)
    finally:
        left = [r["JobId"] for r in jobs(ids) if r["JobState"] in ACTIVE]
        if left:
            subprocess.run(["scancel", *left], capture_output=True)
    resubmitted = jobs(second.values())
    assert {r["JobState"] for r in resubmitted} == {"COMPLETED"}, describe(ids, jobs_dir)
    assert {r["ExitCode"] for r in resubmitted} == {"0:0"}

    # outputs: every step of the plan is done
    from nnunet_transfer.experiments import build_steps, load_plan
    from nnunet_transfer.experiments.steps import Layout
    loaded = load_plan(plan_file)
    steps = build_steps(loaded, workdir, layout=Layout.from_env(loaded, workdir))
    assert [s.name for s in steps if not s.done()] == []
    results = Path(env["nnUNet_results"])
    assert list(results.glob("*/nnUNetTrainerSourceOnly__*/fold_all/checkpoint_final.pth"))
    for fold in ("0", "1"):  # the baseline's predictions of the target folds, fine-tuning's validations
        assert list((workdir / "predictions" / "baseline" / f"fold_{fold}" / "validation").glob("*.nii.gz"))
        assert (_finetune_fold(results, fold) / "checkpoint_final.pth").is_file()
        assert list((_finetune_fold(results, fold) / "validation").glob("*.nii.gz"))
    table = (workdir / "comparison" / "table2.md").read_text()
    assert "Baseline" in table and "Fine-Tuning" in table
    assert list((jobs_dir / "logs").glob("slurm_ci-finetune-*_0.out"))

    # the cancelled training went on from its checkpoint (--c) in the resubmitted array's task 0
    fold_0 = _finetune_fold(results, "0")
    final = torch.load(fold_0 / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == EPOCHS
    logs = sorted(fold_0.glob("training_log_*.txt"))
    assert len(logs) == 2, logs  # started once, continued once
    epochs = lambda text: [int(e) for e in re.findall(r"^\S+ \S+ Epoch (\d+)\s*$", text, re.M)]  # noqa: E731
    assert epochs(logs[0].read_text())[0] == 0
    assert epochs(logs[-1].read_text()) == list(range(stopped, EPOCHS)), logs[-1].read_text()[-3000:]
    log = lambda name: (jobs_dir / "logs" / f"slurm_ci-{name}.out").read_text()  # noqa: E731
    assert epochs(log(f"finetune-{second['10_finetune']}_0"))[0] == stopped
    # what the first submission finished is not trained again
    assert "done: train-finetune-fold_1" in log(f"finetune-{second['10_finetune']}_1")
    assert "done: train-baseline-fold_all" in log(f"baseline-{second['10_baseline']}")
    # nor is any data made or preprocessed again: every step of the prepare job is done
    prepare = log(f"prepare-{second['00_prepare']}")
    names = [s.name for s in steps if s.stage == "prepare"]
    assert {"synth-source", "synth-target", "preprocess-source", "preprocess-target"} <= set(names)
    assert [line for line in prepare.splitlines() if line.startswith("done: ")] == [f"done: {n}" for n in names], \
        prepare[-3000:]


def _finetune_fold(results: Path, fold: str) -> Path:
    found = list(results.glob(f"*/nnUNetTrainerFineTune__*/fold_{fold}"))
    return found[0] if found else results / "missing"


def _check_first_submission(first: Dict[str, str], jobs_dir: Path) -> None:
    """Arrays and afterok dependencies, as scontrol shows them while the jobs wait."""
    prepare, baseline, finetune, compare = (first[k] for k in ("00_prepare", "10_baseline", "10_finetune",
                                                               "90_compare"))
    records = {k: jobs([v]) for k, v in first.items()}
    message = describe(first.values(), jobs_dir)
    assert afterok(records["00_prepare"][0]) == set(), message
    assert afterok(records["10_baseline"][0]) == {prepare}, message
    assert afterok(records["10_finetune"][0]) == {prepare, baseline}, message
    assert afterok(records["90_compare"][0]) == {prepare, baseline, finetune}, message
    assert f"afterok:{finetune}_*" in records["90_compare"][0]["Dependency"]  # the whole array
    assert records["10_finetune"][0].get("ArrayTaskId") == "0-1" and len(records["10_finetune"]) == 1, message
    for key in ("00_prepare", "10_baseline", "90_compare"):
        assert "ArrayJobId" not in records[key][0], message


def _cancel_finetune_fold_0(first: Dict[str, str], jobs_dir: Path, env: Dict[str, str]) -> int:
    """scancel fine-tuning's task 0 once its first checkpoint exists; the epoch it had saved."""
    ids = list(first.values())
    finetune = first["10_finetune"]
    results = Path(env["nnUNet_results"])
    latest = lambda: _finetune_fold(results, "0") / "checkpoint_latest.pth"  # noqa: E731
    # prepare and baseline done before fine-tuning starts: afterok
    wait_until(lambda: latest().is_file(), "checkpoint_latest.pth of fine-tuning fold 0", ids, jobs_dir,
               poll=0.2)
    run_cmd(["scancel", f"{finetune}_0"])
    task = lambda n: [r for r in jobs([finetune]) if r.get("ArrayTaskId") == n]  # noqa: E731
    wait_until(lambda: bool(task("0")) and task("0")[0]["JobState"] == "CANCELLED", "cancelled task 0",
               ids, jobs_dir, timeout=120)
    assert not (latest().parent / "checkpoint_final.pth").exists(), "fold 0 finished before it was cancelled"
    wait_until(finished([finetune]), "end of fine-tuning's task 1", ids, jobs_dir)
    assert task("1")[0]["JobState"] == "COMPLETED", describe(ids, jobs_dir)
    for key in ("00_prepare", "10_baseline"):
        record = jobs([first[key]])[0]
        assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), describe(ids, jobs_dir)
    stopped = torch.load(latest(), map_location="cpu", weights_only=False)["current_epoch"]
    assert 1 <= stopped < EPOCHS
    return stopped

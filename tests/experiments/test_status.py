"""`nnunet-transfer status`: each step done, pending, running, failed or interrupted, with its log."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import load_plan, run_steps
from nnunet_transfer.experiments.runner import running_file, step_states
from tests.experiments.test_runner import FakeNnunet, _marker_step, _steps


def _states(steps, workdir):
    return {s.name: s for s in step_states(steps, workdir)}


def test_status_of_a_failed_run_and_of_a_running_step(nnunet_env, tmp_path):
    plan = load_plan("demo")
    seen = {}

    class FailsAtSplits(FakeNnunet):
        def __call__(self, step, command, env, log_file):
            # while a step runs, its running file names this process: status says running
            seen[step.name] = _states([step], tmp_path)[step.name].state
            if step.name == "splits":
                return 1
            return super().__call__(step, command, env, log_file)

    fake = FailsAtSplits()
    steps = _steps(plan, tmp_path, fake, folds=[0], strategies=["finetune"])
    with pytest.raises(RuntimeError, match="step splits failed"):
        run_steps(plan, steps, tmp_path, executor=fake)
    assert set(seen.values()) == {"running"}
    states = _states(steps, tmp_path)
    names = [s.name for s in steps]
    before = names[:names.index("splits")]
    assert all(states[n].state == "done" for n in before)
    assert states["splits"].state == "failed" and states["splits"].detail == "exit status 1"
    assert states["splits"].log == tmp_path / "logs" / "splits.log"
    assert all(states[n].state == "pending" for n in names[names.index("splits") + 1:])
    assert not list((tmp_path / "logs").glob("*.running"))


def test_stale_running_files_and_ctrl_c_read_as_interrupted(nnunet_env, tmp_path):
    a, b, c = (_marker_step(tmp_path, n) for n in "abc")
    (tmp_path / "logs").mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    running_file(tmp_path, "a").write_text(json.dumps({"pid": gone.pid, "host": __import__("socket").gethostname()}))
    running_file(tmp_path, "b").write_text(json.dumps({"pid": 1, "host": "node042", "gpu": "3"}))
    states = _states([a, b, c], tmp_path)
    assert states["a"].state == "interrupted" and f"pid {gone.pid}" in states["a"].detail
    assert states["b"].state == "running" and states["b"].detail.startswith("on node042, pid 1, GPU 3")
    assert states["c"].state == "pending"
    # Ctrl-C during a step: recorded as interrupted, no running file left
    plan = load_plan("demo")
    fake = FakeNnunet(interrupt_at="train-finetune-fold_0")
    steps = _steps(plan, tmp_path / "w", fake, folds=[0], strategies=["finetune"])
    with pytest.raises(KeyboardInterrupt):
        run_steps(plan, steps, tmp_path / "w", executor=fake)
    states = _states(steps, tmp_path / "w")
    assert states["train-finetune-fold_0"].state == "interrupted"
    assert states["train-baseline-fold_all"].state == "done"


def test_status_cli_lists_steps_and_counts(nnunet_env, tmp_path, capsys):
    plan = load_plan("demo")

    class Logging(FakeNnunet):
        def __call__(self, step, command, env, log_file):
            log_file.write_text("$ ...\n")
            return super().__call__(step, command, env, log_file)

    fake = Logging()
    workdir = tmp_path / "w"
    run_steps(plan, _steps(plan, workdir, fake, folds=[0], strategies=["dann"])[:2], workdir, executor=fake)
    from nnunet_transfer.synth import case_id

    for index in range(plan.datasets["source"].n):  # what synth leaves (the fake leaves nothing there)
        case = workdir / "data" / "DemoGLI" / case_id("GLI", index)
        case.mkdir(parents=True)
        (case / f"{case.name}-seg.nii.gz").touch()
    assert main(["status", "demo", "--workdir", str(workdir), "--folds", "0", "--strategies", "dann"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["1", "done", "synth-source"] and out[0].split()[-1] == str(workdir / "logs" /
                                                                                          "synth-source.log")
    assert out[0].split()[-2] == "s"  # its duration (the fake's, in seconds)
    assert out[2].split() == ["3", "pending", "synth-target", "-"]
    assert out[1].split()[:3] == ["2", "done", "convert-source"]
    assert out[-1].startswith(f"demo ({workdir.absolute()}): {len(out) - 1} steps: 2 done, {len(out) - 3} pending")
    assert out[-1].endswith(" of work left")  # every step timed: the steps run, the median for the others

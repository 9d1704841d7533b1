"""The runner: skips finished steps, resumes interrupted training with --c, logs commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nnunet_transfer.experiments import build_steps, load_plan, run_steps, subprocess_executor


class FakeNnunet:
    """Stands in for the commands: makes the files a step leaves; can be interrupted once."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.finished = set()
        self.interrupt_at = interrupt_at

    def __call__(self, step, command, env, log_file):
        self.calls.append((step.name, command))
        if step.training is not None:
            t = step.training
            t.fold_dir.mkdir(parents=True, exist_ok=True)
            t.latest.touch()
            if step.name == self.interrupt_at:
                self.interrupt_at = None
                raise KeyboardInterrupt
            t.final.touch()
            if t.needs_validation:
                t.summary.parent.mkdir(parents=True, exist_ok=True)
                t.summary.write_text("{}")
            return 0
        for marker in step.markers:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("{}")
        self.finished.add(step.name)
        return 0


def _steps(plan, workdir, fake, **kwargs):
    steps = build_steps(plan, workdir, **kwargs)
    for step in steps:  # steps whose done-check reads real data: trust the fake
        if step.training is None:
            step.done = (lambda name, check: (lambda: name in fake.finished or check()))(step.name, step.done)
    return steps


def test_resume_after_interruption(nnunet_env, tmp_path):
    plan = load_plan("demo")
    fake = FakeNnunet(interrupt_at="train-finetune-fold_1")
    with pytest.raises(KeyboardInterrupt):
        run_steps(plan, _steps(plan, tmp_path, fake, folds=[0, 1], strategies=["finetune"]), tmp_path, executor=fake)
    first_run = [name for name, _ in fake.calls]
    assert first_run[-1] == "train-finetune-fold_1"
    assert first_run.index("train-baseline-fold_all") < first_run.index("train-finetune-fold_0")
    fake.calls.clear()
    report = run_steps(plan, _steps(plan, tmp_path, fake, folds=[0, 1], strategies=["finetune"]), tmp_path,
                       executor=fake)
    names = [name for name, _ in fake.calls]
    assert names[0] == "train-finetune-fold_1"  # everything before it is skipped
    assert "train-finetune-fold_0" in report.skipped and "train-baseline-fold_all" in report.skipped
    resumed = fake.calls[0][1]
    assert resumed[-1] == "--c" and "-pretrained_weights" not in resumed
    assert resumed[:4] == ["nnUNetv2_train", "942", "3d_fullres", "1"]
    assert names[-1] == "compare" and "predict-baseline-fold_1" in names
    # the run log records every command with its duration
    records = [json.loads(line) for line in (tmp_path / "run_log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == "compare" and all(r["seconds"] >= 0 for r in records)
    # a third run has nothing left to do
    fake.calls.clear()
    report = run_steps(plan, _steps(plan, tmp_path, fake, folds=[0, 1], strategies=["finetune"]), tmp_path,
                       executor=fake)
    assert fake.calls == [] and report.ran == []


def test_validation_only_when_training_finished_without_summary(nnunet_env, tmp_path):
    plan = load_plan("demo")
    step = [s for s in build_steps(plan, tmp_path, folds=[0], strategies=["dann"]) if s.name == "train-dann-fold_0"][0]
    step.training.fold_dir.mkdir(parents=True)
    step.training.final.touch()
    assert not step.done()
    assert step.current_command()[-1] == "--val"


def test_failing_command_names_the_step_and_log(nnunet_env, tmp_path):
    plan = load_plan("demo")
    steps = build_steps(plan, tmp_path)[:1]
    steps[0].command = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"step synth-source failed \(exit status 3\).*logs/synth-source.log"):
        run_steps(plan, steps, tmp_path, executor=subprocess_executor(echo=False))
    assert "boom" in (tmp_path / "logs" / "synth-source.log").read_text()


def test_subprocess_executor_passes_plan_environment(nnunet_env, tmp_path):
    plan = load_plan("demo")
    steps = build_steps(plan, tmp_path)[:1]
    out = tmp_path / "env.txt"
    steps[0].command = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write("
                        "os.environ['nnUNetTransfer_num_epochs'] + ' ' + os.environ['nnUNet_extTrainer'])"]
    steps[0].done = lambda: out.exists()
    report = run_steps(plan, steps, tmp_path, executor=subprocess_executor(echo=False))
    assert report.ran == ["synth-source"]
    epochs, trainer_path = out.read_text().split(" ", 1)
    assert epochs == "4" and Path(trainer_path.split(":")[0]).name == "nnunet_ext"

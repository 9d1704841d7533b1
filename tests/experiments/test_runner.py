"""The runner: skips finished steps, resumes interrupted training with --c, logs commands and progress;
several jobs at once; the plan's worker counts; a subset of strategies runs to the end."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from nnunet_transfer.cli import main
from nnunet_transfer.experiments import Step, build_steps, load_plan, run_steps, subprocess_executor
from nnunet_transfer.experiments.runner import (DurationEstimator, TrainingProgress, estimate_left, format_seconds,
                                                plan_env, sharing_env)


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


def test_strategy_env_reaches_its_trainings_over_the_plan_env(nnunet_env, tmp_path, demo_with_strategy_env):
    plan = load_plan(demo_with_strategy_env)
    seen = {}

    class Recording(FakeNnunet):
        def __call__(self, step, command, env, log_file):
            seen[step.name] = env
            return super().__call__(step, command, env, log_file)

    fake = Recording()
    run_steps(plan, _steps(plan, tmp_path, fake, folds=[0], strategies=["finetune", "dann"]), tmp_path, executor=fake)
    assert seen["train-baseline-fold_all"]["nnUNetTransfer_num_epochs"] == "4"
    assert seen["train-finetune-fold_0"]["nnUNetTransfer_num_epochs"] == "2"
    assert seen["train-finetune-fold_0"]["nnUNetTransfer_iterations_per_epoch"] == "30"
    assert seen["train-dann-fold_0"]["nnUNetTransfer_num_epochs"] == "4"  # the plan's overrides.env
    assert seen["train-dann-fold_0"]["nnUNetTransfer_test_time_mirroring"] == "0"
    assert seen["train-dann-fold_0"]["nnUNetTransfer_iterations_per_epoch"] == "50"


def test_brainunet_plan_resumes_with_its_own_plans(nnunet_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BRATS_GLI", "/data/gli")
    monkeypatch.setenv("BRATS_SSA", "/data/ssa")
    plan = load_plan("brainunet")
    fake = FakeNnunet(interrupt_at="train-brainunet_finetune-fold_1")
    with pytest.raises(KeyboardInterrupt):
        run_steps(plan, _steps(plan, tmp_path, fake, folds=[0, 1]), tmp_path, executor=fake)
    first_run = [name for name, _ in fake.calls]
    assert first_run[:11] == ["convert-source", "convert-target", "fingerprint-source", "fingerprint-target",
                              "plan-source", "plan-target", "derive-plans-brainunet",
                              "transfer-plans-target-brainunet", "preprocess-source-brainunet",
                              "preprocess-target-brainunet", "splits"]
    convert = dict(fake.calls)["convert-target"]
    assert convert[-5:] == ["--clip-percentiles", "0.5", "99.5", "-np", "8"]
    fake.calls.clear()
    report = run_steps(plan, _steps(plan, tmp_path, fake, folds=[0, 1]), tmp_path, executor=fake)
    names = [name for name, _ in fake.calls]
    assert names[0] == "train-brainunet_finetune-fold_1"
    assert {"train-brainunet-fold_all", "derive-plans-brainunet", "train-brainunet_finetune-fold_0"} <= set(report.skipped)
    resumed = fake.calls[0][1]
    assert resumed == ["nnUNetv2_train", "235", "3d_fullres", "1", "-tr", "nnUNetTrainerBrainUNetFineTune",
                       "-p", "nnUNetPlans_BrainUNet_from234", "-device", "cuda", "--c"]
    assert names[1:] == ["predict-brainunet-fold_0", "predict-brainunet-fold_1", "evaluate-brainunet_finetune-fold_0",
                         "evaluate-brainunet_finetune-fold_1", "compare"]
    # the pre-trained model and the fine-tuned ones live under their plans' names
    results = Path(nnunet_env["nnUNet_results"])
    assert (results / "Dataset234_BraTS23GLI3chClip" / "nnUNetTrainerBrainUNet__nnUNetPlans_BrainUNet__3d_fullres"
            / "fold_all" / "checkpoint_final.pth").is_file()
    assert (results / "Dataset235_BraTS23SSA3chClip" / "nnUNetTrainerBrainUNetFineTune__nnUNetPlans_BrainUNet_from234__"
            "3d_fullres" / "fold_1" / "checkpoint_final.pth").is_file()


def test_shrink_family_step_writes_shrunken_plans(nnunet_env, tmp_path):
    from nnunet_transfer.experiments import run_python_step
    from nnunet_transfer.experiments.plan import parse_plan, shipped_plan, tomllib
    from nnunet_transfer.experiments.steps import Layout

    data = tomllib.loads(shipped_plan("brainunet").read_text())
    data["plans_families"]["tiny"] = {"derive": "shrink", "name": "BrainUNetTiny", "base": "nnUNetPlans_BrainUNet",
                                      "shrink": {"n_stages": 3, "patch_size": [32, 32, 32]}}
    plan = parse_plan(data)
    layout = Layout.from_env(plan, tmp_path)
    folder = layout.pre_dir(plan.source)
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="nnUNetPlans_BrainUNet.json does not exist"):
        run_python_step(plan, layout, "derive-plans-tiny")
    arch = {"n_stages": 5, "features_per_stage": [16, 32, 64, 128, 160], "kernel_sizes": [[3, 3, 3]] * 5,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, "n_blocks_per_stage": [1, 1, 2, 2, 2],
            "n_conv_per_stage_decoder": [1] * 4}
    base = {"plans_name": "nnUNetPlans_BrainUNet", "configurations": {"3d_fullres": {
        "data_identifier": "nnUNetPlans_BrainUNet_3d_fullres", "patch_size": [128, 128, 128], "batch_size": 2,
        "architecture": {"network_class_name": "nnunet_transfer.brainunet.network.AttentionResidualUNet",
                         "arch_kwargs": arch}}}}
    (folder / "nnUNetPlans_BrainUNet.json").write_text(json.dumps(base))
    run_python_step(plan, layout, "derive-plans-tiny")
    tiny = json.loads((folder / "BrainUNetTiny.json").read_text())
    config = tiny["configurations"]["3d_fullres"]
    assert tiny["plans_name"] == "BrainUNetTiny" and config["patch_size"] == [32, 32, 32]
    assert config["architecture"]["arch_kwargs"]["n_blocks_per_stage"] == [1, 1, 2]
    assert config["data_identifier"] == "nnUNetPlans_BrainUNet_3d_fullres"  # the base's data
    with pytest.raises(ValueError, match="plans family 'brainunet' is not derived by shrinking"):
        run_python_step(plan, layout, "derive-plans-brainunet")
    with pytest.raises(ValueError, match="unknown step 'derive-plans-nope'"):
        run_python_step(plan, layout, "derive-plans-nope")


def test_check_sources_only_for_datasets_still_to_convert(nnunet_env, tmp_path, monkeypatch):
    from nnunet_transfer.experiments.plan import parse_plan, shipped_plan, tomllib
    from nnunet_transfer.experiments.runner import check_sources
    from nnunet_transfer.experiments.steps import Layout

    data = tomllib.loads(shipped_plan("brats_ssa_table2").read_text())
    data["datasets"]["target_3ch"]["source"] = "$BRATS_SSA_ELSEWHERE"
    plan = parse_plan(data)
    monkeypatch.setenv("BRATS_GLI", str(tmp_path))
    monkeypatch.setenv("BRATS_SSA", str(tmp_path))
    monkeypatch.delenv("BRATS_SSA_ELSEWHERE", raising=False)
    layout = Layout.from_env(plan, tmp_path)
    paper = ["baseline", "combined", "combined_balanced", "finetune", "finetune_frozen_decoder", "dann", "dann_no_grl"]
    check_sources(plan, layout, build_steps(plan, tmp_path, strategies=paper))  # the 3-channel data is not needed
    with pytest.raises(ValueError, match="datasets.target_3ch.source '\\$BRATS_SSA_ELSEWHERE'"):
        check_sources(plan, layout, build_steps(plan, tmp_path, strategies=["brainunet_finetune"]))


def test_step_made_done_by_an_earlier_step_is_skipped(nnunet_env, tmp_path):
    from nnunet_transfer.experiments import Step

    plan = load_plan("demo")
    shared = tmp_path / "data.pkl"  # e.g. BrainUNet plans that share the shrunken plans' preprocessed data
    first = Step("preprocess-source", ["true"], lambda: shared.is_file(), markers=[shared])
    second = Step("preprocess-source-brainunet", ["true"], lambda: shared.is_file(), markers=[shared])
    fake = FakeNnunet()
    report = run_steps(plan, [first, second], tmp_path, executor=fake)
    assert [name for name, _ in fake.calls] == ["preprocess-source"]
    assert report.ran == ["preprocess-source"] and report.skipped == ["preprocess-source-brainunet"]


# -- progress, estimates, parallel runs, the plan's worker counts ----------------------------------



class TimedFake(FakeNnunet):
    """A fake that sleeps, records when each step started and ended and the env it got; may fail a step."""

    def __init__(self, seconds=0.02, slow=None, fail=None):
        super().__init__()
        self.seconds, self.slow, self.fail = seconds, dict(slow or {}), set(fail or ())
        self.times, self.envs, self.lock = {}, {}, threading.Lock()

    def __call__(self, step, command, env, log_file):
        started = time.monotonic()
        with self.lock:
            self.envs[step.name] = dict(env)
        time.sleep(self.slow.get(step.name, self.seconds))
        if step.name in self.fail:
            status = 2
        else:
            status = super().__call__(step, command, env, log_file)
        with self.lock:
            self.times[step.name] = (started, time.monotonic())
        return status


def _overlap(times):
    """The most steps that ran at the same moment."""
    events = sorted([(t0, 1) for t0, _ in times.values()] + [(t1, -1) for _, t1 in times.values()],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def _marker_step(tmp_path, name, after=(), command=("true",)):
    marker = tmp_path / "out" / f"{name}.done"
    return Step(name, list(command), lambda: marker.is_file(), markers=[marker], after=list(after))


def test_progress_lines_number_steps_and_estimate_from_earlier_runs(nnunet_env, tmp_path, caplog):
    plan = load_plan("demo")
    fake = FakeNnunet()
    steps = _steps(plan, tmp_path, fake, folds=[0], strategies=["finetune"])
    earlier = {s.name: (100.0 if s.training is not None else 10.0) for s in steps}
    with open(tmp_path / "run_log.jsonl", "w") as log:
        for name, seconds in earlier.items():
            log.write(json.dumps({"step": name, "command": ["x"], "status": 0, "seconds": seconds}) + "\n")
    caplog.set_level(logging.INFO, logger="nnunet_transfer")
    report = run_steps(plan, steps, tmp_path, executor=fake)
    lines = [r.getMessage() for r in caplog.records if r.name == "nnunet_transfer.experiments.runner"]
    n = len(steps)
    total = sum(earlier.values())
    assert lines[0] == (f"demo: {n} steps, 0 already done, {n} to run; {n} steps to go, "
                        f"about {format_seconds(total)} left")
    assert lines[1].startswith(f"step 1 of {n}: synth-source: $ nnunet-transfer synth ")
    done = [line for line in lines if " done in " in line]
    assert len(done) == n
    left = total - earlier["synth-source"]
    assert done[0].startswith(f"step 1 of {n}: synth-source done in ")
    assert done[0].endswith(f"; {n - 1} steps to go, about {format_seconds(left)} left")
    assert done[-1].startswith(f"step {n} of {n}: compare done in ") and done[-1].endswith("nothing left to run")
    summary = lines[-4:]
    assert summary[0].startswith(f"demo: ran {n} step(s) in ")
    assert summary[1].startswith("step time by phase: data ")
    assert [p.rsplit(" ", 2)[0] for p in summary[1][len("step time by phase: "):].split(", ")] == [
        "data", "planning/preprocessing", "training", "prediction", "evaluation", "comparison"]
    assert summary[2] == ("comparison (table2.md, table2.csv, comparison.json, comparison.png): "
                          f"{tmp_path / 'comparison'}")
    assert summary[3].startswith(f"models (2) in {nnunet_env['nnUNet_results']}: Dataset941_DemoGLI/"
                                 "nnUNetTrainerSourceOnly__nnUNetPlansTiny__3d_fullres, Dataset942_DemoSSA/")
    assert set(report.phase_seconds()) == {"data", "planning/preprocessing", "training", "prediction", "evaluation",
                                           "comparison"}


def test_estimates_fall_back_from_the_step_to_its_strategy_phase_kind_and_all():
    estimator = DurationEstimator([
        {"step": "train-dann-fold_0", "command": ["nnUNetv2_train"], "status": 0, "seconds": 100},
        {"step": "train-dann-fold_1", "command": ["nnUNetv2_train", "--c"], "status": 0, "seconds": 5},  # resumed
        {"step": "train-finetune-fold_0", "command": ["nnUNetv2_train"], "status": 1, "seconds": 1},    # failed
        {"step": "train-combined-fold_0", "command": ["nnUNetv2_train"], "status": 0, "seconds": 300},
        {"step": "evaluate-dann-fold_0", "command": ["x"], "status": 0, "seconds": 4},
        {"step": "preprocess-source", "command": ["x"], "status": 0, "seconds": 20},
    ])
    assert estimator.estimate("train-dann-fold_0") == (100, False)
    assert estimator.estimate("train-dann-fold_1") == (100, False)       # its strategy's other fold
    assert estimator.estimate("train-finetune-fold_0") == (200, False)   # the median of trainings
    assert estimator.estimate("evaluate-combined-fold_0") == (4, False)  # of evaluations
    assert estimator.estimate("predict-baseline-fold_0") == (12, True)   # of the other steps than trainings
    assert DurationEstimator().estimate("compare") == (None, True)
    assert DurationEstimator([{"step": "synth-source", "status": 0, "seconds": 3}]).estimate(
        "train-dann-fold_0") == (3, True)                                # all there is


def test_time_left_with_several_jobs_follows_the_dependencies(tmp_path):
    a, b, c = _marker_step(tmp_path, "a"), _marker_step(tmp_path, "b", ["a"]), _marker_step(tmp_path, "c")
    d = _marker_step(tmp_path, "d", ["b", "c"])
    est = {"a": 10, "b": 10, "c": 30, "d": 5}
    assert estimate_left([a, b, c, d], est, jobs=1) == 55
    assert estimate_left([a, b, c, d], est, jobs=2) == 35       # a, b beside c, then d
    assert estimate_left([b, c, d], est, jobs=2, running={"a": 4}) == 35      # c is the longest path
    est["c"] = 10
    assert estimate_left([b, c, d], est, jobs=2, running={"a": 4}) == 4 + 10 + 5  # a's rest, b, d; c beside
    gpu = [Step(n, ["nnUNetv2_train", "-device", "cuda"], lambda: False) for n in "xyz"]
    assert estimate_left(gpu, {"x": 10, "y": 10, "z": 10}, jobs=3, gpus=1) == 30
    assert estimate_left(gpu, {"x": 10, "y": 10, "z": 10}, jobs=3, gpus=2) == 20


def test_training_progress_is_parsed_from_nnunet_output(nnunet_env, tmp_path, caplog):
    lines = ["2026-12-01 11:31:20.000001: nnunet-transfer: num_epochs = 2 (set by the environment)",
             "2026-12-01 11:31:21.000001: Epoch 0", "2026-12-01 11:31:21.100000: Current learning rate: 0.01",
             "2026-12-01 11:31:22.772276: Pseudo dice [np.float32(0.0), np.float32(0.647)]",
             "2026-12-01 11:31:22.800000: Epoch time: 5.0 s",
             "2026-12-01 11:31:23.000001: Epoch 1",
             "2026-12-01 11:31:24.000001: Pseudo dice [0.5, 0.7]"]
    script = "\n".join(f"print({line!r})" for line in lines)
    from nnunet_transfer.experiments.steps import Training

    step = Step("train-dann-fold_0", [sys.executable, "-c", script], lambda: False, stage="train",
                training=Training(tmp_path / "fold_0"))
    caplog.set_level(logging.INFO, logger="nnunet_transfer")
    assert subprocess_executor(echo=False)(step, step.command, {}, tmp_path / "logs" / "t.log") == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["train-dann-fold_0: epoch 1 of 2, pseudo Dice 0.000 0.647 (mean 0.324), 5.0 s/epoch, "
                        "about 5.0 s left in this training",
                        "train-dann-fold_0: epoch 2 of 2, pseudo Dice 0.500 0.700 (mean 0.600)"]
    assert "Pseudo dice [np.float32(0.0)" in (tmp_path / "logs" / "t.log").read_text()  # the output itself: logged only
    seen = []
    progress = TrainingProgress("train-x-fold_0", log=seen.append)
    for line in ["x: Epoch 7", "x: Epoch time: 3.25 s"]:  # a stock trainer: no total, no validation
        progress.feed(line)
    assert seen == ["train-x-fold_0: epoch 8, 3.2 s/epoch"]


def test_two_jobs_respect_the_dependencies_and_run_at_once(nnunet_env, tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHON_CPU_COUNT", "nnUNet_n_proc_DA", "nnUNet_def_n_proc"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("nnunet_transfer.experiments.runner.available_cpus", lambda: 8)
    plan = load_plan("demo")
    fake = TimedFake(seconds=0.03)
    steps = _steps(plan, tmp_path, fake, folds=[0], strategies=["finetune", "dann"])
    report = run_steps(plan, steps, tmp_path, executor=fake, jobs=2)
    assert sorted(report.ran) == sorted(s.name for s in steps)
    for step in steps:
        for need in step.after:
            assert fake.times[need][1] <= fake.times[step.name][0], (need, step.name)
    assert _overlap(fake.times) == 2
    env = fake.envs["train-dann-fold_0"]
    assert env["OMP_NUM_THREADS"] == "4" and env["PYTHON_CPU_COUNT"] == "4"
    assert env["nnUNet_n_proc_DA"] == env["nnUNet_def_n_proc"] == "1"  # the plan's 1, below the share of 4
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_a_failure_stops_new_jobs_lets_running_ones_finish_and_a_rerun_resumes(nnunet_env, tmp_path):
    plan = load_plan("demo")
    a = _marker_step(tmp_path, "a")
    b, c = _marker_step(tmp_path, "b", ["a"]), _marker_step(tmp_path, "c", ["a"])
    d, e = _marker_step(tmp_path, "d", ["b", "c"]), _marker_step(tmp_path, "e", ["a"])
    fake = TimedFake(seconds=0.01, slow={"b": 0.4, "c": 0.05}, fail={"c"})
    with pytest.raises(RuntimeError, match=r"^step c failed \(exit status 2\) after .*; see .*logs/c\.log\. "
                                           r"Rerun the same command to resume\.$"):
        run_steps(plan, [a, b, c, d, e], tmp_path, executor=fake, jobs=2)
    assert set(fake.times) == {"a", "b", "c"}  # e was ready but not started after c failed; b finished
    assert fake.times["b"][1] > fake.times["c"][1]
    records = [json.loads(line) for line in (tmp_path / "run_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["status"]) for r in records] == [("a", 0), ("c", 2), ("b", 0)]
    assert not list((tmp_path / "logs").glob("*.running"))
    again = TimedFake(seconds=0.01)
    report = run_steps(plan, [a, b, c, d, e], tmp_path, executor=again, jobs=2)
    assert report.skipped == ["a", "b"] and sorted(report.ran) == ["c", "d", "e"]
    assert again.times["c"][1] <= again.times["d"][0]


def test_failures_of_several_running_jobs_are_all_named(nnunet_env, tmp_path):
    plan = load_plan("demo")
    steps = [_marker_step(tmp_path, n) for n in "abc"]
    fake = TimedFake(seconds=0.05, fail={"a", "b"})
    with pytest.raises(RuntimeError, match=r"^2 steps failed: step a failed .*logs/a\.log\. "
                                           r"step b failed .*logs/b\.log"):
        run_steps(plan, steps, tmp_path, executor=fake, jobs=2)
    assert set(fake.times) == {"a", "b"}


def test_gpus_go_one_to_a_training_and_cpu_steps_share_the_rest(nnunet_env, tmp_path):
    plan = load_plan("demo")
    prep = _marker_step(tmp_path, "prep")
    trainings = [_marker_step(tmp_path, f"train-{i}", ["prep"], ["nnUNetv2_train", "-device", "cuda"])
                 for i in range(4)]
    others = [_marker_step(tmp_path, f"other-{i}", ["prep"]) for i in range(2)]
    fake = TimedFake(seconds=0.05)
    run_steps(plan, [prep, *trainings, *others], tmp_path, executor=fake, jobs=3, gpus=["2", "5"])
    gpu_of = {n: fake.envs[n].get("CUDA_VISIBLE_DEVICES") for n in fake.envs}
    assert {gpu_of[s.name] for s in trainings} == {"2", "5"}
    assert gpu_of["prep"] is None and gpu_of["other-0"] is None
    for gpu in ("2", "5"):  # never two trainings on one GPU at a time
        assert _overlap({n: t for n, t in fake.times.items() if gpu_of[n] == gpu}) == 1
    assert _overlap({s.name: fake.times[s.name] for s in trainings}) == 2
    assert _overlap(fake.times) == 3


def test_sharing_env_splits_the_cores_and_keeps_what_the_user_set(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHON_CPU_COUNT", "nnUNet_n_proc_DA", "nnUNet_def_n_proc"):
        monkeypatch.delenv(name, raising=False)
    plan = {"nnUNet_n_proc_DA": "8", "nnUNet_def_n_proc": "8"}
    assert sharing_env(plan, jobs=1, cpus=16) == {}
    assert sharing_env(plan, jobs=4, cpus=16) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4",
                                                  "PYTHON_CPU_COUNT": "4", "nnUNet_def_n_proc": "4",
                                                  "nnUNet_n_proc_DA": "4"}
    assert sharing_env(plan, jobs=3, cpus=2)["nnUNet_n_proc_DA"] == "1"  # never 0
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    monkeypatch.setenv("nnUNet_n_proc_DA", "3")
    shared = sharing_env(plan, jobs=2, cpus=16)
    assert "OMP_NUM_THREADS" not in shared and "nnUNet_n_proc_DA" not in shared and shared["MKL_NUM_THREADS"] == "8"


def test_plan_num_processes_sizes_nnunet_pools_unless_the_user_set_them(nnunet_env, tmp_path, monkeypatch):
    from nnunet_transfer.experiments import dry_run

    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    assert plan_env(load_plan("demo"))["nnUNet_n_proc_DA"] == "1"
    env = plan_env(load_plan("brainunet"))  # num_processes = 8
    assert env["nnUNet_n_proc_DA"] == env["nnUNet_def_n_proc"] == "8"
    plan = load_plan("demo")
    assert "export nnUNet_def_n_proc=1" in dry_run(plan, build_steps(plan, tmp_path)[:1])
    monkeypatch.setenv("nnUNet_n_proc_DA", "3")
    env = plan_env(load_plan("brainunet"))
    assert "nnUNet_n_proc_DA" not in env and env["nnUNet_def_n_proc"] == "8"
    # a command sees the plan's values (and the user's over them)
    out = tmp_path / "env.txt"
    step = Step("probe", [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write("
                "os.environ['nnUNet_n_proc_DA'] + ' ' + os.environ['nnUNet_def_n_proc'])"], lambda: out.exists())
    run_steps(load_plan("brainunet"), [step], tmp_path, executor=subprocess_executor(echo=False))
    assert out.read_text() == "3 8"


def test_a_subset_of_strategies_adds_the_comparisons_reference(nnunet_env, tmp_path, caplog):
    plan = load_plan("demo")
    caplog.set_level(logging.INFO, logger="nnunet_transfer")
    steps = build_steps(plan, tmp_path, folds=[0], strategies=["dann_no_grl", "dann"])
    names = [s.name for s in steps]
    assert "added strategy baseline: the comparison's reference" in caplog.text
    assert [n for n in names if n.startswith("train-")] == ["train-baseline-fold_all", "train-dann-fold_0",
                                                           "train-dann_no_grl-fold_0"]
    assert names[-1] == "compare" and "predict-baseline-fold_0" in names
    compare = steps[-1]
    assert f"Baseline={tmp_path / 'predictions' / 'baseline'}" in compare.command
    assert set(compare.after) == {"predict-baseline-fold_0", "evaluate-dann-fold_0", "evaluate-dann_no_grl-fold_0"}
    # a run of the subset reaches the end
    fake = FakeNnunet()
    report = run_steps(plan, _steps(plan, tmp_path, fake, folds=[0], strategies=["dann_no_grl", "dann"]), tmp_path,
                       executor=fake)
    assert report.ran[-1] == "compare"
    caplog.clear()
    one = [s.name for s in build_steps(plan, tmp_path, folds=[0], strategies=["dann"])]  # no comparison: no reference
    assert "compare" not in one and not any("baseline" in n for n in one) and "added strategy" not in caplog.text


@pytest.mark.parametrize("name", ["demo", "demo_brainunet", "brainunet", "brats_ssa_table2"])
def test_dependencies_come_before_their_steps_and_follow_the_job_graph(nnunet_env, tmp_path, monkeypatch, name):
    monkeypatch.setenv("BRATS_GLI", str(tmp_path))
    monkeypatch.setenv("BRATS_SSA", str(tmp_path))
    plan = load_plan(name)
    steps = build_steps(plan, tmp_path / "w", folds=[0, 1])
    seen = set()
    for step in steps:
        assert set(step.after) <= seen, step.name  # the list order is a valid order
        seen.add(step.name)
    by_name = {s.name: s for s in steps}

    def needs(step, other):  # transitively
        todo, found = list(step.after), set()
        while todo:
            n = todo.pop()
            if n not in found:
                found.add(n)
                todo += by_name[n].after
        return other in found

    splits = by_name.get("splits")
    for step in steps:
        s = plan.strategies.get(step.strategy) if step.strategy else None
        if step.training is not None:
            assert any(n.startswith("preprocess-") for n in step.after), step.name
            if s.per_fold:
                assert "splits" in step.after
            if s.init:  # as the SLURM jobs: fine-tuning waits for its pre-training
                assert f"train-{s.init}-fold_all" in step.after
        if step.stage == "evaluate" and s is not None and step.fold is not None:  # a strategy's fold
            assert any(by_name[n].training is not None for n in step.after), step.name
        elif step.stage == "evaluate":  # ensembles, their folds, post-processing tuning: after trainings
            assert any(by_name[n].training is not None for n in step.after) or any(
                needs(step, n) for n in by_name if by_name[n].training is not None), step.name
            assert step.job == "compare", step.name
        if step.name.startswith("tune-postprocessing-"):  # after every step of its row
            assert set(step.after) == {t.name for t in steps if t.strategy == step.strategy} - {step.name}
    assert set(by_name["compare"].after) == {s.name for s in steps if s.stage == "evaluate"}
    assert splits is None or needs(splits, "plan-target") or needs(splits, "plan-target_3ch")


def test_parallel_subprocesses_echo_with_step_prefixes_and_an_executor_error_is_raised(nnunet_env, tmp_path, capsys):
    plan = load_plan("demo")
    steps = []
    for name in ("a", "b"):
        marker = tmp_path / f"{name}.out"
        code = f"import time; print('hello from {name}', flush=True); time.sleep(0.2); open({str(marker)!r}, 'w')"
        steps.append(Step(name, [sys.executable, "-c", code], marker.is_file))
    report = run_steps(plan, steps, tmp_path, executor=subprocess_executor(echo=True, prefix=True), jobs=2)
    assert sorted(report.ran) == ["a", "b"] and report.wall_seconds > 0.2
    out = capsys.readouterr().out
    assert "[a] hello from a" in out and "[b] hello from b" in out
    # an executor that raises (here Ctrl-C inside it) stops new steps; the running one finishes, then it is raised
    a, b, c = _marker_step(tmp_path, "x"), _marker_step(tmp_path, "y"), _marker_step(tmp_path, "z", ["x", "y"])

    class Raising(TimedFake):
        def __call__(self, step, command, env, log_file):
            if step.name == "x":
                raise KeyboardInterrupt
            return super().__call__(step, command, env, log_file)

    fake = Raising(seconds=0.1)
    with pytest.raises(KeyboardInterrupt):
        run_steps(plan, [a, b, c], tmp_path, executor=fake, jobs=2)
    assert set(fake.times) == {"y"}
    records = [json.loads(line) for line in (tmp_path / "run_log.jsonl").read_text().splitlines()]
    assert {r["step"]: r["status"] for r in records}["x"] == 130


def test_run_cli_options(nnunet_env, tmp_path, capsys):
    from nnunet_transfer.cli.run import local_gpus

    assert local_gpus("0,1, 3") == ["0", "1", "3"] and local_gpus(None) == []
    with pytest.raises(ValueError, match="distinct GPU ids"):
        local_gpus("0,,1")
    with pytest.raises(SystemExit):
        main(["run", "demo", "--jobs", "0"])
    with pytest.raises(SystemExit):
        main(["run", "demo", "--verbose", "--quiet"])
    capsys.readouterr()
    # with --emit slurm, --gpus is SLURM's GPU request
    out = tmp_path / "jobs"
    assert main(["run", "demo", "--workdir", str(tmp_path / "w"), "--emit", "slurm", str(out), "--gpus", "2"]) == 0
    assert "#SBATCH --gpus=2" in (out / "10_baseline.sbatch").read_text()

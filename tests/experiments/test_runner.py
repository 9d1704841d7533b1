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


def test_strategy_env_reaches_its_trainings_over_the_plan_env(nnunet_env, tmp_path):
    plan = load_plan("demo")
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

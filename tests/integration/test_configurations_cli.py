"""The configurations nnU-Net recommends, through its real console scripts (issue 11).

Every trainer family runs on shrunken residual-encoder plans (``nnUNetv2_plan_experiment
-pl nnUNetPlannerResEncM``, plans ``nnUNetResEncUNetMPlans``) of a tiny two-domain dataset,
label-based and region-based (``nnunet-transfer convert --regions``), with deep supervision
on and off; each model is then predicted by stock ``nnUNetv2_predict``. The experiment
runner is checked with a plan that names the ResEnc planner and plans.

Trainings are independent subprocesses, so the module fixture runs them (and the
predictions) a few at a time; each test then checks the outcome of its own commands. Models
train on fold ``all`` (one epoch of two iterations), which skips nnU-Net's final
validation: stock prediction covers inference.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer import config
from nnunet_transfer.planning import shrink_plans, write_plans
from tests.conftest import cli, nnunet_folders, run_cmd
from tests.integration.test_demo_cli import dump_toml

pytestmark = pytest.mark.integration

PLANNER = "nnUNetPlannerResEncM"
BASE_PLANS = "nnUNetResEncUNetMPlans"
PLANS = "nnUNetResEncUNetMPlansTiny"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
SHRINK = {"max_features": 32, "n_stages": 3, "patch_size": [32, 32, 32], "batch_size": 2}
SHORT = {"nnUNetTransfer_num_epochs": "1", "nnUNetTransfer_iterations_per_epoch": "2",
         "nnUNetTransfer_val_iterations_per_epoch": "1"}
LABELS, REGIONS = "labels", "regions"
DATASETS = {LABELS: (971, "ResEncTiny"), REGIONS: (972, "ResEncTinyRegions")}
GLI = [f"BraTS-GLI-{i:05d}-000" for i in range(4)]
SSA = [f"BraTS-SSA-{i:05d}-000" for i in range(3)]
TEST_CASE = "BraTS-SSA-00099-000"  # no segmentation: converted into imagesTs, predicted by every model
MODALITIES = ("t1n", "t1c", "t2w", "t2f")
WORKERS = 3  # concurrent commands: one thread each; a third fills the cores while others wait on I/O

# Test-only trainers without deep supervision: the installed classes with `deep_supervision = False`,
# logging what nnU-Net built (nnU-Net switches the decoder's deep supervision in on_train_start).
NO_DS_MODULE = '''\
from nnunet_transfer.training.freezing import unwrap
from nnunet_transfer.training.trainers import nnUNetTrainerDANN, nnUNetTrainerFineTune, nnUNetTrainerMixedDomain


class _LogsDeepSupervision:
    deep_supervision = False

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(f"test: decoder deep supervision {unwrap(self.network).decoder.deep_supervision}, "
                               f"loss {type(self.loss).__name__}")


class nnUNetTrainerDANN_NoDS(_LogsDeepSupervision, nnUNetTrainerDANN):
    pass


class nnUNetTrainerMixedDomain_NoDS(_LogsDeepSupervision, nnUNetTrainerMixedDomain):
    pass


class nnUNetTrainerFineTune_NoDS(_LogsDeepSupervision, nnUNetTrainerFineTune):
    pass
'''

# (dataset, trainer, pretrained from), in start order: what others start from first, fine-tuning last
TRAININGS: List[Tuple[str, str, Optional[str]]] = [
    (LABELS, "nnUNetTrainerDANN", None),
    (LABELS, "nnUNetTrainerMixedDomain", None),
    (REGIONS, "nnUNetTrainerDANN", None),
    (LABELS, "nnUNetTrainerDANNNoGRL", None),
    (LABELS, "nnUNetTrainerMixedDomainUniform", None),
    (LABELS, "nnUNetTrainerDANN_NoDS", None),
    (LABELS, "nnUNetTrainerMixedDomain_NoDS", None),
    (LABELS, "nnUNetTrainerFineTuneFrozenEncoder", "nnUNetTrainerDANN"),
    (LABELS, "nnUNetTrainerFineTuneFrozenDecoder", "nnUNetTrainerDANN"),
    (REGIONS, "nnUNetTrainerFineTuneFrozenDecoder", "nnUNetTrainerDANN"),
    (LABELS, "nnUNetTrainerFineTune", "nnUNetTrainerMixedDomain"),
    (LABELS, "nnUNetTrainerBrainUNetFineTune", "nnUNetTrainerMixedDomain"),
    (LABELS, "nnUNetTrainerFineTune_NoDS", "nnUNetTrainerDANN"),
]
# models predicted with stock nnUNetv2_predict: every trainer family (the _NoDS variants are test-only)
PREDICTED = [(d, t) for d, t, _ in TRAININGS if not t.endswith("_NoDS")]


# ---- a tiny scheduler: independent commands a few at a time ------------------------------
@dataclass
class Job:
    name: str
    command: List[str]
    env: Dict[str, str]
    needs: Tuple[str, ...] = ()


@dataclass
class Outcome:
    job: Job
    stdout: str = ""
    error: Optional[str] = None
    seconds: float = 0.0

    def check(self) -> str:
        """The command's stdout; fails the test with the command's output (or the failed prerequisite)."""
        if self.error is not None:
            raise AssertionError(f"{self.job.name}: {self.error}")
        return self.stdout


def run_jobs(jobs: List[Job], workers: int = WORKERS) -> Dict[str, Outcome]:
    """Run ``jobs`` (listed after the jobs they need) ``workers`` at a time; a failure skips its dependents.

    Jobs start in list order, so a job's prerequisites have started before it waits for them.
    """
    futures: Dict[str, Future] = {}

    def execute(job: Job) -> Outcome:
        for need in job.needs:
            if futures[need].result().error is not None:
                return Outcome(job, error=f"not run: it needs {need}, which failed")
        started = time.time()
        try:
            proc = run_cmd(job.command, job.env, timeout=600)
        except Exception as error:  # run_cmd's AssertionError carries the command's output
            return Outcome(job, error=str(error), seconds=time.time() - started)
        return Outcome(job, stdout=proc.stdout, seconds=time.time() - started)

    with ThreadPoolExecutor(workers) as pool:
        for job in jobs:
            futures[job.name] = pool.submit(execute, job)
    return {name: future.result() for name, future in futures.items()}


# ---- data -------------------------------------------------------------------------------
def write_brats_case(root: Path, case: str, rng: np.random.Generator, labeled: bool = True) -> None:
    """A BraTS-format 32^3 case with a nested tumour (NCR in TC in WT); SSA cases are noisier."""
    folder = root / case
    folder.mkdir(parents=True)
    zz, yy, xx = np.ogrid[:32, :32, :32]
    centre = rng.integers(11, 21, 3)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    seg = np.zeros((32, 32, 32), np.uint8)
    seg[r < 9] = 2
    seg[r < 6] = 3
    seg[r < 3] = 1
    noise = 0.6 if "-SSA-" in case else 0.3
    for channel, suffix in enumerate(MODALITIES):
        image = 100 + 20 * channel + 15 * seg * (channel + 1) + 30 * rng.normal(0, noise, seg.shape)
        sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.float32)), str(folder / f"{case}-{suffix}.nii.gz"))
    if labeled:
        sitk.WriteImage(sitk.GetImageFromArray(seg), str(folder / f"{case}-seg.nii.gz"))


def prepare_dataset(env: Dict[str, str], source: Path, kind: str) -> Path:
    """convert -> fingerprint -> plan (ResEnc M) -> shrink -> preprocess; the preprocessed folder."""
    dataset_id, name = DATASETS[kind]
    run_cmd(cli("convert", str(source), "-d", str(dataset_id), "-n", name, *(["--regions"] if kind == REGIONS else [])),
            env)
    run_cmd([sys.executable, "-c", "from nnunet_transfer.planning import extract_fingerprint; "
             f"extract_fingerprint({dataset_id}, foreground_voxels=1e4)"], env)
    run_cmd(["nnUNetv2_plan_experiment", "-d", str(dataset_id), "-pl", PLANNER], env)
    pre = Path(env[config.PREPROCESSED]) / f"Dataset{dataset_id}_{name}"
    plans = json.loads((pre / f"{BASE_PLANS}.json").read_text())
    write_plans(pre, shrink_plans(plans, PLANS, **SHRINK))
    run_cmd(["nnUNetv2_preprocess", "-d", str(dataset_id), "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"], env)
    return pre


def raw_dir(tiny, kind: str) -> Path:
    dataset_id, name = DATASETS[kind]
    return Path(tiny["env"][config.RAW]) / f"Dataset{dataset_id}_{name}"


def model_dir(tiny, kind: str, trainer: str) -> Path:
    dataset_id, name = DATASETS[kind]
    return Path(tiny["env"][config.RESULTS]) / f"Dataset{dataset_id}_{name}" / f"{trainer}__{PLANS}__3d_fullres"


def final_checkpoint(tiny, kind: str, trainer: str) -> Path:
    return model_dir(tiny, kind, trainer) / "fold_all" / "checkpoint_final.pth"


def train_job(tiny, kind: str, trainer: str, pretrained: Optional[str]) -> Job:
    dataset_id, _ = DATASETS[kind]
    command = ["nnUNetv2_train", str(dataset_id), "3d_fullres", "all", "-tr", trainer, "-p", PLANS, "-device", "cpu"]
    needs: Tuple[str, ...] = ()
    if pretrained is not None:
        command += ["-pretrained_weights", str(final_checkpoint(tiny, kind, pretrained))]
        needs = (f"train {kind} {pretrained}",)
    return Job(f"train {kind} {trainer}", command, {**tiny["env"], **SHORT}, needs)


def predict_job(tiny, kind: str, trainer: str) -> Job:
    dataset_id, _ = DATASETS[kind]
    images = raw_dir(tiny, kind) / "imagesTs"
    out = tiny["root"] / "predictions" / kind / trainer
    command = ["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(dataset_id), "-c", "3d_fullres",
               "-f", "all", "-tr", trainer, "-p", PLANS, "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"]
    return Job(f"predict {kind} {trainer}", command, tiny["env"], (f"train {kind} {trainer}",))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Both datasets planned with ResEnc M (shrunk) and preprocessed; every training and prediction run."""
    started, cpu = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    root = tmp_path_factory.mktemp("configurations")
    env = nnunet_folders(root / "nnunet")
    extra = root / "test_trainers"
    extra.mkdir()
    (extra / "nnunet_transfer_test_configurations.py").write_text(NO_DS_MODULE)
    env[config.EXT_TRAINER] = os.pathsep.join([env[config.EXT_TRAINER], str(extra)])  # nnU-Net searches both
    source = root / "BraTS-download"
    rng = np.random.default_rng(0)
    for case in GLI + SSA:
        write_brats_case(source, case, rng)
    write_brats_case(source, TEST_CASE, rng, labeled=False)
    with ThreadPoolExecutor(2) as pool:
        pre = dict(zip(DATASETS, pool.map(lambda kind: prepare_dataset(env, source, kind), DATASETS)))
    prepared = time.time() - started

    tiny = {"env": env, "root": root, "pre": pre}
    jobs = [train_job(tiny, *training) for training in TRAININGS] + [predict_job(tiny, *p) for p in PREDICTED]
    tiny["outcomes"] = run_jobs(jobs)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    slowest = max(tiny["outcomes"].values(), key=lambda o: o.seconds)
    print(f"\nconfigurations fixture: prepared in {prepared:.0f} s, {len(jobs)} commands, everything in "
          f"{time.time() - started:.0f} s ({cpu_seconds:.0f} CPU-s in subprocesses; slowest command "
          f"{slowest.job.name}, {slowest.seconds:.0f} s)")
    return tiny


def trained(tiny, kind: str, trainer: str) -> Tuple[dict, str]:
    """The final checkpoint of a training and its stdout (the test fails with the command's output if it failed)."""
    stdout = tiny["outcomes"][f"train {kind} {trainer}"].check()
    checkpoint = torch.load(final_checkpoint(tiny, kind, trainer), map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer, f"checkpoint of {trainer} names {checkpoint['trainer_name']}"
    plans = checkpoint["init_args"]["plans"]
    assert (plans["plans_name"], plans["experiment_planner_used"]) == (PLANS, PLANNER), f"{trainer} used other plans"
    network = plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"]
    assert network == RESENC, f"{trainer} trained {network}"
    return checkpoint, stdout


def assert_prediction(tiny, kind: str, trainer: str) -> np.ndarray:
    tiny["outcomes"][f"predict {kind} {trainer}"].check()
    out = tiny["root"] / "predictions" / kind / trainer / f"{TEST_CASE}.nii.gz"
    assert out.is_file(), f"nnUNetv2_predict wrote no {out.name} for {trainer} ({kind})"
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    image = sitk.ReadImage(str(raw_dir(tiny, kind) / "imagesTs" / f"{TEST_CASE}_0000.nii.gz"))
    assert prediction.shape == sitk.GetArrayFromImage(image).shape == (32, 32, 32), \
        f"prediction of {trainer} ({kind}) has shape {prediction.shape}"
    assert set(np.unique(prediction).tolist()) <= {0, 1, 2, 3}, f"labels {np.unique(prediction)} from {trainer}"
    return prediction


def encoder_tensors(weights: dict) -> List[str]:
    return [k for k in weights if k.startswith("encoder.")]


def decoder_only(weights: dict) -> List[str]:
    return [k for k in weights if k.startswith("decoder.") and not k.startswith("decoder.encoder.")]


# ---- planning ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [LABELS, REGIONS])
def test_resenc_plans_shrunk_and_preprocessed(tiny, kind):
    pre = tiny["pre"][kind]
    base = json.loads((pre / f"{BASE_PLANS}.json").read_text())
    plans = json.loads((pre / f"{PLANS}.json").read_text())
    assert base["experiment_planner_used"] == PLANNER
    cfg = plans["configurations"]["3d_fullres"]
    kwargs = cfg["architecture"]["arch_kwargs"]
    assert cfg["architecture"]["network_class_name"] == RESENC
    assert kwargs["n_stages"] == 3 and kwargs["features_per_stage"] == [8, 16, 32]
    assert len(kwargs["n_blocks_per_stage"]) == 3 and len(kwargs["n_conv_per_stage_decoder"]) == 2, kwargs
    assert kwargs["n_blocks_per_stage"] == base["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"][
        "n_blocks_per_stage"][:3]
    assert cfg["patch_size"] == [32, 32, 32] and cfg["batch_size"] == 2
    data = pre / cfg["data_identifier"]
    assert len(list(data.glob("*.b2nd"))) >= len(GLI + SSA), f"nothing preprocessed in {data}"
    dataset_json = json.loads((pre / "dataset.json").read_text())
    if kind == REGIONS:
        assert dataset_json["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3],
                                          "enhancing tumor": [3]}
        assert dataset_json["regions_class_order"] == [2, 1, 3]
    else:
        assert dataset_json["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 3}


# ---- every trainer family, label-based ----------------------------------------------------
@pytest.mark.parametrize("trainer", ["nnUNetTrainerDANN", "nnUNetTrainerDANNNoGRL"])
def test_dann_trains_and_predicts(tiny, trainer):
    checkpoint, stdout = trained(tiny, LABELS, trainer)
    extra = checkpoint["nnunet_transfer"]
    assert extra["domain_head"] and extra["domain_index"] == {"GLI": 0, "SSA": 1}
    assert not any("domain" in k for k in checkpoint["network_weights"]), "the domain head leaked into the network"
    assert "domain_loss" in stdout and "target domain SSA" in stdout
    assert_prediction(tiny, LABELS, trainer)


@pytest.mark.parametrize("trainer, share", [("nnUNetTrainerMixedDomain", "0.5"),
                                            ("nnUNetTrainerMixedDomainUniform", "None")])
def test_mixed_domain_trains_and_predicts(tiny, trainer, share):
    _, stdout = trained(tiny, LABELS, trainer)
    assert f"target share per batch {share}" in stdout
    assert_prediction(tiny, LABELS, trainer)


def test_fine_tune_all_layers_from_a_combined_model_and_predict(tiny):
    source = trained(tiny, LABELS, "nnUNetTrainerMixedDomain")[0]["network_weights"]
    checkpoint, stdout = trained(tiny, LABELS, "nnUNetTrainerFineTune")
    assert "segmentation head (4 tensors) loaded because the label sets match" in stdout
    weights = checkpoint["network_weights"]
    assert any(not torch.equal(weights[k], source[k]) for k in encoder_tensors(weights)), "the encoder did not train"
    assert any(not torch.equal(weights[k], source[k]) for k in decoder_only(weights)), "the decoder did not train"
    assert_prediction(tiny, LABELS, "nnUNetTrainerFineTune")


def test_frozen_encoder_keeps_stem_and_encoder_bitwise(tiny):
    source = trained(tiny, LABELS, "nnUNetTrainerDANN")[0]["network_weights"]
    checkpoint, stdout = trained(tiny, LABELS, "nnUNetTrainerFineTuneFrozenEncoder")
    assert "froze the encoder" in stdout
    weights = checkpoint["network_weights"]
    encoder = encoder_tensors(weights)
    stem = [k for k in encoder if k.startswith("encoder.stem.")]
    assert stem, f"no encoder.stem tensors in the ResEnc checkpoint: {sorted(weights)[:8]}"
    changed = [k for k in encoder if not torch.equal(weights[k], source[k])]
    assert not changed, f"frozen encoder tensors changed: {changed[:5]}"
    assert any(not torch.equal(weights[k], source[k]) for k in decoder_only(weights)), "the decoder did not train"
    assert_prediction(tiny, LABELS, "nnUNetTrainerFineTuneFrozenEncoder")


@pytest.mark.parametrize("kind", [LABELS, REGIONS])
def test_frozen_decoder_keeps_decoder_bitwise(tiny, kind):
    source = trained(tiny, kind, "nnUNetTrainerDANN")[0]["network_weights"]
    checkpoint, stdout = trained(tiny, kind, "nnUNetTrainerFineTuneFrozenDecoder")
    assert "froze the decoder" in stdout
    assert "segmentation head (4 tensors) loaded because the label sets match" in stdout
    weights = checkpoint["network_weights"]
    decoder = decoder_only(weights)
    assert any(".seg_layers." in k for k in decoder) and any(".transpconvs." in k for k in decoder), decoder
    changed = [k for k in decoder if not torch.equal(weights[k], source[k])]
    assert not changed, f"frozen decoder tensors changed: {changed[:5]}"
    assert any(not torch.equal(weights[k], source[k]) for k in encoder_tensors(weights)), "the encoder did not train"
    assert_prediction(tiny, kind, "nnUNetTrainerFineTuneFrozenDecoder")


def test_brainunet_fine_tune_trains_the_resenc_network(tiny):
    checkpoint, stdout = trained(tiny, LABELS, "nnUNetTrainerBrainUNetFineTune")
    assert re.search(rf"plans '{PLANS}' use \S*ResidualEncoderUNet, not BrainUNet's network", stdout), \
        "BrainUNet fine-tuning did not report that it trains the plans' ResEnc network"
    assert "Tversky + CE loss" in stdout and "segmentation head (4 tensors) loaded" in stdout
    assert any(k.startswith("encoder.stem.") for k in checkpoint["network_weights"])
    assert_prediction(tiny, LABELS, "nnUNetTrainerBrainUNetFineTune")


# ---- region-based -------------------------------------------------------------------------
def test_region_based_dann_trains_and_predicts_labels(tiny):
    checkpoint, stdout = trained(tiny, REGIONS, "nnUNetTrainerDANN")
    assert checkpoint["init_args"]["dataset_json"]["regions_class_order"] == [2, 1, 3]
    assert "domain_loss" in stdout
    # three region outputs (WT, TC, ET), turned back into the labels 0-3 by nnUNetv2_predict
    assert checkpoint["network_weights"]["decoder.seg_layers.1.weight"].shape[0] == 3
    assert_prediction(tiny, REGIONS, "nnUNetTrainerDANN")


# ---- deep supervision off -----------------------------------------------------------------
@pytest.mark.parametrize("trainer", ["nnUNetTrainerDANN_NoDS", "nnUNetTrainerMixedDomain_NoDS",
                                     "nnUNetTrainerFineTune_NoDS"])
def test_deep_supervision_off(tiny, trainer):
    checkpoint, stdout = trained(tiny, LABELS, trainer)
    report = re.search(r"test: decoder deep supervision (\w+), loss (\w+)", stdout)
    assert report, f"{trainer} did not log its deep supervision (on_train_start did not run?)"
    assert report.group(1) == "False", f"{trainer} built a network with deep supervision"
    assert report.group(2) != "DeepSupervisionWrapper", f"{trainer} weighs deep-supervision outputs"
    assert checkpoint["current_epoch"] == 1


# ---- the experiment runner ----------------------------------------------------------------
def resenc_plan() -> dict:
    """A tiny plan of synthetic data that plans with ResEnc M and shrinks those plans."""
    return {
        "name": "resenc_ci", "configuration": "3d_fullres", "folds": 2, "target_domain": "SSA",
        "plans": BASE_PLANS, "planner": PLANNER, "device": "cpu", "num_processes": 1, "reference": "baseline",
        "test_time_mirroring": False,
        "datasets": {
            "source": {"id": 981, "name": "ResEncGLI", "source": "synth", "domain": "GLI", "n": 4,
                       "shape": [32, 32, 32]},
            "target": {"id": 982, "name": "ResEncSSA", "source": "synth", "domain": "SSA", "n": 3,
                       "shape": [32, 32, 32]},
            "combined": {"id": 983, "name": "ResEncGLISSA", "combine": ["source", "target"]},
        },
        "overrides": {"fingerprint_voxels": 1e4, "shrink": {"plans_name": PLANS, **SHRINK},
                      "env": {k: int(v) for k, v in SHORT.items()}},
        "strategies": {
            "baseline": {"label": "Baseline", "trainer": "nnUNetTrainerSourceOnly", "dataset": "source",
                         "fold": "all", "evaluate": "cross-domain"},
            "finetune": {"label": "Fine-Tuning (frozen encoder)", "trainer": "nnUNetTrainerFineTuneFrozenEncoder",
                         "dataset": "target", "init": "baseline"},
            "dann": {"label": "DANN", "trainer": "nnUNetTrainerDANN", "dataset": "combined"},
        },
    }


def test_runner_dry_run_passes_planner_and_plans_to_every_command(tmp_path):
    env = nnunet_folders(tmp_path / "nnunet")
    plan_file = tmp_path / "resenc_ci.toml"
    plan_file.write_text(dump_toml(resenc_plan()))
    out = run_cmd(cli("run", str(plan_file), "--dry-run", "--workdir", str(tmp_path / "work")), env).stdout
    commands = [shlex.split(line) for line in out.splitlines() if line and not line.startswith(("export", "#"))]
    by_tool: Dict[str, List[List[str]]] = {}
    for command in commands:
        by_tool.setdefault(command[0], []).append(command)

    def option(command: List[str], flag: str) -> str:
        assert flag in command, f"{flag} missing from {shlex.join(command)}"
        return command[command.index(flag) + 1]

    planned = by_tool["nnUNetv2_plan_experiment"]
    assert sorted(option(c, "-d") for c in planned) == ["981", "982", "983"]
    assert all(option(c, "-pl") == PLANNER for c in planned), planned
    shrink = [c for c in by_tool["nnunet-transfer"] if "--step" in c]
    assert ["shrink-plans"] == [option(c, "--step") for c in shrink if option(c, "--step").startswith("shrink")]
    moved = by_tool["nnUNetv2_move_plans_between_datasets"]
    assert sorted(option(c, "-t") for c in moved) == ["982", "983"]
    assert all(option(c, "-s") == "981" and option(c, "-sp") == PLANS and option(c, "-tp") == f"{PLANS}_from981"
               for c in moved), moved
    # the source preprocesses the ResEnc data that its shrunken plans share; the others their moved plans
    preprocess = {option(c, "-d"): option(c, "-plans_name") for c in by_tool["nnUNetv2_preprocess"]}
    assert preprocess == {"981": BASE_PLANS, "982": f"{PLANS}_from981", "983": f"{PLANS}_from981"}
    trains = by_tool["nnUNetv2_train"]
    assert {(option(c, "-tr"), option(c, "-p")) for c in trains} == {
        ("nnUNetTrainerSourceOnly", PLANS), ("nnUNetTrainerFineTuneFrozenEncoder", f"{PLANS}_from981"),
        ("nnUNetTrainerDANN", f"{PLANS}_from981")}
    pretrained = {option(c, "-pretrained_weights") for c in trains if "-pretrained_weights" in c}
    assert len(pretrained) == 1 and pretrained.pop().endswith(
        f"Dataset981_ResEncGLI/nnUNetTrainerSourceOnly__{PLANS}__3d_fullres/fold_all/checkpoint_final.pth")
    predicts = [c for c in by_tool["nnunet-transfer"] if c[1] == "predict-folds"]
    assert predicts and all(f"__{PLANS}__3d_fullres" in c[2] for c in predicts), predicts
    assert not re.search(r"(?<!\w)nnUNetPlans(?!\w)", out), "nnU-Net's default plans name leaked into a command"


def test_runner_real_run_plans_with_resenc_and_trains_on_the_shrunken_plans(tmp_path):
    """One strategy for real: synth -> convert -> plan (ResEnc M) -> shrink -> preprocess -> train -> predict."""
    env = nnunet_folders(tmp_path / "nnunet")
    plan_file = tmp_path / "resenc_ci.toml"
    plan_file.write_text(dump_toml(resenc_plan()))
    workdir = tmp_path / "work"
    run_cmd(cli("run", str(plan_file), "--workdir", str(workdir), "--strategies", "baseline", "--folds", "0",
                "--quiet"), env, timeout=600)
    records = [json.loads(line) for line in (workdir / "run_log.jsonl").read_text().splitlines()]
    commands = {r["step"]: r["command"] for r in records}
    assert all(r["status"] == 0 for r in records), records
    assert commands["plan-source"][-2:] == ["-pl", PLANNER] and commands["plan-target"][-2:] == ["-pl", PLANNER]
    assert commands["preprocess-source"][4] == BASE_PLANS, commands["preprocess-source"]

    pre = Path(env[config.PREPROCESSED]) / "Dataset981_ResEncGLI"
    plans = json.loads((pre / f"{PLANS}.json").read_text())  # written by the runner's shrink-plans step
    assert plans["experiment_planner_used"] == PLANNER
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"] == RESENC
    kwargs = arch["arch_kwargs"]
    assert kwargs["n_stages"] == 3 and len(kwargs["n_blocks_per_stage"]) == 3
    assert len(kwargs["n_conv_per_stage_decoder"]) == 2 and kwargs["features_per_stage"] == [8, 16, 32]

    model = Path(env[config.RESULTS]) / "Dataset981_ResEncGLI" / f"nnUNetTrainerSourceOnly__{PLANS}__3d_fullres"
    checkpoint = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["init_args"]["plans"]["plans_name"] == PLANS
    assert any(k.startswith("encoder.stem.") for k in checkpoint["network_weights"])
    # the source model predicted the target fold (cross-domain) and was evaluated
    summary = json.loads((workdir / "predictions" / "baseline" / "fold_0" / "validation" / "summary.json").read_text())
    assert summary["case_ids"] and len(summary["metric_per_case"]) == len(summary["case_ids"])

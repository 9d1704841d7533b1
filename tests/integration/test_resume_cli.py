"""Kill and resume through nnU-Net's console scripts, for every trainer family.

Each run is started with ``nnUNetv2_train``, SIGKILLed once its first ``checkpoint_latest.pth``
exists, resumed with ``--c`` until it finishes and re-validated with ``--val``. A resumed run
must be the same run: frozen tensors bitwise equal to the pretrained ones, the domain
classifier restored as saved, the learning rate and the reversal strength continuing where
they stopped.

The families run two at a time (module fixture ``flows``; each process uses one CPU thread),
and each family's test then checks its own run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from nnunet_transfer.training.checkpoints import tensor_digest
from nnunet_transfer.training.grl import ganin_lambda
from nnunet_transfer.training.lr_schedule import poly_warmup_factor
from tests.integration.conftest import PLANS, load, train

pytestmark = pytest.mark.integration

EPOCHS, ITERATIONS = 4, 2
SCHEDULE = {"nnUNetTransfer_num_epochs": str(EPOCHS), "nnUNetTransfer_iterations_per_epoch": str(ITERATIONS),
            "nnUNetTransfer_val_iterations_per_epoch": "1", "nnUNetTransfer_save_every": "1",
            "nnUNetTransfer_test_time_mirroring": "0"}
FAMILIES = {  # trainer -> starts from a pretrained model
    "nnUNetTrainerDANN": False,
    "nnUNetTrainerDANNUnsupervised": False,  # domain-aware sampling, label hiding and its run state
    "nnUNetTrainerFineTune": True,
    "nnUNetTrainerFineTuneFrozenDecoder": True,
    "nnUNetTrainerFineTuneFrozenEncoder": True,
    "nnUNetTrainerBrainUNetFineTune": True,
}


@pytest.fixture(scope="module")
def resume_env(tiny, tmp_path_factory):
    """The shared tiny dataset with results of its own, and a source model to fine-tune from."""
    results = tmp_path_factory.mktemp("resume_results")
    env = {**tiny["env"], "nnUNet_results": str(results)}
    train({**tiny, "env": env}, "nnUNetTrainerSourceOnly", "3", nnUNetTransfer_num_epochs="1")
    source = results / tiny["results"].name / f"nnUNetTrainerSourceOnly__{PLANS}__3d_fullres" / "fold_3"
    return {"env": env, "tiny": tiny, "results": results / tiny["results"].name,
            "pretrained": source / "checkpoint_final.pth"}


def _command(trainer: str, *extra: str):
    return ["nnUNetv2_train", "901", "3d_fullres", "0", "-tr", trainer, "-p", PLANS, "-device", "cpu", *extra]


def start_and_kill(env: dict, trainer: str, out_dir: Path, *extra: str) -> None:
    """Start a training and SIGKILL it (and its data-augmentation workers) after its first checkpoint."""
    log = open(out_dir.parent.parent / f"{trainer}_killed.log", "w")
    proc = subprocess.Popen(_command(trainer, *extra), env={**os.environ, **env, **SCHEDULE}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    latest = out_dir / "checkpoint_latest.pth"
    deadline = time.monotonic() + 300
    while not latest.exists():
        if proc.poll() is not None:
            raise AssertionError(f"{trainer} ended ({proc.returncode}) before its first checkpoint; see {log.name}")
        assert time.monotonic() < deadline, f"{trainer}: no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()


def logged_lr(text: str, epoch: int) -> float:
    """The learning rate nnU-Net logged for ``epoch`` (the first block of that epoch in ``text``)."""
    match = re.search(rf"Epoch {epoch}\s*\n.*?Current learning rate: ([0-9.e-]+)", text)
    assert match, f"no learning rate logged for epoch {epoch}"
    return float(match.group(1))


def kill_resume_validate(resume_env: dict, trainer: str) -> dict:
    """Start, SIGKILL after the first checkpoint, resume with ``--c`` to the end, re-validate with ``--val``."""
    env = resume_env["env"]
    out_dir = resume_env["results"] / f"{trainer}__{PLANS}__3d_fullres" / "fold_0"
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = ("-pretrained_weights", str(resume_env["pretrained"])) if FAMILIES[trainer] else ()
    start_and_kill(env, trainer, out_dir, *extra)
    saved_path = out_dir.parent / "killed_checkpoint.pth"
    shutil.copy(out_dir / "checkpoint_latest.pth", saved_path)
    saved = load(saved_path)  # whole, although the job was killed at an arbitrary moment
    resumed = train(resume_env["tiny"] | {"env": env}, trainer, "0", "--c", **SCHEDULE)
    final = load(out_dir / "checkpoint_final.pth")
    validated = train(resume_env["tiny"] | {"env": env}, trainer, "0", "--val", **SCHEDULE)
    return {"out_dir": out_dir, "saved": saved, "resumed": resumed, "final": final, "validated": validated}


@pytest.fixture(scope="module")
def flows(resume_env) -> Dict[str, Future]:
    """Every family's kill/resume/validate run, two at a time; each test takes its own result (or error)."""
    with ThreadPoolExecutor(2) as pool:
        return {trainer: pool.submit(kill_resume_validate, resume_env, trainer) for trainer in FAMILIES}


@pytest.mark.parametrize("trainer", list(FAMILIES))
def test_kill_resume_and_revalidate(resume_env, flows, trainer):
    flow = flows[trainer].result()
    out_dir, saved, resumed, final = flow["out_dir"], flow["saved"], flow["resumed"], flow["final"]
    stopped = saved["current_epoch"]
    assert 1 <= stopped < EPOCHS
    run = saved["nnunet_transfer"]["run"]
    assert run["trainer"] == trainer

    assert final["current_epoch"] == EPOCHS
    assert {k: v for k, v in final["nnunet_transfer"]["run"].items() if k != "nnunet_transfer_version"} == \
        {k: v for k, v in run.items() if k != "nnunet_transfer_version"}  # the same run

    # the learning rate continues where it stopped (nnU-Net logs it rounded to 5 decimals)
    group = saved["optimizer_state"]["param_groups"][0]
    expected = group["base_lr"] * poly_warmup_factor(stopped, EPOCHS, 0.9, 0)  # warm-up: min(10, EPOCHS // 10)
    assert logged_lr(resumed.stdout, stopped) == pytest.approx(expected, abs=1e-5)

    if "DANN" in trainer:
        head = saved["nnunet_transfer"]["domain_head"]
        assert f"weights digest {tensor_digest(head)[:16]}" in resumed.stdout  # restored as saved
        lambdas = [float(v) for v in re.findall(r"grl_lambda ([0-9.]+)", resumed.stdout)]
        steps = [stopped * ITERATIONS + s for s in range(ITERATIONS)]
        assert lambdas[0] == pytest.approx(np.mean([ganin_lambda(s / (EPOCHS * ITERATIONS)) for s in steps]),
                                           abs=1e-4)  # the reversal ramp continues, it does not restart
    if "Unsupervised" in trainer:
        assert run["target_labels"]["labelled"] == [] and run["target_labels"]["hidden"]
        assert not (out_dir / "checkpoint_best.pth").exists()
    if "Frozen" in trainer:
        part = "encoder." if "Encoder" in trainer else "decoder."
        pretrained = load(resume_env["pretrained"])["network_weights"]
        names = run["frozen"]["names"]
        assert names and all(n.startswith(part) for n in names)
        assert all(final["network_weights"][n].equal(pretrained[n]) for n in names)  # bitwise, after a kill

    assert (out_dir / "validation" / "summary.json").is_file(), flow["validated"].stdout[-2000:]

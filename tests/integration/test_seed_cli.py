"""``nnUNetTransfer_seed`` through the real ``nnUNetv2_train``: one seed, one run.

Two DANN trainings with the same seed (each in its own results folder, one CPU thread, one
augmentation worker) end with bitwise equal network and domain-classifier weights and the
same validation; their checkpoints record the seed as run state.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.integration.conftest import PLANS, train

pytestmark = pytest.mark.integration

TRAINER = "nnUNetTrainerDANN"


def test_two_runs_with_one_seed_are_the_same_run(tiny, tmp_path):
    runs = []
    for name in ("a", "b"):
        results = tmp_path / name
        results.mkdir()
        runs.append({**tiny, "env": {**tiny["env"], "nnUNet_results": str(results)}})
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(train, run, TRAINER, "0", nnUNetTransfer_seed="7", nnUNetTransfer_num_epochs="1",
                               nnUNetTransfer_test_time_mirroring="0") for run in runs]
        for future in futures:
            future.result()
    folds = [tmp_path / name / tiny["results"].name / f"{TRAINER}__{PLANS}__3d_fullres" / "fold_0" for name in "ab"]
    checkpoints = [torch.load(f / "checkpoint_final.pth", map_location="cpu", weights_only=False) for f in folds]
    a, b = checkpoints
    assert a["nnunet_transfer"]["run"]["seed"] == 7 == b["nnunet_transfer"]["run"]["seed"]
    assert a["network_weights"].keys() == b["network_weights"].keys()
    assert all(torch.equal(a["network_weights"][k], b["network_weights"][k]) for k in a["network_weights"])
    head_a, head_b = a["nnunet_transfer"]["domain_head"], b["nnunet_transfer"]["domain_head"]
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
    assert a["logging"]["train_losses"] == b["logging"]["train_losses"]
    summaries = [json.loads((f / "validation" / "summary.json").read_text())["foreground_mean"] for f in folds]
    assert summaries[0] == summaries[1]
    log = next(folds[0].glob("training_log_*.txt")).read_text()
    assert "nnunet-transfer: seed 7 (network initialisation and augmentation workers)" in log

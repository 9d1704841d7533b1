"""One complete checkpoint per save, atomically; the run state travels with it."""

from __future__ import annotations

import os

import pytest
import torch

from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.checkpoints import CHECKPOINT_KEY, complete_checkpoint_writes, tensor_digest
from tests.training.test_trainers_inprocess import KEYS, folders, make  # noqa: F401 (fixture)


def test_a_failed_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    with complete_checkpoint_writes({"run": {"n": 1}}):
        torch.save({"network_weights": {"w": torch.ones(2)}}, path)
    real_save = torch.serialization.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the job is stopped while writing

    monkeypatch.setattr(torch.serialization, "save", dies_half_way)
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt), complete_checkpoint_writes({"run": {"n": 2}}):
        torch.save({"network_weights": {"w": torch.zeros(2)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    kept = torch.load(path, weights_only=False)
    assert kept[CHECKPOINT_KEY] == {"run": {"n": 1}} and kept["network_weights"]["w"].equal(torch.ones(2))
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]


def test_other_saves_are_untouched(tmp_path):
    with complete_checkpoint_writes({"run": {}}):
        torch.save({"a": 1}, tmp_path / "other.pth")
    assert torch.load(tmp_path / "other.pth") == {"a": 1}


def test_digest_is_bitwise():
    a = {"w": torch.tensor([0.0, 1.0])}
    assert tensor_digest(a) == tensor_digest({"w": torch.tensor([0.0, 1.0])})
    assert tensor_digest(a) != tensor_digest({"w": torch.tensor([-0.0, 1.0])})  # -0.0 == 0.0, but not bitwise
    assert tensor_digest({"s": torch.tensor(1.5)})  # 0-dim tensors too


def test_dann_writes_one_complete_checkpoint(folders, tmp_path, monkeypatch):
    trainer = make(T.nnUNetTrainerDANN, deep_supervision=True)
    writes = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (writes.append(f), real_save(obj, f, *a, **k)))
    path = tmp_path / "checkpoint_best.pth"
    trainer.save_checkpoint(str(path))
    assert len(writes) == 1  # written once: no read-back and rewrite
    saved = torch.load(path, weights_only=False)
    state = saved[CHECKPOINT_KEY]
    assert state["domain_head"] and state["domain_optimizer"]
    assert state["run"]["dann"]["domain_index"] == trainer.domain_index
    assert state["run"]["domains"]["target_domain"] == trainer.active_target_domain


def test_resume_without_run_state_is_refused(folders, tmp_path):
    trainer = make(T.nnUNetTrainerDANN, deep_supervision=True)
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint[CHECKPOINT_KEY]  # as an older version wrote it
    fresh = T.nnUNetTrainerDANN({**checkpoint["init_args"]["plans"], "continue_training": True}, "3d_fullres", 0,
                                checkpoint["init_args"]["dataset_json"], torch.device("cpu"))
    fresh._split = (KEYS, KEYS[:1])
    fresh.check_training_cases(KEYS, KEYS[:1])
    with pytest.raises(RuntimeError, match="holds no domain classifier.*old optimizer moments"):
        fresh.load_checkpoint(checkpoint)

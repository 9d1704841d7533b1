"""The trainers' final validation follows nnUNetTransfer_test_time_mirroring (nnU-Net itself always mirrors)."""

from __future__ import annotations

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer import config
from nnunet_transfer.training import trainers as T


def _bare_trainer(fold):
    trainer = object.__new__(T.nnUNetTrainerDANN)  # no plans needed: only the validation hook runs
    trainer.fold = fold
    trainer.inference_allowed_mirroring_axes = (0, 1, 2)
    trainer.logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: trainer.logged.append(" ".join(map(str, args)))
    return trainer


@pytest.mark.parametrize("value, expected_axes", [(None, (0, 1, 2)), ("1", (0, 1, 2)), ("0", None), ("false", None)])
def test_final_validation_mirrors_unless_turned_off(monkeypatch, value, expected_axes):
    if value is None:
        monkeypatch.delenv(config.TEST_TIME_MIRRORING, raising=False)
    else:
        monkeypatch.setenv(config.TEST_TIME_MIRRORING, value)
    seen = []
    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation",
                        lambda self, save_probabilities=False: seen.append(self.inference_allowed_mirroring_axes))
    trainer = _bare_trainer(0)
    trainer.perform_actual_validation()
    assert seen == [expected_axes]
    assert trainer.inference_allowed_mirroring_axes == (0, 1, 2)  # restored: checkpoints and predict keep it
    assert any("without test-time mirroring" in line for line in trainer.logged) == (expected_axes is None)


def test_axes_restored_when_validation_fails(monkeypatch):
    monkeypatch.setenv(config.TEST_TIME_MIRRORING, "0")

    def boom(self, save_probabilities=False):
        raise RuntimeError("export failed")

    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation", boom)
    trainer = _bare_trainer(1)
    with pytest.raises(RuntimeError, match="export failed"):
        trainer.perform_actual_validation()
    assert trainer.inference_allowed_mirroring_axes == (0, 1, 2)


def test_bad_value_says_how_to_fix(monkeypatch):
    monkeypatch.setenv(config.TEST_TIME_MIRRORING, "maybe")
    with pytest.raises(ValueError, match="must be 0 or 1"):
        config.test_time_mirroring()

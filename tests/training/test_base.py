"""``TransferTrainerBase``: the initial learning rate from the environment, as run state."""

from __future__ import annotations

import pytest

from nnunet_transfer import config
from nnunet_transfer.training import trainers as T
from tests.training.test_trainers_inprocess import folders, uninitialised  # noqa: F401


@pytest.mark.parametrize("cls, default", [(T.nnUNetTrainerMixedDomain, 1e-2), (T.nnUNetTrainerFineTune, 1e-3),
                                          (T.nnUNetTrainerDANN_PaperRecipe, 6e-5)])
def test_the_environment_sets_the_initial_lr_of_any_recipe(folders, monkeypatch, cls, default):
    monkeypatch.delenv(config.INITIAL_LR, raising=False)
    assert uninitialised(cls).initial_lr == default
    monkeypatch.setenv(config.INITIAL_LR, "0.02")
    trainer = uninitialised(cls)
    assert trainer.initial_lr == 0.02 and trainer.run_state()["initial_lr"] == 0.02
    trainer.initialize()
    assert [group["base_lr"] for group in trainer.optimizer.param_groups] == [0.02]


def test_a_resumed_run_keeps_its_initial_lr(folders, monkeypatch):
    monkeypatch.setenv(config.INITIAL_LR, "0.02")
    trainer = uninitialised(T.nnUNetTrainerMixedDomain)
    trainer.resumed_run = {"initial_lr": 0.01}
    with pytest.raises(RuntimeError, match=r"started with initial_lr 0.01, this one would use 0.02.*"
                                           r"nnUNetTransfer_initial_lr=0.01"):
        trainer.initialize()
    monkeypatch.delenv(config.INITIAL_LR)
    trainer = uninitialised(T.nnUNetTrainerMixedDomain)
    trainer.resumed_run = {"initial_lr": 0.01}
    trainer.initialize()  # the default is what it started with
    trainer = uninitialised(T.nnUNetTrainerMixedDomain)
    trainer.resumed_run = {}  # an older checkpoint records none: nothing to compare
    trainer.initialize()


@pytest.mark.parametrize("value", ["0", "-1e-3", "fast", "inf"])
def test_a_bad_initial_lr_is_refused(monkeypatch, value):
    monkeypatch.setenv(config.INITIAL_LR, value)
    with pytest.raises(ValueError, match="must be a positive number"):
        config.initial_lr()

"""Seeded runs: global generators, augmentation worker seeds, and the seed as run state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_transfer import config
from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.seeding import seed_everything, seeded_augmenters, worker_seeds
from tests.training.test_trainers_inprocess import folders, uninitialised  # noqa: F401


def weights(trainer) -> dict:
    state = {f"network.{k}": v.clone() for k, v in trainer.network.state_dict().items()}
    state.update({f"head.{k}": v.clone() for k, v in trainer.domain_head.state_dict().items()})
    return state


def test_seed_everything_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(5, 3)
        draws.append((np.random.rand(), torch.rand(1).item(), __import__("random").random()))
    assert draws[0] == draws[1]
    seed_everything(5, 4)
    assert np.random.rand() != draws[0][0]


def test_worker_seeds_differ_by_seed_epoch_rank_and_stream():
    base = worker_seeds(0, 0, 0, "train", 2)
    assert base == worker_seeds(0, 0, 0, "train", 2) and len(set(base)) == 2
    for other in (worker_seeds(1, 0, 0, "train", 2), worker_seeds(0, 3, 0, "train", 2),
                  worker_seeds(0, 0, 1, "train", 2), worker_seeds(0, 0, 0, "val", 2)):
        assert not set(other) & set(base)
    assert all(0 <= s < 2 ** 32 for s in base)
    with pytest.raises(ValueError, match="stream"):
        worker_seeds(0, 0, 0, "test", 1)


def test_seeded_augmenters_hand_nnunet_the_seeds(monkeypatch):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    built = []
    fake = lambda **kw: built.append(kw) or kw  # noqa: E731
    monkeypatch.setattr(trainer_module, "NonDetMultiThreadedAugmenter", fake)
    with seeded_augmenters([11, 12, 13], [21, 22]):
        trainer_module.NonDetMultiThreadedAugmenter(data_loader=None, transform=None, num_processes=2, seeds=None)
        trainer_module.NonDetMultiThreadedAugmenter(data_loader=None, transform=None, num_processes=1, seeds=None)
        with pytest.raises(RuntimeError, match="more than a training and a validation"):
            trainer_module.NonDetMultiThreadedAugmenter(data_loader=None, transform=None, num_processes=1)
    assert [kw["seeds"] for kw in built] == [[11, 12], [21]]
    assert trainer_module.NonDetMultiThreadedAugmenter is fake  # restored after the block


def test_the_seed_fixes_network_and_domain_head_initialisation(folders, monkeypatch):
    monkeypatch.setenv(config.TRAINING_SEED, "3")
    a, b = uninitialised(T.nnUNetTrainerDANN), uninitialised(T.nnUNetTrainerDANN)
    a.initialize()
    torch.rand(10)  # whatever ran in between
    b.initialize()
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.run_state()["seed"] == 3
    monkeypatch.setenv(config.TRAINING_SEED, "4")
    c = uninitialised(T.nnUNetTrainerDANN)
    c.initialize()
    assert any(not torch.equal(wa[k], v) for k, v in weights(c).items())


def test_unseeded_by_default_and_the_attribute_as_knob(folders, monkeypatch):
    monkeypatch.delenv(config.TRAINING_SEED, raising=False)
    trainer = uninitialised(T.nnUNetTrainerDANN)
    trainer.initialize()
    assert trainer.run_state()["seed"] is None

    class Seeded(T.nnUNetTrainerDANN):
        seed = 9

    trainer = uninitialised(Seeded)
    trainer.initialize()
    assert trainer.training_seed == 9


@pytest.mark.parametrize("saved, requested, error", [
    (5, None, None),      # resumed run keeps its seed without being told
    (5, "5", None),
    (5, "6", "used seed 5"),
    (None, "6", "was unseeded"),
])
def test_a_resumed_run_keeps_its_seed(folders, monkeypatch, saved, requested, error):
    if requested is None:
        monkeypatch.delenv(config.TRAINING_SEED, raising=False)
    else:
        monkeypatch.setenv(config.TRAINING_SEED, requested)
    trainer = uninitialised(T.nnUNetTrainerDANN)
    trainer.resumed_run = {"seed": saved} if saved is not None else {}
    if error:
        with pytest.raises(RuntimeError, match=error):
            trainer._decide_seed()
    else:
        trainer._decide_seed()
        assert trainer.training_seed == saved


def test_a_bad_seed_is_refused(monkeypatch):
    monkeypatch.setenv(config.TRAINING_SEED, "-1")
    with pytest.raises(ValueError, match=r"nnUNetTransfer_seed='-1'.*\[0, 2\*\*32\)"):
        config.training_seed()

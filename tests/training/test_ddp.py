"""The paper's recipe under DDP, without GPUs: per-rank batch and oversampling, the ranks' domain schedule.

DDP is faked: ``torch.distributed``'s ``get_world_size``/``get_rank``/``is_initialized`` are
monkeypatched, the trainer's ``is_ddp``/``local_rank`` set by hand.
"""

from __future__ import annotations

import copy
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.distributed as dist
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_transfer.domains import read_domains
from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.recipe import RankBatch, describe_domain_steps, paper_rank_batch
from nnunet_transfer.training.sampling import (DomainBalancedDataLoader, batch_domain_counts, cumulative_target_count,
                                               global_target_count, rank_draws_target)
from tests.training.test_trainers_inprocess import DATASET_JSON, tiny_plans

WORLD_SIZES = [1, 2, 3, 4]
KEYS = [f"BraTS-GLI-{i:05d}-000" for i in range(12)] + [f"BraTS-SSA-{i:05d}-000" for i in range(4)]
DOMAINS = read_domains({}, KEYS)


@pytest.fixture
def folders(nnunet_env, tmp_path):
    """nnU-Net folders with the in-process tests' dataset (nothing is read from it)."""
    data = tmp_path / "nnunet" / "preprocessed" / "Dataset998_InProcess" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "placeholder.b2nd").touch()
    return nnunet_env


def fake_ddp(monkeypatch, world_size: int, rank: int) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: world_size)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: rank)


def recipe_trainer(cls=T.nnUNetTrainerDANN_PaperRecipe):
    return cls({**tiny_plans(), "continue_training": False}, "3d_fullres", 0, DATASET_JSON, torch.device("cpu"))


class _FakeDataset:
    def __init__(self, identifiers):
        self.identifiers = identifiers


def loader(share, batch_size: int = 1, **kwargs) -> DomainBalancedDataLoader:
    labels = LabelManager({"background": 0, "NCR": 1, "ED": 2, "ET": 3}, regions_class_order=None)
    return DomainBalancedDataLoader(_FakeDataset(KEYS), batch_size, (8, 8, 8), (8, 8, 8), labels,
                                    case_domains=DOMAINS, target_domain="SSA", target_share=share, **kwargs)


def is_target(indices: List[str]) -> List[bool]:
    return [DOMAINS[k] == "SSA" for k in indices]


# ---- per-rank batch and oversampling ----------------------------------------------------------

@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_paper_rank_batch_is_one_case_and_the_same_oversampling_on_every_rank(world_size):
    plans = {paper_rank_batch(world_size, rank) for rank in range(world_size)}
    assert plans == {RankBatch(batch_size=1, global_batch_size=world_size, oversample_foreground_percent=0.33,
                               probabilistic_oversampling=True)}


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_recipe_trainer_under_fake_ddp(folders, monkeypatch, world_size):
    """Every rank: batch 1, probability 0.33 drawn per case; nnU-Net's own split is skipped."""
    seen = set()
    for rank, trainer in enumerate([recipe_trainer() for _ in range(world_size)]):  # built without DDP
        fake_ddp(monkeypatch, world_size, rank)
        trainer.is_ddp, trainer.local_rank = True, rank
        trainer._set_batch_size_and_oversample()
        seen.add((trainer.batch_size, trainer.oversample_foreground_percent, trainer.probabilistic_oversampling))
    assert seen == {(1, 0.33, True)}


def test_nnunet_split_is_what_the_recipe_replaces(folders, monkeypatch):
    """The bug: nnU-Net gives rank 0 no and rank 1 only oversampling for 2 GPUs, and fails for 3."""
    trainer = recipe_trainer()
    trainer.is_ddp = True
    oversample = []
    for rank in range(2):
        fake_ddp(monkeypatch, 2, rank)
        trainer.oversample_foreground_percent = 0.33
        nnUNetTrainer._set_batch_size_and_oversample(trainer)
        oversample.append(trainer.oversample_foreground_percent)
    assert oversample == [0.0, 1.0]
    fake_ddp(monkeypatch, 3, 0)
    with pytest.raises(AssertionError):
        nnUNetTrainer._set_batch_size_and_oversample(trainer)


def test_recipe_without_ddp_is_unchanged(folders):
    trainer = recipe_trainer()
    assert not trainer.is_ddp
    trainer._set_batch_size_and_oversample()
    assert (trainer.batch_size, trainer.oversample_foreground_percent, trainer.probabilistic_oversampling) == \
        (1, 0.33, True)
    assert trainer.configuration_manager.batch_size == 2  # the plans keep theirs


@pytest.mark.parametrize("cls", [T.nnUNetTrainerFineTune_PaperRecipe, T.nnUNetTrainerFineTuneFrozenDecoder_PaperRecipe,
                                 T.nnUNetTrainerFineTuneFrozenEncoder_PaperRecipe, T.nnUNetTrainerDANN_PaperRecipe])
def test_paper_recipe_has_no_warmup(folders, cls):
    assert T.nnUNetTrainerFineTune.warmup_epochs == 10  # what the recipe overrides
    trainer = recipe_trainer(cls)
    assert trainer.warmup_epochs == 0 and trainer.effective_warmup_epochs() == 0
    assert trainer.initial_lr == 6e-5


def test_paper_rank_batch_rejects_misconfiguration():
    with pytest.raises(ValueError, match="Fix"):
        paper_rank_batch(2, 2)
    with pytest.raises(ValueError, match="Fix"):
        paper_rank_batch(2, 0, batch_size=0)
    with pytest.raises(ValueError, match="Fix"):
        paper_rank_batch(2, 0, oversample_foreground_percent=1.5)


# ---- the ranks' domain schedule ---------------------------------------------------------------

SCHEDULES = [(2, 0.5), (3, 0.5), (4, 0.5), (4, 0.25), (4, 0.75), (2, 0.2), (3, 0.3)]


@pytest.mark.parametrize("world_size,share", SCHEDULES)
def test_schedule_shares_per_step_and_per_rank(world_size, share):
    steps = 600
    draws = np.array([[rank_draws_target(s, r, world_size, share) for r in range(world_size)] for s in range(steps)])
    per_step = draws.sum(axis=1)
    assert list(per_step) == [global_target_count(s, world_size, share) for s in range(steps)]
    if float(world_size * share).is_integer():
        assert set(per_step) == {world_size * share}  # exact at every step
    else:
        assert set(per_step) == {int(world_size * share), int(world_size * share) + 1}
    assert draws.sum() == cumulative_target_count(steps, world_size, share) == int(steps * world_size * share)
    per_rank = draws.sum(axis=0)
    assert per_rank.max() - per_rank.min() <= 1  # targets dealt to the ranks in turn
    assert draws.any(axis=0).all() and (~draws).any(axis=0).all()  # every rank draws both domains


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_loaders_of_all_ranks_together(monkeypatch, world_size):
    """One loader per rank, each reading its rank from (fake) torch.distributed; share 0.5 globally."""
    loaders = []
    for rank in range(world_size):
        fake_ddp(monkeypatch, world_size, rank)
        loaders.append(loader(0.5))
    assert [(lo.rank, lo.world_size) for lo in loaders] == [(r, world_size) for r in range(world_size)]
    np.random.seed(0)
    steps = 2000
    draws = np.array([[is_target(lo.get_indices())[0] for lo in loaders] for _ in range(steps)])
    if world_size == 1:  # the single-process rule: drawn with probability 0.5, not round(0.5) = 0 targets
        assert not loaders[0].follows_rank_schedule
        assert draws.mean() == pytest.approx(0.5, abs=0.03)
    else:
        assert draws.sum() == steps * world_size // 2
        if world_size % 2 == 0:
            assert set(draws.sum(axis=1)) == {world_size // 2}
    assert draws.any(axis=0).all() and (~draws).any(axis=0).all()
    assert {k for lo in loaders for k in lo.target_indices} == {k for k in KEYS if DOMAINS[k] == "SSA"}


def test_da_workers_round_robin_and_out_of_order():
    """Several DA workers per rank: each holds the share alone; in turn, the ranks' steps stay exact."""
    world_size, workers, steps = 2, 3, 600
    ranks = []
    for rank in range(world_size):
        copies = [copy.deepcopy(loader(0.5, rank=rank, world_size=world_size)) for _ in range(workers)]
        for w, c in enumerate(copies):
            c.set_thread_id(w)
        ranks.append(copies)
    streams: Dict[tuple, List[bool]] = {(r, w): [] for r in range(world_size) for w in range(workers)}
    for step in range(steps):  # batches in turn over the workers (MultiThreadedAugmenter, or one worker)
        got = [is_target(ranks[r][step % workers].get_indices())[0] for r in range(world_size)]
        assert sum(got) == 1
        for r in range(world_size):
            streams[(r, step % workers)].append(got[r])
    assert all(np.mean(s) == 0.5 for s in streams.values())  # no worker is tied to one domain
    rng = np.random.default_rng(0)  # completion order (NonDetMultiThreadedAugmenter): per-rank share still holds
    for r in range(world_size):
        picks = [is_target(ranks[r][rng.integers(workers)].get_indices())[0] for _ in range(3000)]
        assert np.mean(picks) == pytest.approx(0.5, abs=0.03)


def test_without_ddp_the_random_draws_are_unchanged():
    """Batch 1 without DDP consumes numpy's random numbers exactly as before the rank schedule."""
    lo = loader(0.3)
    assert (lo.rank, lo.world_size) == (0, 1) and not lo.follows_rank_schedule
    np.random.seed(3)
    got = [lo.get_indices()[0] for _ in range(300)]
    np.random.seed(3)
    expected = []
    for _ in range(300):
        pool = lo.target_indices if np.random.uniform() < 0.3 else lo.source_indices
        expected.append(pool[np.random.randint(len(pool))])
    assert got == expected


def test_ddp_with_batches_of_several_cases_keeps_the_share_per_batch():
    lo = loader(0.5, batch_size=4, rank=1, world_size=2)
    assert not lo.follows_rank_schedule
    np.random.seed(0)
    assert {sum(is_target(lo.get_indices())) for _ in range(200)} == {batch_domain_counts(4, 0.5)}


def test_loader_rank_misconfiguration_and_fallbacks():
    with pytest.raises(ValueError, match="Fix"):
        loader(0.5, rank=1)
    with pytest.raises(ValueError, match="Fix"):
        loader(0.5, rank=2, world_size=2)
    uniform = loader(None, rank=0, world_size=2)
    assert not uniform.balanced and not uniform.follows_rank_schedule and len(uniform.get_indices()) == 1
    assert describe_domain_steps(2, 0.2) == "0 or 1 of the 2 cases of every step from the target domain (2 per 5 steps)"

"""Seeded training: the same seed, data and machine give the same run.

nnU-Net draws the network's initial weights from torch's global generator and its
augmentation workers (``NonDetMultiThreadedAugmenter``) reseed themselves from the operating
system, so two runs of one command differ. With a seed (the trainer's ``seed`` attribute, or
``nnUNetTransfer_seed``, see :mod:`nnunet_transfer.config`) the plugin's trainers

- seed Python's, NumPy's and torch's global generators before the network is built
  (:func:`seed_everything`), and
- give each augmentation worker (training and validation, every DDP rank) its own seed
  derived from the run's seed, the epoch the workers start at and the rank
  (:func:`worker_seeds`, :func:`seeded_augmenters`).

A resumed run (``--c``) keeps the seed it started with (saved in its run state) and draws
its remaining batches from (seed, epoch at resume): deterministic, but not the batches an
uninterrupted run would have drawn (nnU-Net saves no random state). On the CPU with a fixed
thread count, two runs with one seed give bitwise equal weights; on a GPU, cuDNN's
autotuned kernels and atomics make them close, not equal.

Example:
    >>> worker_seeds(0, epoch=0, rank=0, stream="train", n=2) == worker_seeds(0, 0, 0, "train", 2)
    True
    >>> worker_seeds(0, 0, 0, "train", 1) != worker_seeds(1, 0, 0, "train", 1)
    True
"""

from __future__ import annotations

import contextlib
import functools
import random
from typing import Iterator, List, Sequence

import numpy as np
import torch

STREAMS = ("train", "val")


def seed_everything(seed: int, *key: int) -> None:
    """Seed Python's ``random``, NumPy's and torch's global generators from ``seed`` (and ``key``).

    >>> seed_everything(3); a = torch.rand(1)
    >>> seed_everything(3); bool(torch.equal(a, torch.rand(1)))
    True
    """
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def worker_seeds(seed: int, epoch: int, rank: int, stream: str, n: int) -> List[int]:
    """Seeds of the ``n`` augmentation workers of ``stream`` ("train" or "val") starting at ``epoch``.

    >>> len(set(worker_seeds(0, 0, 0, "train", 3) + worker_seeds(0, 0, 0, "val", 3) + worker_seeds(0, 0, 1, "train", 3)))
    9
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    sequence = np.random.SeedSequence([int(seed), int(epoch), int(rank), STREAMS.index(stream)])
    return [int(s) for s in sequence.generate_state(max(int(n), 1))][:n]


@contextlib.contextmanager
def seeded_augmenters(train: Sequence[int], val: Sequence[int]) -> Iterator[None]:
    """Within the block, ``nnUNetTrainer.get_dataloaders`` starts its workers with these seeds.

    nnU-Net builds the training augmenter first, then the validation one, each with
    ``seeds=None``; the first call here gets ``train``'s first ``num_processes`` seeds, the
    second ``val``'s. (Without workers, ``nnUNet_n_proc_DA=0``, nnU-Net uses the main process's
    generators, which :func:`seed_everything` seeded.)
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    original = trainer_module.NonDetMultiThreadedAugmenter
    pools = [list(train), list(val)]

    @functools.wraps(original, updated=())
    def build(*args, **kwargs):
        if not pools:
            raise RuntimeError("seeded_augmenters: nnU-Net built more than a training and a validation augmenter; "
                               "this nnU-Net version is not supported by nnUNetTransfer_seed")
        seeds = pools.pop(0)
        n = int(kwargs.get("num_processes", args[2] if len(args) > 2 else 1))
        if len(seeds) < n:
            raise RuntimeError(f"seeded_augmenters: {n} workers but {len(seeds)} seeds")
        kwargs["seeds"] = seeds[:n]
        return original(*args, **kwargs)

    trainer_module.NonDetMultiThreadedAugmenter = build
    try:
        yield
    finally:
        trainer_module.NonDetMultiThreadedAugmenter = original

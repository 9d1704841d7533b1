"""Domain-balanced batches for nnU-Net's data loader.

``DomainBalancedDataLoader`` is nnU-Net's ``nnUNetDataLoader`` with one change: which cases
make up a batch. A share ``target_share`` of every batch comes from the target domain, the
rest from the other domains (drawn with replacement, order shuffled so that nnU-Net's
foreground oversampling of the last batch slots hits both domains). With batch size 1 the
domain is drawn with probability ``target_share``. ``target_share=None`` keeps nnU-Net's
uniform sampling over cases. A loader whose cases hold a single domain (a validation fold
of target cases, say) samples uniformly.

Under DDP with batch size 1 per rank (the paper's recipe on several GPUs) the ranks share one
schedule instead: at step ``s`` the ranks together draw ``global_target_count(s, W, share)``
target cases (``W * share`` when that is an integer, else its floor or ceiling, so that the
share holds over the steps), dealt to the ranks in turn (``rank_draws_target``), so
every rank draws both domains and the global share is ``target_share``. The schedule depends on
the loader's own batch counter, its rank and its data-augmentation worker only (no random
state), so every rank and worker computes it alone; ``rank``/``world_size`` come from
``torch.distributed`` when it is initialised. With ``W == 1`` the single-process rule applies
(the domain of each batch drawn with probability ``target_share``). Per step the count is
exact when batches reach each rank in order (one worker or none); nnU-Net's
``NonDetMultiThreadedAugmenter`` with several workers hands them out as they finish, which
keeps each rank's share but may shift single steps by a case.

Foreground oversampling: nnU-Net forces foreground into the last
``batch_size - round(batch_size * (1 - oversample_foreground_percent))`` slots of a batch
(1 of 2, 1 of 4 at its 0.33). ``per_domain_oversampling=True`` (the trainers'
``batch_per_domain``, whose batches hold a source and a target mini-batch) applies that rule
to each domain's part of the batch instead, so that the source cases are oversampled as in
source-only training at the per-domain batch size (1 of 2 source patches, not 1 in 4 patches
landing on either domain), and the slots stay shuffled with their cases.

``swap_loader_class`` makes ``nnUNetTrainer.get_dataloaders`` build this loader without
copying that method.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Callable, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch.distributed as dist
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader


def batch_domain_counts(batch_size: int, target_share: float) -> int:
    """How many target-domain samples a batch of ``batch_size`` gets (both domains present if possible).

    >>> [batch_domain_counts(b, 0.5) for b in (2, 3, 4)]
    [1, 2, 2]
    >>> batch_domain_counts(4, 0.1), batch_domain_counts(4, 1.0)
    (1, 4)
    """
    n_target = int(np.floor(batch_size * target_share + 0.5))
    if 0.0 < target_share < 1.0 and batch_size >= 2:
        n_target = min(max(n_target, 1), batch_size - 1)
    return n_target


def forced_foreground_slots(batch_size: int, oversample_foreground_percent: float) -> List[bool]:
    """nnU-Net's fixed foreground slots of a batch of ``batch_size`` (its ``_oversample_last_XX_percent``).

    >>> forced_foreground_slots(2, 0.33), forced_foreground_slots(4, 0.33)
    ([False, True], [False, False, False, True])
    """
    unforced = round(batch_size * (1 - oversample_foreground_percent))
    return [not j < unforced for j in range(batch_size)]


def distributed_world() -> Tuple[int, int]:
    """``(world_size, rank)`` of the initialised ``torch.distributed`` group, else ``(1, 0)``.

    >>> distributed_world()
    (1, 0)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def check_rank(rank: int, world_size: int) -> None:
    """Raise a ``ValueError`` unless ``world_size >= 1`` and ``0 <= rank < world_size``.

    >>> check_rank(1, 2)
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size} is impossible. Fix: pass 0 <= rank < world_size "
                         f"(world_size >= 1), or neither, to read them from torch.distributed.")


def share_fraction(target_share: float) -> Fraction:
    """``target_share`` as an exact fraction, so step counts do not drift with rounding.

    >>> share_fraction(0.3)
    Fraction(3, 10)
    """
    return Fraction(target_share).limit_denominator(10 ** 6)


def cumulative_target_count(steps: int, world_size: int, target_share: float) -> int:
    """Target cases the ranks draw together in steps ``0 .. steps-1``: ``floor(steps * W * share)``.

    >>> cumulative_target_count(10, 3, 0.5), cumulative_target_count(10, 1, 0.3)
    (15, 3)
    """
    share = share_fraction(target_share)
    return steps * world_size * share.numerator // share.denominator


def global_target_count(step: int, world_size: int, target_share: float) -> int:
    """Target cases the ranks draw together at ``step`` (one case per rank).

    ``W * share`` when that is an integer; otherwise its floor or ceiling, chosen so that the
    count over the steps so far is ``floor(steps * W * share)``.

    >>> [global_target_count(s, 2, 0.5) for s in range(4)], [global_target_count(s, 3, 0.5) for s in range(4)]
    ([1, 1, 1, 1], [1, 2, 1, 2])
    """
    return (cumulative_target_count(step + 1, world_size, target_share)
            - cumulative_target_count(step, world_size, target_share))


def rank_draws_target(step: int, rank: int, world_size: int, target_share: float) -> bool:
    """Whether ``rank`` draws a target case at ``step`` under DDP with one case per rank.

    The ``k``-th target case of the run goes to rank ``k mod W``: at each step the target cases
    go to the ranks after those that drew the previous ones, so every rank draws both domains
    (for ``0 < share < 1``) and the ranks' target counts never differ by more than one.

    >>> [[int(rank_draws_target(s, r, 2, 0.5)) for r in range(2)] for s in range(4)]
    [[1, 0], [0, 1], [1, 0], [0, 1]]
    >>> [[int(rank_draws_target(s, r, 3, 0.5)) for r in range(3)] for s in range(4)]
    [[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 1]]
    """
    check_rank(rank, world_size)
    before = cumulative_target_count(step, world_size, target_share)
    return (rank - before) % world_size < global_target_count(step, world_size, target_share)


class DomainBalancedDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader drawing a fixed share of each batch from the target domain.

    ``rank``/``world_size`` (default: read from ``torch.distributed`` when it is initialised,
    else a single process) switch batch size 1 to the ranks' shared schedule (module docstring).
    ``steps`` counts the batches this copy of the loader produced. nnU-Net runs copies in
    ``nnUNet_n_proc_DA`` background workers; worker ``w`` produces slots ``steps + w`` of the
    schedule, so each worker's batches hold the share on their own and the workers of one rank
    draw different domains side by side. ``per_domain_oversampling`` places nnU-Net's fixed
    foreground slots per domain (module docstring); nnU-Net's probabilistic oversampling is
    per case already and stays as it is.
    """

    def __init__(self, *args, case_domains: Mapping[str, Optional[str]], target_domain: str,
                 target_share: Optional[float] = 0.5, rank: Optional[int] = None,
                 world_size: Optional[int] = None, per_domain_oversampling: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if target_share is not None and not 0.0 <= target_share <= 1.0:
            raise ValueError(f"target_share must be within [0, 1], got {target_share}")
        if (rank is None) != (world_size is None):
            raise ValueError(f"got rank={rank} and world_size={world_size}. Fix: pass both, or neither to read "
                             f"them from torch.distributed.")
        if world_size is None:
            world_size, rank = distributed_world()
        check_rank(rank, world_size)
        self.rank, self.world_size = rank, world_size
        self.steps = 0
        self.target_share = target_share
        self.target_domain = target_domain
        self.target_indices = [k for k in self.indices if case_domains.get(k) == target_domain]
        self.source_indices = [k for k in self.indices if case_domains.get(k) != target_domain]
        self.balanced = target_share is not None and bool(self.target_indices) and bool(self.source_indices)
        self.per_domain_oversampling = bool(per_domain_oversampling) and not kwargs.get("probabilistic_oversampling")
        self._forced: Optional[List[bool]] = None  # the current batch's foreground slots, per domain
        if self.per_domain_oversampling:
            self.get_do_oversample = self._oversample_per_domain

    def _oversample_per_domain(self, sample_idx: int) -> bool:
        if self._forced is None:  # a batch not split by domain (a single-domain loader): nnU-Net's rule
            return self._oversample_last_XX_percent(sample_idx)
        return self._forced[sample_idx]

    @property
    def follows_rank_schedule(self) -> bool:
        """True when the batch's domain comes from the ranks' shared schedule (DDP, batch 1 per rank)."""
        return self.balanced and self.batch_size == 1 and self.world_size > 1

    def next_slot(self) -> int:
        """The schedule slot of the next batch of this copy (``steps + thread_id``); advances ``steps``."""
        slot = self.steps + self.thread_id
        self.steps += 1
        return slot

    def get_indices(self) -> List[str]:
        slot = self.next_slot()
        self._forced = None
        if not self.balanced:
            return super().get_indices()
        if self.batch_size == 1:
            if self.follows_rank_schedule:
                target = rank_draws_target(slot, self.rank, self.world_size, self.target_share)
            else:
                target = np.random.uniform() < self.target_share
            pool = self.target_indices if target else self.source_indices
            return [pool[np.random.randint(len(pool))]]
        n_target = batch_domain_counts(self.batch_size, self.target_share)
        chosen = list(np.random.choice(self.target_indices, n_target, replace=True)) + \
            list(np.random.choice(self.source_indices, self.batch_size - n_target, replace=True))
        if not self.per_domain_oversampling:
            np.random.shuffle(chosen)
            return [str(k) for k in chosen]
        p = self.oversample_foreground_percent
        flags = forced_foreground_slots(n_target, p) + forced_foreground_slots(self.batch_size - n_target, p)
        order = np.random.permutation(len(chosen))
        self._forced = [flags[i] for i in order]
        return [str(chosen[i]) for i in order]


@contextlib.contextmanager
def swap_loader_class(factory: Callable[..., nnUNetDataLoader]) -> Iterator[None]:
    """Within the block, ``nnUNetTrainer.get_dataloaders`` builds its loaders with ``factory``."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    original = trainer_module.nnUNetDataLoader
    trainer_module.nnUNetDataLoader = factory
    try:
        yield
    finally:
        trainer_module.nnUNetDataLoader = original

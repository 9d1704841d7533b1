"""Domain-balanced batches for nnU-Net's data loader.

``DomainBalancedDataLoader`` is nnU-Net's ``nnUNetDataLoader`` with one change: which cases
make up a batch. A share ``target_share`` of every batch comes from the target domain, the
rest from the other domains (drawn with replacement, order shuffled so that nnU-Net's
foreground oversampling of the last batch slots hits both domains). With batch size 1 the
domain is drawn with probability ``target_share``. ``target_share=None`` keeps nnU-Net's
uniform sampling over cases. A loader whose cases hold a single domain (a validation fold
of target cases, say) samples uniformly.

``swap_loader_class`` makes ``nnUNetTrainer.get_dataloaders`` build this loader without
copying that method.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Mapping, Optional

import numpy as np
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


class DomainBalancedDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader drawing a fixed share of each batch from the target domain."""

    def __init__(self, *args, case_domains: Mapping[str, Optional[str]], target_domain: str,
                 target_share: Optional[float] = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if target_share is not None and not 0.0 <= target_share <= 1.0:
            raise ValueError(f"target_share must be within [0, 1], got {target_share}")
        self.target_share = target_share
        self.target_domain = target_domain
        self.target_indices = [k for k in self.indices if case_domains.get(k) == target_domain]
        self.source_indices = [k for k in self.indices if case_domains.get(k) != target_domain]
        self.balanced = target_share is not None and bool(self.target_indices) and bool(self.source_indices)

    def get_indices(self) -> List[str]:
        if not self.balanced:
            return super().get_indices()
        if self.batch_size == 1:
            pool = self.target_indices if np.random.uniform() < self.target_share else self.source_indices
            return [pool[np.random.randint(len(pool))]]
        n_target = batch_domain_counts(self.batch_size, self.target_share)
        chosen = list(np.random.choice(self.target_indices, n_target, replace=True)) + \
            list(np.random.choice(self.source_indices, self.batch_size - n_target, replace=True))
        np.random.shuffle(chosen)
        return [str(k) for k in chosen]


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

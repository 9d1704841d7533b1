"""``PaperRecipeMixin``: the paper's optimiser and schedule (Adam, lr 6e-5, poly 0.75, batch 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from nnunet_transfer.training.sampling import check_rank, distributed_world, share_fraction


@dataclass(frozen=True)
class RankBatch:
    """What one rank trains with: its batch size, the global batch, its foreground oversampling."""

    batch_size: int
    global_batch_size: int
    oversample_foreground_percent: float
    probabilistic_oversampling: bool


def paper_rank_batch(world_size: int, rank: int, batch_size: int = 1,
                     oversample_foreground_percent: float = 0.33) -> RankBatch:
    """The paper's batch on one of ``world_size`` ranks: ``batch_size`` cases per rank, the same
    oversampling probability on every rank, drawn per case (probabilistic oversampling).

    nnU-Net instead splits the plans' batch over the ranks and gives each rank a share of the
    batch's fixed oversampled slots (0 or 1 for batch 1 per rank; an assertion with more ranks
    than cases).

    >>> [paper_rank_batch(3, r) for r in range(3)] == [RankBatch(1, 3, 0.33, True)] * 3
    True
    """
    check_rank(rank, world_size)
    if batch_size < 1:
        raise ValueError(f"paper_batch_size must be at least 1, got {batch_size}. Fix: set it to 1 (the paper's).")
    if not 0.0 <= oversample_foreground_percent <= 1.0:
        raise ValueError(f"oversample_foreground_percent must be within [0, 1], got "
                         f"{oversample_foreground_percent}. Fix: nnU-Net's default is 0.33.")
    return RankBatch(batch_size, batch_size * world_size, oversample_foreground_percent, True)


def describe_domain_steps(world_size: int, target_share: Optional[float]) -> str:
    """How many target cases the ranks draw together per step (for the training log).

    >>> describe_domain_steps(4, 0.5)
    '2 of the 4 cases of every step from the target domain'
    >>> describe_domain_steps(3, 0.5)
    '1 or 2 of the 3 cases of every step from the target domain (3 per 2 steps)'
    """
    if target_share is None:
        return "cases drawn uniformly over the domains"
    per_step = world_size * share_fraction(target_share)
    low = per_step.numerator // per_step.denominator
    if per_step.denominator == 1:
        return f"{low} of the {world_size} cases of every step from the target domain"
    return (f"{low} or {low + 1} of the {world_size} cases of every step from the target domain "
            f"({per_step.numerator} per {per_step.denominator} steps)")


class PaperRecipeMixin:
    """The paper's recipe: Adam, lr 6e-5, poly decay with exponent 0.75, batch size 1, no warm-up.

    - **Warm-up:** none (``warmup_epochs = 0``): the paper names none, and Adam at 6e-5 is small
      already. It overrides ``FineTuneMixin``'s 10 epochs, so ``nnUNetTrainerFineTune_PaperRecipe``
      and the frozen variants start at 6e-5 (this mixin comes first in their MRO).
    - **Foreground oversampling:** with one case per batch it is probabilistic: each case is
      oversampled with nnU-Net's ``oversample_foreground_percent`` (0.33).
    - **Domains** (with ``DomainAwareMixin``): each batch's domain is the target with
      probability ``target_share``.
    - **DDP** (``nnUNetv2_train ... -num_gpus W``): batch size 1 means one case per rank, so the
      global batch is ``W`` cases (nnU-Net would split the plans' batch over the ranks). Every
      rank oversamples with the same probability 0.33. The ranks share one domain schedule: at
      each step they draw ``W * target_share`` target cases together (when not an integer, its
      floor or ceiling, so that the share holds over the steps), dealt to the ranks in turn, so
      every rank draws both domains. ``W = 1`` behaves as without DDP (probability
      ``target_share``, not ``round(0.5) = 0`` target cases). Exact per step when batches reach
      each rank in order (``nnUNet_n_proc_DA`` 0 or 1); see ``nnunet_transfer.training.sampling``
      and docs/trainers.md.
    """

    poly_exponent: float = 0.75
    paper_initial_lr: float = 6e-5
    paper_batch_size: int = 1
    warmup_epochs: int = 0

    def configure_knobs(self) -> None:
        super().configure_knobs()
        self.initial_lr = self.paper_initial_lr
        self.weight_decay = 0.0
        self.probabilistic_oversampling = True

    def build_optimizer(self, groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adam(groups, lr=self.initial_lr, weight_decay=self.weight_decay)

    def _set_batch_size_and_oversample(self) -> None:
        """Replaces nnU-Net's (whose DDP branch splits the plans' batch): ``paper_rank_batch`` on this rank."""
        world_size, rank = distributed_world()  # (1, 0) unless DDP: nnU-Net's is_ddp is "dist initialised"
        plan = paper_rank_batch(world_size, rank, self.paper_batch_size, self.oversample_foreground_percent)
        self.batch_size = plan.batch_size
        self.oversample_foreground_percent = plan.oversample_foreground_percent
        self.probabilistic_oversampling = plan.probabilistic_oversampling
        where = f" on each of {world_size} ranks (global batch {plan.global_batch_size})" if self.is_ddp else ""
        self.print_to_log_file(
            f"nnunet-transfer: paper recipe: batch size {plan.batch_size}{where} instead of the plans' "
            f"{self.configuration_manager.batch_size}; each case oversampled for foreground with probability "
            f"{plan.oversample_foreground_percent}")
        if self.is_ddp and world_size > 1 and hasattr(self, "target_share"):
            self.print_to_log_file(f"nnunet-transfer: domains under DDP: "
                                   f"{describe_domain_steps(world_size, self.target_share)}")

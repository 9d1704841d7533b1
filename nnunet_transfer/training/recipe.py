"""``PaperRecipeMixin``: the paper's optimiser and schedule (Adam, lr 6e-5, poly 0.75, batch 1)."""

from __future__ import annotations

from typing import List

import torch


class PaperRecipeMixin:
    """The paper's recipe: Adam, lr 6e-5, poly decay with exponent 0.75, batch size 1.

    With one case per batch, foreground oversampling becomes probabilistic (33% of batches),
    and domain sampling draws the batch's domain with probability ``target_share``.
    """

    poly_exponent: float = 0.75
    paper_initial_lr: float = 6e-5
    paper_batch_size: int = 1

    def configure_knobs(self) -> None:
        super().configure_knobs()
        self.initial_lr = self.paper_initial_lr
        self.weight_decay = 0.0
        self.probabilistic_oversampling = True

    def build_optimizer(self, groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.Adam(groups, lr=self.initial_lr, weight_decay=self.weight_decay)

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size = self.paper_batch_size

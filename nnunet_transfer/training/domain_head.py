"""A small domain classifier on pooled encoder features.

Example:
    >>> import torch
    >>> head = DomainClassifier([8, 16], n_domains=2)
    >>> feats = [torch.randn(2, 8, 4, 4, 4), torch.randn(2, 16, 2, 2, 2)]
    >>> head(feats).shape
    torch.Size([2, 1])
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class DomainClassifier(nn.Module):
    """Global-average-pool each feature map, concatenate, and classify the domain with an MLP.

    Two domains give one logit (for BCE); more give one logit per domain (for CE).
    """

    def __init__(self, in_channels: Sequence[int], n_domains: int = 2, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        if n_domains < 2:
            raise ValueError(f"a domain classifier needs at least two domains, got {n_domains}")
        self.n_domains = n_domains
        self.mlp = nn.Sequential(
            nn.Linear(int(sum(in_channels)), hidden),
            nn.LeakyReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1 if n_domains == 2 else n_domains),
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = [f.flatten(2).mean(dim=2) for f in features]
        return self.mlp(torch.cat(pooled, dim=1))

    def loss(self, logits: torch.Tensor, domain_index: torch.Tensor) -> torch.Tensor:
        """BCE for two domains (index 1 is the positive class), cross-entropy otherwise."""
        if self.n_domains == 2:
            return F.binary_cross_entropy_with_logits(logits.squeeze(1).float(), domain_index.float())
        return F.cross_entropy(logits.float(), domain_index.long())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Domain index per sample."""
        if self.n_domains == 2:
            return (logits.squeeze(1) > 0).long()
        return logits.argmax(dim=1)

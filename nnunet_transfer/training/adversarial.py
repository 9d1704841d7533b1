"""``DomainAdversarialMixin``: DANN's domain classifier on encoder features behind gradient reversal."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from nnunet_transfer.training.domain_head import DomainClassifier
from nnunet_transfer.training.freezing import unwrap
from nnunet_transfer.training.grl import ganin_lambda, grad_reverse
from nnunet_transfer.training.mixed_domain import DomainAwareMixin


class DomainAdversarialMixin(DomainAwareMixin):
    """DANN: a domain classifier on encoder features behind a gradient-reversal layer.

    Loss = segmentation loss + ``domain_loss_weight`` * domain loss (BCE for two domains,
    CE for more). The reversal strength ramps with training progress p as
    ``2 / (1 + exp(-grl_gamma * p)) - 1``. With ``reverse_gradients = False`` the domain
    loss reaches the encoder unreversed (the paper's ablation). The classifier lives
    beside the network, not in it: checkpoints keep it under ``nnunet_transfer``, so
    ``network_weights`` load in stock ``nnUNetv2_predict`` and as ``-pretrained_weights``.
    """

    domain_loss_weight: float = 1.0 / 50.0
    reverse_gradients: bool = True
    grl_gamma: float = 10.0
    domain_feature_levels: Tuple[int, ...] = (-1,)
    domain_head_hidden: int = 64
    min_training_domains: int = 2

    def initialize(self):
        self.do_split()  # domains are needed to size the classifier; errors surface before training
        super().initialize()
        self._features = None
        unwrap(self.network).encoder.register_forward_hook(self._capture_features)
        if self.is_ddp:
            self.domain_head = torch.nn.parallel.DistributedDataParallel(self.domain_head,
                                                                         device_ids=[self.local_rank])

    def _capture_features(self, module, inputs, output) -> None:
        self._features = list(output) if isinstance(output, (list, tuple)) else [output]

    def parameter_groups(self) -> List[dict]:
        groups = super().parameter_groups()
        names = sorted(self.training_domain_counts)
        others = [n for n in names if n != self.active_target_domain]
        ordered = others + [self.active_target_domain] if len(names) == 2 else names
        self.domain_index = {name: i for i, name in enumerate(ordered)}  # binary: target is class 1
        features = self.configuration_manager.network_arch_init_kwargs["features_per_stage"]
        self.domain_head = DomainClassifier([features[i] for i in self.domain_feature_levels],
                                            n_domains=len(names), hidden=self.domain_head_hidden).to(self.device)
        groups.append({"params": list(self.domain_head.parameters()), "name": "domain_head"})
        return groups

    def grl_lambda(self) -> float:
        total = max(1, self.num_epochs * self.num_iterations_per_epoch)
        done = self.current_epoch * self.num_iterations_per_epoch + self._step_in_epoch
        return ganin_lambda(done / total, self.grl_gamma)

    def on_train_epoch_start(self):
        self._step_in_epoch = 0
        unwrap(self.domain_head).train()
        super().on_train_epoch_start()

    def prepare_batch(self, batch: dict) -> None:
        super().prepare_batch(batch)
        labels = [self.domain_index[self.case_domains[k]] for k in batch["keys"]]
        batch["domain_labels"] = torch.as_tensor(labels, device=self.device)  # before the forward: no stall

    def compute_loss(self, output, target, batch: dict):
        seg_loss, extras = super().compute_loss(output, target, batch)
        if self._features is None:
            raise RuntimeError("the encoder's forward hook captured no features; does the network have an "
                               "`encoder` submodule that runs in forward()?")
        lambd = self.grl_lambda()
        features = [self._features[i] for i in self.domain_feature_levels]
        self._features = None
        if self.reverse_gradients:
            features = [grad_reverse(f, lambd) for f in features]
        head = unwrap(self.domain_head)
        logits = self.domain_head(features)
        labels = batch["domain_labels"]
        domain_loss = head.loss(logits, labels)
        self._step_in_epoch += 1
        extras.update(seg_loss=seg_loss.detach(), domain_loss=domain_loss.detach(),
                      domain_acc=(head.predict(logits) == labels).float().mean(), grl_lambda=lambd)
        return seg_loss + self.domain_loss_weight * domain_loss, extras

    def on_train_epoch_end(self, train_outputs: List[dict]):
        means = {k: float(np.mean([o[k] for o in train_outputs]))
                 for k in ("seg_loss", "domain_loss", "domain_acc", "grl_lambda")}
        self.print_to_log_file("nnunet-transfer: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
        super().on_train_epoch_end(train_outputs)

    def extra_checkpoint_state(self) -> dict:
        head = getattr(self, "domain_head", None)
        if head is None:
            return {"domain_head": None}
        return {"domain_head": unwrap(head).state_dict(), "domain_index": self.domain_index}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        if state.get("domain_head") is not None:
            unwrap(self.domain_head).load_state_dict(state["domain_head"])
            self.print_to_log_file("nnunet-transfer: restored the domain classifier from the checkpoint")

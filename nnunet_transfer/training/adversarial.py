"""``DomainAdversarialMixin``: DANN's domain classifier on encoder features behind gradient reversal."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from nnunet_transfer.training.checkpoints import tensor_digest
from nnunet_transfer.training.domain_head import DomainClassifier
from nnunet_transfer.training.freezing import unwrap
from nnunet_transfer.training.grl import ganin_lambda, grad_reverse
from nnunet_transfer.training.mixed_domain import DomainAwareMixin


class DomainAdversarialMixin(DomainAwareMixin):
    """DANN: a domain classifier on encoder features behind a gradient-reversal layer.

    Loss = segmentation loss + ``domain_loss_weight`` * domain loss (BCE for two domains,
    CE for more): the paper's 1/50 weighting of the loss. The reversal strength ramps with
    training progress p as ``2 / (1 + exp(-grl_gamma * p)) - 1``. With
    ``reverse_gradients = False`` the domain loss reaches the encoder unreversed (the
    paper's ablation) and no reversal strength is applied or logged.

    The classifier (:class:`~nnunet_transfer.training.domain_head.DomainClassifier`) sees the
    encoder stages ``domain_feature_levels`` (default: the first two and the bottleneck)
    through ``domain_head_kind`` ("conv": strided convolutions, then mean and standard
    deviation pooling; "mlp": pooled features only). It has its own optimizer, Adam at
    ``domain_head_lr`` (constant), whatever the network's recipe: Adam's steps do not depend
    on the gradient's scale, so the classifier learns as from the unweighted domain loss,
    while the encoder receives ``domain_loss_weight`` (x ``encoder_gradient_scale``, default 1)
    of the (reversed) domain gradient, the paper's weighting. Under nnU-Net's SGD the 1/50
    weight would otherwise shrink the classifier's own steps 50-fold, and nnU-Net's gradient
    clipping over all parameters would shrink them further: it learnt nothing.

    The classifier lives beside the network, not in it: checkpoints keep it under
    ``nnunet_transfer``, so ``network_weights`` load in stock ``nnUNetv2_predict`` and as
    ``-pretrained_weights``. Its configuration and the domain-to-class map are run state:
    ``--c`` rebuilds the classifier the run started with, whatever the class defaults are now.
    The encoder hook keeps only the levels the classifier uses, and only in training mode.
    """

    domain_loss_weight: float = 1.0 / 50.0
    reverse_gradients: bool = True
    grl_gamma: float = 10.0
    domain_feature_levels: Tuple[int, ...] = (0, 1, -1)
    domain_head_kind: str = "conv"
    domain_head_pooling: Tuple[str, ...] = ("mean", "std")
    domain_head_hidden: int = 32
    domain_head_lr: float = 1e-3
    encoder_gradient_scale: float = 1.0
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
        if not module.training:  # validation and inference: keep nothing alive
            return
        levels = output if isinstance(output, (list, tuple)) else [output]
        self._features = [levels[i] for i in self.head_config["levels"]]

    def _decide_head(self) -> None:
        """The domain-to-class map and the classifier's configuration: restored on resume."""
        names = sorted(self.training_domain_counts)
        saved = self.resumed_decision(
            "dann", missing="the checkpoint holds no domain classifier (written by an older nnunet-transfer, or by "
            "another trainer); resuming would start the classifier from scratch with the old optimizer moments. "
            "Fix: train again without --c, or resume with the version that wrote it.")
        if saved is not None:
            if sorted(saved["domain_index"]) != names:
                raise RuntimeError(f"{self.__class__.__name__}: the checkpoint classified domains "
                                   f"{sorted(saved['domain_index'])}, this fold trains on {names}")
            self.domain_index = dict(saved["domain_index"])
            self.head_config = dict(saved["head"])
            return
        others = [n for n in names if n != self.active_target_domain]
        ordered = others + [self.active_target_domain] if len(names) == 2 else names
        self.domain_index = {name: i for i, name in enumerate(ordered)}  # binary: target is class 1
        n_levels = len(self.configuration_manager.network_arch_init_kwargs["features_per_stage"])
        levels = sorted({i % n_levels for i in self.domain_feature_levels})
        self.head_config = {"levels": levels, "kind": self.domain_head_kind, "hidden": int(self.domain_head_hidden),
                            "pooling": list(self.domain_head_pooling), "lr": float(self.domain_head_lr),
                            "loss_weight": float(self.domain_loss_weight),
                            "reverse_gradients": bool(self.reverse_gradients), "grl_gamma": float(self.grl_gamma),
                            "encoder_gradient_scale": float(self.encoder_gradient_scale)}

    def parameter_groups(self) -> List[dict]:
        groups = super().parameter_groups()
        self._decide_head()
        cfg = self.head_config
        features = self.configuration_manager.network_arch_init_kwargs["features_per_stage"]
        self.domain_head = DomainClassifier([features[i] for i in cfg["levels"]], n_domains=len(self.domain_index),
                                            hidden=cfg["hidden"], kind=cfg["kind"],
                                            pooling=cfg["pooling"]).to(self.device)
        self.domain_optimizer = torch.optim.Adam(self.domain_head.parameters(), lr=cfg["lr"])
        self.print_to_log_file(
            f"nnunet-transfer: domain classifier ({cfg['kind']}, encoder levels {cfg['levels']}, pooling "
            f"{cfg['pooling']}, {sum(p.numel() for p in self.domain_head.parameters())} parameters, Adam lr "
            f"{cfg['lr']:g}); loss = seg + {cfg['loss_weight']:g} x domain; "
            f"{'gradient reversal' if cfg['reverse_gradients'] else 'no gradient reversal'}; classes {self.domain_index}")
        return groups

    def auxiliary_optimizers(self) -> dict:
        optimizers = dict(super().auxiliary_optimizers())
        optimizers["domain_head"] = self.domain_optimizer
        return optimizers

    def grl_lambda(self) -> float:
        total = max(1, self.num_epochs * self.num_iterations_per_epoch)
        done = self.current_epoch * self.num_iterations_per_epoch + self._step_in_epoch
        return ganin_lambda(done / total, self.head_config["grl_gamma"])

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
        features, self._features = self._features, None
        scale = self.head_config.get("encoder_gradient_scale", 1.0)
        if self.head_config["reverse_gradients"]:
            lambd = self.grl_lambda()
            features = [grad_reverse(f, lambd * scale) for f in features]
            extras["grl_lambda"] = lambd
        elif scale != 1.0:
            features = [grad_reverse(f, -scale) for f in features]  # the same scale, unreversed
        head = unwrap(self.domain_head)
        logits = self.domain_head(features)
        labels = batch["domain_labels"]
        domain_loss = head.loss(logits, labels)
        self._step_in_epoch += 1
        extras.update(seg_loss=seg_loss.detach(), domain_loss=domain_loss.detach(),
                      domain_acc=(head.predict(logits) == labels).float().mean())
        return seg_loss + self.head_config["loss_weight"] * domain_loss, extras

    def on_train_epoch_end(self, train_outputs: List[dict]):
        keys = [k for k in ("seg_loss", "domain_loss", "domain_acc", "grl_lambda") if k in train_outputs[0]]
        means = {k: float(np.mean([o[k] for o in train_outputs])) for k in keys}
        self.print_to_log_file("nnunet-transfer: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
        super().on_train_epoch_end(train_outputs)

    def run_state(self) -> dict:
        state = super().run_state()
        if getattr(self, "head_config", None) is not None:
            state["dann"] = {"domain_index": dict(self.domain_index), "head": dict(self.head_config)}
        return state

    def extra_checkpoint_state(self) -> dict:
        head = getattr(self, "domain_head", None)
        if head is None:
            return {"domain_head": None}
        return {"domain_head": unwrap(head).state_dict(), "domain_optimizer": self.domain_optimizer.state_dict(),
                "domain_index": self.domain_index}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        super().load_extra_checkpoint_state(state)
        if state.get("domain_head") is None:
            raise RuntimeError(f"{self.__class__.__name__}: the checkpoint holds no domain classifier weights; "
                               f"train again without --c")
        unwrap(self.domain_head).load_state_dict(state["domain_head"])
        self.domain_optimizer.load_state_dict(state["domain_optimizer"])
        digest = tensor_digest(unwrap(self.domain_head).state_dict())
        self.print_to_log_file(f"nnunet-transfer: restored the domain classifier and its optimizer from the "
                               f"checkpoint (weights digest {digest[:16]})")

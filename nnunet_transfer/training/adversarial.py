"""``DomainAdversarialMixin``: DANN's domain classifier on encoder (and decoder) features behind gradient reversal."""

from __future__ import annotations

from typing import List, Tuple

import torch

from nnunet_transfer.training.checkpoints import tensor_digest
from nnunet_transfer.training.domain_head import DomainClassifier, decoder_stages, resolve_stages
from nnunet_transfer.training.freezing import unwrap
from nnunet_transfer.training.grl import check_grl_schedule, grad_reverse, grl_schedule_lambda
from nnunet_transfer.training.mixed_domain import DomainAwareMixin

#: what a head configuration saved before a key existed meant (resumed runs keep that behaviour)
HEAD_DEFAULTS = {"decoder_stages": [], "grl_schedule": "ganin", "grl_max": 1.0, "grl_delay": 0.0, "grl_ramp": 0.5,
                 "encoder_gradient_scale": 1.0}


class DomainAdversarialMixin(DomainAwareMixin):
    """DANN: a domain classifier on encoder (and decoder) features behind a gradient-reversal layer.

    Loss = segmentation loss + ``domain_loss_weight`` * domain loss: the paper's 1/50
    weighting. Two domains: BCE, the target is class 1; more: cross-entropy, one class per
    domain in sorted order (each batch's ``target_share`` from the target domain, the rest
    from all others). The reversal strength follows ``grl_schedule`` over training progress p
    (:func:`~nnunet_transfer.training.grl.grl_schedule_lambda`): "ganin" (default,
    ``grl_max * (2 / (1 + exp(-grl_gamma * p)) - 1)``), "linear" (0 to ``grl_max`` over
    ``grl_ramp`` of training) or "constant", each after ``grl_delay`` of training without
    reversal. With ``reverse_gradients = False`` the domain loss reaches the encoder unreversed
    (the paper's ablation) and no reversal strength is applied or logged.

    The classifier (:class:`~nnunet_transfer.training.domain_head.DomainClassifier`) sees the
    encoder stages ``domain_feature_levels`` (default: the first two and the bottleneck) and
    the decoder stages ``domain_decoder_stages`` (default none; 0 is the stage just above the
    bottleneck, -1 the full-resolution one) through ``domain_head_kind`` ("conv": strided
    convolutions, then mean and standard deviation pooling; "mlp": pooled features only). It
    has its own optimizer, Adam at
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
    The encoder and decoder hooks keep only the levels the classifier uses, and only in training
    mode. Domain loss, accuracy, lambda and the per-domain validation pseudo-Dice are drawn in
    ``progress_domain.png`` (:class:`~nnunet_transfer.training.progress.DomainProgressMixin`).
    """

    domain_loss_weight: float = 1.0 / 50.0
    reverse_gradients: bool = True
    grl_gamma: float = 10.0
    grl_schedule: str = "ganin"
    grl_max: float = 1.0
    grl_delay: float = 0.0
    grl_ramp: float = 0.5
    domain_feature_levels: Tuple[int, ...] = (0, 1, -1)
    domain_decoder_stages: Tuple[int, ...] = ()
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
        self._step_in_epoch = 0
        network = unwrap(self.network)
        network.encoder.register_forward_hook(self._capture_features)
        if self.head_config["decoder_stages"]:
            stages = decoder_stages(network)
            for s in self.head_config["decoder_stages"]:
                stages[s].register_forward_hook(self._capture_decoder_features)
        if self.is_ddp:
            self.domain_head = torch.nn.parallel.DistributedDataParallel(self.domain_head,
                                                                         device_ids=[self.local_rank])

    def _capture_features(self, module, inputs, output) -> None:
        if not module.training:  # validation and inference: keep nothing alive
            return
        levels = output if isinstance(output, (list, tuple)) else [output]
        self._features = [levels[i] for i in self.head_config["levels"]]

    def _capture_decoder_features(self, module, inputs, output) -> None:
        if not module.training:
            return
        if self._features is None:
            raise RuntimeError("a decoder stage ran before the encoder's forward hook captured its features; "
                               "domain_decoder_stages needs a network whose forward runs encoder, then decoder")
        self._features.append(output)  # the decoder runs its stages in order: the config's sorted order

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
            older = sorted(k for k in HEAD_DEFAULTS if k not in saved["head"])
            self.head_config = {**HEAD_DEFAULTS, **saved["head"]}
            if older:
                self.print_to_log_file(f"nnunet-transfer: the checkpoint's domain classifier predates "
                                       f"{', '.join(older)}; resuming with what it trained with: "
                                       f"{ {k: self.head_config[k] for k in older} }")
            return
        others = [n for n in names if n != self.active_target_domain]
        ordered = others + [self.active_target_domain] if len(names) == 2 else names
        self.domain_index = {name: i for i, name in enumerate(ordered)}  # binary: target is class 1
        n_levels = len(self.configuration_manager.network_arch_init_kwargs["features_per_stage"])
        try:
            levels = resolve_stages(self.domain_feature_levels, n_levels, "domain_feature_levels")
            stages = resolve_stages(self.domain_decoder_stages, n_levels - 1, "domain_decoder_stages")
            check_grl_schedule(self.grl_schedule, float(self.grl_max), float(self.grl_delay), float(self.grl_ramp))
        except ValueError as error:
            raise ValueError(f"{self.__class__.__name__}: {error}. Fix: change the class attribute "
                             f"(encoder stages: {n_levels}, decoder stages: {n_levels - 1}).") from None
        if not levels and not stages:
            raise ValueError(f"{self.__class__.__name__}: domain_feature_levels and domain_decoder_stages are both "
                             f"empty; the domain classifier needs at least one feature level")
        self.head_config = {"levels": levels, "decoder_stages": stages, "kind": self.domain_head_kind,
                            "hidden": int(self.domain_head_hidden),
                            "pooling": list(self.domain_head_pooling), "lr": float(self.domain_head_lr),
                            "loss_weight": float(self.domain_loss_weight),
                            "reverse_gradients": bool(self.reverse_gradients), "grl_gamma": float(self.grl_gamma),
                            "grl_schedule": str(self.grl_schedule), "grl_max": float(self.grl_max),
                            "grl_delay": float(self.grl_delay), "grl_ramp": float(self.grl_ramp),
                            "encoder_gradient_scale": float(self.encoder_gradient_scale)}

    def parameter_groups(self) -> List[dict]:
        groups = super().parameter_groups()
        self._decide_head()
        cfg = self.head_config
        features = self.configuration_manager.network_arch_init_kwargs["features_per_stage"]
        channels = [features[i] for i in cfg["levels"]]
        if cfg["decoder_stages"]:
            stages = decoder_stages(unwrap(self.network))
            if len(stages) != len(features) - 1:
                raise RuntimeError(f"{self.__class__.__name__}: {type(unwrap(self.network)).__name__}'s decoder has "
                                   f"{len(stages)} stages, the plans' {len(features)} encoder stages imply "
                                   f"{len(features) - 1}; domain_decoder_stages cannot be placed")
            channels += [int(stages[s].output_channels) for s in cfg["decoder_stages"]]
        self.domain_head = DomainClassifier(channels, n_domains=len(self.domain_index),
                                            hidden=cfg["hidden"], kind=cfg["kind"],
                                            pooling=cfg["pooling"]).to(self.device)
        self.domain_optimizer = torch.optim.Adam(self.domain_head.parameters(), lr=cfg["lr"])
        reversal = (f"gradient reversal ({cfg['grl_schedule']} to {cfg['grl_max']:g}, gamma {cfg['grl_gamma']:g}, "
                    f"delay {cfg['grl_delay']:g}, ramp {cfg['grl_ramp']:g})" if cfg["reverse_gradients"]
                    else "no gradient reversal")
        self.print_to_log_file(
            f"nnunet-transfer: domain classifier ({cfg['kind']}, encoder levels {cfg['levels']}, decoder stages "
            f"{cfg['decoder_stages']}, pooling {cfg['pooling']}, "
            f"{sum(p.numel() for p in self.domain_head.parameters())} parameters, Adam lr "
            f"{cfg['lr']:g}); loss = seg + {cfg['loss_weight']:g} x domain; {reversal}; classes {self.domain_index}")
        return groups

    def auxiliary_optimizers(self) -> dict:
        optimizers = dict(super().auxiliary_optimizers())
        optimizers["domain_head"] = self.domain_optimizer
        return optimizers

    def grl_lambda(self) -> float:
        total = max(1, self.num_epochs * self.num_iterations_per_epoch)
        done = self.current_epoch * self.num_iterations_per_epoch + self._step_in_epoch
        cfg = self.head_config
        return grl_schedule_lambda(done / total, cfg["grl_schedule"], cfg["grl_gamma"], cfg["grl_max"],
                                   cfg["grl_delay"], cfg["grl_ramp"])

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
        expected = len(self.head_config["levels"]) + len(self.head_config["decoder_stages"])
        if len(features) != expected:
            raise RuntimeError(f"the forward hooks captured {len(features)} feature maps, the domain classifier "
                               f"takes {expected} (encoder levels {self.head_config['levels']}, decoder stages "
                               f"{self.head_config['decoder_stages']}); did a decoder stage not run?")
        scale = self.head_config["encoder_gradient_scale"]
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

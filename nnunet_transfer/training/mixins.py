"""The pieces the transfer trainers are composed of.

``TransferTrainerBase`` is nnU-Net's ``nnUNetTrainer`` with small, overridable hooks
(``configure_knobs``, ``parameter_groups``, ``build_optimizer``, ``compute_loss``,
``check_training_cases``, ``extra_checkpoint_state``) and the plugin's checks. Each mixin
adds one idea through those hooks; ``trainers.py`` names the combinations (``-tr`` names).

Mixins go left of the base: ``class nnUNetTrainerDANN(DomainAdversarialMixin, TransferTrainerBase)``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_transfer import config
from nnunet_transfer.domains import read_domains, target_domain_of
from nnunet_transfer.training.domain_head import DomainClassifier
from nnunet_transfer.training.freezing import (SEGMENTATION_HEAD, freeze_parameters, part_parameter_names,
                                               unwrap)
from nnunet_transfer.training.grl import ganin_lambda, grad_reverse
from nnunet_transfer.training.lr_schedule import PolyWarmupLR
from nnunet_transfer.training.sampling import DomainBalancedDataLoader, swap_loader_class

CHECKPOINT_KEY = "nnunet_transfer"


def host_values(loss: torch.Tensor, extras: Dict[str, Any]) -> Dict[str, Any]:
    """``{"loss": ..., **extras}`` with every tensor copied to the host in one transfer.

    >>> float(host_values(torch.tensor(0.5), {"acc": torch.tensor(1.0), "lambda": 0.1})["acc"])
    1.0
    """
    names = ["loss"] + [k for k, v in extras.items() if torch.is_tensor(v)]
    tensors = [loss] + [extras[k] for k in names[1:]]
    values = torch.stack([t.detach().float().reshape(()) for t in tensors]).cpu().numpy()
    out = dict(extras)
    out.update({name: values[i] for i, name in enumerate(names)})
    return out


class TransferTrainerBase(nnUNetTrainer):
    """nnU-Net's default training with hooks for the mixins and the plugin's checks.

    - A fold missing from ``splits_final.json`` is an error (nnU-Net would silently train a
      random 80:20 split).
    - ``nnUNetTransfer_num_epochs`` and friends (see ``nnunet_transfer.config``) shorten the
      schedule, for smoke tests and the CPU demo.
    - Training on fold ``all`` skips nnU-Net's final validation, which would predict every
      training case (1251 for BraTS GLI); set ``validate_fold_all = True`` to keep it.
    - Learning rates follow ``PolyWarmupLR``: nnU-Net's poly decay (``poly_exponent``) per
      parameter group, after ``warmup_epochs`` of linear warm-up (capped at a tenth of training).
    """

    poly_exponent: float = 0.9
    warmup_epochs: int = 0
    grad_clip_norm: float = 12.0
    validate_fold_all: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._split: Optional[Tuple[List[str], List[str]]] = None
        self.configure_knobs()
        for name, value in config.schedule_overrides().items():
            setattr(self, name, value)
            self.print_to_log_file(f"nnunet-transfer: {name} = {value} (set by the environment)")

    # ---- hooks -------------------------------------------------------------------------
    def configure_knobs(self) -> None:
        """Set nnU-Net's hyperparameters (``initial_lr``, ``weight_decay`` ...). Mixins extend it."""

    def parameter_groups(self) -> List[dict]:
        """Optimizer parameter groups; frozen parameters (``requires_grad=False``) are left out."""
        params = [p for p in self.network.parameters() if p.requires_grad]
        total = sum(p.numel() for p in self.network.parameters())
        self.print_to_log_file(f"nnunet-transfer: {sum(p.numel() for p in params)} of {total} network "
                               f"parameters train")
        return [{"params": params, "name": "network"}]

    def build_optimizer(self, groups: List[dict]) -> torch.optim.Optimizer:
        return torch.optim.SGD(groups, self.initial_lr, weight_decay=self.weight_decay, momentum=0.99,
                               nesterov=True)

    def prepare_batch(self, batch: dict) -> None:
        """Add what ``compute_loss`` needs to ``batch`` before the forward pass (e.g. labels on the device)."""

    def compute_loss(self, output, target, batch: dict) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """Training loss of one batch and extra values to log (inside autocast).

        Extra values may be tensors: ``train_step`` copies them to the host together with the
        loss after the optimizer step, so that logging adds no GPU synchronisation.
        """
        return self.loss(output, target), {}

    def check_training_cases(self, train_keys: List[str], val_keys: List[str]) -> None:
        """Validate the split before any epoch runs; mixins raise clear errors here."""

    def extra_checkpoint_state(self) -> dict:
        """State saved next to nnU-Net's in checkpoints (kept out of ``network_weights``)."""
        return {}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        """Restore what ``extra_checkpoint_state`` saved."""

    # ---- nnU-Net overrides -------------------------------------------------------------
    def effective_warmup_epochs(self) -> int:
        return min(self.warmup_epochs, self.num_epochs // 10)

    def configure_optimizers(self):
        optimizer = self.build_optimizer(self.parameter_groups())
        scheduler = PolyWarmupLR(optimizer, self.num_epochs, self.poly_exponent, self.effective_warmup_epochs())
        return optimizer, scheduler

    def do_split(self):
        if self._split is None:
            self._check_fold_exists()
            train_keys, val_keys = super().do_split()
            self.check_training_cases(list(train_keys), list(val_keys))
            self._split = (train_keys, val_keys)
        return self._split

    def _check_fold_exists(self) -> None:
        if self.fold == "all":
            return
        splits_file = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        exists = isfile(splits_file)
        n_folds = len(load_json(splits_file)) if exists else 5  # nnU-Net creates 5 folds
        if not 0 <= int(self.fold) < n_folds:
            raise RuntimeError(
                f"fold {self.fold} was requested but {splits_file} "
                f"{'holds' if exists else 'would hold'} {n_folds} folds (0..{n_folds - 1}). "
                f"nnU-Net would silently train a random 80:20 split instead. Fix: pick a fold below {n_folds}, "
                f"or write the splits you want with `nnunet-transfer splits`.")

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.fold == "all" and not self.validate_fold_all:
            self.print_to_log_file("nnunet-transfer: fold 'all' has no held-out cases; skipping the final "
                                   "validation (it would predict every training case)")
            return
        if config.test_time_mirroring():
            return super().perform_actual_validation(save_probabilities)
        # the checkpoints are written already and keep the axes: nnUNetv2_predict still mirrors
        axes, self.inference_allowed_mirroring_axes = self.inference_allowed_mirroring_axes, None
        self.print_to_log_file(f"nnunet-transfer: final validation without test-time mirroring "
                               f"({config.TEST_TIME_MIRRORING}=0)")
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)

        self.prepare_batch(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss, extras = self.compute_loss(output, target, batch)

        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
            self.optimizer.step()
        return host_values(loss, extras)

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        extra = self.extra_checkpoint_state()
        if extra and self.local_rank == 0 and not self.disable_checkpointing:
            checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
            checkpoint[CHECKPOINT_KEY] = extra
            tmp = f"{filename}.tmp"
            torch.save(checkpoint, tmp)
            os.replace(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        if not self.extra_checkpoint_state():
            return
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        if CHECKPOINT_KEY in checkpoint:
            self.load_extra_checkpoint_state(checkpoint[CHECKPOINT_KEY])
        else:
            self.print_to_log_file("nnunet-transfer: checkpoint has no extra state; starting it fresh")


class DomainAwareMixin:
    """Knows each case's domain; draws ``target_share`` of every batch from the target domain.

    Domains come from dataset.json's ``domains`` map, else the BraTS case prefix. The target
    domain is ``target_domain``, else dataset.json's ``target_domain``, else the rarest domain
    among the training cases. ``target_share=None`` samples cases uniformly (nnU-Net's way).
    """

    target_domain: Optional[str] = None
    target_share: Optional[float] = 0.5
    min_training_domains: int = 1

    def check_training_cases(self, train_keys: List[str], val_keys: List[str]) -> None:
        super().check_training_cases(train_keys, val_keys)
        self.case_domains = read_domains(self.dataset_json, list(train_keys) + list(val_keys))
        missing = [k for k in train_keys if self.case_domains[k] is None]
        if missing:
            raise RuntimeError(
                f"{len(missing)} training case(s) have no domain, e.g. {missing[:5]}. "
                f"{self.__class__.__name__} needs one per case. Fix: add a \"domains\": {{case_id: name}} map to "
                f"dataset.json (nnunet-transfer convert/combine write it) and preprocess again, or use BraTS case "
                f"ids (BraTS-GLI-..., BraTS-SSA-...).")
        train_domains = {k: self.case_domains[k] for k in train_keys}
        counts = {d: sum(v == d for v in train_domains.values()) for d in sorted(set(train_domains.values()))}
        if len(counts) < self.min_training_domains:
            raise RuntimeError(
                f"{self.__class__.__name__} needs training cases from at least {self.min_training_domains} "
                f"domains, but fold {self.fold} trains on {counts} only. Fix: train on a combined dataset "
                f"(nnunet-transfer combine) and check splits_final.json.")
        self.active_target_domain = self.target_domain or target_domain_of(self.dataset_json, train_domains)
        self.training_domain_counts = counts
        self.print_to_log_file(f"nnunet-transfer: training cases per domain {counts}; target domain "
                               f"{self.active_target_domain}; target share per batch {self.target_share}")

    def get_dataloaders(self):
        def factory(*args, **kwargs):
            return DomainBalancedDataLoader(*args, case_domains=self.case_domains,
                                            target_domain=self.active_target_domain,
                                            target_share=self.target_share, **kwargs)

        with swap_loader_class(factory):
            return super().get_dataloaders()


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


def pretrained_weights_from_argv(argv: Optional[List[str]] = None) -> Optional[str]:
    """The ``-pretrained_weights`` value of the running ``nnUNetv2_train`` command, if any.

    Exact token match: argparse would take nnU-Net's ``-p PLANS`` for an abbreviation.
    """
    args = sys.argv[1:] if argv is None else argv
    for i, token in enumerate(args):
        if token == "-pretrained_weights" and i + 1 < len(args):
            return args[i + 1]
        if token.startswith("-pretrained_weights="):
            return token.split("=", 1)[1]
    return None


class FineTuneMixin:
    """Fine-tuning from ``-pretrained_weights``: lower LR with warm-up, segmentation head kept.

    ``fine_tune_initial_lr`` (1e-3, a tenth of nnU-Net's 1e-2) and ``warmup_epochs`` (10,
    capped at a tenth of training) apply. nnU-Net's loader re-initialises the segmentation
    layers; here they are loaded too when both datasets have the same labels. What was loaded,
    skipped and why goes to the training log.
    """

    fine_tune_initial_lr: float = 1e-3
    warmup_epochs: int = 10
    keep_segmentation_head: bool = True
    pretrained_weights_file: Optional[str] = None

    def configure_knobs(self) -> None:
        super().configure_knobs()
        self.initial_lr = self.fine_tune_initial_lr

    def initialize(self):
        self.pretrained_weights_file = self.pretrained_weights_file or pretrained_weights_from_argv()
        self._pretrained = None
        self.segmentation_head_from_pretrained = False
        if self.pretrained_weights_file:
            if not isfile(self.pretrained_weights_file):
                raise FileNotFoundError(f"-pretrained_weights {self.pretrained_weights_file}: no such file")
            self._pretrained = torch.load(self.pretrained_weights_file, map_location="cpu", weights_only=False)
            source_labels = self._pretrained.get("init_args", {}).get("dataset_json", {}).get("labels")
            same = source_labels == self.dataset_json.get("labels")
            self.segmentation_head_from_pretrained = bool(self.keep_segmentation_head and same)
            self._head_reason = ("label sets match" if same else
                                 f"label sets differ (pretrained {source_labels}, here {self.dataset_json.get('labels')})")
        super().initialize()
        if self._pretrained is not None:
            self._report_and_load_head()
            self._pretrained = None

    def _report_and_load_head(self) -> None:
        weights = self._pretrained["network_weights"]
        network = unwrap(self.network)
        own = network.state_dict()
        missing = [k for k in own if SEGMENTATION_HEAD not in f".{k}" and k not in weights]
        mismatched = [k for k in own if k in weights and SEGMENTATION_HEAD not in f".{k}"
                      and weights[k].shape != own[k].shape]
        if missing or mismatched:
            raise RuntimeError(
                f"-pretrained_weights {self.pretrained_weights_file} does not fit this network: "
                f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(mismatched)} with other shapes "
                f"(e.g. {mismatched[:3]}). Fix: pre-train with the same plans (move the source plans to this "
                f"dataset with nnUNetv2_move_plans_between_datasets and train with -p).")
        head_keys = [k for k in own if SEGMENTATION_HEAD in f".{k}"]
        if self.segmentation_head_from_pretrained:
            if any(k not in weights or weights[k].shape != own[k].shape for k in head_keys):
                raise RuntimeError(f"-pretrained_weights {self.pretrained_weights_file}: the segmentation head's "
                                   f"shapes differ although the labels match; was it trained with other plans?")
            network.load_state_dict({**own, **{k: weights[k] for k in head_keys}})
        unused = [k for k in weights if k not in own]
        self.print_to_log_file(
            f"nnunet-transfer: pretrained weights {self.pretrained_weights_file}: "
            f"{len(own) - len(head_keys)} tensors loaded; segmentation head ({len(head_keys)} tensors) "
            f"{'loaded' if self.segmentation_head_from_pretrained else 're-initialised'} because the "
            f"{self._head_reason}; {len(unused)} tensors of the checkpoint unused {unused[:5]}")

    def on_train_start(self):
        if self.current_epoch == 0 and not self.pretrained_weights_file:
            raise RuntimeError(
                f"{self.__class__.__name__} fine-tunes a pre-trained model but got no -pretrained_weights. Fix: "
                f"nnUNetv2_train ... -tr {self.__class__.__name__} -pretrained_weights "
                f"$nnUNet_results/<source dataset>/<trainer>__<plans>__<config>/fold_all/checkpoint_final.pth "
                f"(or --c to resume a fine-tuning run).")
        super().on_train_start()


class FreezeMixin:
    """Freeze one network part (``frozen_part``: "encoder" or "decoder"), selected by name.

    Frozen parameters get ``requires_grad=False``, stay out of the optimizer and are
    bitwise unchanged by training. The segmentation head (part of the decoder) is frozen
    only when it was loaded from the pretrained checkpoint; a freshly initialised head trains.
    """

    frozen_part: str = "decoder"

    def parameter_groups(self) -> List[dict]:
        names = part_parameter_names(self.network, self.frozen_part)
        if not getattr(self, "segmentation_head_from_pretrained", False):
            names = {n for n in names if SEGMENTATION_HEAD not in f".{n}"}
        frozen = freeze_parameters(self.network, names)
        self.print_to_log_file(f"nnunet-transfer: froze the {self.frozen_part}: {len(names)} tensors, "
                               f"{frozen} parameter values")
        return super().parameter_groups()


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

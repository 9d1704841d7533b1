"""``TransferTrainerBase``: nnU-Net's ``nnUNetTrainer`` with small hooks and the plugin's checks.

The hooks (``configure_knobs``, ``parameter_groups``, ``build_optimizer``, ``prepare_batch``,
``compute_loss``, ``check_training_cases``, ``extra_checkpoint_state``) are what the mixins
of this package override, one idea each; ``trainers.py`` names the combinations.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_transfer import config
from nnunet_transfer.training.lr_schedule import PolyWarmupLR


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

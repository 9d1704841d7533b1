"""``TransferTrainerBase``: nnU-Net's ``nnUNetTrainer`` with small hooks and the plugin's checks.

The hooks (``configure_knobs``, ``parameter_groups``, ``build_optimizer``, ``prepare_batch``,
``compute_loss``, ``check_training_cases``, ``run_state``, ``extra_checkpoint_state``,
``on_checkpoint_loaded``) are what the mixins of this package override, one idea each;
``trainers.py`` names the combinations.

What a run decides at its start (what is frozen, whether the segmentation head came from
the pretrained model, the domains and the target) is its *run state*: saved in every
checkpoint under ``nnunet_transfer/run`` and, when a checkpoint is loaded (``--c``,
``--val``), restored *before* the network and optimizer are built, so a resumed run is the
same run. nnU-Net forbids ``-pretrained_weights`` with ``--c``/``--val``; nothing a run needs
is therefore derived from that flag on resume.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast

from nnunet_transfer import __version__, config
from nnunet_transfer.dataset_conversion.labels import unlabelled_cases
from nnunet_transfer.training.checkpoints import CHECKPOINT_KEY, complete_checkpoint_writes
from nnunet_transfer.training.labels import ignore_whole_cases
from nnunet_transfer.training.losses import average_dice_over_labelled_samples, masked_region_loss
from nnunet_transfer.training.lr_schedule import PolyWarmupLR
from nnunet_transfer.training.onednn import single_sample_onednn
from nnunet_transfer.training.seeding import seed_everything, seeded_augmenters, worker_seeds


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


def _parameters(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


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
    - ``seed`` (or ``nnUNetTransfer_seed``) seeds the run: network initialisation and the
      augmentation workers (:mod:`nnunet_transfer.training.seeding`); saved in the run state.
    """

    poly_exponent: float = 0.9
    warmup_epochs: int = 0
    grad_clip_norm: float = 12.0
    validate_fold_all: bool = False
    #: ``False`` trains without deep supervision (one output, one loss term); ``None`` keeps nnU-Net's (on).
    deep_supervision: Optional[bool] = None
    #: seed of the run; None (and no ``nnUNetTransfer_seed``): unseeded, as nnU-Net's runs
    seed: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        dataset_json = self.adapt_dataset_json(dataset_json)  # before nnU-Net builds the label manager from it
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._split: Optional[Tuple[List[str], List[str]]] = None
        #: the run state of the checkpoint being loaded ({} if it has none); None for a fresh run
        self.resumed_run: Optional[dict] = None
        #: the seed this run uses (decided in ``initialize``: the resumed run's, else the requested one)
        self.training_seed: Optional[int] = None
        self.configure_knobs()
        threads = config.cpu_threads()
        if self.device.type == "cpu" and threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # nnUNetv2_train set every core, whatever OMP_NUM_THREADS says
            self.print_to_log_file(f"nnunet-transfer: {threads} CPU thread(s) (OMP_NUM_THREADS)")
        if self.deep_supervision is not None:
            self.enable_deep_supervision = bool(self.deep_supervision)
        for name, value in config.schedule_overrides().items():
            setattr(self, name, value)
            self.print_to_log_file(f"nnunet-transfer: {name} = {value} (set by the environment)")
        lr = config.initial_lr()
        if lr is not None:
            self.print_to_log_file(f"nnunet-transfer: initial_lr = {lr} instead of {self.initial_lr} "
                                   f"({config.INITIAL_LR})")
            self.initial_lr = lr

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        """nnU-Net's network (training and ``nnUNetv2_predict`` both build it here), its
        ``Conv3d`` modules running single-sample CPU inputs through oneDNN
        (:mod:`nnunet_transfer.training.onednn`: same parameters, about 8x faster there)."""
        return single_sample_onednn(nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision))

    # ---- hooks -------------------------------------------------------------------------
    @classmethod
    def adapt_dataset_json(cls, dataset_json: dict) -> dict:
        """The dataset.json the trainer runs with (label manager, results folder); mixins return a changed copy."""
        return dataset_json

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
        loss after the optimizer step, so that logging adds no GPU synchronisation. Every
        voxel of the batch's :attr:`label_free_cases` is ignored
        (:func:`~nnunet_transfer.training.labels.ignore_whole_cases`: their padding too).
        """
        free = self.label_free_cases if self.label_manager.has_ignore_label else set()
        if free:
            target = ignore_whole_cases(target, [i for i, k in enumerate(batch["keys"]) if k in free],
                                        self.label_manager)
        return self.loss(output, target), {}

    @property
    def label_free_cases(self) -> Set[str]:
        """Training cases without labels: dataset.json's ``"unlabelled"`` (label-hiding trainers add theirs)."""
        return set(unlabelled_cases(self.dataset_json))

    def check_training_cases(self, train_keys: List[str], val_keys: List[str]) -> None:
        """Validate the split before any epoch runs; mixins raise clear errors here.

        A case dataset.json lists as ``"unlabelled"`` must not be validated (fold ``all``
        validates its training cases and is exempt).
        """
        if self.fold == "all":
            return
        validated = sorted(set(val_keys) & set(unlabelled_cases(self.dataset_json)))
        if validated:
            raise RuntimeError(
                f"fold {self.fold} of splits_final.json validates {len(validated)} case(s) that dataset.json lists as "
                f"unlabelled: {validated[:5]}; they have no labels to validate against. Fix: write the folds with "
                f"`nnunet-transfer splits` (it keeps unlabelled cases out of validation) or move them to 'train'.")

    def run_state(self) -> dict:
        """What this run decided at its start; mixins add their entries. Saved in every checkpoint."""
        return {"trainer": self.__class__.__name__, "nnunet_transfer_version": __version__,
                "seed": self.training_seed, "initial_lr": self.initial_lr}

    def resumed_decision(self, key: str, missing: Optional[str] = None) -> Optional[Any]:
        """What the run being resumed decided under ``key`` of its run state; None for a fresh run.

        ``missing`` is the error (after the trainer's name) when the checkpoint lacks ``key``;
        without it a lack is allowed and gives None.
        """
        if self.resumed_run is None:
            return None
        saved = self.resumed_run.get(key)
        if saved is None and missing is not None:
            raise RuntimeError(f"{self.__class__.__name__}: {missing}")
        return saved

    def auxiliary_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """Optimizers of models trained beside the network (a domain classifier), by name.

        ``train_step`` zeroes, unscales, clips (each on its own, at ``grad_clip_norm``) and
        steps them with the network's; mixins save their state in ``extra_checkpoint_state``.
        """
        return {}

    def extra_checkpoint_state(self) -> dict:
        """Learned state saved next to nnU-Net's in checkpoints (kept out of ``network_weights``)."""
        return {}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        """Restore what ``extra_checkpoint_state`` saved."""

    def on_checkpoint_loaded(self) -> None:
        """Called after a checkpoint's weights and the plugin's state are restored (checks go here)."""

    # ---- seeding -------------------------------------------------------------------------
    def _decide_seed(self) -> None:
        requested = config.training_seed()
        source = config.TRAINING_SEED
        if requested is None and self.seed is not None:
            requested, source = int(self.seed), "the trainer's seed"
        if self.resumed_run is not None:
            saved = self.resumed_run.get("seed")  # checkpoints of unseeded (or older) runs hold none
            if requested is not None and requested != saved:
                if saved is None:
                    ran, fix = "was unseeded", f"unset {config.TRAINING_SEED}"
                else:
                    ran, fix = f"used seed {saved}", f"set {config.TRAINING_SEED}={saved} or unset it"
                raise RuntimeError(f"{self.__class__.__name__}: {source} is {requested}, but the checkpoint's run "
                                   f"{ran}; a resumed run keeps its seed. Fix: {fix}, or train anew without --c.")
            self.training_seed = saved
        else:
            self.training_seed = requested
        if self.training_seed is not None:
            self.print_to_log_file(f"nnunet-transfer: seed {self.training_seed} (network initialisation and "
                                   f"augmentation workers{'; resumed run' if self.resumed_run is not None else ''})")

    def _check_resumed_lr(self) -> None:
        saved = self.resumed_decision("initial_lr")  # None in older checkpoints: nothing to compare
        if saved is not None and float(saved) != float(self.initial_lr):
            raise RuntimeError(
                f"{self.__class__.__name__}: the checkpoint's run started with initial_lr {saved}, this one would use "
                f"{self.initial_lr} (the trainer's default, or {config.INITIAL_LR}); a resumed run keeps its learning "
                f"rate schedule. Fix: set {config.INITIAL_LR}={saved} (or unset it, if that was the default), or "
                f"train anew without --c.")

    def initialize(self):
        if not self.was_initialized:
            self._check_resumed_lr()
            self._decide_seed()
            if self.training_seed is not None:
                seed_everything(self.training_seed)
        super().initialize()

    def get_dataloaders(self):
        """nnU-Net's loaders; with a seed, its workers draw from (seed, epoch, rank) instead of the OS."""
        if self.training_seed is None:
            return super().get_dataloaders()
        key = (self.training_seed, self.current_epoch, self.local_rank)
        seed_everything(*key)  # the main process draws batches itself when nnUNet_n_proc_DA is 0
        n = max(1, get_allowed_n_proc_DA())
        with seeded_augmenters(worker_seeds(*key, "train", n), worker_seeds(*key, "val", n)):
            return super().get_dataloaders()

    # ---- nnU-Net overrides -------------------------------------------------------------
    def effective_warmup_epochs(self) -> int:
        return min(self.warmup_epochs, self.num_epochs // 10)

    def _build_loss(self):
        """nnU-Net's loss; with an ignore label, masked voxels and cases weigh nothing.

        Region-based training's BCE is averaged as without an ignore label
        (:class:`~nnunet_transfer.training.losses.MaskedRegionLoss`), and the per-sample Dice
        leaves out the samples without a labelled voxel
        (:class:`~nnunet_transfer.training.losses.LabelledSamplesDice`).
        """
        with masked_region_loss():
            loss = super()._build_loss()
        if self.label_manager.has_ignore_label:
            loss = average_dice_over_labelled_samples(loss, bool(self.configuration_manager.batch_dice))
        return loss

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
        optimizers = [self.optimizer, *self.auxiliary_optimizers().values()]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss, extras = self.compute_loss(output, target, batch)

        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            for optimizer in optimizers:
                self.grad_scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(_parameters(optimizer), self.grad_clip_norm)
            for optimizer in optimizers:
                self.grad_scaler.step(optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            for optimizer in optimizers:
                torch.nn.utils.clip_grad_norm_(_parameters(optimizer), self.grad_clip_norm)
                optimizer.step()
        return host_values(loss, extras)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint with the run state and extra state inside, written once, atomically."""
        state = {**self.extra_checkpoint_state(), "run": self.run_state()}
        with complete_checkpoint_writes(state):
            super().save_checkpoint(filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """Restore the run state first (``initialize`` reads it), then nnU-Net's state, then ours."""
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        state = checkpoint.get(CHECKPOINT_KEY) or {}
        if self.was_initialized:
            self._check_same_run(state.get("run") or {})
        self.resumed_run = dict(state.get("run") or {})
        super().load_checkpoint(filename_or_checkpoint)  # nnU-Net 2.8.1 reads a path only, not a dict
        if state:
            self.load_extra_checkpoint_state(state)
        self.on_checkpoint_loaded()

    def _check_same_run(self, saved: dict) -> None:
        """An already initialised trainer must have decided what the checkpoint's run decided."""
        current = self.run_state()
        differ = sorted(k for k in saved if k in current and k != "nnunet_transfer_version"
                        and saved[k] != current[k])
        if differ:
            raise RuntimeError(f"the checkpoint's run decided {', '.join(f'{k}={saved[k]!r}' for k in differ)} "
                               f"but this trainer decided {', '.join(f'{k}={current[k]!r}' for k in differ)}; "
                               f"load the checkpoint into a fresh trainer (nnUNetv2_train --c / --val)")

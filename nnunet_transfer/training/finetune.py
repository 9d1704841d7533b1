"""``FineTuneMixin`` (start from ``-pretrained_weights``) and ``FreezeMixin`` (freeze a network part)."""

from __future__ import annotations

import sys
from typing import List, Optional

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile

from nnunet_transfer.training.freezing import SEGMENTATION_HEAD, freeze_parameters, part_parameter_names, unwrap


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

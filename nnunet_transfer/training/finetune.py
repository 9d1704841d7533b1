"""``FineTuneMixin`` (start from ``-pretrained_weights``) and ``FreezeMixin`` (freeze a network part)."""

from __future__ import annotations

import sys
from typing import List, Optional

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile

from nnunet_transfer.dataset_conversion.labels import without_ignore
from nnunet_transfer.training.checkpoints import tensor_digest
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
    layers; here they are loaded too when both datasets have the same labels. The plugin
    loads every tensor itself, during ``initialize`` (nnU-Net's own ``-pretrained_weights``
    load that follows then writes the same values again), so the log's "loaded" is true and
    a subclass that sets ``pretrained_weights_file`` in code gets the whole model.

    The run state records the pretrained file and whether the head was loaded; ``--c`` and
    ``--val`` restore both from the checkpoint (nnU-Net forbids ``-pretrained_weights`` there).
    """

    fine_tune_initial_lr: float = 1e-3
    warmup_epochs: int = 10
    keep_segmentation_head: bool = True
    pretrained_weights_file: Optional[str] = None

    def configure_knobs(self) -> None:
        super().configure_knobs()
        self.initial_lr = self.fine_tune_initial_lr

    def initialize(self):
        self._pretrained = None
        saved = self.resumed_decision(
            "fine_tune", missing="the checkpoint holds no fine-tuning run state (written by an older nnunet-transfer, "
            "or by another trainer), so it is unknown which weights it started from and whether its segmentation "
            "head was loaded. Fix: fine-tune again from -pretrained_weights (without --c), or resume with the "
            "nnunet-transfer version that wrote it.")
        if saved is not None:
            self._restore_fine_tune_decisions(saved)
        else:
            self.pretrained_weights_file = self.pretrained_weights_file or pretrained_weights_from_argv()
            self.segmentation_head_from_pretrained = False
            if self.pretrained_weights_file:
                self._read_pretrained()
        super().initialize()
        if self._pretrained is not None:
            self._load_pretrained()
            self._pretrained = None

    def _restore_fine_tune_decisions(self, saved: dict) -> None:
        self.pretrained_weights_file = saved["pretrained_weights"]
        self.segmentation_head_from_pretrained = bool(saved["segmentation_head_from_pretrained"])
        self._head_reason = saved.get("segmentation_head_reason", "")
        self.print_to_log_file(
            f"nnunet-transfer: resumed fine-tuning run (started from {self.pretrained_weights_file}; segmentation "
            f"head {'loaded from it' if self.segmentation_head_from_pretrained else 're-initialised'})")

    def _read_pretrained(self) -> None:
        if not isfile(self.pretrained_weights_file):
            raise FileNotFoundError(f"-pretrained_weights {self.pretrained_weights_file}: no such file")
        self._pretrained = torch.load(self.pretrained_weights_file, map_location="cpu", weights_only=False)
        source_labels = self._pretrained.get("init_args", {}).get("dataset_json", {}).get("labels")
        here = self.dataset_json.get("labels")
        # nnU-Net's ignore label (unlabelled cases) adds no output channel: the head fits without it
        same = source_labels is not None and here is not None and without_ignore(source_labels) == without_ignore(here)
        self.segmentation_head_from_pretrained = bool(self.keep_segmentation_head and same)
        self._head_reason = ("label sets match" if same else
                             f"label sets differ (pretrained {source_labels}, here {self.dataset_json.get('labels')})")

    def run_state(self) -> dict:
        state = super().run_state()
        state["fine_tune"] = {"pretrained_weights": self.pretrained_weights_file,
                              "segmentation_head_from_pretrained": getattr(self, "segmentation_head_from_pretrained",
                                                                           False),
                              "segmentation_head_reason": getattr(self, "_head_reason", "")}
        return state

    def _load_pretrained(self) -> None:
        weights = self._pretrained["network_weights"]
        network = unwrap(self.network)
        own = network.state_dict()
        body = [k for k in own if SEGMENTATION_HEAD not in f".{k}"]
        head_keys = [k for k in own if SEGMENTATION_HEAD in f".{k}"]
        missing = [k for k in body if k not in weights]
        mismatched = [k for k in body if k in weights and weights[k].shape != own[k].shape]
        if missing or mismatched:
            raise RuntimeError(
                f"-pretrained_weights {self.pretrained_weights_file} does not fit this network: "
                f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(mismatched)} with other shapes "
                f"(e.g. {mismatched[:3]}). Fix: pre-train with the same plans (move the source plans to this "
                f"dataset with nnUNetv2_move_plans_between_datasets and train with -p).")
        loaded = list(body)
        if self.segmentation_head_from_pretrained:
            if any(k not in weights or weights[k].shape != own[k].shape for k in head_keys):
                raise RuntimeError(f"-pretrained_weights {self.pretrained_weights_file}: the segmentation head's "
                                   f"shapes differ although the labels match; was it trained with other plans?")
            loaded += head_keys
        network.load_state_dict({**own, **{k: weights[k] for k in loaded}})
        unused = [k for k in weights if k not in own]
        self.print_to_log_file(
            f"nnunet-transfer: loaded {len(loaded)} of {len(own)} tensors from {self.pretrained_weights_file}; "
            f"segmentation head ({len(head_keys)} tensors) "
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

    The set of frozen tensors and a digest of their values (taken when training starts,
    after the pretrained weights are in) are part of the run state: ``--c`` and ``--val``
    freeze exactly the saved set, and every checkpoint load checks that the frozen tensors
    are still bitwise the ones training started with.
    """

    frozen_part: str = "decoder"

    def parameter_groups(self) -> List[dict]:
        saved = self.resumed_decision(
            "frozen", missing="the checkpoint does not record which tensors were frozen (written by an older "
            "nnunet-transfer, or by another trainer). Fix: fine-tune again from -pretrained_weights.")
        if saved is not None:
            names = set(saved["names"])
            unknown = sorted(names - {n for n, _ in unwrap(self.network).named_parameters()})
            if unknown:
                raise RuntimeError(f"{self.__class__.__name__}: the checkpoint froze tensors this network lacks "
                                   f"({unknown[:3]}); it was trained with other plans")
            self._frozen_digest = saved.get("digest")
            how = "as the checkpoint's run did"
        else:
            names = part_parameter_names(self.network, self.frozen_part)
            if not getattr(self, "segmentation_head_from_pretrained", False):
                names = {n for n in names if SEGMENTATION_HEAD not in f".{n}"}
            self._frozen_digest = None
            how = "segmentation head included" if any(SEGMENTATION_HEAD in f".{n}" for n in names) else \
                "segmentation head trains"
        self.frozen_names = sorted(names)
        frozen = freeze_parameters(self.network, names)
        self.print_to_log_file(f"nnunet-transfer: froze the {self.frozen_part}: {len(names)} tensors, "
                               f"{frozen} parameter values ({how})")
        return super().parameter_groups()

    def _frozen_tensors(self) -> dict:
        wanted = set(self.frozen_names)
        return {n: p for n, p in unwrap(self.network).named_parameters() if n in wanted}

    def on_train_start(self):
        super().on_train_start()
        if self._frozen_digest is None:  # a fresh run: the pretrained weights are loaded by now
            self._frozen_digest = tensor_digest(self._frozen_tensors())
        # a resumed run's digest was checked when its checkpoint was loaded (on_checkpoint_loaded)

    def on_checkpoint_loaded(self) -> None:
        super().on_checkpoint_loaded()
        self._check_frozen_unchanged()

    def _check_frozen_unchanged(self) -> None:
        if self._frozen_digest is not None and tensor_digest(self._frozen_tensors()) != self._frozen_digest:
            raise RuntimeError(f"{self.__class__.__name__}: the frozen {self.frozen_part} tensors differ from the "
                               f"ones this run started with; the checkpoint was modified or written by another run")

    def run_state(self) -> dict:
        state = super().run_state()
        if getattr(self, "frozen_names", None) is not None:
            state["frozen"] = {"part": self.frozen_part, "names": list(self.frozen_names),
                               "digest": self._frozen_digest}
        return state

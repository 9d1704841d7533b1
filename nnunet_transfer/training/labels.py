"""``TargetLabelsMixin``: which target training labels a run may use.

Three regimes on stock nnU-Net: *supervised* (every label, the paper's DANN), *semi-supervised*
(``labelled_target_cases = n`` or a fraction: that many target training cases keep their
labels) and *unsupervised* (``labelled_target_cases = 0``). Which cases keep their labels is
drawn once per fold (:func:`draw_labelled_cases`) and is run state. Cases that dataset.json
lists as ``"unlabelled"`` (``nnunet-transfer convert --unlabelled``) never count as labelled.

A hidden case's labels are never read: :class:`LabelHidingDataset` wraps nnU-Net's dataset
so that the case's segmentation is the ignore label everywhere (its seg file is not opened)
and its ``class_locations`` (computed from the labels at preprocessing, they steer nnU-Net's
foreground oversampling) are empty. With ``hidden_label_use = "mask"`` the hidden cases stay
in training (the domain loss sees them) and nnU-Net's own ignore-label machinery masks them
out of the segmentation loss: the trainer adds ``"ignore": max label + 1`` to its dataset.json
before nnU-Net builds the label manager (the network gets no output for it). With ``"drop"``
they are removed from the fold's training cases. With no target label at all the run writes
no ``checkpoint_best.pth`` (nnU-Net picks it by the pseudo-Dice on target labels):
``checkpoint_final.pth`` is the model.

Example:
    >>> draw_labelled_cases(["t3", "t1", "t2", "t4"], 2, seed=12345)
    (['t1', 't3'], ['t2', 't4'])
    >>> draw_labelled_cases(["t1", "t2", "t3", "t4"], 0.5, unlabelled=["t1"], seed=12345)
    (['t2', 't4'], ['t3'])
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from typing import Any, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_pickle

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion.labels import IGNORE_KEY, unlabelled_cases, with_ignore_label
from nnunet_transfer.domains import read_domains, target_domain_of

LabelledSetting = Optional[Union[int, float]]

#: dtype of the segmentations nnU-Net's preprocessing writes (``DefaultPreprocessor.run_case_save``)
SEG_DTYPE = np.int16
HIDDEN_LABEL_USES = ("mask", "drop")
#: nnU-Net's loader warns on every crop of a case without annotated voxels; hidden cases are such by design
_NO_ANNOTATION_WARNING = "Warning! No annotated pixels in image!"


def check_labelled_setting(value: Any, where: str = "labelled_target_cases") -> LabelledSetting:
    """``value`` if it is a valid ``labelled_target_cases``: None, an int >= 0 or a float in (0, 1).

    >>> check_labelled_setting(0.25), check_labelled_setting(3), check_labelled_setting(None)
    (0.25, 3, None)
    """
    if value is None:
        return None
    if isinstance(value, Integral) and not isinstance(value, bool):
        if value >= 0:
            return int(value)
    elif isinstance(value, Real) and not isinstance(value, bool) and 0.0 < float(value) < 1.0:
        return float(value)
    raise ValueError(f"{where} = {value!r}: must be None (every label), an integer >= 0 (that many target training "
                     f"cases keep their labels; 0: none) or a fraction in (0, 1). Fix: set it to e.g. 10 or 0.25.")


def labelled_count(setting: LabelledSetting, n_available: int) -> int:
    """How many of ``n_available`` target training cases with labels keep them.

    A fraction is rounded half up and must leave at least one case; ``None`` keeps all.

    >>> labelled_count(0.5, 5), labelled_count(2, 5), labelled_count(None, 5), labelled_count(0, 5)
    (3, 2, 5, 0)
    """
    setting = check_labelled_setting(setting)
    if setting is None:
        return n_available
    if isinstance(setting, float):
        n = int(np.floor(setting * n_available + 0.5))
        if n == 0:
            raise ValueError(f"labelled_target_cases = {setting} of {n_available} target training case(s) with labels "
                             f"rounds to none. Fix: use 0 for the unsupervised regime, or a larger fraction.")
        return n
    if setting > n_available:
        raise ValueError(f"labelled_target_cases = {setting}, but the fold has only {n_available} target training "
                         f"case(s) with labels. Fix: set {config.LABELLED_TARGET_CASES} (e.g. in the plan's [env] "
                         f"table) to at most {n_available}, or a fraction.")
    return setting


def draw_labelled_cases(target_cases: Iterable[str], setting: LabelledSetting, unlabelled: Iterable[str] = (),
                        seed: int = 12345) -> Tuple[List[str], List[str]]:
    """``(labelled, hidden)``: which target training cases keep their labels, deterministically.

    The cases with labels (``target_cases`` minus ``unlabelled``), sorted, are permuted with
    ``numpy.random.default_rng(seed)``; the first ``labelled_count`` keep their labels. Both
    lists come back sorted; unlabelled cases are in neither.
    """
    never = set(unlabelled)
    candidates = sorted(set(target_cases) - never)
    n = labelled_count(setting, len(candidates))
    order = np.random.default_rng(seed).permutation(len(candidates))
    labelled = sorted(candidates[i] for i in order[:n])
    hidden = sorted(candidates[i] for i in order[n:])
    return labelled, hidden


def empty_class_locations(properties: dict, keys: Sequence, ndim: int) -> dict:
    """``properties`` with every ``class_locations`` entry (and each of ``keys``) an empty coordinate array.

    >>> empty_class_locations({"class_locations": {1: np.ones((5, 4))}}, [(-1, 0, 1)], 4)["class_locations"]
    {1: array([], shape=(0, 4), dtype=int64), (-1, 0, 1): array([], shape=(0, 4), dtype=int64)}
    """
    locations = {k: np.zeros((0, ndim), dtype=np.int64) for k in (properties.get("class_locations") or {})}
    for key in keys:
        locations[key] = np.zeros((0, ndim), dtype=np.int64)
    return {**properties, "class_locations": locations}


def _quiet_unannotated_warning() -> None:
    """Silence that warning in this process (data-augmentation workers are processes), adding the filter once."""
    if not any(f[0] == "ignore" and f[1] is not None and f[1].pattern == _NO_ANNOTATION_WARNING
               for f in warnings.filters):
        warnings.filterwarnings("ignore", message=_NO_ANNOTATION_WARNING)  # re-adding would reset warning registries


def ignore_whole_cases(target, cases: Sequence[int], label_manager):
    """``target`` (a tensor, or nnU-Net's list of deep-supervision targets) with every voxel of ``cases`` ignored.

    A hidden case's seg is the ignore label (:class:`LabelHidingDataset`), but nnU-Net's loader
    pads patches that reach past the image with -1 and its transforms turn -1 into background
    (0): without this, those padded voxels of an unlabelled case train as labelled background,
    and the case counts in the per-sample Dice average (nearly every patch of a small case is
    padded). Region-based targets get their ignore channel (the last) set and the regions
    cleared; label-based targets the ignore label.

    >>> import torch
    >>> from nnunetv2.utilities.label_handling.label_handling import LabelManager
    >>> lm = LabelManager({"background": 0, "tumour": 1, "ignore": 2}, regions_class_order=None)
    >>> ignore_whole_cases(torch.zeros(2, 1, 2, 2, 2), [1], lm)[:, 0, 0, 0, 0].tolist()
    [0.0, 2.0]
    """
    if not cases:
        return target
    rows = list(cases)
    if isinstance(target, (list, tuple)):
        return type(target)(ignore_whole_cases(t, rows, label_manager) for t in target)
    target = target.clone()
    if label_manager.has_regions:
        target[rows, :-1] = 0
        target[rows, -1] = 1
    else:
        target[rows] = label_manager.ignore_label
    return target


class LabelHidingDataset:
    """nnU-Net's training dataset with the labels of ``hidden`` cases replaced by the ignore label.

    ``load_case`` of a hidden case opens the image (and a cascade's previous-stage
    segmentation) but never its seg file: the seg is ``ignore_label`` everywhere (shape
    ``data[0:1]``, nnU-Net's int16) and ``class_locations`` are empty, so foreground
    oversampling draws random crops. ``annotated_key`` (nnU-Net's ``(-1, *all_labels)``,
    which its loader needs when the label manager has an ignore label) is added, empty, to
    cases whose properties lack it: every voxel of a labelled case is annotated and the
    loader then draws a random box, as without an ignore label.
    """

    def __init__(self, dataset, hidden: Iterable[str], ignore_label: Optional[int],
                 annotated_key: Optional[Tuple[int, ...]] = None):
        self.dataset = dataset
        self.identifiers = list(dataset.identifiers)
        self.source_folder = dataset.source_folder
        self.folder_with_segs_from_previous_stage = dataset.folder_with_segs_from_previous_stage
        self.hidden: Set[str] = set(hidden) & set(self.identifiers)
        self.ignore_label = ignore_label
        self.annotated_key = annotated_key
        if self.hidden and ignore_label is None:
            raise ValueError(f"cannot hide the labels of {sorted(self.hidden)[:5]} without an ignore label; the "
                             f"trainer must add one to dataset.json (hidden_label_use = 'mask')")

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def load_case(self, identifier: str):
        if identifier not in self.hidden:
            data, seg, seg_prev, properties = self.dataset.load_case(identifier)
            locations = properties.setdefault("class_locations", {})
            if self.annotated_key is not None and self.annotated_key not in locations:
                _quiet_unannotated_warning()
                locations[self.annotated_key] = np.zeros((0, data.ndim), dtype=np.int64)
            return data, seg, seg_prev, properties
        _quiet_unannotated_warning()
        data, seg_prev = self._image_and_previous_stage(identifier)
        seg = np.full((1, *data.shape[1:]), self.ignore_label, dtype=SEG_DTYPE)
        properties = load_pickle(join(self.source_folder, identifier + ".pkl"))
        keys = [self.annotated_key] if self.annotated_key is not None else []
        return data, seg, seg_prev, empty_class_locations(properties, keys, data.ndim)

    def _image_and_previous_stage(self, identifier: str):
        """What nnU-Net's ``load_case`` opens, except the seg file."""
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, nnUNetDatasetNumpy

        previous = self.folder_with_segs_from_previous_stage
        if isinstance(self.dataset, nnUNetDatasetBlosc2):
            import blosc2

            kwargs = {"mode": "r", "dparams": {"nthreads": 1}, **self.dataset.mmap_kwargs}
            data = blosc2.open(urlpath=join(self.source_folder, identifier + ".b2nd"), **kwargs)
            seg_prev = None if previous is None else blosc2.open(urlpath=join(previous, identifier + ".b2nd"),
                                                                 **kwargs)
            return data, seg_prev
        if isinstance(self.dataset, nnUNetDatasetNumpy):
            npy = join(self.source_folder, identifier + ".npy")
            data = np.load(npy, mmap_mode="r") if isfile(npy) else \
                np.load(join(self.source_folder, identifier + ".npz"))["data"]  # npz members load one by one
            seg_prev = None
            if previous is not None:
                prev_npy = join(previous, identifier + ".npy")
                seg_prev = np.load(prev_npy, "r") if isfile(prev_npy) else \
                    np.load(join(previous, identifier + ".npz"))["seg"]
            return data, seg_prev
        raise TypeError(f"{type(self.dataset).__name__} is not one of nnU-Net's dataset classes "
                        f"(nnUNetDatasetBlosc2, nnUNetDatasetNumpy); LabelHidingDataset cannot open a case's image "
                        f"without its labels there. Fix: preprocess with nnU-Net's default preprocessor.")


class TargetLabelsMixin:
    """Which target training labels the run may use (module docstring).

    - ``labelled_target_cases``: None (every label), 0 (none: unsupervised), n (that many
      target training cases keep their labels) or a fraction in (0, 1) of those with labels,
      rounded. ``nnUNetTransfer_labelled_target_cases`` overrides it (a plan's ``[env]``).
    - ``label_seed``: the draw's seed.
    - ``hidden_label_use``: "mask" (hidden cases train, their segmentation loss masked) or
      "drop" (hidden and unlabelled cases are left out of the fold's training cases).
    - ``batch_per_domain``: True makes every training batch hold the batch size the run
      would otherwise have (the plans', or the paper recipe's 1) *per domain*: that many
      source cases plus as many target cases (``target_share`` 0.5), as DANN's source and
      target mini-batches. With the fixed batch split in half, masking the target half would
      leave half the labelled cases per step of source-only training, and an unsupervised run
      would compare adaptation with half the supervision. It doubles the memory and time of a
      step (and of the validation batches, built with the same size).

    Target training cases are those of the trainer's target domain (``DomainAwareMixin``), or
    of dataset.json's ``target_domain`` / the rarest domain, or every training case of a
    single-domain dataset.
    """

    labelled_target_cases: LabelledSetting = None
    label_seed: int = 12345
    hidden_label_use: str = "mask"
    batch_per_domain: bool = False

    # ---- configuration ---------------------------------------------------------------
    @classmethod
    def labelled_setting(cls) -> LabelledSetting:
        """``labelled_target_cases``, or the environment's value when set."""
        from_env = config.labelled_target_cases()
        if from_env is not None:
            return from_env
        return check_labelled_setting(cls.labelled_target_cases, f"{cls.__name__}.labelled_target_cases")

    @classmethod
    def adapt_dataset_json(cls, dataset_json: dict) -> dict:
        dataset_json = super().adapt_dataset_json(dataset_json)
        if cls.hidden_label_use not in HIDDEN_LABEL_USES:
            raise ValueError(f"{cls.__name__}.hidden_label_use = {cls.hidden_label_use!r}: must be one of "
                             f"{HIDDEN_LABEL_USES}")
        labels = dataset_json.get("labels") or {}
        if cls.hidden_label_use != "mask" or IGNORE_KEY in labels:
            return dataset_json
        return {**dataset_json, "labels": with_ignore_label(labels)}  # a copy: the caller's dict stays

    # ---- the decision ----------------------------------------------------------------
    def check_training_cases(self, train_keys: List[str], val_keys: List[str]) -> None:
        super().check_training_cases(train_keys, val_keys)
        target, target_cases = self._target_training_cases(train_keys)
        unlabelled = sorted(set(unlabelled_cases(self.dataset_json)) & set(train_keys))
        saved = self.resumed_decision(
            "target_labels", missing="the checkpoint does not record which target training cases kept their labels "
            "(written by an older nnunet-transfer, or by another trainer). Fix: train again without --c.")
        if saved is not None:
            labelled, hidden = self._restore_decision(saved, target_cases, unlabelled)
            setting, seed = saved["setting"], saved["label_seed"]
        else:
            setting, seed = self.labelled_setting(), int(self.label_seed)
            labelled, hidden = draw_labelled_cases(target_cases, setting, unlabelled, seed)
        if self.fold == "all" and hidden and self.validate_fold_all:
            raise RuntimeError(f"{self.__class__.__name__}: fold 'all' validates its training cases, and "
                               f"{len(hidden)} of them have hidden labels. Fix: validate_fold_all = False.")
        self.target_labels = {"setting": setting, "label_seed": seed, "hidden_label_use": self.hidden_label_use,
                              "target_domain": target, "labelled": labelled, "hidden": hidden,
                              "unlabelled": unlabelled}
        self._told_no_best = False
        n_target = len(target_cases)
        how = ("their segmentation loss is masked" if self.hidden_label_use == "mask"
               else "they are left out of training")
        extra = f"; {len(unlabelled)} unlabelled in dataset.json" if unlabelled else ""
        self.print_to_log_file(
            f"nnunet-transfer: fold {self.fold}: {len(labelled)} of {n_target} target training cases keep their "
            f"labels (labelled_target_cases = {setting}, seed {seed}): {labelled}; {len(hidden)} hidden{extra}"
            f"{f' ({how})' if hidden or unlabelled else ''}")

    def _target_training_cases(self, train_keys: List[str]) -> Tuple[Optional[str], List[str]]:
        target = getattr(self, "active_target_domain", None)
        if target is not None:  # DomainAwareMixin decided it
            return target, sorted(k for k in train_keys if self.case_domains[k] == target)
        domains = read_domains(self.dataset_json, train_keys)
        names = set(domains.values())
        if len(names) <= 1:  # a single-domain (target) dataset: every training case is a target case
            return next(iter(names), None), sorted(train_keys)
        missing = sorted(k for k, v in domains.items() if v is None)
        if missing:
            raise RuntimeError(f"{len(missing)} training case(s) have no domain, e.g. {missing[:5]}, while others "
                               f"do; {self.__class__.__name__} cannot tell the target cases. Fix: add a \"domains\" "
                               f"map to dataset.json (nnunet-transfer convert/combine write it).")
        target = getattr(self, "target_domain", None) or target_domain_of(self.dataset_json, domains)
        return target, sorted(k for k in train_keys if domains[k] == target)

    def _restore_decision(self, saved: dict, target_cases: List[str],
                          unlabelled: List[str]) -> Tuple[List[str], List[str]]:
        from_env = config.labelled_target_cases()
        if from_env is not None and from_env != saved["setting"]:
            raise RuntimeError(
                f"{self.__class__.__name__}: {config.LABELLED_TARGET_CASES}={from_env} but the checkpoint's run "
                f"decided labelled_target_cases = {saved['setting']} (seed {saved['label_seed']}): "
                f"{len(saved['labelled'])} labelled target training cases {saved['labelled']}, {len(saved['hidden'])} "
                f"hidden. Fix: unset it or set it to {saved['setting']}, or train anew without --c.")
        if saved["hidden_label_use"] != self.hidden_label_use:
            raise RuntimeError(f"{self.__class__.__name__}: the checkpoint's run used hidden_label_use = "
                               f"{saved['hidden_label_use']!r}, this trainer {self.hidden_label_use!r}")
        before = sorted(saved["labelled"] + saved["hidden"])
        if before != sorted(set(target_cases) - set(unlabelled)):
            raise RuntimeError(f"{self.__class__.__name__}: the checkpoint's run drew from the target training cases "
                               f"{before}, this fold has {sorted(set(target_cases) - set(unlabelled))}; did the "
                               f"splits or dataset.json change? Fix: restore them, or train anew.")
        return list(saved["labelled"]), list(saved["hidden"])

    @property
    def label_free_cases(self) -> Set[str]:
        """Training cases whose labels are not used, hidden and unlabelled: the loss ignores them whole."""
        return set(self.target_labels["hidden"]) | set(self.target_labels["unlabelled"])

    def run_state(self) -> dict:
        state = super().run_state()
        if getattr(self, "target_labels", None) is not None:
            state["target_labels"] = {k: (list(v) if isinstance(v, list) else v) for k, v in self.target_labels.items()}
        return state

    # ---- nnU-Net overrides -----------------------------------------------------------
    def do_split(self):
        train_keys, val_keys = super().do_split()
        if self.hidden_label_use == "drop":
            removed = self.label_free_cases
            kept = [k for k in train_keys if k not in removed]
            if not kept:
                raise RuntimeError(f"{self.__class__.__name__}: fold {self.fold} has no labelled training case left "
                                   f"after dropping {len(removed)} hidden/unlabelled case(s). Fix: raise "
                                   f"labelled_target_cases ({config.LABELLED_TARGET_CASES}).")
            if len(kept) != len(train_keys):
                self.print_to_log_file(f"nnunet-transfer: fold {self.fold} trains on {len(kept)} labelled cases "
                                       f"(dropped {len(train_keys) - len(kept)} without labels)")
            self._split = (kept, val_keys)
        return self._split

    def get_dataloaders(self):
        if not self.batch_per_domain:
            return super().get_dataloaders()
        if getattr(self, "target_share", None) != 0.5:
            raise ValueError(f"{self.__class__.__name__}: batch_per_domain needs target_share = 0.5 (half of each "
                             f"batch from each domain), got {getattr(self, 'target_share', None)}")
        per_domain = self.batch_size
        self.batch_size = 2 * per_domain
        self.print_to_log_file(f"nnunet-transfer: batches of {self.batch_size} cases: {per_domain} source + "
                               f"{per_domain} target (batch_per_domain)")
        try:
            return super().get_dataloaders()
        finally:
            self.batch_size = per_domain

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        lm = self.label_manager
        key = tuple([-1] + [int(x) for x in lm.all_labels]) if lm.has_ignore_label else None
        hidden = self.label_free_cases  # validation cases are labelled; fold 'all' validates training cases
        return (LabelHidingDataset(dataset_tr, hidden, lm.ignore_label, key),
                LabelHidingDataset(dataset_val, hidden, lm.ignore_label, key))

    @property
    def uses_no_target_label(self) -> bool:
        """True when no target training case keeps its labels (the unsupervised regime)."""
        return getattr(self, "target_labels", None) is not None and not self.target_labels["labelled"]

    def on_epoch_end(self):
        if self.uses_no_target_label:
            # nnU-Net keeps (and announces) a new best checkpoint when the EMA pseudo-Dice on the
            # validation fold's labels beats _best_ema: no value beats infinity
            self._best_ema = float("inf")
            self._tell_no_best()
        super().on_epoch_end()

    def _tell_no_best(self) -> None:
        if not self._told_no_best:
            self.print_to_log_file(
                "nnunet-transfer: no checkpoint_best.pth: no target training label is used, and nnU-Net picks "
                "the best checkpoint by the pseudo-Dice on the validation fold's (target) labels; "
                "checkpoint_final.pth is the model")
            self._told_no_best = True

    def save_checkpoint(self, filename: str) -> None:
        if self.uses_no_target_label and os.path.basename(filename) == "checkpoint_best.pth":
            self._tell_no_best()
            return
        super().save_checkpoint(filename)

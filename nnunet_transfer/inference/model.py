"""A trained nnU-Net model folder, read for segmentation: channels, clipping, folds, post-processing.

nnU-Net keeps a trained model in ``$nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration``
with ``plans.json``, ``dataset.json``, ``dataset_fingerprint.json`` and one
``fold_X/checkpoint_final.pth`` per trained fold. ``load_model`` checks such a folder and
reads what segmenting raw BraTS cases needs from it:

- the input channels in training order, from ``dataset.json["channel_names"]`` (which
  ``nnunet-transfer convert`` writes as T1, T1Gd, T2, FLAIR: canonical t1n, t1c, t2w, t2f);
- the percentile clipping ``convert --clip-percentiles`` recorded in ``dataset.json``;
- the folds (default: every ``fold_N`` holding the checkpoint, else ``fold_all``);
- the post-processing files: the plugin's ``brats_postprocessing.json`` and nnU-Net's
  ``crossval_results_folds_*/postprocessing.pkl``.

Example:
    >>> modalities_of({"channel_names": {"0": "FLAIR", "1": "T1Gd", "2": "T2"}})
    ['t2f', 't1c', 't2w']
    >>> parse_folds(["0", "all", 2])
    [0, 'all', 2]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from nnunet_transfer.dataset_conversion.intensity import check_percentiles
from nnunet_transfer.dataset_conversion.layouts import CHANNEL_NAMES, canonical_modalities

logger = logging.getLogger(__name__)

Fold = Union[int, str]
#: The plugin's BraTS post-processing rules, next to a model (see ``nnunet_transfer.postprocessing``).
BRATS_RULES_FILE = "brats_postprocessing.json"
#: nnU-Net's post-processing, as ``nnUNetv2_find_best_configuration`` writes it.
NNUNET_POSTPROCESSING_FILE = "postprocessing.pkl"
DEFAULT_CHECKPOINT = "checkpoint_final.pth"
_DATASET_NAME = re.compile(r"^Dataset\d{3}_.+$")
_BY_CHANNEL_NAME = {name.lower(): modality for modality, name in CHANNEL_NAMES.items()}


def parse_folds(folds: Sequence[Fold]) -> List[Fold]:
    """Folds as nnU-Net takes them: integers, or ``"all"``."""
    parsed: List[Fold] = []
    for fold in folds:
        text = str(fold).strip()
        if text == "all":
            parsed.append("all")
        elif text.isdigit():
            parsed.append(int(text))
        else:
            raise ValueError(f"fold {fold!r} is neither a number nor 'all'")
        if parsed.count(parsed[-1]) > 1:
            raise ValueError(f"fold {parsed[-1]} given twice")
    if not parsed:
        raise ValueError("give at least one fold")
    return parsed


def folds_string(folds: Sequence[Fold]) -> str:
    """nnU-Net's folder suffix for folds, e.g. ``0_1_2`` (``crossval_results_folds_0_1_2``)."""
    return "_".join(str(f) for f in folds)


def modalities_of(dataset_json: dict) -> List[str]:
    """The canonical modalities (t1n, t1c, t2w, t2f) of a model's input channels, in channel order.

    ``channel_names`` are matched case-insensitively against ``convert``'s names (T1, T1Gd,
    T2, FLAIR) and the modality names and aliases (t1n, t1ce, flair, ...).
    """
    names = dataset_json.get("channel_names") or dataset_json.get("modality")
    if not isinstance(names, dict) or not names:
        raise ValueError("the model's dataset.json has no channel_names")
    try:
        ordered = [names[key] for key in sorted(names, key=int)]
    except (TypeError, ValueError):
        raise ValueError(f"the model's dataset.json channel_names has non-numeric keys: {sorted(names)}") from None
    modalities = []
    for index, name in enumerate(ordered):
        modality = _BY_CHANNEL_NAME.get(str(name).lower())
        if modality is None:
            try:
                modality = canonical_modalities([str(name)])[0]
            except ValueError:
                raise ValueError(
                    f"the model's input channel {index} is named {name!r}, which is no BraTS modality; segment needs "
                    f"a model trained on data converted by `nnunet-transfer convert` (channel names "
                    f"{', '.join(CHANNEL_NAMES.values())})") from None
        if modality in modalities:
            raise ValueError(f"the model's dataset.json names modality {name!r} twice in channel_names")
        modalities.append(modality)
    return modalities


def clipping_of(dataset_json: dict) -> Optional[Tuple[float, float]]:
    """The ``(low, high)`` percentiles ``convert --clip-percentiles`` recorded, or None."""
    record = dataset_json.get("intensity_clipping")
    if not record:
        return None
    within = record.get("within", "nonzero")
    if within != "nonzero":
        raise ValueError(f"the model's dataset.json clips intensities within {within!r}; this version of "
                         f"nnunet-transfer only clips within the nonzero voxels")
    return check_percentiles(record["percentiles"])


@dataclass(frozen=True)
class Model:
    """A checked nnU-Net model folder and what segmenting with it needs.

    Attributes:
        folder: the ``Trainer__Plans__Configuration`` folder.
        folds: the folds to use (checked to hold ``checkpoint``).
        checkpoint: the checkpoint file name in each fold folder.
        modalities: canonical modality per input channel, in training order.
        clipping: percentile clipping applied at conversion, or None.
        dataset_json: the model's dataset.json.
    """

    folder: Path
    folds: List[Fold]
    checkpoint: str
    modalities: List[str]
    clipping: Optional[Tuple[float, float]]
    dataset_json: dict = field(repr=False)

    @property
    def dataset(self) -> str:
        return self.folder.parent.name

    @property
    def trainer(self) -> str:
        return _split_name(self.folder)[0]

    @property
    def plans_name(self) -> str:
        return _split_name(self.folder)[1]

    @property
    def configuration(self) -> str:
        return _split_name(self.folder)[2]

    def checkpoint_files(self) -> List[Path]:
        return [self.folder / f"fold_{fold}" / self.checkpoint for fold in self.folds]

    def brats_rules_file(self) -> Optional[Path]:
        """``brats_postprocessing.json`` in the model folder or its cross-validation folder for these folds."""
        for folder in (self.folder, self.folder / f"crossval_results_folds_{folds_string(self.folds)}"):
            if (folder / BRATS_RULES_FILE).is_file():
                return folder / BRATS_RULES_FILE
        return None

    def nnunet_postprocessing_file(self) -> Optional[Path]:
        """nnU-Net's ``postprocessing.pkl`` determined on the cross-validation of these folds, if any."""
        path = self.folder / f"crossval_results_folds_{folds_string(self.folds)}" / NNUNET_POSTPROCESSING_FILE
        return path if path.is_file() else None

    def describe(self) -> str:
        clip = f", inputs clipped to percentiles {self.clipping[0]:g}-{self.clipping[1]:g}" if self.clipping else ""
        return (f"{self.dataset}/{self.folder.name} (folds {', '.join(map(str, self.folds))}, {self.checkpoint}; "
                f"channels {', '.join(self.modalities)}{clip})")


def _split_name(folder: Path) -> Tuple[str, str, str]:
    parts = folder.name.split("__")
    if len(parts) != 3:
        return folder.name, "", ""
    return parts[0], parts[1], parts[2]


def available_folds(folder: Path, checkpoint: str = DEFAULT_CHECKPOINT) -> List[Fold]:
    """Every ``fold_N`` holding ``checkpoint`` (sorted); ``["all"]`` when only ``fold_all`` does."""
    numbered = sorted(int(p.name[5:]) for p in Path(folder).glob("fold_*")
                      if p.name[5:].isdigit() and (p / checkpoint).is_file())
    if numbered:
        return list(numbered)
    if (Path(folder) / "fold_all" / checkpoint).is_file():
        return ["all"]
    return []


def find_model_folder(path: Path) -> Path:
    """``path`` itself when it is a model folder, or the single model folder inside a ``DatasetXXX`` folder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if (path / "plans.json").is_file() or (path / "dataset.json").is_file():
        return path
    inside = sorted(p for p in path.iterdir() if p.is_dir() and (p / "plans.json").is_file())
    if len(inside) == 1:
        logger.info("using the model %s in %s", inside[0].name, path)
        return inside[0]
    if inside:
        raise ValueError(f"{path} holds several models ({', '.join(p.name for p in inside)}); give one of them")
    raise FileNotFoundError(f"{path} is not an nnU-Net model folder: expected "
                            f"$nnUNet_results/DatasetXXX_Name/Trainer__Plans__Configuration with plans.json, "
                            f"dataset.json and fold_X/checkpoint_final.pth")


def load_model(path: Path, folds: Optional[Sequence[Fold]] = None, checkpoint: str = DEFAULT_CHECKPOINT) -> Model:
    """Check the model folder ``path`` and read its channels, clipping and folds.

    Raises FileNotFoundError for missing files (naming them) and ValueError for models
    segment cannot feed (channels that are no BraTS modality, unknown clipping).
    """
    folder = find_model_folder(Path(path))
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an nnU-Net model folder: {name} is missing")
    try:
        dataset_json = json.loads((folder / "dataset.json").read_text())
        json.loads((folder / "plans.json").read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder}: unreadable dataset.json or plans.json ({exc})") from None
    found = available_folds(folder, checkpoint)
    if folds is None:
        if not found:
            raise FileNotFoundError(f"{folder} has no fold_*/{checkpoint}; train the model first (or choose "
                                    f"another checkpoint)")
        chosen = found
    else:
        chosen = parse_folds(folds)
        missing = [f for f in chosen if not (folder / f"fold_{f}" / checkpoint).is_file()]
        if missing:
            have = ", ".join(map(str, available_folds(folder, checkpoint) or ["none"]))
            raise FileNotFoundError(f"{folder}: fold(s) {', '.join(map(str, missing))} have no {checkpoint} "
                                    f"(folds with it: {have})")
    if not _DATASET_NAME.match(folder.parent.name):
        logger.warning("%s is not inside a DatasetXXX_Name folder as nnU-Net writes it", folder)
    model = Model(folder, list(chosen), checkpoint, modalities_of(dataset_json), clipping_of(dataset_json),
                  dataset_json)
    logger.info("model %s", model.describe())
    return model

"""Where a strategy's cross-validation predictions and their references are.

A *predictions folder* is either

* fold-structured: an nnU-Net results folder ``$nnUNet_results/DatasetXXX/Trainer__Plans__Config``
  (or a ``predict-folds`` / ``ensemble-folds`` output) whose ``fold_k/validation`` folders hold
  ``<case><file_ending>`` predictions (``fold_all`` is skipped), or
* flat: one folder of predictions, e.g. nnU-Net's ``crossval_results_folds_*`` or an
  ``nnUNetv2_ensemble`` output (all cases count as one fold, ``"all"``).

References are found as nnU-Net's ``find_best_configuration`` finds them: the dataset's
``$nnUNet_preprocessed/DatasetXXX/gt_segmentations`` (what it determines post-processing
on), else ``$nnUNet_raw/DatasetXXX/labelsTr``. The dataset is the results folder's parent
(``DatasetXXX``) or the ``dataset_name`` of its ``plans.json``; failing both, the
``gt_dir`` that an existing ``summary.json`` of ours recorded. ``labels=`` overrides all.

Example:
    >>> pairs = collect_cases("$nnUNet_results/Dataset232_SSA/FT__nnUNetPlans__3d_fullres")  # doctest: +SKIP
    >>> pairs[0].fold, pairs[0].case_id  # doctest: +SKIP
    ('0', 'BraTS-SSA-00002-000')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

PathLike = Union[str, Path]
FLAT = "all"


@dataclass(frozen=True)
class CasePair:
    """One validation case: its fold, prediction file and reference file."""

    case_id: str
    fold: str
    prediction_file: Path
    reference_file: Path


def expand(path: PathLike) -> Path:
    """``path`` with ``$VARIABLES`` and ``~`` expanded."""
    return Path(os.path.expandvars(str(path))).expanduser()


def fold_sort_key(fold: str) -> tuple:
    """Sort key for fold names: numbered folds in numeric order, then named ones (``all``).

    >>> sorted(["10", "all", "2"], key=fold_sort_key)
    ['2', '10', 'all']
    """
    return (not fold.isdigit(), int(fold) if fold.isdigit() else 0, fold)


def fold_folders(root: PathLike, folds: Optional[Sequence[Union[int, str]]] = None) -> Dict[str, Path]:
    """``{fold: fold_k/validation}`` of a fold-structured folder, numerically sorted; ``{}`` if flat.

    Raises ``FileNotFoundError`` for a requested fold that is missing or has no validation folder.
    """
    root = expand(root)
    found = {p.name[len("fold_"):]: p for p in root.glob("fold_*") if p.is_dir() and p.name != "fold_all"
             and re.fullmatch(r"fold_\w+", p.name)}
    if not found:
        if folds:
            raise FileNotFoundError(f"{root} has no fold_* folders, so folds {', '.join(map(str, folds))} "
                                    f"cannot be selected.")
        return {}
    wanted = sorted(found, key=fold_sort_key) if not folds else [str(f) for f in folds]
    result = {}
    for fold in wanted:
        if fold not in found:
            raise FileNotFoundError(f"{root} has no fold_{fold} (it has {', '.join(sorted(found, key=fold_sort_key))}).")
        validation = found[fold] / "validation"
        if not validation.is_dir():
            raise FileNotFoundError(f"{found[fold]} has no validation folder (was fold {fold} trained and validated?).")
        result[fold] = validation
    return result


def file_ending(root: PathLike, default: str = ".nii.gz") -> str:
    """The ``file_ending`` of ``root/dataset.json``, else ``default``."""
    dataset_json = expand(root) / "dataset.json"
    if dataset_json.is_file():
        return json.loads(dataset_json.read_text()).get("file_ending", default)
    return default


def dataset_name(root: PathLike) -> Optional[str]:
    """The nnU-Net dataset (``DatasetXXX_Name``) a results folder belongs to, if it can be told."""
    root = expand(root)
    if root.parent.name.startswith("Dataset"):
        return root.parent.name
    plans = root / "plans.json"
    if plans.is_file():
        name = json.loads(plans.read_text()).get("dataset_name")
        if isinstance(name, str) and name.startswith("Dataset"):
            return name
    return None


def _recorded_gt(folders: Sequence[Path]) -> Optional[Path]:
    for folder in folders:
        for name in ("summary.json", "summary_brats.json"):
            summary = folder / name
            if summary.is_file():
                try:
                    recorded = (json.loads(summary.read_text()).get("config") or {}).get("gt_dir")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if recorded and Path(recorded).is_dir():
                    return Path(recorded)
    return None


def reference_folder(root: PathLike, labels: Optional[PathLike] = None,
                     prediction_folders: Sequence[Path] = ()) -> Path:
    """The folder of reference label maps for the predictions below ``root`` (see the module docstring)."""
    if labels is not None:
        labels = expand(labels)
        if not labels.is_dir():
            raise FileNotFoundError(f"The reference folder {labels} does not exist.")
        return labels
    from nnunet_transfer import config

    name = dataset_name(root)
    tried = []
    if name is not None:
        for base, sub in ((config.nnunet_preprocessed(required=False), "gt_segmentations"),
                          (config.nnunet_raw(required=False), "labelsTr")):
            if base is not None:
                candidate = base / name / sub
                if candidate.is_dir():
                    return candidate
                tried.append(str(candidate))
    recorded = _recorded_gt(list(prediction_folders))
    if recorded is not None:
        return recorded
    where = f" (looked for {', '.join(tried)})" if tried else (
        "" if name else f" ({expand(root)} is not below an nnU-Net DatasetXXX folder)")
    raise FileNotFoundError(f"No reference segmentations found for the predictions in {expand(root)}{where}; "
                            f"pass the references (--labels DIR) or set nnUNet_preprocessed / nnUNet_raw.")


def collect_cases(predictions: PathLike, labels: Optional[PathLike] = None,
                  folds: Optional[Sequence[Union[int, str]]] = None,
                  ending: Optional[str] = None) -> List[CasePair]:
    """Every validation case below ``predictions`` with its reference, sorted by fold then case id.

    Raises ``FileNotFoundError`` when a folder or a case's reference is missing, and
    ``ValueError`` when a case is validated in more than one fold.
    """
    root = expand(predictions)
    if not root.is_dir():
        raise FileNotFoundError(f"The predictions folder {root} does not exist.")
    ending = ending or file_ending(root)
    folders = fold_folders(root, folds) or {FLAT: root}
    if FLAT in folders and (root / "fold_all").is_dir():
        raise FileNotFoundError(f"{root} holds only fold_all, a model trained on every case: it has no "
                                f"cross-validation predictions to tune on. Use the per-fold models, or this model's "
                                f"`nnunet-transfer predict-folds` output.")
    reference = reference_folder(root, labels, list(folders.values()))
    pairs: List[CasePair] = []
    seen: Dict[str, str] = {}
    for fold, folder in folders.items():
        cases = sorted(p.name[: -len(ending)] for p in folder.iterdir()
                       if p.is_file() and p.name.endswith(ending) and not p.name.startswith("."))
        if not cases:
            raise FileNotFoundError(f"No predictions ending in {ending!r} in {folder}.")
        for case in cases:
            if case in seen:
                raise ValueError(f"Case {case} is predicted in fold {seen[case]} and in fold {fold} of {root}; "
                                 f"every case must be validated once (choose disjoint folds with --folds).")
            seen[case] = fold
            ref = reference / f"{case}{ending}"
            if not ref.is_file():
                raise FileNotFoundError(f"Case {case} (fold {fold}): the reference {ref} does not exist "
                                        f"(prediction {folder / (case + ending)}).")
            pairs.append(CasePair(case, fold, folder / f"{case}{ending}", ref))
    return pairs

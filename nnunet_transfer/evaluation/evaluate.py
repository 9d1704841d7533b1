"""Evaluate a folder of predictions against references, in nnU-Net's ``summary.json`` layout.

Each prediction ``PRED_DIR/<case><file_ending>`` is compared with
``GT_DIR/<case><file_ending>`` (label maps: 0 background, 1 NCR, 2 ED, 3 ET). The summary
has nnU-Net's keys ``metric_per_case`` (one entry per case with ``reference_file``,
``prediction_file``, ``case_id`` and ``metrics``), ``mean`` (per structure, over cases)
and ``foreground_mean`` (over the three labels NCR, ED and ET, the paper's "Average"),
plus ``case_ids`` and the evaluation ``config``. Structures are keyed NCR, ED, ET and, with
regions, WT (1+2+3), TC (1+3) and ET-region (3); metrics are Dice, IoU, HD95 (mm), TP, FP,
FN, TN (voxels), n_ref, n_pred (voxels), volume_ref_mm3, volume_pred_mm3 and, with
``lesion_wise``, LesionWise_Dice, LesionWise_HD95, Num_TP, Num_FP, Num_FN.

Example:
    >>> summary = evaluate_folder("labelsTr", "fold_0/validation", "fold_0/validation/summary.json")  # doctest: +SKIP
    >>> summary["mean"]["ET"]["HD95"]  # doctest: +SKIP
    3.2
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from nnunet_transfer.evaluation.metrics import EMPTY_PENALTY, HD95_DEFINITIONS, LABELS, label_map_metrics, structures

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


def read_label_map(path: PathLike) -> Tuple[np.ndarray, Tuple[float, ...], dict]:
    """Read a label image with SimpleITK: (array in z, y, x order, spacing in the same order, geometry)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    geometry = {"size": tuple(image.GetSize()), "spacing": tuple(image.GetSpacing()),
                "origin": tuple(image.GetOrigin()), "direction": tuple(image.GetDirection())}
    return array, tuple(float(s) for s in reversed(image.GetSpacing())), geometry


def _check_geometry(case_id: str, ref: dict, pred: dict, ref_file: Path, pred_file: Path) -> None:
    problems = []
    if ref["size"] != pred["size"]:
        problems.append(f"size {pred['size']} vs reference {ref['size']}")
    for key, tolerance in (("spacing", 1e-4), ("origin", 1e-3), ("direction", 1e-4)):
        if len(ref[key]) != len(pred[key]) or not np.allclose(ref[key], pred[key], atol=tolerance, rtol=1e-5):
            problems.append(f"{key} {pred[key]} vs reference {ref[key]}")
    if problems:
        raise ValueError(f"Case {case_id}: the prediction {pred_file} does not match the geometry of the "
                         f"reference {ref_file}: " + "; ".join(problems))


def evaluate_case(reference_file: PathLike, prediction_file: PathLike, case_id: Optional[str] = None,
                  regions: bool = True, hd95: str = "medpy", lesion_wise: bool = False,
                  empty_penalty: float = EMPTY_PENALTY) -> dict:
    """One ``metric_per_case`` entry: metrics of every label (and region) of one case."""
    reference_file, prediction_file = Path(reference_file), Path(prediction_file)
    case_id = case_id or reference_file.name.split(".")[0]
    for kind, path in (("reference", reference_file), ("prediction", prediction_file)):
        if not path.is_file():
            raise FileNotFoundError(f"Case {case_id}: the {kind} file {path} does not exist.")
    ref, spacing, ref_geometry = read_label_map(reference_file)
    pred, _, pred_geometry = read_label_map(prediction_file)
    _check_geometry(case_id, ref_geometry, pred_geometry, reference_file, prediction_file)
    metrics = label_map_metrics(ref, pred, spacing, regions=regions, hd95_definition=hd95,
                                empty_penalty=empty_penalty)
    if lesion_wise:
        from nnunet_transfer.evaluation.lesionwise import lesion_wise_metrics

        cache: Dict[tuple, dict] = {}
        for name, values in structures(regions).items():
            key = tuple(sorted(values))
            if key not in cache:
                cache[key] = lesion_wise_metrics(np.isin(ref, key), np.isin(pred, key), spacing,
                                                 penalty=empty_penalty)
            metrics[name].update(cache[key])
    return {"case_id": case_id, "reference_file": str(reference_file), "prediction_file": str(prediction_file),
            "metrics": metrics}


def _evaluate_star(kwargs: dict) -> dict:
    return evaluate_case(**kwargs)


def _mean(entries: List[dict]) -> Dict[str, Dict[str, float]]:
    mean: Dict[str, Dict[str, float]] = {}
    if not entries:
        return mean
    for name in entries[0]["metrics"]:
        mean[name] = {}
        for metric in entries[0]["metrics"][name]:
            values = [e["metrics"][name][metric] for e in entries]
            values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
            mean[name][metric] = float(np.mean(values)) if values else float("nan")
    return mean


def summarize(entries: List[dict], config: Optional[dict] = None) -> dict:
    """Assemble the summary dict from ``metric_per_case`` entries."""
    mean = _mean(entries)
    labels = [name for name in LABELS if name in mean]
    foreground = {metric: float(np.mean([mean[name][metric] for name in labels]))
                  for metric in (mean[labels[0]] if labels else {})}
    return {"config": dict(config or {}), "case_ids": [e["case_id"] for e in entries],
            "foreground_mean": foreground, "mean": mean, "metric_per_case": entries}


def write_json_atomic(data: dict, path: PathLike) -> Path:
    """Write ``data`` as JSON to a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def list_cases(folder: PathLike, file_ending: str = ".nii.gz") -> List[str]:
    """Case ids of the files ending in ``file_ending`` in ``folder`` (sorted)."""
    folder = Path(folder)
    return sorted(p.name[: -len(file_ending)] for p in folder.iterdir()
                  if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith("."))


def evaluate_folder(gt_dir: PathLike, pred_dir: PathLike, output_file: Optional[PathLike] = None,
                    regions: bool = True, num_processes: int = 1, hd95: str = "medpy", lesion_wise: bool = False,
                    file_ending: str = ".nii.gz", case_ids: Optional[Sequence[str]] = None,
                    empty_penalty: float = EMPTY_PENALTY) -> dict:
    """Evaluate every prediction in ``pred_dir`` (or the given ``case_ids``) against ``gt_dir``.

    Args:
        gt_dir: folder of reference label maps (nnU-Net's ``labelsTr`` or ``gt_segmentations``).
        pred_dir: folder of predicted label maps with the same file names.
        output_file: where to write the summary (atomically); ``None`` writes nothing.
        regions: also evaluate the BraTS regions WT, TC and ET-region.
        num_processes: worker processes (cases are independent).
        hd95: ``"medpy"`` (default) or ``"brats2023"``; see :mod:`.metrics`.
        lesion_wise: add the BraTS 2023 lesion-wise metrics; see :mod:`.lesionwise`.
        file_ending: image file ending, as in nnU-Net's dataset.json.
        case_ids: cases to evaluate; each needs both files. Default: every prediction.
        empty_penalty: HD95 when exactly one of the masks is empty (mm).

    Returns:
        The summary dict (see the module docstring).
    """
    if hd95 not in HD95_DEFINITIONS:
        raise ValueError(f"Unknown HD95 definition {hd95!r}; choose one of {', '.join(HD95_DEFINITIONS)}.")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for kind, folder in (("reference", gt_dir), ("prediction", pred_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"The {kind} folder {folder} does not exist.")
    if case_ids is None:
        case_ids = list_cases(pred_dir, file_ending)
        if not case_ids:
            raise FileNotFoundError(f"No predictions ending in {file_ending!r} in {pred_dir}.")
    case_ids = list(case_ids)
    missing = [f"{c} ({kind} {folder / (c + file_ending)})" for c in case_ids
               for kind, folder in (("reference", gt_dir), ("prediction", pred_dir))
               if not (folder / (c + file_ending)).is_file()]
    if missing:
        raise FileNotFoundError(f"Missing files for {len(missing)} case(s): " + ", ".join(missing[:10]))
    jobs = [dict(reference_file=gt_dir / (c + file_ending), prediction_file=pred_dir / (c + file_ending),
                 case_id=c, regions=regions, hd95=hd95, lesion_wise=lesion_wise, empty_penalty=empty_penalty)
            for c in case_ids]
    if num_processes > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            entries = list(tqdm(pool.map(_evaluate_star, jobs), total=len(jobs), desc="evaluate", disable=None))
    else:
        entries = [_evaluate_star(job) for job in tqdm(jobs, desc="evaluate", disable=None)]
    config = {"hd95": hd95, "empty_penalty": float(empty_penalty), "regions": bool(regions),
              "lesion_wise": bool(lesion_wise), "file_ending": file_ending,
              "gt_dir": str(gt_dir), "pred_dir": str(pred_dir)}
    summary = summarize(entries, config)
    if output_file is not None:
        write_json_atomic(summary, output_file)
        logger.info("wrote %s (%d cases)", output_file, len(entries))
    return summary

"""Apply post-processing rules to folders of predictions.

``apply_to_folder(IN, OUT, rules)`` post-processes every ``<case><file_ending>`` in ``IN``
(a flat folder), or, when ``IN`` is fold-structured (``fold_k/validation``, see
:mod:`.sources`), every fold into ``OUT/fold_k/validation``. Images keep their geometry and
pixel type. Everything is written into a staging folder beside ``OUT`` and moved into place
at the end; the last file moved is the marker ``brats_postprocessing_applied.json`` (the
rules, their file and the source), so a folder with the marker is complete. A rerun with the
same rules and source finds the marker and does nothing; with other rules it redoes the work.
``dataset.json`` and ``plans.json`` of ``IN`` are copied along (nnU-Net's commands read them).

Example:
    >>> from nnunet_transfer.postprocessing.io import read_rules
    >>> apply_to_folder("fold_0/validation", "pp", read_rules("brats_postprocessing.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from nnunet_transfer.postprocessing.rules import Rules, apply, check_label_map
from nnunet_transfer.postprocessing.sources import expand, file_ending, fold_folders

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
MARKER = "brats_postprocessing_applied.json"
COPIED = ("dataset.json", "plans.json")


def apply_to_file(source: PathLike, target: PathLike, rules: Rules) -> None:
    """Post-process one label image (geometry and pixel type kept)."""
    import SimpleITK as sitk
    import numpy as np

    source, target = Path(source), Path(target)
    case = source.name.split(".")[0]
    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as exc:
        raise ValueError(f"Case {case}: cannot read {source}: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"Case {case}: {source} is not a label map (it has "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel)")
    array = sitk.GetArrayFromImage(image)
    try:
        check_label_map(array, "the prediction")
    except ValueError as exc:
        raise ValueError(f"Case {case}: {source}: {exc}") from None
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    out = sitk.GetImageFromArray(np.ascontiguousarray(apply(array, spacing, rules)))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(target), useCompression=True)


def _apply_star(job: Tuple[Path, Path, Rules]) -> None:
    apply_to_file(*job)


def _marker(rules: Rules, source: Path, rules_file: Optional[PathLike], cases: Dict[str, List[str]]) -> dict:
    return {"rules": rules.to_dict(), "rules_file": None if rules_file is None else str(rules_file),
            "source": str(source), "cases": cases}


def is_current(out_dir: PathLike, rules: Rules, source: PathLike, parts: Optional[Sequence[str]] = None) -> bool:
    """Whether ``out_dir`` holds a finished post-processing of ``source`` with ``rules``.

    ``parts``: the sub-folders needed (``"fold_k/validation"``, ``"."`` for a flat folder);
    default: whatever was done.
    """
    marker = Path(out_dir) / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    done = set(recorded.get("cases") or {})
    return (recorded.get("rules") == rules.to_dict() and recorded.get("source") == str(expand(source))
            and (parts is None or set(parts) <= done))


def apply_to_folder(in_dir: PathLike, out_dir: PathLike, rules: Rules, num_processes: int = 1,
                    ending: Optional[str] = None, folds: Optional[Sequence[Union[int, str]]] = None,
                    rules_file: Optional[PathLike] = None, overwrite: bool = False) -> Path:
    """Post-process a flat or fold-structured predictions folder into ``out_dir`` (see the module docstring).

    Args:
        in_dir: predictions (flat, or with ``fold_k/validation``).
        out_dir: output folder, mirroring ``in_dir``'s layout; must not be ``in_dir``.
        rules: the rules (e.g. :func:`~.io.read_rules` of ``brats_postprocessing.json``).
        num_processes: worker processes.
        ending: image file ending (default: from ``dataset.json``, else ``.nii.gz``).
        folds: fold-structured input only: the folds to process (default all but ``fold_all``).
        rules_file: recorded in the marker.
        overwrite: redo even when ``out_dir`` is already current.

    Returns:
        ``out_dir``.
    """
    source, out_dir = expand(in_dir), expand(out_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"The predictions folder {source} does not exist.")
    inside = out_dir.resolve().relative_to(source.resolve()).parts if out_dir.resolve().is_relative_to(
        source.resolve()) else None
    if inside is not None and (not inside or inside[0].startswith("fold_")):
        raise ValueError(f"The output folder {out_dir} would overwrite the predictions in {source}; choose another.")
    ending = ending or file_ending(source)
    folders = fold_folders(source, folds)
    layout = {f"fold_{fold}/validation": folder for fold, folder in folders.items()} if folders else {"": source}
    if not overwrite and is_current(out_dir, rules, source, [k or "." for k in layout]):
        logger.info("%s is already post-processed with these rules", out_dir)
        return out_dir
    cases: Dict[str, List[str]] = {}
    jobs = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for relative, folder in layout.items():
            names = sorted(p.name for p in folder.iterdir()
                           if p.is_file() and p.name.endswith(ending) and not p.name.startswith("."))
            if not names:
                raise FileNotFoundError(f"No predictions ending in {ending!r} in {folder}.")
            (staging / relative).mkdir(parents=True, exist_ok=True)
            cases[relative or "."] = [n[: -len(ending)] for n in names]
            jobs += [(folder / n, staging / relative / n, rules) for n in names]
        if num_processes > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
                list(pool.map(_apply_star, jobs))
        else:
            for job in jobs:
                _apply_star(job)
        for name in COPIED:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        (staging / MARKER).write_text(json.dumps(_marker(rules, source, rules_file, cases), indent=2))
        _move_into_place(staging, out_dir, ending)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("post-processed %d case(s) of %s into %s (%s)", len(jobs), source, out_dir, rules.describe())
    return out_dir


def _move_into_place(staging: Path, out_dir: Path, ending: str) -> None:
    """Move staged files into ``out_dir`` (the marker last); a fresh ``out_dir`` is renamed at once.

    In an existing ``out_dir`` the old marker goes first (the folder is incomplete until the
    new one is in place), then the summaries in the folders written to (they describe the old
    files) and, if the folder was made here (it had the marker), predictions of cases no
    longer present and folders left empty.
    """
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    owned = (out_dir / MARKER).is_file()
    (out_dir / MARKER).unlink(missing_ok=True)
    staged = {p.relative_to(staging) for p in staging.rglob("*") if p.is_file() and p.name != MARKER}
    written = {r.parent for r in staged}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(out_dir)
        if relative.parts[0].startswith("."):
            continue
        summary = path.name in ("summary.json", "summary_brats.json") and (relative.parent in written or owned)
        if summary or (owned and path.name.endswith(ending) and relative not in staged):
            path.unlink()
    for folder in sorted((p for p in out_dir.rglob("*") if p.is_dir() and owned), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()) and not folder.name.startswith("."):
            folder.rmdir()
    for relative in sorted(staged) + [Path(MARKER)]:
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)

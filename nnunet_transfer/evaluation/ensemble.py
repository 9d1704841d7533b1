"""A strategy ensemble as a comparison row: nnU-Net's ensembling of each fold's validation.

``ensemble_folds([A, B], OUT)`` averages, fold by fold, the softmax probabilities that
``nnUNetv2_train ... --npz`` (or ``--val --npz``) saved in ``A/fold_k/validation`` and
``B/fold_k/validation`` with nnU-Net's own ``merge_files`` (what ``nnUNetv2_ensemble`` runs
for each case: mean probabilities, nnU-Net's label conversion, its image writer), and
writes ``OUT/fold_k/validation/<case>.nii.gz``: the layout of a results folder, so ``OUT``
is a strategy path for :func:`~.compare.compare_strategies` and a predictions folder for
``tune-postprocessing``. Members may come from different datasets
(e.g. DANN on the combined dataset and fine-tuning on the target) as long as their folds
validate the same cases and their label sets match; ``dataset.json`` and ``plans.json`` of
the first member are used and copied to ``OUT``, with ``ensemble.json`` naming the members.
The output is staged beside ``OUT`` and moved into place when complete.

Within one dataset, ``nnUNetv2_find_best_configuration DATASET -tr A B -f 0 ... 9`` makes the
same ensemble, with all folds pooled in one folder (``ensembles/ensemble___...``).

Example:
    >>> ensemble_folds(["$nnUNet_results/Dataset233_GLISSA/nnUNetTrainerDANN__nnUNetPlans_from231__3d_fullres",
    ...                 "$nnUNet_results/Dataset232_SSA/nnUNetTrainerFineTune__nnUNetPlans_from231__3d_fullres"],
    ...                "runs/ensemble_dann_ft")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
MARKER = "ensemble.json"


def _member_files(member: Path, folds: Optional[Sequence[Union[int, str]]]) -> Dict[str, Dict[str, Path]]:
    from nnunet_transfer.postprocessing.sources import fold_folders

    folders = fold_folders(member, folds)
    if not folders:
        raise FileNotFoundError(f"{member} has no fold_k/validation folders; give nnU-Net results folders "
                                f"(Dataset.../Trainer__Plans__Configuration) as ensemble members.")
    files = {}
    for fold, validation in folders.items():
        npz = {p.name[:-4]: p for p in validation.glob("*.npz")}
        if not npz:
            raise FileNotFoundError(f"{validation} holds no .npz probabilities; rerun the validation with them: "
                                    f"nnUNetv2_train DATASET CONFIG {fold} -tr TRAINER -p PLANS --val --npz")
        missing = [c for c in npz if not (validation / f"{c}.pkl").is_file()]
        if missing:
            raise FileNotFoundError(f"{validation}: the .pkl properties of case(s) {', '.join(sorted(missing))} "
                                    f"are missing (nnU-Net writes them with the .npz).")
        files[fold] = npz
    return files


def _is_current(out_dir: Path, marker: dict, files: List[Dict[str, Dict[str, Path]]]) -> bool:
    """Same members and folds as recorded, and no member probability newer than the record."""
    path = out_dir / MARKER
    if not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    if recorded.get("members") != marker["members"] or recorded.get("folds") != marker["folds"]:
        return False
    newest = max(p.stat().st_mtime_ns for member in files for fold in member.values() for p in fold.values())
    return path.stat().st_mtime_ns >= newest


def ensemble_folds(members: Sequence[PathLike], out_dir: PathLike,
                   folds: Optional[Sequence[Union[int, str]]] = None, num_processes: int = 1,
                   overwrite: bool = False) -> Path:
    """Ensemble the members' fold validations into ``out_dir/fold_k/validation`` (see the module docstring).

    Raises ``FileNotFoundError`` for missing folds, probabilities or plans, and ``ValueError``
    when members differ in folds, cases or labels.
    """
    from nnunet_transfer.postprocessing.sources import expand

    members = [expand(m) for m in members]
    out_dir = expand(out_dir)
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    if len(set(members)) != len(members):
        raise ValueError(f"an ensemble member is given twice: {', '.join(map(str, members))}")
    for member in members:
        for name in ("dataset.json", "plans.json"):
            if not (member / name).is_file():
                raise FileNotFoundError(f"{member} is not an nnU-Net results folder: {name} is missing.")
    from nnunet_transfer.dataset_conversion.labels import without_ignore

    labels = [json.loads((m / "dataset.json").read_text()).get("labels") for m in members]
    for member, member_labels in zip(members[1:], labels[1:]):
        if without_ignore(member_labels or {}) != without_ignore(labels[0] or {}):  # ignore: no output channel
            raise ValueError(f"{member} has labels {member_labels} but {members[0]} has {labels[0]}; "
                             f"only models of the same label set can be ensembled.")
    files = [_member_files(m, folds) for m in members]
    fold_names = list(files[0])
    for member, member_files in zip(members[1:], files[1:]):
        if list(member_files) != fold_names:
            raise ValueError(f"{member} has folds {list(member_files)} but {members[0]} has {fold_names}; "
                             f"choose common folds with folds= (--folds).")
        for fold in fold_names:
            only_first = sorted(set(files[0][fold]) - set(member_files[fold]))
            only_here = sorted(set(member_files[fold]) - set(files[0][fold]))
            if only_first or only_here:
                raise ValueError(f"fold {fold}: {member} and {members[0]} validated different cases "
                                 f"(only in {members[0].name}: {only_first[:5]}; only in {member.name}: "
                                 f"{only_here[:5]}).")
    marker = {"members": [str(m) for m in members], "folds": fold_names}
    if not overwrite and _is_current(out_dir, marker, files):
        logger.info("%s already holds this ensemble", out_dir)
        return out_dir

    from nnunetv2.ensembling.ensemble import merge_files
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((members[0] / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((members[0] / "plans.json").read_text()))
    reader_writer = plans_manager.image_reader_writer_class()
    label_manager = plans_manager.get_label_manager(dataset_json)
    ending = dataset_json.get("file_ending", ".nii.gz")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        jobs = []
        for fold in fold_names:
            target = staging / f"fold_{fold}" / "validation"
            target.mkdir(parents=True)
            (target / "dataset.json").write_text(json.dumps(dataset_json, indent=2))  # as nnUNetv2_ensemble
            for case in sorted(files[0][fold]):
                jobs.append(([str(f[fold][case]) for f in files], str(target / case), ending, reader_writer,
                             label_manager, False))
            logger.info("fold %s: ensembling %d case(s)", fold, len(files[0][fold]))
        if num_processes > 1 and len(jobs) > 1:
            from multiprocessing import get_context

            with get_context("spawn").Pool(num_processes) as pool:
                pool.starmap(merge_files, jobs)
        else:
            for job in jobs:
                merge_files(*job)
        for name in ("dataset.json", "plans.json"):
            shutil.copy2(members[0] / name, staging / name)
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        if out_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, backup / out_dir.name)
            os.replace(staging, out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote the ensemble of %s to %s", ", ".join(str(m) for m in members), out_dir)
    return out_dir


def ensemble_members(out_dir: PathLike) -> List[str]:
    """The members recorded in an :func:`ensemble_folds` output (``[]`` if none)."""
    marker = Path(out_dir) / MARKER
    return list(json.loads(marker.read_text()).get("members", [])) if marker.is_file() else []

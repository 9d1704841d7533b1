"""What each row of a comparison trained with, read from nnU-Net's own ``debug.json``.

nnU-Net writes ``fold_k/debug.json`` (the trainer's attributes) when a training starts. The
comparison's notes quote, per row, the optimizer, initial learning rate, schedule, batch size
and seed from it, so that a row whose recipe a plan changed (for example the demo's
fine-tuning at ``nnUNetTransfer_initial_lr = 1e-2``) says so in the table itself. Rows without a
results folder (predictions of the source model) are left out; folds that disagree are named.

Example:
    >>> describe({"optimizer": "SGD (\\nParameter Group 0 ...", "initial_lr": 0.01, "num_epochs": 4,
    ...           "num_iterations_per_epoch": 50, "batch_size": 2, "poly_exponent": 0.9, "training_seed": 0})
    'SGD, initial lr 0.01, poly 0.9, 4 epochs x 50 iterations, batch size 2, seed 0'

The label-hiding trainers that give each domain the batch size (``batch_per_domain``) say so:
``batch size 2 per domain`` (2 source and 2 target cases per step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from nnunet_transfer.postprocessing.sources import expand, fold_sort_key

PathLike = Union[str, Path]


def describe(debug: Mapping) -> str:
    """One line for a training's ``debug.json`` values (missing entries are left out)."""
    parts = []
    optimizer = str(debug.get("optimizer", "")).split("(")[0].strip()
    if optimizer:
        parts.append(optimizer)
    if debug.get("initial_lr") is not None:
        parts.append(f"initial lr {float(debug['initial_lr']):g}")
    if debug.get("poly_exponent") is not None:
        parts.append(f"poly {float(debug['poly_exponent']):g}")
    if debug.get("num_epochs") is not None and debug.get("num_iterations_per_epoch") is not None:
        parts.append(f"{debug['num_epochs']} epochs x {debug['num_iterations_per_epoch']} iterations")
    if debug.get("batch_size") is not None:
        per_domain = str(debug.get("batch_per_domain")) == "True"  # nnU-Net stores str(value)
        parts.append(f"batch size {debug['batch_size']}{' per domain' if per_domain else ''}")
    if "training_seed" in debug:  # this plugin's trainers; stock nnU-Net records none
        seed = debug["training_seed"]
        parts.append("unseeded" if seed in (None, "None") else f"seed {seed}")
    return ", ".join(parts)


def debug_files(paths: Union[PathLike, Sequence[PathLike]],
                folds: Optional[Sequence[str]] = None) -> List[Tuple[str, Path]]:
    """``(fold, fold_k/debug.json)`` of a row's results folders, folder by folder, folds sorted by name.

    Only the compared folds: ``folds`` (default: every ``fold_k``), never ``fold_all``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    wanted = None if folds is None else set(map(str, folds))
    found = [(debug.parent.name[len("fold_"):], debug) for raw in paths
             for debug in sorted(expand(raw).glob("fold_*/debug.json"))]
    return [(fold, debug) for fold, debug in found if fold != "all" and (wanted is None or fold in wanted)]


def row_recipe(paths: Union[PathLike, Sequence[PathLike]], folds: Optional[Sequence[str]] = None) -> Optional[str]:
    """The recipe of a row's training folds (one line; per fold when they differ), or None without any."""
    found: Dict[str, str] = {}
    for fold, debug in debug_files(paths, folds):
        try:
            found[fold] = describe(json.loads(debug.read_text()))
        except (OSError, ValueError):
            continue
    if not found:
        return None
    if len(set(found.values())) == 1:
        return next(iter(found.values()))
    return "; ".join(f"fold {fold}: {found[fold]}" for fold in sorted(found, key=fold_sort_key))


def recipe_notes(strategies: Mapping[str, Union[PathLike, Sequence[PathLike]]],
                 folds: Optional[Sequence[str]] = None) -> List[str]:
    """One note per recipe: the rows that trained with it (from nnU-Net's debug.json)."""
    groups: Dict[str, List[str]] = {}
    for name, paths in strategies.items():
        recipe = row_recipe(paths, folds)
        if recipe:
            groups.setdefault(recipe, []).append(name)
    return [f"Trained with {recipe} (nnU-Net's debug.json): {', '.join(names)}." for recipe, names in groups.items()]

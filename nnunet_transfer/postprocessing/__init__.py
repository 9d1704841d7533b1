"""BraTS post-processing: small-component removal and ET -> NCR, tuned on cross-validation.

Modules: :mod:`.rules` (the :class:`Rules` and :func:`apply`), :mod:`.tune` (the nnU-Net-style
greedy search), :mod:`.io` (the versioned ``brats_postprocessing.json``), :mod:`.sources`
(where fold predictions and references are), :mod:`.folders` (rules applied to folders).
Everything is importable from here; modules load lazily.

Example:
    >>> import numpy as np
    >>> from nnunet_transfer.postprocessing import Rules, apply
    >>> seg = np.zeros((8, 8, 8), np.uint8); seg[1:6, 1:6, 1:6] = 2; seg[7, 7, 7] = 2
    >>> int(apply(seg, (1, 1, 1), Rules({"WT": 5}))[7, 7, 7])
    0
"""

from __future__ import annotations

from nnunet_transfer._lazy import lazy_api

_API = {
    "Rules": ".rules",
    "apply": ".rules",
    "remove_small_components": ".rules",
    "relabel_et_as_ncr": ".rules",
    "check_label_map": ".rules",
    "STRUCTURES": ".rules",
    "REGIONS": ".rules",
    "read_rules": ".io",
    "read_rules_file": ".io",
    "write_rules": ".io",
    "FILE_NAME": ".io",
    "SCHEMA_VERSION": ".io",
    "Candidates": ".tune",
    "TuningResult": ".tune",
    "METRICS": ".tune",
    "tune": ".tune",
    "tune_folder": ".tune",
    "load_case": ".tune",
    "load_cases": ".tune",
    "CasePair": ".sources",
    "collect_cases": ".sources",
    "reference_folder": ".sources",
    "apply_to_file": ".folders",
    "apply_to_folder": ".folders",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)

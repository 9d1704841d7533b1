"""Evaluation: Dice and HD95 per BraTS label and region, lesion-wise scores, Table-2 comparisons.

Table-2 rows may also be post-processed strategies (:func:`postprocess_strategy`) and
strategy ensembles (:func:`ensemble_folds`).

Everything is importable from here; modules load lazily, so importing the package is cheap.

Example:
    >>> import numpy as np
    >>> from nnunet_transfer.evaluation import dice
    >>> dice(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool))
    1.0
"""

from __future__ import annotations

from nnunet_transfer._lazy import lazy_api

_API = {
    "dice": ".metrics",
    "hd95": ".metrics",
    "surface_distances": ".metrics",
    "binary_metrics": ".metrics",
    "label_map_metrics": ".metrics",
    "bounding_box": ".metrics",
    "structures": ".metrics",
    "LABELS": ".metrics",
    "REGIONS": ".metrics",
    "HD95_DEFINITIONS": ".metrics",
    "EMPTY_PENALTY": ".metrics",
    "border_voxels": ".surfaces",
    "neighbour_codes": ".surfaces",
    "surfel_area_table": ".surfaces",
    "lesion_wise_metrics": ".lesionwise",
    "evaluate_case": ".evaluate",
    "evaluate_folder": ".evaluate",
    "read_label_map": ".evaluate",
    "summarize": ".evaluate",
    "write_json_atomic": ".evaluate",
    "compare_strategies": ".compare",
    "load_strategy": ".compare",
    "build_table": ".compare",
    "to_markdown": ".compare",
    "postprocess_strategy": ".compare",
    "ensemble_folds": ".ensemble",
    "predict_folds": ".cross_domain",
    "target_dataset_name": ".cross_domain",
}


__getattr__, __dir__, __all__ = lazy_api(__name__, _API)

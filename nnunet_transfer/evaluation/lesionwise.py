"""BraTS 2023 lesion-wise Dice and HD95 (the metrics that ranked the SSA challenge).

The rules of the BraTS 2023 evaluation script (``rachitsaluja/BraTS-2023-Metrics``):

1. Reference lesions are the 26-connected components of the reference mask; the mask is
   dilated (``dilation_iterations`` = 3 iterations of the 18-connected element for GLI and
   SSA) and reference components lying in the same dilated component are one lesion.
2. Every predicted 26-connected component touching a lesion's own dilation counts for that
   lesion (a component may count for several lesions); Dice and HD95 (BraTS 2023 surface
   definition, 374 mm when nothing matches) are computed between the lesion and the union
   of its components.
3. Lesions of ``min_lesion_volume`` mm^3 (50) or less are dropped from the averages.
4. Predicted components touching no lesion (small lesions included) are false positives.
5. Lesion-wise Dice = sum of lesion Dice / (kept lesions + false positives); lesion-wise
   HD95 = (sum of lesion HD95 + 374 x false positives) / (kept lesions + false positives).
   With no kept lesion and no false positive, Dice is 1 and HD95 0.

The ``brats-evaluation`` package (panoptica) reports a different lesion score: one-to-one
matching of instances without dilation, its lesion Dice averaged over the matched pairs only
(false positives and missed lesions both ignored).

Example:
    >>> import numpy as np
    >>> ref = np.zeros((30, 30, 30), bool); ref[2:8, 2:8, 2:8] = True   # 216 mm^3
    >>> pred = ref.copy(); pred[20:22, 20:22, 20:22] = True             # + a false positive
    >>> r = lesion_wise_metrics(ref, pred, spacing=(1, 1, 1))
    >>> r["LesionWise_Dice"], r["LesionWise_HD95"], r["Num_FP"]
    (0.5, 187.0, 1)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage

from nnunet_transfer.evaluation.metrics import EMPTY_PENALTY, _spacing, bounding_box, dice, hd95

_CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def _box_union(a, b):
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def lesion_wise_metrics(reference: np.ndarray, prediction: np.ndarray, spacing: Optional[Sequence[float]] = None,
                        dilation_iterations: int = 3, min_lesion_volume: float = 50.0,
                        hd95_definition: str = "brats2023", penalty: float = EMPTY_PENALTY,
                        compute_hd95: bool = True) -> Dict[str, float]:
    """Lesion-wise Dice and HD95 of one binary structure (see the module docstring).

    Returns ``LesionWise_Dice``, ``LesionWise_HD95``, ``Num_TP`` (kept lesions with a
    matching component), ``Num_FN`` (kept lesions without), ``Num_FP`` (unmatched predicted
    components), ``n_lesions`` (kept) and ``n_small_lesions`` (dropped). With
    ``compute_hd95=False`` the (slower) surface distances are skipped and
    ``LesionWise_HD95`` is NaN; everything else is unchanged (post-processing tuning).
    """
    reference = np.asarray(reference, bool)
    prediction = np.asarray(prediction, bool)
    if reference.shape != prediction.shape or reference.ndim != 3:
        raise ValueError(f"lesion-wise metrics need two 3-D masks of one shape, got {reference.shape} "
                         f"and {prediction.shape}")
    spacing = _spacing(spacing, 3)
    voxel_volume = float(np.prod(spacing))
    margin = dilation_iterations + 1
    box = bounding_box(reference | prediction, margin=margin)
    if box is None:
        return {"LesionWise_Dice": 1.0, "LesionWise_HD95": 0.0, "Num_TP": 0, "Num_FN": 0, "Num_FP": 0,
                "n_lesions": 0, "n_small_lesions": 0}
    # a box clipped to the image and with `margin` > dilation elsewhere gives exact dilations
    reference, prediction = reference[box], prediction[box]
    dilation = ndimage.generate_binary_structure(3, 2)

    pred_cc, n_pred = ndimage.label(prediction, structure=_CONNECTIVITY_26)
    pred_boxes = ndimage.find_objects(pred_cc)
    dilated = ndimage.binary_dilation(reference, structure=dilation, iterations=dilation_iterations) \
        if dilation_iterations > 0 else reference
    dilated_cc, _ = ndimage.label(dilated, structure=_CONNECTIVITY_26)
    lesions = np.where(reference, dilated_cc, 0)
    lesion_ids = np.unique(lesions[lesions > 0])
    lesion_boxes = ndimage.find_objects(lesions)

    matched = set()
    dice_sum, hd_sum, kept, small, tp, fn = 0.0, 0.0, 0, 0, 0, 0
    for lesion_id in lesion_ids:
        lbox = lesion_boxes[lesion_id - 1]
        grown = tuple(slice(max(0, s.start - dilation_iterations), min(n, s.stop + dilation_iterations))
                      for s, n in zip(lbox, lesions.shape))
        lesion_small = lesions[grown] == lesion_id
        if dilation_iterations > 0:
            lesion_small = ndimage.binary_dilation(lesion_small, structure=dilation, iterations=dilation_iterations)
        components = np.unique(pred_cc[grown][lesion_small])
        components = components[components > 0]
        matched.update(int(c) for c in components)
        volume = int(np.count_nonzero(lesions[lbox] == lesion_id)) * voxel_volume
        if volume <= min_lesion_volume:
            small += 1
            continue
        kept += 1
        region = lbox
        for c in components:
            region = _box_union(region, pred_boxes[c - 1])
        gt_mask = lesions[region] == lesion_id
        pred_mask = np.isin(pred_cc[region], components) if len(components) else np.zeros_like(gt_mask)
        dice_sum += dice(gt_mask, pred_mask)
        if compute_hd95:
            hd_sum += hd95(gt_mask, pred_mask, spacing, hd95_definition, penalty)
        if len(components):
            tp += 1
        else:
            fn += 1
    n_fp = n_pred - len(matched)
    denominator = kept + n_fp
    return {
        "LesionWise_Dice": 1.0 if denominator == 0 else dice_sum / denominator,
        "LesionWise_HD95": (float("nan") if not compute_hd95 else
                            0.0 if denominator == 0 else (hd_sum + n_fp * penalty) / denominator),
        "Num_TP": tp, "Num_FN": fn, "Num_FP": int(n_fp), "n_lesions": kept, "n_small_lesions": small,
    }

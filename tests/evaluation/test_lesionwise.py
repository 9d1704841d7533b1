"""BraTS 2023 lesion-wise Dice and HD95 on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_transfer.evaluation.lesionwise import lesion_wise_metrics
from nnunet_transfer.evaluation.metrics import dice, hd95


def empty(shape=(40, 40, 40)):
    return np.zeros(shape, bool)


def test_perfect_prediction_of_two_lesions():
    ref = empty()
    ref[2:8, 2:8, 2:8] = True  # 216 voxels
    ref[25:31, 25:31, 25:31] = True
    r = lesion_wise_metrics(ref, ref.copy(), (1, 1, 1))
    assert (r["LesionWise_Dice"], r["LesionWise_HD95"]) == (1.0, 0.0)
    assert (r["n_lesions"], r["Num_TP"], r["Num_FN"], r["Num_FP"]) == (2, 2, 0, 0)


def test_missed_lesion_and_false_positive():
    ref = empty()
    ref[2:8, 2:8, 2:8] = True
    ref[25:31, 25:31, 25:31] = True  # missed
    pred = empty()
    pred[2:8, 2:8, 2:8] = True
    pred[2:5, 30:33, 30:33] = True  # false positive, far from every lesion
    r = lesion_wise_metrics(ref, pred, (1, 1, 1))
    # lesions: Dice 1 and 0, HD95 0 and 374; one FP: denominators 2 + 1
    assert r["LesionWise_Dice"] == pytest.approx(1 / 3)
    assert r["LesionWise_HD95"] == pytest.approx((0 + 374 + 374) / 3)
    assert (r["Num_TP"], r["Num_FN"], r["Num_FP"]) == (1, 1, 1)


def test_small_lesions_are_dropped_but_their_matches_are_no_false_positives():
    ref = empty()
    ref[2:8, 2:8, 2:8] = True
    ref[30:33, 30:33, 30:33] = True  # 27 mm^3 <= 50: dropped
    pred = empty()
    pred[2:8, 2:8, 2:8] = True
    pred[30:32, 30:32, 30:32] = True  # touches the small lesion
    r = lesion_wise_metrics(ref, pred, (1, 1, 1))
    assert (r["LesionWise_Dice"], r["LesionWise_HD95"]) == (1.0, 0.0)
    assert (r["n_lesions"], r["n_small_lesions"], r["Num_FP"]) == (1, 1, 0)
    # with 2 mm voxels the same lesion has 216 mm^3 and counts
    r2 = lesion_wise_metrics(ref, pred, (2, 2, 2))
    assert r2["n_lesions"] == 2 and r2["Num_FP"] == 0
    small_dice = dice(ref[28:35, 28:35, 28:35], pred[28:35, 28:35, 28:35])
    assert r2["LesionWise_Dice"] == pytest.approx((1 + small_dice) / 2)


def test_nearby_components_merge_and_nearby_predictions_count():
    ref = empty()
    ref[5:15, 5:15, 5:10] = True
    ref[5:15, 5:15, 14:19] = True  # 4 voxels apart: the dilations (3 each) merge them
    pred = empty()
    pred[5:15, 5:15, 5:10] = True
    pred[5:15, 5:15, 21:23] = True  # no overlap, 2 voxels from the lesion: within its dilation
    r = lesion_wise_metrics(ref, pred, (1, 1, 1))
    assert r["n_lesions"] == 1 and r["Num_FP"] == 0 and r["Num_TP"] == 1
    assert r["LesionWise_Dice"] == pytest.approx(dice(ref, pred))
    assert r["LesionWise_HD95"] == pytest.approx(hd95(ref, pred, definition="brats2023"))
    # without dilation the two reference components are two lesions, the second missed,
    # and the far predicted slab is a false positive
    r0 = lesion_wise_metrics(ref, pred, (1, 1, 1), dilation_iterations=0)
    assert (r0["n_lesions"], r0["Num_TP"], r0["Num_FN"], r0["Num_FP"]) == (2, 1, 1, 1)
    assert r0["LesionWise_Dice"] == pytest.approx(1 / 3)


def test_empty_cases():
    r = lesion_wise_metrics(empty(), empty(), (1, 1, 1))
    assert (r["LesionWise_Dice"], r["LesionWise_HD95"]) == (1.0, 0.0)
    pred = empty()
    pred[3:6, 3:6, 3:6] = True
    pred[20:23, 20:23, 20:23] = True
    r = lesion_wise_metrics(empty(), pred, (1, 1, 1))
    assert (r["LesionWise_Dice"], r["LesionWise_HD95"], r["Num_FP"]) == (0.0, 374.0, 2)


def test_lesion_at_the_image_border():
    ref = empty((20, 20, 20))
    ref[0:6, 0:6, 0:6] = True
    pred = empty((20, 20, 20))
    pred[0:5, 0:6, 0:6] = True
    r = lesion_wise_metrics(ref, pred, (1, 1, 1))
    assert r["LesionWise_Dice"] == pytest.approx(dice(ref, pred))
    assert r["LesionWise_HD95"] == pytest.approx(hd95(ref, pred, definition="brats2023"))


def test_dice_only_mode_matches_and_skips_hd95():
    ref, pred = empty(), empty()
    ref[5:15, 5:15, 5:15] = True
    ref[25:30, 25:30, 25:30] = True
    pred[6:15, 5:15, 5:16] = True
    pred[34:36, 2:4, 2:4] = True
    full = lesion_wise_metrics(ref, pred, (1, 1, 1))
    fast = lesion_wise_metrics(ref, pred, (1, 1, 1), compute_hd95=False)
    assert np.isnan(fast.pop("LesionWise_HD95")) and not np.isnan(full.pop("LesionWise_HD95"))
    assert fast == full

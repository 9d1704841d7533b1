"""Dice and HD95 against MedPy on synthetic masks; both HD95 definitions; empty conventions."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric.binary import dc, hd95 as medpy_hd95
from scipy import ndimage

from nnunet_transfer.evaluation.metrics import (binary_metrics, bounding_box, dice, hd95, label_map_metrics,
                                                surface_distances)


def ball(shape, centre, radius):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def perturbed_pairs(n=12, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (24, 28, 20)
        ref = ball(shape, rng.integers(6, 16, 3), rng.integers(2, 6))
        pred = np.roll(ref, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 3)))
        if i % 3 == 0:
            pred = ndimage.binary_dilation(pred, iterations=2)
        pred ^= rng.random(shape) < 0.01  # scattered noise, far-away false positives
        spacing = tuple(rng.uniform(0.4, 3.0, 3)) if i % 2 else (1.0, 1.0, 1.0)
        yield ref, pred, spacing


@pytest.mark.parametrize("ref,pred,spacing", list(perturbed_pairs()))
def test_matches_medpy(ref, pred, spacing):
    assert dice(ref, pred) == pytest.approx(dc(pred, ref), abs=1e-12)
    assert hd95(ref, pred, spacing) == pytest.approx(medpy_hd95(pred, ref, voxelspacing=spacing), abs=1e-6)


def test_masks_touching_the_array_border_match_medpy():
    ref = np.zeros((10, 12, 9), bool)
    ref[:5, :, :4] = True
    pred = np.zeros_like(ref)
    pred[2:, 3:, :] = True
    spacing = (2.5, 0.7, 1.1)
    assert hd95(ref, pred, spacing) == pytest.approx(medpy_hd95(pred, ref, voxelspacing=spacing), abs=1e-6)


def test_single_voxels_and_anisotropic_spacing():
    ref = np.zeros((9, 9, 9), bool)
    pred = np.zeros_like(ref)
    ref[1, 1, 1] = True
    pred[4, 1, 1] = True
    spacing = (3.0, 0.5, 0.5)
    assert hd95(ref, pred, spacing) == pytest.approx(9.0)
    assert hd95(ref, pred, spacing) == pytest.approx(medpy_hd95(pred, ref, voxelspacing=spacing), abs=1e-6)
    assert hd95(ref, pred, spacing, definition="brats2023") == pytest.approx(9.0)
    assert dice(ref, pred) == 0.0


def test_empty_conventions():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[2, 2, 2] = True
    for definition in ("medpy", "brats2023"):
        assert hd95(empty, empty, definition=definition) == 0.0
        assert hd95(empty, full, definition=definition) == 374.0
        assert hd95(full, empty, definition=definition, empty_penalty=500.0) == 500.0
    assert dice(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    m = binary_metrics(empty, full)
    assert (m["Dice"], m["HD95"], m["FP"], m["FN"], m["n_pred"]) == (0.0, 374.0, 1, 0, 1)


def test_brats2023_definition_on_a_shifted_cube():
    ref = np.zeros((20, 20, 20), bool)
    ref[5:12, 5:12, 5:12] = True
    pred = np.roll(ref, 2, axis=2)
    sd = surface_distances(ref, pred, (1.0, 1.0, 1.0))
    # marching cubes through the voxel centres of a 7^3 cube: 6 flat 6x6 faces, 12 bevelled
    # edges (6 long, sqrt(2)/2 wide) and 8 cut corners (sqrt(3)/8 each)
    expected = 6 * 36 + 12 * 6 * np.sqrt(2) / 2 + 8 * np.sqrt(3) / 8
    assert sd["areas_ref"].sum() == pytest.approx(expected)
    assert sd["areas_pred"].sum() == pytest.approx(expected)
    assert hd95(ref, pred, definition="brats2023") == pytest.approx(2.0)
    # the face-orthogonal shift moves the surface of the cube by 2 voxels in x; with 2 mm
    # voxels along x the distance doubles
    assert hd95(ref, pred, (1.0, 1.0, 2.0), definition="brats2023") == pytest.approx(4.0)


def test_definitions_differ_but_agree_on_scale():
    ref, pred, spacing = next(perturbed_pairs(1, seed=3))
    a = hd95(ref, pred, spacing, "medpy")
    b = hd95(ref, pred, spacing, "brats2023")
    assert a > 0 and b > 0 and abs(a - b) < 0.5 * max(a, b)


def test_unknown_definition_is_rejected():
    with pytest.raises(ValueError, match="HD95 definition"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), definition="monai")


def test_label_map_metrics_match_medpy_per_label_and_region():
    rng = np.random.default_rng(5)
    shape = (30, 32, 28)
    ref = np.zeros(shape, np.uint8)
    ref[ball(shape, (15, 16, 14), 9)] = 2
    ref[ball(shape, (15, 17, 14), 5)] = 3
    ref[ball(shape, (15, 17, 14), 2)] = 1
    pred = np.roll(ref, 1, axis=1)
    pred[rng.random(shape) < 0.003] = 3
    spacing = (2.0, 0.8, 1.1)
    metrics = label_map_metrics(ref, pred, spacing)
    regions = {"NCR": (1,), "ED": (2,), "ET": (3,), "WT": (1, 2, 3), "TC": (1, 3), "ET-region": (3,)}
    for name, values in regions.items():
        r, p = np.isin(ref, values), np.isin(pred, values)
        assert metrics[name]["Dice"] == pytest.approx(dc(p, r), abs=1e-9)
        assert metrics[name]["HD95"] == pytest.approx(medpy_hd95(p, r, voxelspacing=spacing), abs=1e-6)
        assert metrics[name]["TP"] == int((r & p).sum())
        assert metrics[name]["TN"] == int((~r & ~p).sum())
        assert metrics[name]["volume_ref_mm3"] == pytest.approx(r.sum() * 2.0 * 0.8 * 1.1)
    assert set(label_map_metrics(ref, pred, spacing, regions=False)) == {"NCR", "ED", "ET"}


def test_label_map_metrics_with_an_absent_label():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 2
    pred = ref.copy()
    pred[6, 6, 6] = 1
    m = label_map_metrics(ref, pred)
    assert (m["ET"]["Dice"], m["ET"]["HD95"]) == (1.0, 0.0)  # both empty
    assert (m["NCR"]["Dice"], m["NCR"]["HD95"]) == (0.0, 374.0)  # one empty
    assert m["WT"]["FP"] == 1


def test_bounding_box_margin_is_clipped():
    m = np.zeros((6, 6), bool)
    m[0, 5] = True
    assert bounding_box(m, margin=2) == (slice(0, 3), slice(3, 6))
    assert bounding_box(np.zeros((3, 3), bool)) is None


def test_definitions_agree_until_far_surface_exceeds_five_percent():
    """What docs/evaluation.md states: within a voxel below ~5 % far-off surface, tens of mm above."""
    shape = (100, 100, 140)
    ref = ball(shape, (50, 50, 40), 18)
    small = ref | ball(shape, (50, 50, 110), 3)  # false positive: ~3 % of the predicted surface
    large = ref | ball(shape, (50, 50, 110), 5)  # ~7 %
    values = {name: (hd95(ref, pred, (1.0, 1.0, 1.0), "medpy"), hd95(ref, pred, (1.0, 1.0, 1.0), "brats2023"))
              for name, pred in (("small", small), ("large", large))}
    assert abs(values["small"][0] - values["small"][1]) <= 1.0
    assert values["large"][1] - values["large"][0] > 40.0

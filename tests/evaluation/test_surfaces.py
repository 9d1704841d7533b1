"""Surface models: MedPy borders and the marching-cubes surfel areas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_transfer.evaluation.surfaces import border_voxels, neighbour_codes, surfel_area_table


def test_border_voxels_is_mask_xor_erosion():
    rng = np.random.default_rng(0)
    mask = rng.random((8, 9, 7)) > 0.4
    expected = mask ^ ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
    np.testing.assert_array_equal(border_voxels(mask), expected)


def test_neighbour_codes_match_a_2x2x2_correlation():
    rng = np.random.default_rng(1)
    mask = rng.random((5, 6, 7)) > 0.5
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    padded = np.zeros(np.array(mask.shape) + 1, np.int64)
    padded[:-1, :-1, :-1] = mask
    expected = ndimage.correlate(padded, kernel, mode="constant", cval=0)
    np.testing.assert_array_equal(neighbour_codes(mask), expected)


def test_area_table_hand_computed_codes():
    table = surfel_area_table((1.0, 1.0, 1.0))
    assert table[0] == 0 and table[255] == 0
    assert table[1] == pytest.approx(np.sqrt(3) / 8)  # one corner cut off
    assert table[254] == pytest.approx(np.sqrt(3) / 8)  # its complement
    assert table[15] == pytest.approx(1.0)  # a plane through the cube
    assert table[3] == pytest.approx(np.sqrt(2) / 2)  # two adjacent corners: slanted quad
    # three corners of a face: a non-planar pentagon fanned to the largest area
    assert table[7] == pytest.approx(0.5 + np.sqrt(3) / 4 + np.sqrt(3) / 8)


def test_area_table_scales_with_anisotropic_spacing():
    table = surfel_area_table((2.0, 3.0, 5.0))
    # code 15: the corners with axis-0 index 1 (bits 8, 4, 2, 1): a plane normal to axis 0
    assert table[15] == pytest.approx(3.0 * 5.0)
    # code 85 (bits 64, 16, 4, 1): corners with axis-2 index 1, a plane normal to axis 2
    assert table[85] == pytest.approx(2.0 * 3.0)


def test_closed_surface_area_of_a_box():
    mask = np.zeros((12, 12, 12), bool)
    mask[2:6, 3:8, 4:10] = True  # 4 x 5 x 6 voxels
    codes = neighbour_codes(mask)
    spacing = (1.5, 1.0, 0.5)
    area = surfel_area_table(spacing)[codes].sum()
    # corner-grid surface of a box of n voxels per side spans n mm per side (flat faces)
    a, b, c = 4 * 1.5, 5 * 1.0, 6 * 0.5
    flat = 2 * ((a - 1.5) * (b - 1.0) + (a - 1.5) * (c - 0.5) + (b - 1.0) * (c - 0.5))
    assert area > flat  # edges and corners are bevelled, adding area
    assert area < 2 * (a * b + a * c + b * c)

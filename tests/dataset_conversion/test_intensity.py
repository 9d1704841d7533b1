"""clip_to_percentiles: per-image percentile clipping within the brain."""

import numpy as np
import pytest

from nnunet_transfer.dataset_conversion.intensity import check_percentiles, clip_to_percentiles, clipping_record


def brain(seed=0, dtype=np.int16):
    rng = np.random.default_rng(seed)
    image = np.zeros((20, 20, 20), dtype=dtype)
    image[4:16, 4:16, 4:16] = rng.normal(1000, 100, (12, 12, 12)).astype(dtype)
    image[5, 5, 5] = 30000  # a hot voxel
    image[6, 6, 6] = 1  # a dark one
    return image


def test_clips_brain_voxels_to_their_own_percentiles_and_leaves_background():
    image = brain()
    before = image.copy()
    out = clip_to_percentiles(image)
    np.testing.assert_array_equal(image, before)  # input untouched
    assert out.dtype == np.float32 and out.shape == image.shape
    inside = image != 0
    low, high = np.percentile(image[inside].astype(np.float32), [0.5, 99.5])
    np.testing.assert_allclose(out[inside], np.clip(image[inside], low, high), rtol=1e-6)
    assert np.all(out[~inside] == 0)  # background not raised to the low percentile
    assert out[5, 5, 5] == pytest.approx(high) and high < 2000
    assert out[6, 6, 6] == pytest.approx(low) and low > 500
    # most voxels are untouched
    assert np.mean(out[inside] == image[inside]) > 0.98


def test_clipping_rescues_z_score_contrast():
    image = brain()
    inside = image != 0

    def zscore(a):
        values = a[inside].astype(np.float64)
        return (values - values.mean()) / values.std()

    # the hot voxel inflates the plain z-score's std and squashes the brain's contrast
    assert np.median(np.abs(zscore(clip_to_percentiles(image)))) > 3 * np.median(np.abs(zscore(image)))


def test_explicit_mask_other_percentiles_and_empty_mask():
    image = brain().astype(np.float32)
    mask = np.zeros(image.shape, dtype=bool)
    mask[4:10] = True
    out = clip_to_percentiles(image, mask, low=5, high=95)
    low, high = np.percentile(image[mask], [5, 95])
    assert out[mask].min() == pytest.approx(low) and out[mask].max() == pytest.approx(high)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    np.testing.assert_array_equal(clip_to_percentiles(np.zeros((3, 3, 3), np.int16)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="mask shape"):
        clip_to_percentiles(image, mask[:5])


@pytest.mark.parametrize("percentiles", [(99.5, 0.5), (-1, 50), (0, 101), (5, 5), (1, 2, 3)])
def test_bad_percentiles_are_refused(percentiles):
    with pytest.raises(ValueError, match="0 <= LOW < HIGH <= 100"):
        check_percentiles(percentiles)


def test_clipping_record():
    assert clipping_record([0.5, 99.5]) == {"percentiles": [0.5, 99.5], "within": "nonzero"}
    assert clipping_record(None) is None

"""Percentile clipping + z-score normalisation and its registration with nnU-Net."""

import importlib.util

import numpy as np
import pytest

from nnunet_transfer.brainunet import normalization
from nnunet_transfer.brainunet.normalization import PercentileZScoreNormalization


def brain(seed=0):
    rng = np.random.default_rng(seed)
    image = np.zeros((20, 20, 20), dtype=np.float32)
    image[4:16, 4:16, 4:16] = rng.normal(100, 10, (12, 12, 12))
    image[5, 5, 5] = 10000  # a hot voxel
    seg = np.where(image != 0, 0, -1).astype(np.int8)
    return image, seg


def test_clips_then_zscores_within_brain():
    image, seg = brain()
    out = PercentileZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(image.copy(), seg)
    inside = seg >= 0
    assert out[inside].mean() == pytest.approx(0, abs=1e-5)
    assert out[inside].std() == pytest.approx(1, abs=1e-4)
    assert np.all(out[~inside] == 0)
    # the hot voxel is clipped to the 99.5th percentile, so it is no outlier any more
    values = image[inside]
    low, high = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, low, high)
    expected = (high - clipped.mean()) / clipped.std()
    assert out[5, 5, 5] == pytest.approx(expected, rel=1e-4)
    assert out[5, 5, 5] < 4


def test_differs_from_plain_zscore_when_outliers_exist():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    image, seg = brain()
    ours = PercentileZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(image.copy(), seg)
    plain = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(image.copy(), seg)
    inside = seg >= 0
    # the outlier inflates plain z-score's std and squashes the brain's contrast
    assert ours[inside].std() > 0.99 and np.median(np.abs(ours[inside])) > 3 * np.median(np.abs(plain[inside]))


def test_without_mask_uses_whole_image():
    image, _ = brain()
    out = PercentileZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image.copy(), None)
    assert out.mean() == pytest.approx(0, abs=1e-5) and out.std() == pytest.approx(1, abs=1e-4)


def test_mask_required_when_use_mask_for_norm():
    with pytest.raises(ValueError, match="use_mask_for_norm"):
        PercentileZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(brain()[0], None)


def test_install_scheme_writes_importing_shim(tmp_path):
    target = normalization.install_scheme(tmp_path)
    assert target.name == f"{normalization.SHIM_MODULE}.py"
    first = target.stat().st_mtime_ns
    assert normalization.install_scheme(tmp_path) == target and target.stat().st_mtime_ns == first  # idempotent
    spec = importlib.util.spec_from_file_location("shim_under_test", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PercentileZScoreNormalization is PercentileZScoreNormalization


def test_install_scheme_unwritable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="normalisation shim"):
        normalization.install_scheme(tmp_path / "missing")


def test_nnunet_resolves_the_scheme_by_name_once_installed():
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    normalization.install_scheme()
    found = recursive_find_python_class(str(normalization.nnunet_normalization_folder()),
                                        normalization.SCHEME_NAME, "nnunetv2.preprocessing.normalization")
    assert found is PercentileZScoreNormalization
    assert normalization.scheme_is_installed()

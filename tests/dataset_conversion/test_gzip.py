"""The conversion's gzip engine: ISA-L when installed, byte-compatible with the standard library."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from nnunet_transfer.dataset_conversion import _gzip
from nnunet_transfer.dataset_conversion.checks import read_voxels


def test_inflates_what_stdlib_gzip_wrote_at_any_level():
    data = np.arange(100000, dtype=np.float64).tobytes()
    for level in (1, 6, 9):
        assert _gzip.inflate(gzip.compress(data, compresslevel=level)) == data


def test_concatenated_members_and_trailing_padding():
    assert _gzip.inflate(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0" * 8) == b"abcd"


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b[:20] + b"\xff" * 40 + b[60:]])
def test_cut_off_or_corrupt_streams_raise_value_error(damage):
    blob = gzip.compress(np.random.default_rng(0).integers(0, 255, 50000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError):
        _gzip.inflate(damage(blob))


def test_engine_is_isal_when_installed():
    pytest.importorskip("isal")
    assert _gzip.ENGINE == "isal"


def test_read_voxels_uses_the_engine_on_float64_labels(tmp_path):
    import SimpleITK as sitk
    labels = np.zeros((6, 7, 8), np.float64)
    labels[2:4, 3:5, 1:6] = 3
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "seg.nii.gz"), useCompression=True)
    assert np.array_equal(read_voxels(tmp_path / "seg.nii.gz"), labels)
    raw = (tmp_path / "seg.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) - 30])
    with pytest.raises((ValueError, zlib.error)):
        read_voxels(tmp_path / "cut.nii.gz")

"""Random smooth fields and coordinate grids, the building blocks of the phantom.

Example:
    >>> import numpy as np
    >>> field = smooth_noise(np.random.default_rng(0), (16, 16, 8), cells=(4, 4, 2))
    >>> field.shape, bool(abs(field.mean()) < 1)
    ((16, 16, 8), True)
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Rows of normalised Gaussian weights that smoothly interpolate ``n_in`` knots to ``n_out`` points."""
    positions = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in - 1) / n_out
    weights = np.exp(-0.5 * ((positions[:, None] - np.arange(n_in, dtype=np.float32)[None, :]) / 0.6) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """Zero-mean, unit-variance noise that varies over about ``cells`` periods per axis.

    A coarse grid of normal samples is interpolated separably with Gaussian weights, so
    the cost is small, the field is smooth, and the same draws give the same field at any
    output size.
    """
    coarse_shape = tuple(max(2, int(c) + 1) for c in cells)
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    mx, my, mz = (_interpolation_matrix(int(n), c) for n, c in zip(shape, coarse_shape))
    field = np.einsum("ck,ijk->ijc", mz, field)
    field = np.einsum("bj,ijc->ibc", my, field)
    field = (mx @ field.reshape(coarse_shape[0], -1)).reshape(tuple(int(n) for n in shape))
    std = float(field.std())
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def centred_grid(shape: Sequence[int], spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical coordinates in mm of every voxel centre, origin at the volume's centre.

    Returned as broadcastable open grids (x, y, z) to save memory.
    """
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * float(s) for n, s in zip(shape, spacing)]
    return np.ix_(*axes)  # type: ignore[return-value]

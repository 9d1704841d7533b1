"""A random brain phantom: tissue classes and a glioma with nested BraTS sub-regions.

Sizes are in millimetres and the random fields are drawn on coarse grids, so the same
random generator gives the same anatomy at any image size (only the sampling changes).

Example:
    >>> import numpy as np
    >>> tissue, seg = make_anatomy((32, 32, 24), (7.5, 7.5, 6.5), np.random.default_rng(0))
    >>> sorted(np.unique(seg).tolist())[:2]
    [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_transfer.synth.fields import centred_grid, smooth_noise

# tissue classes of the phantom (not BraTS labels)
BACKGROUND, CSF, GREY, WHITE, DEEP_GREY = 0, 1, 2, 3, 4
# BraTS labels
NCR, ED, ET = 1, 2, 3


@dataclass(frozen=True)
class TumourProfile:
    """How large and how necrotic the tumours of a domain are (radii in mm)."""

    core_radius: Tuple[float, float] = (9.0, 22.0)
    oedema_ratio: Tuple[float, float] = (1.15, 1.6)
    necrosis_probability: float = 0.7
    necrosis_fraction: Tuple[float, float] = (0.5, 0.8)


def _cells(shape: Sequence[int], spacing: Sequence[float], period_mm: float) -> Tuple[int, ...]:
    return tuple(max(1, int(round(n * s / period_mm))) for n, s in zip(shape, spacing))


def _fov_cells(period_mm: float) -> Tuple[int, ...]:
    # drawn on the BraTS field of view so that anatomy does not depend on the sampling
    return _cells((240, 240, 155), (1.0, 1.0, 1.0), period_mm)


def _ellipsoid(grid, centre, semi_axes) -> np.ndarray:
    x, y, z = grid
    return (((x - centre[0]) / semi_axes[0]) ** 2 + ((y - centre[1]) / semi_axes[1]) ** 2
            + ((z - centre[2]) / semi_axes[2]) ** 2)


def make_tissue(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Tissue classes: a skull-stripped brain with cortex, white matter, deep grey matter and CSF."""
    grid = centred_grid(shape, spacing)
    x, y, z = grid
    semi = (rng.uniform(64, 72), rng.uniform(80, 88), rng.uniform(54, 62))
    shift = (rng.uniform(-3, 3), rng.uniform(-4, 4), rng.uniform(-2, 6))
    surface = smooth_noise(rng, shape, _fov_cells(60.0))
    folds = smooth_noise(rng, shape, _fov_cells(18.0))
    r = np.sqrt(_ellipsoid(grid, shift, semi)) * (1.0 + 0.035 * surface)
    brain = r < 1.0
    tissue = np.where(brain, WHITE, BACKGROUND).astype(np.uint8)
    cortex = brain & (r > 0.86 + 0.045 * folds)
    tissue[cortex] = GREY
    tissue[brain & (r > 0.92) & (folds > 0.9)] = CSF  # sulci
    fissure = brain & (np.abs(x - shift[0] + 1.5 * np.sin((y - shift[1]) / 25.0)) < 1.8) & (r > 0.45) & (z - shift[2] > -20)
    tissue[fissure] = CSF
    for side in (-1.0, 1.0):
        tx, bx = side * rng.uniform(10, 14), side * rng.uniform(18, 23)
        thalamus = _ellipsoid(grid, (shift[0] + tx, shift[1] - 8, shift[2] - 2), (8, 12, 9)) < 1
        ganglia = _ellipsoid(grid, (shift[0] + bx, shift[1] + 8, shift[2] + 2), (6, 13, 10)) < 1
        tissue[brain & (thalamus | ganglia)] = DEEP_GREY
    atrophy = rng.uniform(0.8, 1.35)
    for side in (-1.0, 1.0):  # lateral ventricles, bent outwards towards their horns
        bend = 0.004 * (y - shift[1]) ** 2
        vx = shift[0] + side * (6.0 * atrophy + bend)
        horn = ((x - vx) / (4.5 * atrophy)) ** 2 + ((y - shift[1] - 3) / 24.0) ** 2 + ((z - shift[2] - 9) / 9.0) ** 2
        tissue[brain & (horn < 1)] = CSF
    third = _ellipsoid(grid, (shift[0], shift[1] - 5, shift[2] - 4), (1.6 * atrophy, 10, 7)) < 1
    tissue[brain & third] = CSF
    return tissue


def make_tumour(tissue: np.ndarray, spacing: Sequence[float], rng: np.random.Generator,
                profile: TumourProfile = TumourProfile()) -> np.ndarray:
    """BraTS labels of one glioma: NCR inside ET (the tumour core), ED around the core.

    Nesting is guaranteed by construction: necrosis keeps one voxel away from the core's
    border (so enhancing tumour surrounds it) and oedema covers at least a one-voxel shell
    around the core wherever the brain allows.
    """
    shape = tissue.shape
    brain = tissue > BACKGROUND
    grid = centred_grid(shape, spacing)
    coords = [np.asarray(g).ravel() for g in grid]
    # centre: away from the midline, well inside the brain; drawn in mm so that it does
    # not depend on the image size
    inner = ndimage.binary_erosion(brain, iterations=2)
    index = np.array([n // 2 for n in shape])
    centre = np.zeros(3)
    for _ in range(200):
        direction = rng.standard_normal(3)
        rel = direction / np.linalg.norm(direction) * 0.62 * rng.random() ** (1 / 3)
        rel[0] = np.sign(rel[0] or 1.0) * max(abs(rel[0]), 0.18)
        centre = rel * np.array([68.0, 84.0, 58.0])
        index = np.array([int(np.argmin(np.abs(np.asarray(coords[d]) - centre[d]))) for d in range(3)])
        if inner[tuple(index)] and tissue[tuple(index)] != CSF:
            break
    core_radius = rng.uniform(*profile.core_radius)
    stretch = rng.uniform(0.75, 1.3, size=3)
    x, y, z = grid
    dist = np.sqrt(((x - centre[0]) / stretch[0]) ** 2 + ((y - centre[1]) / stretch[1]) ** 2
                   + ((z - centre[2]) / stretch[2]) ** 2)
    lobes = smooth_noise(rng, shape, _fov_cells(max(8.0, 0.7 * core_radius)))
    core_d = dist / (core_radius * (1.0 + rng.uniform(0.15, 0.3) * lobes))
    core = (core_d < 1.0) & ndimage.binary_erosion(brain, iterations=1)
    if not core.any():  # a tiny tumour fell between voxels: one voxel at the centre
        core[tuple(index)] = True
    pieces, n_pieces = ndimage.label(core)
    if n_pieces > 1:  # one connected core: keep its largest piece
        core = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    seg = np.zeros(shape, np.uint8)
    oedema_radius = core_radius * rng.uniform(*profile.oedema_ratio) + 2.0
    spread = smooth_noise(rng, shape, _fov_cells(20.0))
    ed_d = dist / (oedema_radius * (1.0 + 0.3 * spread))
    threshold = np.where(tissue == WHITE, 1.0, 0.75)  # oedema follows white matter
    oedema = ((ed_d < threshold) | ndimage.binary_dilation(core, iterations=1)) & brain & ((tissue != CSF) | core)
    oedema |= ndimage.binary_dilation(core, iterations=1) & brain
    whole = oedema | core
    components, _ = ndimage.label(whole)
    keep = np.unique(components[core])  # one connected tumour: drop oedema islands
    seg[np.isin(components, keep[keep > 0])] = ED
    seg[core] = ET
    if rng.random() < profile.necrosis_probability:
        fraction = rng.uniform(*profile.necrosis_fraction)
        necrosis = (core_d < fraction) & ndimage.binary_erosion(core, iterations=1)
        seg[necrosis] = NCR
    return seg


def make_anatomy(shape: Sequence[int], spacing: Sequence[float], rng: np.random.Generator,
                 tumour: TumourProfile = TumourProfile()) -> Tuple[np.ndarray, np.ndarray]:
    """Tissue classes and BraTS labels (0 background, 1 NCR, 2 ED, 3 ET) of one case."""
    tissue = make_tissue(shape, spacing, rng)
    seg = make_tumour(tissue, spacing, rng, tumour)
    return tissue, seg

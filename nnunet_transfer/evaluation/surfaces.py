"""Surface elements of binary masks: voxel borders (MedPy) and marching-cubes surfels.

Two surface models back the two HD95 definitions of :mod:`nnunet_transfer.evaluation.metrics`:

* :func:`border_voxels` is MedPy's: the mask voxels removed by one erosion with the
  face-connected (connectivity 1) structuring element, i.e. ``mask XOR eroded(mask)``.
* :func:`neighbour_codes` and :func:`surfel_area_table` are the surface model of DeepMind's
  ``surface-distance`` package (used by the BraTS 2023 metrics): every corner of the voxel
  grid gets an 8-bit code of its 2x2x2 neighbourhood, and each code that is neither empty
  nor full is a surface element whose area is the area of the marching-cubes surface inside
  that cube. The area table is derived here from first principles (polygons through the
  cube's edge midpoints; on a face with two diagonal inside corners the minority corners are
  cut off; each polygon is fanned from the vertex giving the largest area on an isotropic
  grid, and that triangulation is then scaled to the voxel spacing). This reproduces
  DeepMind's hand-written lookup table for all 256 codes, isotropic or not.

Example:
    >>> import numpy as np
    >>> table = surfel_area_table((1.0, 1.0, 1.0))
    >>> round(float(table[1]), 6), float(table[15])   # one corner; a whole face
    (0.216506, 1.0)
"""

from __future__ import annotations

import functools
import itertools
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

_CORNERS: List[Tuple[int, int, int]] = list(itertools.product((0, 1), repeat=3))
#: bit of each cube corner in the neighbour code (corner (0,0,0) is the most significant)
_BIT: Dict[Tuple[int, int, int], int] = {c: 1 << (7 - (4 * c[0] + 2 * c[1] + c[2])) for c in _CORNERS}
_EDGES = [(a, b) for a, b in itertools.combinations(_CORNERS, 2) if sum(x != y for x, y in zip(a, b)) == 1]
_FACES = [([c for c in _CORNERS if c[axis] == side],
           [e for e in _EDGES if e[0][axis] == side and e[1][axis] == side])
          for axis in range(3) for side in (0, 1)]


def border_voxels(mask: np.ndarray) -> np.ndarray:
    """MedPy's border: ``mask XOR erosion(mask)`` with the 6-connected element.

    Voxels outside the array count as background (scipy's ``border_value=0``), as in MedPy.

    >>> int(border_voxels(np.ones((3, 3, 3), bool)).sum())   # all but the centre
    26
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def _cube_polygons(code: int) -> List[List[np.ndarray]]:
    """Marching-cubes polygons (edge-midpoint vertices, in order) of one neighbour code."""
    inside = {c for c in _CORNERS if code & _BIT[c]}
    cut_off = inside if len(inside) <= 4 else set(_CORNERS) - inside
    links: Dict[tuple, List[tuple]] = {}

    def link(e1, e2):
        links.setdefault(e1, []).append(e2)
        links.setdefault(e2, []).append(e1)

    for face_corners, face_edges in _FACES:
        active = [e for e in face_edges if (e[0] in inside) != (e[1] in inside)]
        if len(active) == 2:
            link(*active)
        elif len(active) == 4:  # ambiguous face: separate the minority corners
            for corner in face_corners:
                if corner in cut_off:
                    link(*[e for e in active if corner in e])
    polygons, seen = [], set()
    for start in links:
        if start in seen:
            continue
        cycle, previous, current = [start], None, start
        seen.add(start)
        while True:
            following = [e for e in links[current] if e != previous and e not in seen]
            if not following:
                break
            previous, current = current, following[0]
            cycle.append(current)
            seen.add(current)
        polygons.append([(np.array(a, float) + np.array(b, float)) / 2 for a, b in cycle])
    return polygons


def _triangle_areas(triangles: np.ndarray, spacing: Sequence[float]) -> float:
    if len(triangles) == 0:
        return 0.0
    scaled = triangles * np.asarray(spacing, float)
    normals = np.cross(scaled[:, 1] - scaled[:, 0], scaled[:, 2] - scaled[:, 0]) / 2
    return float(np.linalg.norm(normals, axis=1).sum())


@functools.lru_cache(maxsize=1)
def _cube_triangles() -> Tuple[np.ndarray, ...]:
    """For each of the 256 codes, its triangles as an array (n, 3 vertices, 3 coordinates)."""
    table = []
    for code in range(256):
        triangles = []
        for polygon in _cube_polygons(code):
            fans = [[(rot[0], rot[i], rot[i + 1]) for i in range(1, len(rot) - 1)]
                    for rot in (polygon[s:] + polygon[:s] for s in range(len(polygon)))]
            areas = [_triangle_areas(np.array(f), (1.0, 1.0, 1.0)) for f in fans]
            triangles.extend(fans[int(np.argmax(areas))])
        table.append(np.array(triangles, float).reshape(-1, 3, 3))
    return tuple(table)


@functools.lru_cache(maxsize=64)
def _area_table(spacing: Tuple[float, float, float]) -> np.ndarray:
    return np.array([_triangle_areas(t, spacing) for t in _cube_triangles()])


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """Area in mm^2 of the surface element of each of the 256 neighbour codes.

    ``spacing`` is in array-axis order (z, y, x for SimpleITK arrays).
    """
    return _area_table(tuple(float(s) for s in spacing)).copy()


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """8-bit code of the 2x2x2 neighbourhood of every voxel corner of ``mask``.

    The result is one larger than ``mask`` along each axis: entry ``p`` describes the
    corner shared by voxels ``p - 1`` and ``p`` (voxels outside the array are background).

    >>> int(neighbour_codes(np.ones((1, 1, 1), bool))[0, 0, 0])   # voxel is the far corner
    1
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1).astype(np.uint8)
    shape = tuple(s + 1 for s in mask.shape)
    codes = np.zeros(shape, np.uint8)
    for (a, b, c), bit in _BIT.items():
        codes |= padded[a:a + shape[0], b:b + shape[1], c:c + shape[2]] * np.uint8(bit)
    return codes

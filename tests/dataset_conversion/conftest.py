"""Tiny BraTS-format folders in every layout, written the way real downloads are.

Images are int16 (float32 on request), label files float64; each modality holds a
distinct value range (t1n ~1000, t1c ~2000, t2w ~3000, t2f ~4000) so channel order can be
read back from the converted files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np
import pytest
import SimpleITK as sitk

SHAPE = (10, 14, 12)  # numpy (z, y, x): SimpleITK size 12x14x10
SPACING = (1.0, 1.2, 1.5)
ORIGIN = (-5.0, 3.0, 7.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
MODALITY_BASE = {"t1n": 1000, "t1c": 2000, "t2w": 3000, "t2f": 4000}
SUFFIXES = {"2023": {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"},
            "2021": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}}


def label_array(seed: int, et_value: int = 3) -> np.ndarray:
    """A blob with NCR=1 inside ED=2 and an ET ring, as float64 like BraTS seg files."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    centre = np.array(SHAPE) / 2 + rng.uniform(-1, 1, 3)
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    seg = np.zeros(SHAPE, dtype=np.float64)
    seg[r < 4.5] = 2
    seg[r < 3.0] = et_value
    seg[r < 1.8] = 1
    return seg


def write_image(array: np.ndarray, path: Path, shift_origin: float = 0.0) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(tuple(o + shift_origin for o in ORIGIN))
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith(".gz"))


def make_case(root: Path, case_id: str, layout: str = "2023", ending: str = ".nii.gz", seed: int = 0,
              labeled: bool = True, skip: Iterable[str] = (), float_images: bool = False,
              shapes: Optional[Dict[str, tuple]] = None, seg: Optional[np.ndarray] = None) -> Path:
    """Write one case folder; ``skip`` leaves modalities out, ``shapes`` overrides per-file shapes."""
    sep = "-" if layout == "2023" else "_"
    folder = root / case_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    for modality, suffix in SUFFIXES[layout].items():
        if modality in skip:
            continue
        shape = shapes.get(modality, SHAPE)
        data = MODALITY_BASE[modality] + rng.integers(0, 500, size=shape)
        write_image(data.astype(np.float32 if float_images else np.int16), folder / f"{case_id}{sep}{suffix}{ending}")
    if labeled:
        labels = seg if seg is not None else label_array(seed, et_value=4 if layout == "2021" else 3)
        write_image(labels, folder / f"{case_id}{sep}seg{ending}", shift_origin=1e-5)
    return folder


def make_brats(root: Path, case_ids: Iterable[str], layout: str = "2023", **kwargs) -> Path:
    """A BraTS download folder with a README and a .DS_Store, as shipped."""
    root.mkdir(parents=True, exist_ok=True)
    for i, case_id in enumerate(case_ids):
        make_case(root, case_id, layout=layout, seed=i, **kwargs)
    (root / "README.txt").write_text("BraTS data use agreement applies")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return root


def gli_ids(n: int, start: int = 0):
    return [f"BraTS-GLI-{i:05d}-000" for i in range(start, start + n)]


def ssa_ids(n: int, start: int = 0):
    return [f"BraTS-SSA-{i:05d}-000" for i in range(start, start + n)]


@pytest.fixture
def gli_folder(tmp_path) -> Path:
    return make_brats(tmp_path / "BraTS2023-GLI", gli_ids(3))


@pytest.fixture
def ssa_folder(tmp_path) -> Path:
    return make_brats(tmp_path / "BraTS2023-SSA", ssa_ids(4))

"""Hand-made BraTS label maps and fake nnU-Net results folders for the post-processing tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

SHAPE = (32, 32, 32)
DATASET = "Dataset990_PPTiny"
MODEL = "nnUNetTrainerX__nnUNetPlans__3d_fullres"


def write_label(path: Path, array: np.ndarray, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
                origin: Sequence[float] = (0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(np.asarray(array, np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    image.SetOrigin(tuple(float(o) for o in origin))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def read_label(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def tumour(shape=SHAPE, centre=(10, 10, 10), et: bool = True) -> np.ndarray:
    """ED box 10^3 (1000 mm³) around a 6^3 core: ET ring (or NCR only) with a 2^3 NCR centre."""
    seg = np.zeros(shape, np.uint8)
    z, y, x = centre
    seg[z - 5:z + 5, y - 5:y + 5, x - 5:x + 5] = 2
    seg[z - 3:z + 3, y - 3:y + 3, x - 3:x + 3] = 3 if et else 1
    seg[z - 1:z + 1, y - 1:y + 1, x - 1:x + 1] = 1
    return seg


def speck(seg: np.ndarray, corner: Tuple[int, int, int], size: int, label: int = 2) -> np.ndarray:
    z, y, x = corner
    seg[z:z + size, y:y + size, x:x + size] = label
    return seg


def write_results_folder(root: Path, folds: Dict[str, List[Tuple[str, np.ndarray, np.ndarray]]],
                         spacing_xyz=(1.0, 1.0, 1.0)) -> Tuple[Path, Path]:
    """``root/nnUNet_results/DATASET/MODEL/fold_k/validation`` and ``gt_segmentations``; returns both."""
    model = root / "nnUNet_results" / DATASET / MODEL
    gt = root / "nnUNet_preprocessed" / DATASET / "gt_segmentations"
    for fold, cases in folds.items():
        for case, reference, prediction in cases:
            write_label(gt / f"{case}.nii.gz", reference, spacing_xyz)
            write_label(model / f"fold_{fold}" / "validation" / f"{case}.nii.gz", prediction, spacing_xyz)
    (model / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
                                                    "file_ending": ".nii.gz", "channel_names": {"0": "T1"}}))
    return model, gt


def speck_cases() -> Dict[str, List[Tuple[str, np.ndarray, np.ndarray]]]:
    """Predictions = references + false-positive WT specks of 8 and 27 mm³; true lesions >= 216 mm³.

    The best WT threshold among 5, 10, 30, 50, 100, 300 is therefore 30 (ties: the smallest).
    """
    folds: Dict[str, List[Tuple[str, np.ndarray, np.ndarray]]] = {}
    for index in range(6):
        reference = tumour()
        if index % 3 == 0:  # a second, small but real lesion of 6^3 = 216 mm³, a separate lesion
            speck(reference, (24, 24, 24), 6)
        prediction = reference.copy()
        speck(prediction, (26, 2, 2), 2 if index % 2 else 3)
        folds.setdefault(str(index % 3), []).append((f"case{index:02d}", reference, prediction))
    return folds


@pytest.fixture
def speck_folder(tmp_path, monkeypatch):
    model, gt = write_results_folder(tmp_path, speck_cases())
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    return model, gt

"""Turn nnU-Net predictions back into BraTS label files for challenge submission.

nnU-Net writes one label map per case (``<case_id>.nii.gz``, labels 0-3, region-based
models included). ``style="2023"`` keeps NCR=1, ED=2, ET=3 (BraTS 2023/2024);
``style="2021"`` writes ET as 4 (BraTS 2021). Files are uint8 with the prediction's
geometry; nnU-Net's other files in the folder (json, npz, pkl) are ignored.

Example:
    >>> to_brats(Path("predictions"), Path("submission"), style="2021")  # doctest: +SKIP
    [PosixPath('submission/BraTS2021_00001.nii.gz'), ...]
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import List

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_transfer.dataset_conversion import folders
from nnunet_transfer.dataset_conversion.checks import convert_labels
from nnunet_transfer.dataset_conversion.layouts import ENDINGS

logger = logging.getLogger(__name__)

STYLES = {"2023": {0: 0, 1: 1, 2: 2, 3: 3}, "2024": {0: 0, 1: 1, 2: 2, 3: 3}, "2021": {0: 0, 1: 1, 2: 2, 3: 4}}


def to_brats(pred_dir: Path, out_dir: Path, style: str = "2023") -> List[Path]:
    """Write every prediction of ``pred_dir`` into ``out_dir`` in the BraTS ``style``; return the files.

    ``out_dir`` is filled all at once (built next to it, then moved into place) and
    replaced when it exists.
    """
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    style = str(style)
    if style not in STYLES:
        raise ValueError(f"unknown BraTS style {style!r}; use one of {', '.join(sorted(STYLES))}")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    if pred_dir.resolve() == out_dir.resolve():
        raise ValueError("the output folder must differ from the prediction folder")
    files = sorted(p for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(ENDINGS))
    if not files:
        raise FileNotFoundError(f"no .nii.gz or .nii prediction files in {pred_dir}")
    mapping = STYLES[style]
    tmp = folders.temp_sibling(out_dir)
    written = []
    try:
        for path in tqdm(files, desc="to BraTS", unit="case", disable=None, leave=False):
            try:
                image = sitk.ReadImage(str(path))
            except RuntimeError as exc:
                raise ValueError(f"{path}: unreadable ({str(exc).strip().splitlines()[-1][:200]})") from None
            labels, problem = convert_labels(sitk.GetArrayViewFromImage(image), mapping)
            if problem:
                raise ValueError(f"{path}: {problem}; is this an nnU-Net prediction of a converted BraTS dataset?")
            out = sitk.GetImageFromArray(labels.astype(np.uint8, copy=False))
            out.CopyInformation(image)
            name = path.name if path.name.endswith(".nii.gz") else path.name + ".gz"
            sitk.WriteImage(out, str(tmp / name), useCompression=True)
            written.append(out_dir / name)
        folders.publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %d BraTS %s label file(s) to %s", len(written), style, out_dir)
    return written

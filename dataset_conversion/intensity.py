"""Per-image percentile clipping of MRI intensities within the brain, applied at conversion.

MRI intensities have no absolute scale and a few hot voxels (vessels, artifacts, frequent
in 1.5T scans) can squash a z-scored brain's contrast. ``clip_to_percentiles`` clips an
image to its own low / high percentiles computed inside the brain (its nonzero voxels by
default); voxels outside the brain are left as they are (0 for skull-stripped BraTS).
``nnunet-transfer convert --clip-percentiles 0.5 99.5`` applies it to every image channel of
every case; nnU-Net's ``ZScoreNormalization`` (with ``use_mask_for_norm``) then z-scores
the clipped brain during preprocessing.

Example:
    >>> import numpy as np
    >>> image = np.zeros((4, 4, 4), dtype=np.int16)
    >>> image[1:3, 1:3, 1:3] = [[[10, 11], [12, 13]], [[14, 15], [16, 1000]]]
    >>> out = clip_to_percentiles(image, low=0, high=90)
    >>> out.dtype, float(out.max()) < 1000, float(out[0, 0, 0])
    (dtype('float32'), True, 0.0)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

#: BrainUNet's percentiles.
DEFAULT_PERCENTILES: Tuple[float, float] = (0.5, 99.5)
#: The region the percentiles are computed in and the clipping applies to.
WITHIN = "nonzero"


def check_percentiles(percentiles: Sequence[float]) -> Tuple[float, float]:
    """``(low, high)`` as floats, or ValueError unless ``0 <= low < high <= 100``."""
    values = tuple(float(p) for p in percentiles)
    if len(values) != 2 or not (0 <= values[0] < values[1] <= 100):
        raise ValueError(f"clipping percentiles must be two numbers 0 <= LOW < HIGH <= 100, got {list(percentiles)}")
    return values


def clipping_record(percentiles: Optional[Sequence[float]]) -> Optional[Dict[str, object]]:
    """What ``dataset.json["intensity_clipping"]`` holds for these percentiles (None: no clipping).

    >>> clipping_record((0.5, 99.5))
    {'percentiles': [0.5, 99.5], 'within': 'nonzero'}
    """
    if percentiles is None:
        return None
    return {"percentiles": list(check_percentiles(percentiles)), "within": WITHIN}


def clip_to_percentiles(image: np.ndarray, mask: Optional[np.ndarray] = None, low: float = DEFAULT_PERCENTILES[0],
                        high: float = DEFAULT_PERCENTILES[1]) -> np.ndarray:
    """A float32 copy of ``image`` clipped, inside ``mask``, to the mask's ``low``/``high`` percentiles.

    ``mask`` defaults to the image's nonzero voxels (the brain of a skull-stripped scan).
    Voxels outside the mask keep their values; an empty mask returns the image unchanged
    (as float32). Percentiles use numpy's linear interpolation.
    """
    low, high = check_percentiles((low, high))
    image = np.asarray(image)
    out = image.astype(np.float32, copy=True)
    if mask is None:
        mask = image != 0
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the image's {image.shape}")
    values = out[mask]
    if values.size == 0:
        return out
    lower, upper = np.percentile(values, [low, high])
    out[mask] = np.clip(values, lower, upper)
    return out

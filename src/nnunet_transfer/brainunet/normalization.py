"""Percentile clipping then z-scoring within the brain, as an nnU-Net normalisation scheme.

``PercentileZScoreNormalization`` clips each image channel to its own 0.5th and 99.5th
intensity percentiles (computed inside the brain), then z-scores it with the mean and
standard deviation of the brain voxels; voxels outside the brain stay 0. The "brain" is
nnU-Net's nonzero mask (``seg >= 0`` during preprocessing) when the plans say
``use_mask_for_norm`` (nnU-Net sets it for skull-stripped data such as BraTS), otherwise
the whole image. Per-image statistics suit MRI, whose intensities have no absolute scale;
clipping first keeps a few hot voxels (vessels, artifacts) from compressing the contrast.

nnU-Net looks normalisation schemes up by class name *inside its own package*
(``nnunetv2/preprocessing/normalization``, searched by ``recursive_find_python_class``),
both when preprocessing and when ``nnUNetv2_predict`` preprocesses new cases. There is no
environment variable or entry point for outside schemes, so :func:`install_scheme` writes
a one-line import shim module into that folder (idempotent; a missing plugin is ignored by
the shim so nnU-Net keeps working if this package is uninstalled).

Example:
    >>> import numpy as np
    >>> image = np.zeros((8, 8, 8), dtype=np.float32)
    >>> image[2:6, 2:6, 2:6] = np.arange(64).reshape(4, 4, 4)
    >>> seg = np.where(image > 0, 0, -1)
    >>> out = PercentileZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(image, seg)
    >>> abs(float(out[seg >= 0].mean())) < 1e-6, float(out[0, 0, 0])
    (True, 0.0)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ImageNormalization

logger = logging.getLogger(__name__)

SCHEME_NAME = "PercentileZScoreNormalization"
SHIM_MODULE = "nnunet_transfer_normalization"
SHIM_SOURCE = '''"""Installed by nnunet-transfer (nnunet_transfer.brainunet.normalization.install_scheme).

nnU-Net finds normalisation schemes only inside this folder; this shim re-exports the
plugin's schemes. It is harmless if nnunet-transfer is uninstalled; delete it to remove.
"""
try:
    from nnunet_transfer.brainunet.normalization import PercentileZScoreNormalization  # noqa: F401
except ImportError:  # plugin not installed: nothing to export
    pass
'''


class PercentileZScoreNormalization(ImageNormalization):
    """Clip to per-image percentiles, then z-score, both within the brain mask.

    The percentiles are class attributes (``lower_percentile``, ``upper_percentile``);
    a subclass with other values is a different scheme name.
    """

    leaves_pixels_outside_mask_at_zero_if_use_mask_for_norm_is_true = True
    lower_percentile = 0.5
    upper_percentile = 99.5

    def run(self, image: np.ndarray, seg: Optional[np.ndarray] = None) -> np.ndarray:
        eps = 1e-8 if self.target_dtype != np.float16 else 1e-4
        image = image.astype(self.target_dtype, copy=False)
        if self.use_mask_for_norm:
            if seg is None:
                raise ValueError("use_mask_for_norm is set but no mask (seg) was given to "
                                 f"{type(self).__name__}; nnU-Net passes the nonzero mask as seg >= 0")
            mask = seg >= 0
        else:
            mask = np.ones(image.shape, dtype=bool)
        values = image[mask]
        if values.size == 0:
            return image
        low, high = np.percentile(values, [self.lower_percentile, self.upper_percentile])
        values = np.clip(values, low, high)
        mean, std = values.mean(), values.std()
        image[mask] = (values - mean) / max(float(std), eps)
        if self.use_mask_for_norm:
            image[~mask] = 0
        return image


def nnunet_normalization_folder() -> Path:
    """The folder where nnU-Net looks up normalisation scheme classes."""
    import nnunetv2

    return Path(nnunetv2.__path__[0]) / "preprocessing" / "normalization"


def scheme_is_installed() -> bool:
    """Whether nnU-Net can resolve :data:`SCHEME_NAME` (the shim is present and imports)."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(str(nnunet_normalization_folder()), SCHEME_NAME,
                                        "nnunetv2.preprocessing.normalization")
    return found is not None and found.__name__ == SCHEME_NAME


def install_scheme(folder: Optional[Path] = None) -> Path:
    """Write the shim module that lets nnU-Net find :class:`PercentileZScoreNormalization`.

    Idempotent (rewrites the same content atomically). Raises ``RuntimeError`` with the
    command to run by hand when nnU-Net's folder is not writable.
    """
    folder = Path(folder) if folder is not None else nnunet_normalization_folder()
    target = folder / f"{SHIM_MODULE}.py"
    if target.is_file() and target.read_text() == SHIM_SOURCE:
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(SHIM_SOURCE)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"cannot write nnU-Net's normalisation shim {target} ({exc}). nnU-Net only finds normalisation "
            f"schemes in that folder; run `nnunet-transfer brainunet-plans DATASET` once with write access "
            f"to it (it installs the shim), or use a virtual environment you own."
        ) from exc
    logger.info("installed the %s normalisation scheme for nnU-Net: %s", SCHEME_NAME, target)
    return target

"""Ideal (noise-free) MR contrasts of a phantom: T1, T1Gd, T2 and FLAIR.

Intensities are relative to white matter on T1 and follow the usual appearance of
gliomas: enhancing tumour bright on T1Gd (a rim around necrosis), oedema bright on T2 and
FLAIR, CSF bright on T2 and dark on FLAIR, white matter brighter than grey matter on T1.

Example:
    >>> import numpy as np
    >>> from nnunet_transfer.synth.anatomy import make_anatomy
    >>> tissue, seg = make_anatomy((32, 32, 24), (7.5, 7.5, 6.5), np.random.default_rng(0))
    >>> images = render_contrasts(tissue, seg, np.random.default_rng(1))
    >>> sorted(images)
    ['t1c', 't1n', 't2f', 't2w']
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from nnunet_transfer.synth.anatomy import CSF, DEEP_GREY, ED, ET, GREY, NCR, WHITE
from nnunet_transfer.synth.fields import smooth_noise

MODALITIES = ("t1n", "t1c", "t2w", "t2f")

# mean intensity per tissue class / tumour label, relative to white matter on T1
TISSUE_MEANS: Dict[str, Dict[str, float]] = {
    #        CSF   grey  white deep   NCR   ED    ET
    "t1n": dict(csf=0.30, grey=0.72, white=1.00, deep=0.80, ncr=0.35, ed=0.62, et=0.68),
    "t1c": dict(csf=0.32, grey=0.74, white=1.02, deep=0.82, ncr=0.33, ed=0.64, et=1.60),
    "t2w": dict(csf=1.80, grey=0.95, white=0.62, deep=0.85, ncr=1.45, ed=1.30, et=1.00),
    "t2f": dict(csf=0.20, grey=0.95, white=0.68, deep=0.85, ncr=0.70, ed=1.50, et=1.10),
}


def render_contrasts(tissue: np.ndarray, seg: np.ndarray, rng: np.random.Generator,
                     contrast: float = 1.0) -> Dict[str, np.ndarray]:
    """Noise-free images (float32, 0 outside the brain) of the four BraTS contrasts.

    ``contrast`` < 1 compresses healthy-tissue contrast towards its mean (as at lower
    field strength); tumour intensities keep their offsets from white matter.
    Tissue texture (smooth multiplicative variation) is shared by the four contrasts.
    """
    shape = tissue.shape
    texture = smooth_noise(rng, shape, (16, 16, 10))  # ~15 mm over the BraTS field of view
    tumour_texture = smooth_noise(rng, shape, (30, 30, 20))
    tumour = seg > 0
    classes = {"csf": tissue == CSF, "grey": tissue == GREY, "white": tissue == WHITE,
               "deep": tissue == DEEP_GREY}
    images = {}
    for name in MODALITIES:
        means = TISSUE_MEANS[name]
        healthy_mean = float(np.mean([means["grey"], means["white"]]))
        image = np.zeros(shape, np.float32)
        for key, mask in classes.items():
            image[mask & ~tumour] = healthy_mean + contrast * (means[key] - healthy_mean)
        white = healthy_mean + contrast * (means["white"] - healthy_mean)
        for key, label in (("ncr", NCR), ("ed", ED), ("et", ET)):
            image[seg == label] = white + (means[key] - means["white"])
        factor = np.where(tumour, 1.0 + 0.08 * tumour_texture, 1.0 + 0.03 * texture)
        images[name] = (image * factor).astype(np.float32)
    return images

"""Scanner domains: how a 3T (GLI-like) or 1.5T (SSA-like) acquisition degrades an image.

A :class:`Domain` bundles the acquisition (point-spread blur, thick slices resampled back
to the fine grid, Rician noise, bias field, ghosting, intensity scale and data type) and
the tumour profile of a population (SSA patients present with later-stage, larger
tumours). Blur and slice thickness are given in mm with a floor in voxels, so the
domain shift stays visible at the small default image size.

Example:
    >>> import numpy as np
    >>> image = np.ones((16, 16, 12), np.float32)
    >>> out = acquire(image, (15.0, 15.0, 12.9), DOMAINS["SSA"], np.random.default_rng(0))
    >>> out.shape, out.dtype
    ((16, 16, 12), dtype('float32'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_transfer.synth.anatomy import TumourProfile
from nnunet_transfer.synth.fields import smooth_noise


@dataclass(frozen=True)
class Domain:
    """Acquisition and population of one scanner domain (ranges are sampled per case)."""

    name: str
    psf_mm: float = 0.5               # in-plane Gaussian blur sigma
    psf_min_voxels: float = 0.3
    slice_thickness_mm: float = 0.0   # 0: isotropic acquisition, no slab resampling
    noise: Tuple[float, float] = (0.02, 0.03)       # Rician sigma, relative to white matter
    bias: Tuple[float, float] = (0.0, 0.06)         # log-amplitude of the smooth bias field
    ghost_probability: float = 0.0
    ghost_amplitude: Tuple[float, float] = (0.05, 0.12)
    contrast: float = 1.0             # healthy-tissue contrast (1.5T: compressed)
    scale: Tuple[float, float] = (700.0, 1300.0)    # intensity of white matter on T1
    dtype: str = "int16"
    tumour: TumourProfile = field(default_factory=TumourProfile)


DOMAINS: Dict[str, Domain] = {
    "GLI": Domain("GLI"),
    "SSA": Domain(
        "SSA", psf_mm=1.6, psf_min_voxels=0.8, slice_thickness_mm=5.0, noise=(0.06, 0.09),
        bias=(0.15, 0.3), ghost_probability=0.35, contrast=0.8, scale=(80.0, 400.0), dtype="float32",
        tumour=TumourProfile(core_radius=(16.0, 28.0), oedema_ratio=(1.25, 1.7), necrosis_probability=0.85,
                             necrosis_fraction=(0.55, 0.8)),
    ),
}


def get_domain(name: str) -> Domain:
    """The :class:`Domain` called ``name`` (case-insensitive), with a clear error otherwise."""
    domain = DOMAINS.get(str(name).upper())
    if domain is None:
        raise ValueError(f"unknown synthetic domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return domain


def _thick_slices(image: np.ndarray, factor: int) -> np.ndarray:
    """Average blocks of ``factor`` slices along z (a thick slab), then interpolate back."""
    nz = image.shape[2]
    n_thick = -(-nz // factor)
    padded = np.pad(image, ((0, 0), (0, 0), (0, n_thick * factor - nz)), mode="edge")
    thick = padded.reshape(image.shape[0], image.shape[1], n_thick, factor).mean(axis=3)
    # slab centres in fine-grid coordinates, linear interpolation back (edge values beyond)
    centres = (np.arange(n_thick) + 0.5) * factor - 0.5
    positions = np.arange(nz, dtype=np.float64)
    upper = np.clip(np.searchsorted(centres, positions), 1, max(1, n_thick - 1))
    lower = upper - 1
    if n_thick == 1:
        return np.repeat(thick, nz, axis=2)
    weight = np.clip((positions - centres[lower]) / (centres[upper] - centres[lower]), 0.0, 1.0)
    return (thick[:, :, lower] * (1 - weight) + thick[:, :, upper] * weight).astype(np.float32)


def slice_factor(domain: Domain, spacing: Sequence[float]) -> int:
    """How many fine-grid slices one acquired slice spans (1 for isotropic acquisitions)."""
    if domain.slice_thickness_mm <= 0:
        return 1
    return max(2, int(round(domain.slice_thickness_mm / float(spacing[2]))))


def acquire(image: np.ndarray, spacing: Sequence[float], domain: Domain, rng: np.random.Generator,
            ghost: bool = False, noise: float | None = None, bias: np.ndarray | None = None) -> np.ndarray:
    """Degrade a noise-free image (white matter ~1) as ``domain``'s scanner would, float32.

    ``ghost``, ``noise`` (Rician sigma) and ``bias`` (multiplicative field) are per-case
    draws shared by the contrasts of a case; left out, they are drawn from ``rng``.
    """
    sigma = [max(domain.psf_min_voxels, domain.psf_mm / float(s)) for s in spacing[:2]] + [
        max(domain.psf_min_voxels, domain.psf_mm / float(spacing[2]))]
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma=sigma, mode="constant")
    if ghost:  # N/2 ghost along the phase-encoding axis
        out = out + rng.uniform(*domain.ghost_amplitude) * np.roll(out, out.shape[1] // 2, axis=1)
    factor = slice_factor(domain, spacing)
    if noise is None:
        noise = rng.uniform(*domain.noise)
    if factor > 1:
        # noise is added on the thick-slice grid, then interpolated with the signal
        nz = out.shape[2]
        n_thick = -(-nz // factor)
        padded = np.pad(out, ((0, 0), (0, 0), (0, n_thick * factor - nz)), mode="edge")
        thick = padded.reshape(out.shape[0], out.shape[1], n_thick, factor).mean(axis=3)
        thick = _rician(thick, noise, rng)
        out = _thick_slices(np.repeat(thick, factor, axis=2)[:, :, :nz], factor)
    else:
        out = _rician(out, noise, rng)
    if bias is None:
        bias = bias_field(out.shape, domain, rng)
    return (out * bias).astype(np.float32)


def _rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


def bias_field(shape: Sequence[int], domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field ``exp(a * noise)`` with ``a`` drawn from ``domain.bias``."""
    amplitude = rng.uniform(*domain.bias)
    return np.exp(amplitude * smooth_noise(rng, shape, (2, 2, 2))).astype(np.float32)

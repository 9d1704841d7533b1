"""MRI artifact augmentation in k-space: motion and ghosting, as batchgeneratorsv2 transforms.

Both transforms work on one sample's image, a torch tensor of shape ``(C, X, Y[, Z])``,
inside nnU-Net's training pipeline (``ComposeTransforms``), and leave the segmentation
untouched. Each corrupted channel is shifted to be non-negative (MRI magnitude images
are), Fourier transformed over its spatial axes, modified in k-space, transformed back,
and its magnitude is shifted back. A strength of zero returns the image unchanged.

``MotionArtifactTransform``
    Rigid motion during the acquisition: a random subset of phase-encoding lines (along a
    random allowed axis) is acquired with the head translated, i.e. those lines are
    multiplied by the phase ramp ``exp(-2πi k·d)`` of a translation ``d`` (in voxels).
``GhostingArtifactTransform``
    Periodic k-space modulation (e.g. from cardiac or respiratory pulsation): every n-th
    line along a random allowed axis is scaled by ``1 - intensity``, which adds ghost
    copies of the image spaced by ``size / n`` voxels; the k-space centre is kept.

Randomness comes from ``numpy.random`` (through batchgeneratorsv2's ``sample_scalar``) and
``torch``'s generator, so seeding both makes the transforms deterministic.

Example:
    >>> import torch
    >>> image = torch.rand(2, 16, 16, 16)
    >>> seg = torch.zeros(1, 16, 16, 16)
    >>> out = GhostingArtifactTransform(num_ghosts=4, intensity=0.5)(image=image.clone(), segmentation=seg)
    >>> out["image"].shape == image.shape, bool((out["segmentation"] == seg).all())
    (True, True)
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform


def _pick_channels(img: torch.Tensor, p_per_channel: float) -> List[int]:
    apply = torch.rand(img.shape[0]) < p_per_channel
    return [int(i) for i in apply.nonzero(as_tuple=False).flatten()]


def _pick_axis(axes: Optional[Sequence[int]], n_spatial: int) -> int:
    allowed = list(range(n_spatial)) if axes is None else list(axes)
    for axis in allowed:
        if not 0 <= axis < n_spatial:
            raise ValueError(f"artifact axis {axis} is not a spatial axis of an image with {n_spatial} spatial "
                             f"dimensions (axes count from 0 and exclude the channel axis)")
    return int(allowed[int(torch.randint(len(allowed), (1,)))])


def _line_mask(shape: Sequence[int], axis: int, lines: torch.Tensor) -> torch.Tensor:
    """A boolean tensor broadcastable to ``shape``: True on the given lines along ``axis``."""
    mask = torch.zeros(shape[axis], dtype=torch.bool)
    mask[lines] = True
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return mask.view(view)


def _through_kspace(channel: torch.Tensor, modify) -> torch.Tensor:
    """Apply ``modify`` to the (unshifted) spectrum of a non-negative copy of ``channel``."""
    offset = channel.min()
    work = (channel - offset).to(torch.float32)
    spectrum = modify(torch.fft.fftn(work))
    return (torch.fft.ifftn(spectrum).abs() + offset).to(channel.dtype)


class MotionArtifactTransform(ImageOnlyTransform):
    """Simulated rigid-motion artifact: phase-shifted k-space lines.

    Args:
        translation: displacement of the moved position, in voxels (its direction is random).
            ``0`` disables the transform.
        corrupted_fraction: fraction of the phase-encoding lines acquired in the moved position.
        phase_encoding_axes: spatial axes (0-based, channel axis excluded) that may be the
            phase-encoding direction; ``None`` allows all.
        p_per_channel: probability that each channel is corrupted.
        synchronize_channels: use the same motion for all corrupted channels (one
            acquisition) instead of independent motion per channel (separate sequences).
    """

    def __init__(self, translation: RandomScalar = (1.0, 6.0), corrupted_fraction: RandomScalar = (0.05, 0.3),
                 phase_encoding_axes: Optional[Sequence[int]] = None, p_per_channel: float = 1.0,
                 synchronize_channels: bool = False):
        super().__init__()
        self.translation = translation
        self.corrupted_fraction = corrupted_fraction
        self.phase_encoding_axes = None if phase_encoding_axes is None else tuple(phase_encoding_axes)
        self.p_per_channel = p_per_channel
        self.synchronize_channels = synchronize_channels

    def _sample_motion(self, spatial: Sequence[int]) -> dict:
        axis = _pick_axis(self.phase_encoding_axes, len(spatial))
        fraction = float(np.clip(sample_scalar(self.corrupted_fraction), 0.0, 1.0))
        n_lines = int(round(fraction * spatial[axis]))
        lines = torch.randperm(spatial[axis])[:n_lines]
        magnitude = float(sample_scalar(self.translation))
        direction = torch.randn(len(spatial))
        direction = direction / direction.norm().clamp_min(1e-8)
        return {"axis": axis, "lines": lines, "shift": (direction * magnitude).tolist()}

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        spatial = tuple(img.shape[1:])
        channels = _pick_channels(img, self.p_per_channel)
        shared = self._sample_motion(spatial) if self.synchronize_channels else None
        return {"motions": {c: shared if shared is not None else self._sample_motion(spatial) for c in channels}}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        spatial = tuple(img.shape[1:])
        for c, motion in params["motions"].items():
            if len(motion["lines"]) == 0 or not any(motion["shift"]):
                continue
            phase = torch.zeros(spatial, dtype=torch.float32)
            for d, (size, shift) in enumerate(zip(spatial, motion["shift"])):
                view = [1] * len(spatial)
                view[d] = size
                phase = phase + (torch.fft.fftfreq(size) * shift).view(view)
            ramp = torch.polar(torch.ones_like(phase), -2 * math.pi * phase)
            mask = _line_mask(spatial, motion["axis"], motion["lines"])
            img[c] = _through_kspace(img[c], lambda k: torch.where(mask, k * ramp, k))
        return img


class GhostingArtifactTransform(ImageOnlyTransform):
    """Simulated ghosting artifact: every n-th k-space line along one axis is attenuated.

    Args:
        num_ghosts: period ``n`` of the modulation in k-space lines (an integer >= 2 is
            drawn); ghosts appear every ``size / n`` voxels.
        intensity: attenuation of the modulated lines, in [0, 1]; ``0`` disables the transform.
        axes: spatial axes (0-based, channel axis excluded) the ghosts may run along;
            ``None`` allows all.
        restore_center: fraction of the k-space lines around the centre left untouched, so
            the image's contrast is kept.
        p_per_channel: probability that each channel is corrupted.
        synchronize_channels: same artifact for all corrupted channels.
    """

    def __init__(self, num_ghosts: RandomScalar = (2, 8), intensity: RandomScalar = (0.3, 0.9),
                 axes: Optional[Sequence[int]] = None, restore_center: float = 0.02, p_per_channel: float = 1.0,
                 synchronize_channels: bool = False):
        super().__init__()
        if not 0 <= restore_center < 1:
            raise ValueError(f"restore_center must be in [0, 1), got {restore_center}")
        self.num_ghosts = num_ghosts
        self.intensity = intensity
        self.axes = None if axes is None else tuple(axes)
        self.restore_center = restore_center
        self.p_per_channel = p_per_channel
        self.synchronize_channels = synchronize_channels

    def _sample_ghosting(self, spatial: Sequence[int]) -> dict:
        axis = _pick_axis(self.axes, len(spatial))
        period = max(2, int(round(sample_scalar(self.num_ghosts))))
        intensity = float(np.clip(sample_scalar(self.intensity), 0.0, 1.0))
        return {"axis": axis, "period": period, "intensity": intensity}

    def get_parameters(self, **data_dict) -> dict:
        img = data_dict["image"]
        spatial = tuple(img.shape[1:])
        channels = _pick_channels(img, self.p_per_channel)
        shared = self._sample_ghosting(spatial) if self.synchronize_channels else None
        return {"ghostings": {c: shared if shared is not None else self._sample_ghosting(spatial) for c in channels}}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        spatial = tuple(img.shape[1:])
        for c, ghost in params["ghostings"].items():
            if ghost["intensity"] == 0:
                continue
            size = spatial[ghost["axis"]]
            # line index in centred k-space: 0 at the k-space centre
            centred = torch.fft.ifftshift(torch.arange(size) - size // 2)
            modulated = (centred % ghost["period"]) == 0
            half_width = int(self.restore_center * size / 2)
            modulated &= centred.abs() > half_width
            lines = modulated.nonzero(as_tuple=False).flatten()
            mask = _line_mask(spatial, ghost["axis"], lines)
            factor = 1.0 - ghost["intensity"]
            img[c] = _through_kspace(img[c], lambda k: torch.where(mask, k * factor, k))
        return img

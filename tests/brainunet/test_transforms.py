"""Motion and ghosting artifact transforms (batchgeneratorsv2 style)."""

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform

from nnunet_transfer.brainunet.transforms import GhostingArtifactTransform, MotionArtifactTransform


def phantom(channels=3, shape=(24, 28, 20)):
    """A bright ellipsoid 'head' on a zero background, z-scored like nnU-Net's data."""
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij"))
    inside = (grid.square() / torch.tensor([0.5, 0.6, 0.7]).view(3, 1, 1, 1) ** 2).sum(0) < 1
    image = torch.zeros(channels, *shape)
    for c in range(channels):
        image[c][inside] = torch.randn(int(inside.sum())) * 0.5 + c
    return image


def segmentation(shape=(24, 28, 20)):
    seg = torch.zeros(1, *shape, dtype=torch.int16)
    seg[0, 8:14, 10:16, 6:12] = 2
    return seg


TRANSFORMS = [
    (MotionArtifactTransform, {"translation": 5.0, "corrupted_fraction": 0.3}, {"translation": 0.0}),
    (GhostingArtifactTransform, {"num_ghosts": 4, "intensity": 0.8}, {"intensity": 0.0}),
]


@pytest.mark.parametrize("cls, strong, zero", TRANSFORMS)
def test_is_a_batchgeneratorsv2_image_only_transform(cls, strong, zero):
    assert issubclass(cls, ImageOnlyTransform)


@pytest.mark.parametrize("cls, strong, zero", TRANSFORMS)
def test_preserves_shape_dtype_and_segmentation(cls, strong, zero):
    image, seg = phantom(), segmentation()
    out = cls(**strong)(image=image.clone(), segmentation=seg.clone())
    assert out["image"].shape == image.shape and out["image"].dtype == image.dtype
    assert out["segmentation"].dtype == seg.dtype and torch.equal(out["segmentation"], seg)
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize("cls, strong, zero", TRANSFORMS)
def test_zero_strength_leaves_image_unchanged(cls, strong, zero):
    image = phantom()
    out = cls(**{**strong, **zero})(image=image.clone(), segmentation=segmentation())
    assert torch.equal(out["image"], image)


@pytest.mark.parametrize("cls, strong, zero", TRANSFORMS)
def test_nonzero_strength_changes_image_visibly(cls, strong, zero):
    torch.manual_seed(0); np.random.seed(0)
    image = phantom()
    out = cls(**strong)(image=image.clone())["image"]
    for c in range(image.shape[0]):
        change = (out[c] - image[c]).abs().mean() / image[c].abs().mean()
        assert change > 0.02, f"channel {c} changed by {float(change):.4f} only"
    # the artifact spreads signal outside the head, where the phantom is zero
    background = image[0] == 0
    assert float(out[0][background].abs().mean()) > 1e-3


@pytest.mark.parametrize("cls, strong, zero", TRANSFORMS)
def test_deterministic_under_a_seed(cls, strong, zero):
    transform = cls(**{**strong, **({"translation": (1.0, 6.0)} if cls is MotionArtifactTransform
                                    else {"num_ghosts": (2, 6)})})
    results = []
    for _ in range(2):
        torch.manual_seed(42); np.random.seed(42)
        results.append(transform(image=phantom(shape=(16, 16, 16)))["image"])
    torch.manual_seed(43); np.random.seed(43)
    other = transform(image=phantom(shape=(16, 16, 16)))["image"]
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    assert not torch.equal(results[0], other)


def test_p_per_channel_zero_touches_nothing():
    image = phantom()
    out = MotionArtifactTransform(translation=5.0, p_per_channel=0.0)(image=image.clone())["image"]
    assert torch.equal(out, image)


def test_ghosting_adds_periodic_copies():
    image = torch.zeros(1, 32, 16, 16)
    image[0, 15:17, 6:10, 6:10] = 1.0  # a small block, 2 voxels thick along axis 0
    out = GhostingArtifactTransform(num_ghosts=4, intensity=0.8, axes=(0,), restore_center=0.0)(image=image.clone())
    profile = out["image"][0, :, 8, 8]
    # every 4th k-space line attenuated -> ghost copies every 32 / 4 = 8 voxels along axis 0
    ghosts = profile[[7, 8, 23, 24]]
    between = profile[[3, 4, 11, 12, 19, 20, 27, 28]]
    assert float(ghosts.min()) > 2 * float(between.max()) > 0
    assert float(profile[15]) > float(ghosts.max())  # the object itself stays the brightest
    assert float(out["image"][0, 7, 1, 1]) < 1e-4  # no ghost where no object projects


def test_motion_only_along_allowed_axis_and_bad_axis_rejected():
    with pytest.raises(ValueError, match="spatial axis"):
        MotionArtifactTransform(translation=2.0, phase_encoding_axes=(3,))(image=phantom())
    transform = MotionArtifactTransform(translation=2.0, phase_encoding_axes=(1,))
    params = transform.get_parameters(image=phantom())
    assert {m["axis"] for m in params["motions"].values()} == {1}


def test_works_on_2d_images():
    image = phantom(channels=2, shape=(24, 28, 20))[:, :, :, 10]
    for cls, strong, _ in TRANSFORMS:
        assert cls(**strong)(image=image.clone())["image"].shape == image.shape

"""Synthetic BraTS cases: determinism, label nesting, contrasts, domain shift, files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_transfer.synth import (MODALITIES, case_id, case_rng, generate_case, get_domain, recorded_settings,
                                   spacing_for, with_tumours, write_brats_cases)
from nnunet_transfer.synth.anatomy import CSF, ED, ET, GREY, NCR, WHITE, make_anatomy

SHAPE = (48, 48, 36)
N_CASES = 6


def _case(domain: str, index: int, shape=SHAPE):
    images, seg, spacing = generate_case(domain, shape, case_rng(domain, 0, index))
    # generate_case draws the anatomy first: the same generator gives the tissue classes
    tissue, seg_again = make_anatomy(shape, spacing, case_rng(domain, 0, index), get_domain(domain).tumour)
    assert np.array_equal(seg, seg_again)
    return images, seg, tissue


@pytest.fixture(scope="module")
def cases():
    return {d: [_case(d, k) for k in range(N_CASES)] for d in ("GLI", "SSA")}


def test_generate_is_deterministic_per_seed():
    a_images, a_seg, a_spacing = generate_case("SSA", SHAPE, case_rng("SSA", 3, 1))
    b_images, b_seg, b_spacing = generate_case("SSA", SHAPE, case_rng("SSA", 3, 1))
    c_images, _, _ = generate_case("SSA", SHAPE, case_rng("SSA", 4, 1))
    assert a_spacing == b_spacing
    assert np.array_equal(a_seg, b_seg)
    for name in MODALITIES:
        assert np.array_equal(a_images[name], b_images[name])
    assert not np.array_equal(a_images["t1n"], c_images["t1n"])


def test_shape_spacing_dtypes(cases):
    assert spacing_for((64, 64, 48)) == (3.75, 3.75, 155 / 48)
    for domain, dtype in (("GLI", np.int16), ("SSA", np.float32)):
        images, seg, tissue = cases[domain][0]
        assert seg.shape == SHAPE and seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
        for name in MODALITIES:
            assert images[name].shape == SHAPE and images[name].dtype == dtype
            assert images[name].min() >= 0
            # skull-stripped: exactly zero outside the brain, signal inside
            assert not images[name][tissue == 0].any()
            assert np.median(images[name][tissue > 0]) > 0


@pytest.mark.parametrize("domain", ["GLI", "SSA"])
def test_labels_are_nested(cases, domain):
    with_necrosis = 0
    for images, seg, tissue in cases[domain]:
        core = (seg == NCR) | (seg == ET)
        assert (seg == ET).sum() > 0 and (seg == ED).sum() > 0
        # necrosis is enclosed by enhancing tumour: its neighbours are NCR or ET
        ring = ndimage.binary_dilation(seg == NCR) & ~(seg == NCR)
        assert np.all(seg[ring] == ET)
        # oedema surrounds the core: the core's neighbours are core or ED
        shell = ndimage.binary_dilation(core) & ~core
        assert np.all(seg[shell] == ED)
        assert np.all(tissue[seg > 0] > 0)  # inside the brain
        # one connected tumour
        assert ndimage.label(seg > 0)[1] == 1
        with_necrosis += bool((seg == NCR).any())
    if domain == "SSA":
        assert with_necrosis >= 1


def test_some_tumours_without_necrosis_and_sizes_vary():
    segs = [generate_case("GLI", (32, 32, 24), case_rng("GLI", 0, k))[1] for k in range(16)]
    necrotic = [bool((s == NCR).any()) for s in segs]
    assert any(necrotic) and not all(necrotic)
    volumes = [int((s > 0).sum()) for s in segs]
    assert max(volumes) > 2 * min(volumes)
    centres = np.array([np.argwhere(s > 0).mean(axis=0) for s in segs])
    assert centres.std(axis=0).min() > 1.0  # positions vary


@pytest.mark.parametrize("domain", ["GLI", "SSA"])
def test_contrast_relations(cases, domain):
    margin = 1.2 if domain == "GLI" else 1.05  # SSA's blur mixes thin rims with their neighbours
    for images, seg, tissue in cases[domain]:
        healthy = seg == 0
        white = ndimage.binary_erosion(tissue == WHITE) & healthy
        med = {name: lambda mask, a=images[name].astype(np.float64): float(np.median(a[mask])) for name in MODALITIES}
        assert med["t2f"](seg == ED) > 1.3 * med["t2f"](white), "FLAIR oedema brighter than white matter"
        assert med["t1c"](seg == ET) > margin * med["t1c"](white), "T1Gd enhancing tumour brighter than white matter"
        deep_necrosis = ndimage.binary_erosion(seg == NCR)  # away from the rim's partial volume
        if deep_necrosis.sum() > 3:
            assert med["t1c"](seg == ET) > margin * 1.25 * med["t1c"](deep_necrosis), "enhancing rim, dark necrosis"
        # enhancement: T1Gd relative to T1 is higher in ET than in white matter
        ratio = lambda mask: med["t1c"](mask) / med["t1n"](mask)  # noqa: E731
        assert ratio(seg == ET) > margin * 1.25 * ratio(white)
        assert med["t1n"](white) > med["t1n"](healthy & (tissue == GREY)), "T1: white brighter than grey"
        csf = healthy & (tissue == CSF)
        if csf.sum() > 20:
            assert med["t2w"](csf) > med["t2w"](white), "T2: CSF bright"
            assert med["t2f"](csf) < med["t2f"](white), "FLAIR: CSF suppressed"


def _noise(image: np.ndarray, tissue: np.ndarray, seg: np.ndarray) -> float:
    """Noise sigma relative to white matter, from differences of in-plane neighbours."""
    white = ndimage.binary_erosion(tissue == WHITE) & (seg == 0)
    a = image.astype(np.float64)
    both = white[1:] & white[:-1]
    return float(np.std((a[1:] - a[:-1])[both]) / np.sqrt(2) / np.median(a[white]))


def _edge_sharpness(image: np.ndarray, tissue: np.ndarray) -> float:
    """Outermost brain layer over the next one: 1 for a sharp edge, lower when blurred."""
    brain = tissue > 0
    inner1 = ndimage.binary_erosion(brain)
    inner2 = ndimage.binary_erosion(brain, iterations=2)
    a = image.astype(np.float64)
    return float(a[brain & ~inner1].mean() / a[inner1 & ~inner2].mean())


def test_ssa_is_noisier_and_blurrier_than_gli(cases):
    noise = {d: np.mean([_noise(im["t1n"], t, s) for im, s, t in cases[d]]) for d in cases}
    sharp = {d: np.mean([_edge_sharpness(im["t1n"], t) for im, s, t in cases[d]]) for d in cases}
    assert noise["SSA"] > 1.8 * noise["GLI"], noise
    assert sharp["SSA"] < sharp["GLI"] - 0.08, sharp
    # thick slices: SSA varies less from slice to slice than in-plane (relative to GLI)
    def z_over_x(image):
        a = image.astype(np.float64)
        return np.abs(np.diff(a, axis=2)).mean() / np.abs(np.diff(a, axis=0)).mean()
    zx = {d: np.mean([z_over_x(im["t2f"]) for im, s, t in cases[d]]) for d in cases}
    assert zx["SSA"] < zx["GLI"], zx


def test_ssa_tumours_are_larger():
    gli = [int((generate_case("GLI", (32, 32, 24), case_rng("GLI", 0, k))[1] > 0).sum()) for k in range(8)]
    ssa = [int((generate_case("SSA", (32, 32, 24), case_rng("SSA", 0, k))[1] > 0).sum()) for k in range(8)]
    assert np.median(ssa) > 1.5 * np.median(gli)


def test_unknown_domain_and_bad_shape():
    with pytest.raises(ValueError, match="unknown synthetic domain 'MEN'"):
        generate_case("MEN", SHAPE)
    with pytest.raises(ValueError, match="shape"):
        generate_case("GLI", (64, 64))


def test_write_brats_cases_layout_and_geometry(tmp_path):
    folders = write_brats_cases(tmp_path, domain="SSA", n=2, seed=5, shape=(32, 32, 24), start_index=3)
    assert [f.name for f in folders] == ["BraTS-SSA-00003-000", "BraTS-SSA-00004-000"]
    # no temporary leftovers; synth.json records what decides the cases' content
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in folders] + ["synth.json"]
    assert recorded_settings(tmp_path) == {"domain": "SSA", "tumours": "SSA", "seed": 5, "shape": [32, 32, 24]}
    for folder in folders:
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(f"{folder.name}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "seg"))
        seg = sitk.ReadImage(str(folder / f"{folder.name}-seg.nii.gz"))
        assert seg.GetSize() == (32, 32, 24)
        assert np.allclose(seg.GetSpacing(), (7.5, 7.5, 155 / 24))
        assert seg.GetPixelID() == sitk.sitkUInt8
        t1 = sitk.ReadImage(str(folder / f"{folder.name}-t1n.nii.gz"))
        assert t1.GetPixelID() == sitk.sitkFloat32
        assert t1.GetSize() == seg.GetSize() and t1.GetSpacing() == seg.GetSpacing()
    # case k is the same whatever n and start_index; arrays are stored [x, y, z]
    images, seg_array, _ = generate_case("SSA", (32, 32, 24), case_rng("SSA", 5, 4))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(folders[1] / f"{case_id('SSA', 4)}-seg.nii.gz")))
    assert np.array_equal(written.transpose(2, 1, 0), seg_array)
    t2f = sitk.GetArrayFromImage(sitk.ReadImage(str(folders[1] / f"{case_id('SSA', 4)}-t2f.nii.gz")))
    assert np.array_equal(t2f.transpose(2, 1, 0), images["t2f"])


def test_write_is_idempotent_and_int16_for_gli(tmp_path):
    folders = write_brats_cases(tmp_path, domain="GLI", n=1, shape=(32, 32, 24))
    path = folders[0] / f"{folders[0].name}-t1c.nii.gz"
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkInt16
    stamp = path.stat().st_mtime_ns
    write_brats_cases(tmp_path, domain="GLI", n=2, shape=(32, 32, 24))
    assert path.stat().st_mtime_ns == stamp  # kept, not rewritten
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    write_brats_cases(tmp_path, domain="GLI", n=1, shape=(32, 32, 24), overwrite=True)
    assert path.stat().st_mtime_ns != stamp


def test_tumours_of_another_population_keep_the_scanner():
    """SSA's scanner with GLI's tumours: the acquisition of SSA, the labels' statistics of GLI."""
    profile = with_tumours("SSA", "GLI")
    assert profile.tumour == get_domain("GLI").tumour and profile.tumour != get_domain("SSA").tumour
    assert (profile.noise, profile.psf_mm, profile.dtype) == (get_domain("SSA").noise, get_domain("SSA").psf_mm,
                                                             "float32")
    images, seg, _ = generate_case(profile, SHAPE, case_rng("SSA", 0, 0))
    assert images["t1n"].dtype == np.float32
    # the same case drawn with GLI's population has GLI's tumour: its labels follow that profile
    tissue, expected = make_anatomy(SHAPE, spacing_for(SHAPE), case_rng("SSA", 0, 0), get_domain("GLI").tumour)
    assert np.array_equal(seg, expected)
    with pytest.raises(ValueError, match="unknown synthetic domain 'xyz'; choose one of GLI, SSA"):
        with_tumours("SSA", "xyz")


def test_a_folder_refuses_cases_of_other_settings(tmp_path):
    write_brats_cases(tmp_path, domain="SSA", n=1, shape=(32, 32, 24))
    before = sorted(p.name for p in tmp_path.iterdir())
    for changed in ({"tumours": "GLI"}, {"seed": 1}, {"shape": (32, 32, 32)}):
        kwargs = {"domain": "SSA", "n": 2, "shape": (32, 32, 24), **changed}
        key = next(iter(changed))
        with pytest.raises(ValueError, match=rf"synth.json: .*other settings \({key} .* there, .* asked\).*--overwrite"):
            write_brats_cases(tmp_path, **kwargs)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    # --overwrite replaces the old cases, also those it does not regenerate
    write_brats_cases(tmp_path, domain="SSA", n=1, shape=(32, 32, 24), start_index=1)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    write_brats_cases(tmp_path, domain="SSA", n=1, shape=(32, 32, 24), tumours="GLI", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BraTS-SSA-00000-000", "synth.json"]
    assert recorded_settings(tmp_path)["tumours"] == "GLI"
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "BraTS-SSA-00000-000" / "BraTS-SSA-00000-000-seg.nii.gz")))
    assert np.array_equal(seg.transpose(2, 1, 0), generate_case(with_tumours("SSA", "GLI"), (32, 32, 24),
                                                                case_rng("SSA", 0, 0))[1])

"""Synthetic BraTS 2023-format cases: generate one in memory, or write case folders.

Each case folder looks like a BraTS 2023 download::

    BraTS-SSA-00002-000/BraTS-SSA-00002-000-{t1n,t1c,t2w,t2f,seg}.nii.gz

with the BraTS field of view (240 x 240 x 155 mm), so the spacing is ``240 / shape``.
Case ``k`` of a domain and seed is the same whatever ``n`` and ``start_index`` select.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folders = write_brats_cases(Path(tempfile.mkdtemp()), "SSA", n=1, shape=(32, 32, 24))
    >>> sorted(p.name for p in folders[0].iterdir())[0]
    'BraTS-SSA-00000-000-seg.nii.gz'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunet_transfer.synth.acquisition import Domain, acquire, bias_field, get_domain
from nnunet_transfer.synth.anatomy import make_anatomy
from nnunet_transfer.synth.contrasts import MODALITIES, render_contrasts

logger = logging.getLogger(__name__)

FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)
DEFAULT_SHAPE = (64, 64, 48)
SETTINGS_FILE = "synth.json"  # what the cases of a folder were generated with


def spacing_for(shape: Sequence[int]) -> Tuple[float, float, float]:
    """Voxel spacing (mm) that gives the BraTS field of view at ``shape``."""
    if len(shape) != 3 or any(int(s) < 8 for s in shape):
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {tuple(shape)}")
    return tuple(f / int(s) for f, s in zip(FIELD_OF_VIEW_MM, shape))  # type: ignore[return-value]


def case_id(domain: str, index: int) -> str:
    """The BraTS 2023 case identifier, e.g. ``BraTS-GLI-00007-000``."""
    return f"BraTS-{domain.upper()}-{int(index):05d}-000"


def case_rng(domain: str, seed: int, index: int) -> np.random.Generator:
    """The random generator of case ``index``: independent of how many cases are written."""
    return np.random.default_rng([int(seed), zlib.crc32(domain.upper().encode()), int(index)])


def generate_case(domain: str | Domain = "GLI", shape: Sequence[int] = DEFAULT_SHAPE,
                  rng: np.random.Generator | None = None
                  ) -> Tuple[Dict[str, np.ndarray], np.ndarray, Tuple[float, float, float]]:
    """One synthetic case: ``(images, seg, spacing)``, arrays indexed ``[x, y, z]``.

    ``images`` maps ``t1n``, ``t1c``, ``t2w``, ``t2f`` to int16 (GLI) or float32 (SSA)
    arrays, 0 outside the brain; ``seg`` is uint8 with 0 background, 1 NCR, 2 ED, 3 ET.

    >>> images, seg, spacing = generate_case("GLI", (32, 32, 24), np.random.default_rng(0))
    >>> images["t1n"].dtype, seg.dtype, spacing
    (dtype('int16'), dtype('uint8'), (7.5, 7.5, 6.458333333333333))
    """
    profile = domain if isinstance(domain, Domain) else get_domain(domain)
    shape = tuple(int(s) for s in shape)
    spacing = spacing_for(shape)
    rng = rng if rng is not None else np.random.default_rng()
    tissue, seg = make_anatomy(shape, spacing, rng, profile.tumour)
    ideal = render_contrasts(tissue, seg, rng, contrast=profile.contrast)
    brain = tissue > 0
    ghost = rng.random() < profile.ghost_probability
    noise = rng.uniform(*profile.noise)
    bias = bias_field(shape, profile, rng)
    images = {}
    for name in MODALITIES:
        scale = rng.uniform(*profile.scale)
        image = acquire(ideal[name], spacing, profile, rng, ghost=ghost, noise=noise, bias=bias)
        image = np.where(brain, image * scale, 0.0)  # skull-stripped: exactly 0 outside the brain
        if np.dtype(profile.dtype).kind == "i":
            image = np.clip(np.rint(image), 0, np.iinfo(profile.dtype).max)
        images[name] = image.astype(profile.dtype)
    return images, seg, spacing


def _write_nifti(array: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path), useCompression=True)


def _complete(folder: Path) -> bool:
    return all((folder / f"{folder.name}-{suffix}.nii.gz").is_file() for suffix in (*MODALITIES, "seg"))


def with_tumours(domain: str, tumours: Optional[str] = None) -> Domain:
    """The acquisition of ``domain`` with the tumour population of ``tumours`` (default: its own).

    ``with_tumours("SSA", "GLI")`` keeps the 1.5T scanner and draws GLI's smaller, less necrotic
    tumours: a shift of the images only, without the SSA population's different label statistics.

    >>> with_tumours("SSA", "GLI").tumour == get_domain("GLI").tumour, with_tumours("SSA").name
    (True, 'SSA')
    """
    profile = get_domain(domain)
    if tumours is None:
        return profile
    return dataclasses.replace(profile, tumour=get_domain(tumours).tumour)


def settings(domain: str, seed: int, shape: Sequence[int], tumours: Optional[str] = None) -> dict:
    """What decides a case's content (recorded in ``synth.json``): the cases' indices do not."""
    name = get_domain(domain).name
    return {"domain": name, "tumours": get_domain(tumours).name if tumours else name, "seed": int(seed),
            "shape": [int(s) for s in shape]}


def recorded_settings(out_dir: Path) -> Optional[dict]:
    """The settings ``out_dir``'s cases were written with (``None``: no ``synth.json``)."""
    path = Path(out_dir) / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _record(out_dir: Path, wanted: dict, overwrite: bool) -> None:
    """Refuse to add cases of other settings to a folder; record the settings (atomically).

    With ``overwrite`` the case folders of the other settings are removed first, so that the
    record holds for every case in the folder.
    """
    path = out_dir / SETTINGS_FILE
    found = recorded_settings(out_dir)
    if found is not None and found != wanted:
        differ = ", ".join(f"{k} {found.get(k)!r} there, {v!r} asked" for k, v in wanted.items() if found.get(k) != v)
        if not overwrite:
            raise ValueError(f"{path}: the cases in {out_dir} were generated with other settings ({differ}); write "
                             f"into another folder, or pass --overwrite (overwrite=True) to replace them")
        old = sorted(p for p in out_dir.glob(f"BraTS-{found.get('domain', '')}-*-000") if p.is_dir())
        logger.warning("%s: removing %d case folder(s) generated with other settings (%s)", out_dir, len(old), differ)
        for folder in old:
            shutil.rmtree(folder)
    if found != wanted:
        from nnunet_transfer.evaluation.evaluate import write_json_atomic

        write_json_atomic(wanted, path)


def write_brats_cases(out_dir: Path, domain: str = "GLI", n: int = 4, seed: int = 0,
                      shape: Sequence[int] = DEFAULT_SHAPE, start_index: int = 0,
                      overwrite: bool = False, tumours: Optional[str] = None) -> List[Path]:
    """Write ``n`` BraTS 2023-format case folders into ``out_dir``; return their paths.

    Each case is written to a temporary folder and moved into place when complete.
    Complete case folders already there are kept (the content is deterministic) unless
    ``overwrite``; ``out_dir/synth.json`` records the settings, and adding cases of other
    settings (domain, tumours, seed, shape) to a folder is refused. ``tumours`` draws the
    tumours of another domain's population (:func:`with_tumours`).
    """
    from tqdm import tqdm

    profile = with_tumours(domain, tumours)
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if int(start_index) < 0 or int(start_index) + int(n) > 100000:
        raise ValueError(f"case indices must lie in 0..99999, got start_index={start_index}, n={n}")
    shape = tuple(int(s) for s in shape)
    spacing_for(shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _record(out_dir, settings(domain, seed, shape, tumours), overwrite)
    folders = []
    for index in tqdm(range(int(start_index), int(start_index) + int(n)), desc=f"synth {profile.name}",
                      unit="case", disable=None):
        name = case_id(profile.name, index)
        final = out_dir / name
        folders.append(final)
        if final.exists() and _complete(final) and not overwrite:
            logger.debug("keeping existing %s", final)
            continue
        images, seg, spacing = generate_case(profile, shape, case_rng(profile.name, seed, index))
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
        try:
            for key, array in images.items():
                _write_nifti(array, spacing, tmp / f"{name}-{key}.nii.gz")
            _write_nifti(seg, spacing, tmp / f"{name}-seg.nii.gz")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %d synthetic %s cases of shape %s into %s", len(folders), profile.name, shape, out_dir)
    return folders

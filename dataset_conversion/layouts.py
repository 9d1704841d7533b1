"""Recognise BraTS download layouts and list their cases.

Two layouts are recognised by their folder and file names:

- ``brats2023`` (BraTS 2023/2024, every prefix: GLI, SSA, PED, MEN, MET, ...):
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``, labels 0/1/2/3;
- ``brats2021``: ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``, labels
  0/1/2/4 (4, enhancing tumour, becomes 3).

``.nii`` works as well as ``.nii.gz``; stray files and folders (README, .DS_Store) are
ignored. The case folders may sit directly in the given folder or one level below it.

Example:
    >>> canonical_modalities(["flair", "t1ce", "t2w"])
    ['t2f', 't1c', 't2w']
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

#: Canonical modality order: channel 0000=T1, 0001=T1Gd, 0002=T2, 0003=FLAIR.
MODALITIES: Tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
#: nnU-Net channel name per modality (dataset.json ``channel_names``).
CHANNEL_NAMES: Dict[str, str] = {"t1n": "T1", "t1c": "T1Gd", "t2w": "T2", "t2f": "FLAIR"}
_ALIASES = {"t1": "t1n", "t1n": "t1n", "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t2": "t2w", "t2w": "t2w",
            "t2f": "t2f", "flair": "t2f"}
ENDINGS: Tuple[str, ...] = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Layout:
    """How one BraTS release names its case folders, files and labels."""

    name: str
    case_pattern: str
    separator: str
    suffixes: Dict[str, str]  # canonical modality -> file suffix
    seg_suffix: str
    label_map: Dict[int, int]  # source label -> nnU-Net label (0 must map to 0)

    def matches(self, folder_name: str) -> bool:
        return re.fullmatch(self.case_pattern, folder_name) is not None

    def file_stem(self, case_id: str, suffix: str) -> str:
        return f"{case_id}{self.separator}{suffix}"


BRATS2023 = Layout("brats2023", r"BraTS-[A-Za-z]+-\d+-\d+", "-",
                   {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"}, "seg",
                   {0: 0, 1: 1, 2: 2, 3: 3})
BRATS2021 = Layout("brats2021", r"BraTS20(19|20|21)_\d+", "_",
                   {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"}, "seg",
                   {0: 0, 1: 1, 2: 2, 4: 3})
LAYOUTS: Tuple[Layout, ...] = (BRATS2023, BRATS2021)


@dataclass
class SourceCase:
    """One BraTS case folder: its image per modality (None when missing) and its label file."""

    case_id: str
    folder: Path
    images: Dict[str, Optional[Path]]
    seg: Optional[Path]
    missing: List[str] = field(default_factory=list)  # expected file names not found

    @property
    def labeled(self) -> bool:
        return self.seg is not None


def canonical_modalities(modalities: Optional[Sequence[str]]) -> List[str]:
    """Canonical names (t1n, t1c, t2w, t2f) in the given order; all four when None."""
    if modalities is None:
        return list(MODALITIES)
    names = []
    for name in modalities:
        key = _ALIASES.get(str(name).lower())
        if key is None:
            raise ValueError(f"unknown modality {name!r}; use t1n, t1c, t2w, t2f "
                             f"(or the BraTS 2021 names t1, t1ce, t2, flair)")
        if key in names:
            raise ValueError(f"modality {name!r} given twice")
        names.append(key)
    if not names:
        raise ValueError("give at least one modality")
    return names


def _find(folder: Path, stem: str, files: set) -> Optional[Path]:
    for ending in ENDINGS:
        if stem + ending in files:
            return folder / (stem + ending)
    return None


def _case_folders(source: Path) -> Tuple[Optional[Layout], List[Path]]:
    found: Dict[str, List[Path]] = {}
    for child in sorted(source.iterdir()):
        if not child.is_dir():
            continue
        for layout in LAYOUTS:
            if layout.matches(child.name):
                found.setdefault(layout.name, []).append(child)
    if len(found) > 1:
        raise ValueError(f"{source} mixes BraTS layouts ({', '.join(sorted(found))}); convert them separately")
    if not found:
        return None, []
    name, folders = next(iter(found.items()))
    return next(l for l in LAYOUTS if l.name == name), folders


def discover(source: Path, modalities: Sequence[str]) -> Tuple[Layout, List[SourceCase]]:
    """The layout of ``source`` and its cases, with the files of ``modalities`` looked up.

    Missing modality files are recorded in ``SourceCase.missing`` (checked later), a
    missing ``seg`` file makes the case unlabeled (it goes to imagesTs).
    """
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"BraTS folder {source} does not exist or is not a folder")
    layout, folders = _case_folders(source)
    if layout is None:  # e.g. a zip extracted into a wrapping folder
        for child in sorted(p for p in source.iterdir() if p.is_dir()):
            layout, folders = _case_folders(child)
            if layout is not None:
                logger.info("found the BraTS case folders in %s", child)
                break
    if layout is None:
        raise ValueError(f"no BraTS case folders in {source}: expected folders such as BraTS-GLI-00000-000 "
                         f"(BraTS 2023/2024) or BraTS2021_00000 (BraTS 2021), here or one level below")
    cases = [read_case(folder, layout, modalities) for folder in folders]
    logger.info("%s: %d case folders in the %s layout", source, len(cases), layout.name)
    return layout, cases


def layout_of(folder_name: str) -> Optional[Layout]:
    """The layout whose case folders are named like ``folder_name``, or None.

    >>> layout_of("BraTS2021_00042").name, layout_of("imagesTr")
    ('brats2021', None)
    """
    return next((layout for layout in LAYOUTS if layout.matches(folder_name)), None)


def read_case(folder: Path, layout: Layout, modalities: Sequence[str]) -> SourceCase:
    """One case folder of ``layout`` with the files of ``modalities`` (and ``seg``) looked up."""
    folder = Path(folder)
    case_id = folder.name
    files = {p.name for p in folder.iterdir()}
    images: Dict[str, Optional[Path]] = {}
    missing = []
    for modality in modalities:
        stem = layout.file_stem(case_id, layout.suffixes[modality])
        images[modality] = _find(folder, stem, files)
        if images[modality] is None:
            missing.append(f"{stem}.nii.gz")
    seg = _find(folder, layout.file_stem(case_id, layout.seg_suffix), files)
    return SourceCase(case_id, folder, images, seg, missing)

"""Per-case checks of BraTS files: readable, complete, same geometry, finite, not blank, known labels.

Each check returns a problem sentence (or None); ``Defect`` ties it to a case and a file
so that errors say what is wrong where.

Example:
    >>> import numpy as np
    >>> label_problem(np.array([0, 1, 2, 4.0]), {0: 0, 1: 1, 2: 2, 3: 3})
    'unexpected label value(s) 4 (expected 0, 1, 2, 3)'
    >>> str(Defect("BraTS-GLI-00000-000", "BraTS-GLI-00000-000-t1c.nii.gz", "missing"))
    'BraTS-GLI-00000-000: BraTS-GLI-00000-000-t1c.nii.gz: missing'
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_transfer.dataset_conversion._gzip import inflate

#: Geometry tolerances between the files of one case (mm, or unitless for direction).
SPACING_RTOL = 1e-4
ORIGIN_ATOL = 1e-3
DIRECTION_ATOL = 1e-4

_FLOAT_IDS = {sitk.sitkFloat32, sitk.sitkFloat64}


@dataclass(frozen=True)
class Defect:
    """A problem found in one file of one case."""

    case_id: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.file}: {self.problem}"


class DefectiveCasesError(ValueError):
    """Raised when cases fail their checks; ``defects`` lists every problem found."""

    def __init__(self, defects: Sequence[Defect], hint: str = ""):
        self.defects = list(defects)
        cases = sorted({d.case_id for d in self.defects})
        lines = [str(d) for d in self.defects[:20]]
        if len(self.defects) > 20:
            lines.append(f"... and {len(self.defects) - 20} more")
        super().__init__(f"{len(cases)} defective case(s): " + "; ".join(lines) + (f". {hint}" if hint else ""))


@dataclass(frozen=True)
class Header:
    """The geometry and voxel type of an image file, read without its voxels."""

    size: Tuple[int, ...]  # SimpleITK order (x, y, z)
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    pixel_id: int
    components: int

    @property
    def is_float(self) -> bool:
        return self.pixel_id in _FLOAT_IDS

    def same_geometry(self, other: "Header") -> bool:
        """Exactly the same grid (no tolerance): nothing to rewrite."""
        return (self.size, self.spacing, self.origin, self.direction) == (
            other.size, other.spacing, other.origin, other.direction)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def read_header(path: Path) -> Tuple[Optional[Header], Optional[str]]:
    """``(header, None)`` or ``(None, problem)`` for an unreadable or non-3D file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = next((l.strip() for l in str(exc).splitlines() if l.strip()), "unknown error")
        return None, f"unreadable ({first[:200]})"
    header = Header(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()), reader.GetPixelID(), reader.GetNumberOfComponents())
    if reader.GetDimension() != 3 or header.components != 1:
        return None, (f"not a 3D single-channel image (dimension {reader.GetDimension()}, "
                      f"{header.components} components)")
    problem = truncation_problem(Path(path))
    return (None, problem) if problem else (header, None)


def _nifti_data_bytes(head: bytes) -> Optional[int]:
    """vox_offset + voxel bytes from the first bytes of a NIfTI-1/2 header, or None."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = struct.unpack(endian + "f", head[108:112])[0]
            ndim = dim[0]
        elif len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            dim = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = struct.unpack(endian + "q", head[168:176])[0]
            ndim = dim[0]
        else:
            continue
        if not 1 <= ndim <= 7 or bitpix <= 0:
            return None
        return int(offset) + math.prod(max(1, d) for d in dim[1:ndim + 1]) * bitpix // 8
    return None


_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                 1280: "u8"}


def read_voxels(path: Path) -> np.ndarray:
    """The voxels of a 3D NIfTI file as stored (numpy order z, y, x, as SimpleITK gives them).

    SimpleITK's NIfTI reader turns NaN and inf into 0, which would hide exactly the defects
    we look for, so voxels are read here with numpy (scl_slope/scl_inter applied when set).
    Raises ValueError for files this reader does not handle.
    """
    path = Path(path)
    raw = inflate(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    for endian in "<>":
        if struct.unpack(endian + "i", raw[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", raw[40:56])
            code = struct.unpack(endian + "h", raw[70:72])[0]
            offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            slope, inter = struct.unpack(endian + "2f", raw[112:120])
            break
        if struct.unpack(endian + "i", raw[:4])[0] == 540:
            code = struct.unpack(endian + "h", raw[12:14])[0]
            dim = struct.unpack(endian + "8q", raw[16:80])
            offset = struct.unpack(endian + "q", raw[168:176])[0]
            slope, inter = struct.unpack(endian + "2d", raw[176:192])
            break
    else:
        raise ValueError("not a NIfTI-1/2 file")
    if code not in _NIFTI_DTYPES:
        raise ValueError(f"NIfTI datatype {code} is not supported")
    shape = tuple(max(1, int(d)) for d in dim[1:dim[0] + 1])
    count = math.prod(shape)
    dtype = np.dtype(endian + _NIFTI_DTYPES[code])
    if len(raw) < offset + count * dtype.itemsize:
        raise ValueError(f"file holds {len(raw)} bytes, the header needs {offset + count * dtype.itemsize}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape[::-1])
    if np.isfinite(slope) and slope != 0 and (slope, inter) != (1, 0):
        # the stored values scaled: the result is what the file holds (a uint8 file with
        # scl_inter -1 holds -1), so it must not be cast back to the storage type
        return data.astype(np.float64) * slope + inter
    return data.astype(dtype.newbyteorder("="), copy=False)


def truncation_problem(path: Path) -> Optional[str]:
    """Cheap completeness check: does the file hold as many bytes as its header promises?

    For ``.nii.gz`` the gzip trailer stores the uncompressed size, so a cut-off download
    is caught without decompressing the whole file.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                expected = _nifti_data_bytes(fh.read(540))
            if expected is None or expected >= 2 ** 32:
                return None
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                stored = struct.unpack("<I", fh.read(4))[0]
            if stored != expected:  # cut off, or several gzip members (bgzip): count for real
                actual = _gunzipped_size(path)
                if actual < expected:
                    return ("truncated or corrupt (gzip stream ends early)" if actual < 0 else
                            f"truncated (gzip holds {actual} bytes, the header needs {expected})")
        elif path.name.endswith(".nii"):
            with open(path, "rb") as fh:
                expected = _nifti_data_bytes(fh.read(540))
            if expected is not None and path.stat().st_size < expected:
                return f"truncated ({path.stat().st_size} bytes, the header needs {expected})"
    except (OSError, EOFError, struct.error) as exc:
        return f"unreadable ({exc})"
    return None


def _gunzipped_size(path: Path, chunk: int = 1 << 20) -> int:
    """Decompressed size of a gzip file, or -1 when it is cut off or corrupt."""
    size = 0
    try:
        with gzip.open(path, "rb") as fh:
            while True:
                block = fh.read(chunk)
                if not block:
                    return size
                size += len(block)
    except (OSError, EOFError, zlib.error):
        return -1


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def geometry_problem(reference: Header, other: Header, reference_name: str) -> Optional[str]:
    """How ``other``'s grid differs from ``reference``'s beyond the tolerances, or None."""
    if reference.size != other.size:
        return f"shape {_fmt(other.size)} differs from {reference_name}'s {_fmt(reference.size)}"
    if not np.allclose(other.spacing, reference.spacing, rtol=SPACING_RTOL, atol=0):
        return f"spacing {_fmt(other.spacing)} differs from {reference_name}'s {_fmt(reference.spacing)}"
    if not np.allclose(other.origin, reference.origin, rtol=0, atol=ORIGIN_ATOL):
        return f"origin {other.origin} differs from {reference_name}'s {reference.origin}"
    if not np.allclose(other.direction, reference.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"direction {other.direction} differs from {reference_name}'s {reference.direction}"
    return None


def finite_problem(array: np.ndarray) -> Optional[str]:
    """A sentence about NaN or infinite voxels, or None (integer arrays always pass)."""
    if not np.issubdtype(array.dtype, np.floating):
        return None
    if np.isfinite(array).all():
        return None
    return f"{int(np.isnan(array).sum())} NaN and {int(np.isinf(array).sum())} infinite voxel(s)"


#: A gzip file smaller than 1/BLANK_GZIP_RATIO of its voxel bytes may hold a constant volume
#: (gzip packs one of about 1000:1; MR images compress far less) and is read to find out.
BLANK_GZIP_RATIO = 50


def may_be_blank(path: Path) -> bool:
    """Cheap pre-test for :func:`blank_problem`: False only when the file cannot be constant.

    A ``.nii.gz`` that compresses less than ``BLANK_GZIP_RATIO``:1 holds varying voxels; any
    other file has to be read to tell.
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        return True
    try:
        with gzip.open(path, "rb") as fh:
            expected = _nifti_data_bytes(fh.read(540))
    except (OSError, EOFError):
        return True
    return expected is None or path.stat().st_size * BLANK_GZIP_RATIO >= expected


def blank_problem(array: np.ndarray) -> Optional[str]:
    """A sentence about an image whose voxels all hold one value (a blank export), or None.

    >>> blank_problem(np.zeros((2, 3, 4)))
    'blank image: all 24 voxels are 0 (an empty or failed export?)'
    """
    if array.size == 0:
        return "empty image (no voxels)"
    first = array.flat[0]
    if np.all(array == first):
        return f"blank image: all {array.size} voxels are {float(first):g} (an empty or failed export?)"
    return None


def label_problem(array: np.ndarray, label_map: Dict[int, int]) -> Optional[str]:
    """A sentence about label values outside ``label_map``'s keys, or None."""
    _, problem = convert_labels(array, label_map)
    return problem


def convert_labels(array: np.ndarray, label_map: Dict[int, int]) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``(uint8 labels, None)`` with ``label_map`` applied, or ``(None, problem)``."""
    array = np.asarray(array)
    with np.errstate(invalid="ignore"):
        values = array.astype(np.uint8, copy=False)  # fast path: every value an integer in 0..255
    if array.dtype != np.uint8 and not np.array_equal(values, array):
        return None, _label_defect(array, label_map)
    high = int(values.max()) if values.size else 0
    gaps = [v for v in range(high + 1) if v not in label_map]  # values that would be wrong
    present = [v for v in gaps if (values == v).any()] if len(gaps) < 4 else \
        [int(v) for v in np.nonzero(np.bincount(values.ravel(), minlength=256))[0] if int(v) not in label_map]
    if present:
        return None, (f"unexpected label value(s) {', '.join(map(str, present))} "
                      f"(expected {', '.join(map(str, sorted(label_map)))})")
    changed = {s: t for s, t in label_map.items() if s != t}
    if not changed:
        return values, None
    if values is array:  # uint8 input: never modify the caller's array
        values = values.copy()
    if len(changed) == 1:
        (source, target), = changed.items()
        values[values == source] = target
        return values, None
    lut = np.arange(256, dtype=np.uint8)
    for source, target in changed.items():
        lut[source] = target
    return lut[values], None


def _label_defect(array: np.ndarray, label_map: Dict[int, int]) -> str:
    """Why ``array`` is not a uint8-representable label map (the slow, explaining path)."""
    if np.issubdtype(array.dtype, np.floating):
        problem = finite_problem(array)
        if problem:
            return problem
        fractional = np.floor(array) != array
        if fractional.any():
            values = ", ".join(f"{v:g}" for v in np.unique(array[fractional])[:5])
            return f"non-integer label value(s) {values}"
    bad = np.unique(array[(array < 0) | (array > 255)])[:5]
    return (f"unexpected label value(s) {', '.join(f'{v:g}' for v in bad)} "
            f"(expected {', '.join(map(str, sorted(label_map)))})")

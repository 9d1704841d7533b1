"""BraTS post-processing rules: drop small connected components, relabel a small ET as NCR.

A :class:`Rules` object holds every threshold; :func:`apply` runs them on one label map
(0 background, 1 NCR, 2 ED, 3 ET). All thresholds are volumes in **mm³** (voxel count ×
product of the spacing), so one rule set carries over between datasets of different
spacings; on 1 mm isotropic BraTS images mm³ equals voxels. A threshold of 0 disables its
rule. The rules run in this fixed order:

1. **Small components.** For each structure with a threshold, in the order WT (1, 2, 3),
   TC (1, 3), ET (3), NCR (1), ED (2), every 26-connected component of the structure's mask
   with a volume *below* the threshold is removed: its voxels take the label most frequent
   in its one-voxel shell (the 26-neighbours outside it), i.e. what surrounds it. A small WT
   component becomes background; an ET island inside oedema becomes ED (so it leaves TC as
   well), one inside necrosis NCR. Ties go to the smaller label, a component with no shell
   (it fills the image) becomes background. 26-connectivity is the one of the BraTS 2023
   lesion-wise metrics.
2. **ET → NCR.** When the case's ET volume (after step 1) is non-zero and below
   ``et_to_ncr_volume_mm3``, or its ratio to the TC volume is below ``et_to_ncr_ratio``,
   every ET voxel becomes NCR (WT and TC are unchanged). This is the classic BraTS rule for
   cases without enhancing tumour, where any predicted ET scores Dice 0.

Example:
    >>> import numpy as np
    >>> seg = np.zeros((20, 20, 20), np.uint8)
    >>> seg[2:10, 2:10, 2:10] = 2; seg[4:8, 4:8, 4:8] = 3      # a tumour: ED around ET
    >>> seg[15:17, 15:17, 15:17] = 2                           # an 8 mm³ speck
    >>> rules = Rules(min_component_mm3={"WT": 10}, et_to_ncr_volume_mm3=100)
    >>> out = apply(seg, (1.0, 1.0, 1.0), rules)
    >>> int(out[15, 15, 15]), int(out[5, 5, 5])                # speck removed; 64 mm³ ET -> NCR
    (0, 1)
    >>> Rules.from_dict(rules.to_dict()) == rules
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from nnunet_transfer.evaluation.metrics import bounding_box

#: structures a component rule may name, in the order the rules are applied
STRUCTURES: Dict[str, Tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "NCR": (1,), "ED": (2,)}
REGIONS = ("WT", "TC", "ET")
BRATS_LABELS = (0, 1, 2, 3)
NCR, ET = 1, 3
_CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def _threshold(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0 disables the rule), got {value!r}")
    return number


@dataclass
class Rules:
    """Post-processing thresholds (mm³; ratio without unit); 0 or absent disables a rule.

    Args:
        min_component_mm3: structure (``WT``, ``TC``, ``ET``, ``NCR``, ``ED``) -> smallest
            component volume kept; components below it are removed.
        et_to_ncr_volume_mm3: relabel all ET as NCR when the ET volume is below this.
        et_to_ncr_ratio: relabel all ET as NCR when ET volume / TC volume is below this.

    >>> Rules({"ET": 50, "WT": 0}).min_component_mm3      # zeros dropped, order canonical
    {'ET': 50.0}
    >>> Rules().is_identity
    True
    """

    min_component_mm3: Dict[str, float] = field(default_factory=dict)
    et_to_ncr_volume_mm3: float = 0.0
    et_to_ncr_ratio: float = 0.0

    def __post_init__(self) -> None:
        given = dict(self.min_component_mm3 or {})
        unknown = sorted(set(given) - set(STRUCTURES))
        if unknown:
            raise ValueError(f"unknown structure(s) {', '.join(map(repr, unknown))} in min_component_mm3; "
                             f"choose from {', '.join(STRUCTURES)}")
        values = {s: _threshold(f"min_component_mm3[{s!r}]", given[s]) for s in STRUCTURES if s in given}
        self.min_component_mm3 = {s: v for s, v in values.items() if v > 0}
        self.et_to_ncr_volume_mm3 = _threshold("et_to_ncr_volume_mm3", self.et_to_ncr_volume_mm3)
        self.et_to_ncr_ratio = _threshold("et_to_ncr_ratio", self.et_to_ncr_ratio)

    @property
    def is_identity(self) -> bool:
        """Whether no rule is active (:func:`apply` returns a copy of its input)."""
        return not self.min_component_mm3 and not self.et_to_ncr_volume_mm3 and not self.et_to_ncr_ratio

    def with_component(self, structure: str, min_volume_mm3: float) -> "Rules":
        """A copy with the component threshold of ``structure`` set (0 removes it)."""
        return Rules({**self.min_component_mm3, structure: min_volume_mm3},
                     self.et_to_ncr_volume_mm3, self.et_to_ncr_ratio)

    def with_relabel(self, volume_mm3: Optional[float] = None, ratio: Optional[float] = None) -> "Rules":
        """A copy with the ET -> NCR thresholds given (``None`` keeps the current one)."""
        return Rules(dict(self.min_component_mm3),
                     self.et_to_ncr_volume_mm3 if volume_mm3 is None else volume_mm3,
                     self.et_to_ncr_ratio if ratio is None else ratio)

    def to_dict(self) -> dict:
        """JSON-ready form: every structure listed (0 = off), the ET -> NCR thresholds apart."""
        return {"min_component_mm3": {s: self.min_component_mm3.get(s, 0.0) for s in STRUCTURES},
                "et_to_ncr": {"volume_mm3": self.et_to_ncr_volume_mm3, "et_tc_ratio": self.et_to_ncr_ratio}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Rules":
        """Inverse of :meth:`to_dict` (missing entries are 0; unknown keys are an error)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"rules must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"min_component_mm3", "et_to_ncr"})
        if unknown:
            raise ValueError(f"unknown rule entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                             f"expected min_component_mm3 and et_to_ncr")
        components = data.get("min_component_mm3") or {}
        relabel = data.get("et_to_ncr") or {}
        if not isinstance(components, Mapping) or not isinstance(relabel, Mapping):
            raise ValueError("min_component_mm3 and et_to_ncr must be JSON objects")
        extra = sorted(set(relabel) - {"volume_mm3", "et_tc_ratio"})
        if extra:
            raise ValueError(f"unknown et_to_ncr entr{'y' if len(extra) == 1 else 'ies'} {', '.join(extra)}; "
                             f"expected volume_mm3 and et_tc_ratio")
        return cls(dict(components), relabel.get("volume_mm3", 0.0), relabel.get("et_tc_ratio", 0.0))

    def describe(self) -> str:
        """One line for logs, e.g. ``WT < 50 mm³ removed; ET -> NCR if ET < 200 mm³``."""
        parts = [f"{s} < {v:g} mm³ removed" for s, v in self.min_component_mm3.items()]
        if self.et_to_ncr_volume_mm3:
            parts.append(f"ET -> NCR if ET < {self.et_to_ncr_volume_mm3:g} mm³")
        if self.et_to_ncr_ratio:
            parts.append(f"ET -> NCR if ET/TC < {self.et_to_ncr_ratio:g}")
        return "; ".join(parts) or "no post-processing"


def _spacing(spacing: Union[float, Sequence[float], None], ndim: int) -> Tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (float(spacing),) * ndim  # type: ignore[arg-type]
    values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {values} must hold {ndim} positive numbers (one per array axis)")
    return values


def check_label_map(seg: np.ndarray, what: str = "segmentation") -> None:
    """Raise ``ValueError`` unless ``seg`` is a 3-D integer BraTS label map (values 0-3)."""
    if seg.ndim != 3:
        raise ValueError(f"{what} must be a 3-D label map, got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"{what} must hold integer labels, got dtype {seg.dtype}")
    if seg.size and (seg.min() < 0 or seg.max() > BRATS_LABELS[-1]):
        bad = [int(v) for v in np.unique(seg) if int(v) not in BRATS_LABELS]
        raise ValueError(f"{what} holds label(s) {bad}; BraTS 2023 label maps hold 0 (background), 1 (NCR), "
                         f"2 (ED) and 3 (ET) only")


@dataclass(frozen=True)
class Component:
    """A connected component: where it is, its voxels there, its volume and the label around it."""

    where: Tuple[slice, ...]       # its bounding box grown by one voxel, in the label map
    mask: np.ndarray               # its voxels within ``where``
    volume_mm3: float
    fill: int                      # the label most frequent in its one-voxel shell


def small_components(seg: np.ndarray, values: Sequence[int], below_mm3: float,
                     spacing: Sequence[float]) -> List[Component]:
    """The 26-connected components of ``isin(seg, values)`` with a volume below ``below_mm3``.

    >>> seg = np.zeros((9, 9, 9), np.uint8); seg[1:8, 1:8, 1:8] = 2; seg[4, 4, 4] = 3
    >>> [(c.volume_mm3, c.fill) for c in small_components(seg, (3,), 2.0, (1, 1, 1))]
    [(1.0, 2)]
    """
    if below_mm3 <= 0:
        return []
    mask = np.isin(seg, values)
    box = bounding_box(mask, margin=1)
    if box is None:
        return []
    sub = seg[box]
    components, count = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:] * float(np.prod(spacing))
    small = np.flatnonzero(sizes < below_mm3) + 1
    if small.size == 0:
        return []
    objects = ndimage.find_objects(components)
    found = []
    for index in small:
        grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(objects[index - 1], sub.shape))
        component = components[grown] == index
        shell = ndimage.binary_dilation(component, structure=_CONNECTIVITY_26) & ~component
        around = sub[grown][shell]  # no voxel of the structure: distinct components never touch
        fill = int(np.bincount(around.astype(np.int64)).argmax()) if around.size else 0
        where = tuple(slice(b.start + g.start, b.start + g.stop) for b, g in zip(box, grown))
        found.append(Component(where, component, float(sizes[index - 1]), fill))
    return found


def fill_components(seg: np.ndarray, components: Sequence[Component]) -> None:
    """Give each component's voxels (in place) the label around it."""
    for component in components:
        seg[component.where][component.mask] = component.fill


def remove_small_components(seg: np.ndarray, values: Sequence[int], min_volume_mm3: float,
                            spacing: Sequence[float]) -> int:
    """Remove (in place) the 26-connected components of ``isin(seg, values)`` below ``min_volume_mm3``.

    Each removed component takes the label most frequent in its one-voxel shell (components
    never touch one another, so the order does not matter). Returns the number removed.

    >>> seg = np.zeros((9, 9, 9), np.uint8); seg[1:8, 1:8, 1:8] = 2; seg[4, 4, 4] = 3
    >>> remove_small_components(seg, (3,), 2.0, (1, 1, 1)), int(seg[4, 4, 4])
    (1, 2)
    """
    components = small_components(seg, values, min_volume_mm3, spacing)
    fill_components(seg, components)
    return len(components)


def relabel_et_as_ncr(seg: np.ndarray, spacing: Sequence[float], volume_mm3: float = 0.0,
                      ratio: float = 0.0) -> bool:
    """Turn every ET voxel into NCR (in place) when ET volume < ``volume_mm3`` or ET/TC < ``ratio``.

    Returns whether the case was relabelled; a case without ET never is.

    >>> seg = np.zeros((5, 5, 5), np.uint8); seg[1:4, 1:4, 1:4] = 1; seg[2, 2, 2] = 3
    >>> relabel_et_as_ncr(seg, (1, 1, 1), ratio=0.1), int(seg[2, 2, 2])
    (True, 1)
    """
    if volume_mm3 <= 0 and ratio <= 0:
        return False
    et_mask = seg == ET
    n_et = int(np.count_nonzero(et_mask))
    if n_et == 0:
        return False
    n_tc = n_et + int(np.count_nonzero(seg == NCR))
    et_volume = n_et * float(np.prod(spacing))
    if et_volume < volume_mm3 or n_et / n_tc < ratio:
        seg[et_mask] = NCR
        return True
    return False


def apply(seg: np.ndarray, spacing: Union[float, Sequence[float], None], rules: Rules,
          check: bool = True) -> np.ndarray:
    """The label map ``seg`` post-processed with ``rules`` (a new array; ``seg`` is left untouched).

    Args:
        seg: 3-D BraTS label map (0, 1 NCR, 2 ED, 3 ET), any integer dtype (kept).
        spacing: voxel size in mm per array axis (z, y, x for SimpleITK arrays); ``None``: 1 mm.
        rules: the thresholds (see the module docstring for what each rule does).
        check: validate ``seg`` first (:func:`check_label_map`); skip for maps already checked.
    """
    seg = np.asarray(seg)
    if check:
        check_label_map(seg)
    spacing = _spacing(spacing, seg.ndim)
    out = np.array(seg, copy=True)
    for structure, threshold in rules.min_component_mm3.items():
        remove_small_components(out, STRUCTURES[structure], threshold, spacing)
    relabel_et_as_ncr(out, spacing, rules.et_to_ncr_volume_mm3, rules.et_to_ncr_ratio)
    return out

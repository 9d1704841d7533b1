"""Choose post-processing thresholds on cross-validation predictions, the way nnU-Net does.

nnU-Net's ``find_best_configuration`` (``determine_postprocessing``) pools the validation
predictions of all folds, tries one post-processing step at a time and keeps it only if it
improves the mean Dice over those cases; later steps start from the kept ones. This module
does the same with the BraTS rules of :mod:`.rules` and threshold grids:

1. start with no rule; score every pooled validation case;
2. for each rule in turn -- the component threshold of WT, TC, ET (and, if asked, NCR, ED),
   then ET -> NCR by ET volume, then by ET/TC ratio -- score every candidate threshold
   (with the rules kept so far) and take the best (ties: the smaller threshold);
3. keep it only if it is strictly better than without it; record before/after either way.

The score (``metric``) is, per case, the mean over ``regions`` (WT, TC, ET) of the BraTS
2023 lesion-wise Dice (``"lesion-dice"``, the default; see
:mod:`nnunet_transfer.evaluation.lesionwise`) or of the plain Dice (``"dice"``), averaged over
all cases. The search is deterministic. For speed, cases are cropped to their tumour (the
scores do not change), the connected components of a rule are found once for all its
thresholds, and region masks a candidate leaves unchanged are not scored again (about 1 s
per BraTS-sized case for the 41 default candidates, on one core).

Example:
    >>> result = tune_folder("$nnUNet_results/Dataset232_SSA/FT__nnUNetPlans__3d_fullres")  # doctest: +SKIP
    >>> result.rules.describe(), result.before, result.after  # doctest: +SKIP
    ('ET < 50 mm³ removed', 0.781, 0.804)
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_transfer.postprocessing.rules import REGIONS, STRUCTURES, Rules, apply, check_label_map
from nnunet_transfer.postprocessing.sources import CasePair, collect_cases, expand

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
METRICS = ("lesion-dice", "dice")
METRIC_REGIONS: Dict[str, Tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}  # see region_mask
_MARGIN = 6  # > lesion-wise dilation (3) + 1 and > the component shell (1): cropping changes nothing


@dataclass(frozen=True)
class Candidates:
    """Threshold grids tried for each rule (0, no rule, is always the starting point).

    The defaults span the BraTS 2023 lesion size cut (50 mm³) and the ET -> NCR volumes
    used by BraTS post-processing (up to about 1 cm³).
    """

    component_mm3: Tuple[float, ...] = (10, 25, 50, 75, 100, 150, 200, 300, 500)
    et_volume_mm3: Tuple[float, ...] = (25, 50, 100, 200, 300, 500, 750, 1000)
    et_tc_ratio: Tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    structures: Tuple[str, ...] = REGIONS

    def __post_init__(self) -> None:
        for name in ("component_mm3", "et_volume_mm3", "et_tc_ratio"):
            values = tuple(sorted({float(v) for v in getattr(self, name)}))
            if any(not np.isfinite(v) or v <= 0 for v in values):
                raise ValueError(f"candidate {name} thresholds must be finite and > 0, got {getattr(self, name)}")
            object.__setattr__(self, name, values)
        unknown = [s for s in self.structures if s not in STRUCTURES]
        if unknown:
            raise ValueError(f"unknown structure(s) {unknown}; choose from {', '.join(STRUCTURES)}")
        object.__setattr__(self, "structures", tuple(s for s in STRUCTURES if s in self.structures))

    def steps(self) -> List[Tuple[str, Tuple[float, ...]]]:
        """``(rule name, thresholds)`` in the order they are tuned (empty grids are skipped)."""
        steps = [(f"min_component_mm3.{s}", self.component_mm3) for s in self.structures]
        steps += [("et_to_ncr.volume_mm3", self.et_volume_mm3), ("et_to_ncr.et_tc_ratio", self.et_tc_ratio)]
        return [(name, values) for name, values in steps if values]


def with_rule(rules: Rules, rule: str, threshold: float) -> Rules:
    """``rules`` with the threshold of ``rule`` (a :meth:`Candidates.steps` name) set."""
    kind, _, key = rule.partition(".")
    if kind == "min_component_mm3":
        return rules.with_component(key, threshold)
    if rule == "et_to_ncr.volume_mm3":
        return rules.with_relabel(volume_mm3=threshold)
    if rule == "et_to_ncr.et_tc_ratio":
        return rules.with_relabel(ratio=threshold)
    raise ValueError(f"unknown rule {rule!r}")


@dataclass
class Case:
    """One validation case in memory, cropped to its tumour (reference or prediction)."""

    case_id: str
    fold: str
    reference: np.ndarray
    prediction: np.ndarray
    spacing: Tuple[float, ...]


def crop(reference: np.ndarray, prediction: np.ndarray, margin: int = _MARGIN) -> Tuple[np.ndarray, np.ndarray]:
    """Both maps cropped to their joint foreground box grown by ``margin`` (a single voxel if empty)."""
    from nnunet_transfer.evaluation.metrics import bounding_box

    box = bounding_box((reference != 0) | (prediction != 0), margin=margin)
    if box is None:
        box = (slice(0, 1),) * reference.ndim
    return np.ascontiguousarray(reference[box]), np.ascontiguousarray(prediction[box])


def load_case(pair: CasePair) -> Case:
    """Read, check (same geometry, BraTS labels) and crop one case."""
    from nnunet_transfer.evaluation.evaluate import _check_geometry, read_label_map

    try:
        reference, spacing, ref_geometry = read_label_map(pair.reference_file)
        prediction, _, pred_geometry = read_label_map(pair.prediction_file)
    except RuntimeError as exc:  # SimpleITK's unreadable-file error
        raise ValueError(f"Case {pair.case_id}: cannot read {pair.prediction_file} or {pair.reference_file}: "
                         f"{str(exc).strip().splitlines()[-1]}") from None
    _check_geometry(pair.case_id, ref_geometry, pred_geometry, pair.reference_file, pair.prediction_file)
    for what, array, path in (("reference", reference, pair.reference_file),
                              ("prediction", prediction, pair.prediction_file)):
        try:
            check_label_map(array, what)
        except ValueError as exc:
            raise ValueError(f"Case {pair.case_id}: {path}: {exc}") from None
    reference, prediction = crop(reference, prediction)
    return Case(pair.case_id, pair.fold, reference, prediction, spacing)


def region_score(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float], metric: str) -> float:
    """Lesion-wise Dice (``"lesion-dice"``) or Dice (``"dice"``) of two binary masks."""
    if metric == "lesion-dice":
        from nnunet_transfer.evaluation.lesionwise import lesion_wise_metrics

        return float(lesion_wise_metrics(reference, prediction, spacing, compute_hd95=False)["LesionWise_Dice"])
    if metric == "dice":
        from nnunet_transfer.evaluation.metrics import dice

        return float(dice(reference, prediction))
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _digest(mask: np.ndarray) -> bytes:
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()


def region_mask(seg: np.ndarray, region: str) -> np.ndarray:
    """The mask of ``region`` (WT, TC, ET) in a checked BraTS label map."""
    if region == "WT":
        return seg != 0
    if region == "TC":
        return (seg == 1) | (seg == 3)
    return seg == 3


class _Scorer:
    """Per-region scores of one case's label maps; each distinct region mask is scored once."""

    def __init__(self, case: Case, metric: str, regions: Sequence[str]):
        self.case, self.metric, self.regions = case, metric, tuple(regions)
        self.references = {r: region_mask(case.reference, r) for r in self.regions}
        self.cache: Dict[Tuple[str, bytes], float] = {}

    def seed(self, seg: np.ndarray, scores: Dict[str, float]) -> None:
        """Remember ``scores`` (known already) for the region masks of ``seg``."""
        for region in self.regions:
            self.cache[(region, _digest(region_mask(seg, region)))] = scores[region]

    def __call__(self, seg: np.ndarray) -> Dict[str, float]:
        scores = {}
        for region in self.regions:
            mask = region_mask(seg, region)
            key = (region, _digest(mask))
            if key not in self.cache:
                self.cache[key] = region_score(self.references[region], mask, self.case.spacing, self.metric)
            scores[region] = self.cache[key]
        return scores


def score_rules(case: Case, rule_sets: Sequence[Rules], metric: str, regions: Sequence[str]) -> List[Dict[str, float]]:
    """Per-region scores of ``case`` post-processed with each rule set (each distinct mask scored once)."""
    scorer = _Scorer(case, metric, regions)
    return [scorer(apply(case.prediction, case.spacing, rules, check=False)) for rules in rule_sets]


def _comes_last(rules: Rules, rule: str) -> bool:
    """Whether ``rule`` applies after every active rule of ``rules`` (so it can act on their result)."""
    kind, _, key = rule.partition(".")
    if kind == "min_component_mm3":
        order = list(STRUCTURES)
        return not (rules.et_to_ncr_volume_mm3 or rules.et_to_ncr_ratio) and all(
            order.index(s) < order.index(key) for s in rules.min_component_mm3)
    return True  # the two ET -> NCR conditions are OR-ed: adding one after the other is the same


def step_variants(seg: np.ndarray, spacing: Sequence[float], rule: str,
                  thresholds: Sequence[float]) -> List[np.ndarray]:
    """``seg`` with ``rule`` added at each threshold, sharing the work between thresholds.

    ``seg`` must already carry the kept rules, and ``rule`` must come after them in the order
    of application; then each variant equals :func:`~.rules.apply` with the rules plus ``rule``.
    """
    from nnunet_transfer.postprocessing.rules import fill_components, relabel_et_as_ncr, small_components

    kind, _, key = rule.partition(".")
    variants: List[np.ndarray] = []
    if kind == "min_component_mm3":
        components = small_components(seg, STRUCTURES[key], max(thresholds), spacing)
        done = -1
        for threshold in thresholds:  # ascending: each set of removed components holds the previous one
            chosen = [c for c in components if c.volume_mm3 < threshold]
            if len(chosen) != done:
                variant = seg.copy() if chosen else seg
                fill_components(variant, chosen)
                done = len(chosen)
            variants.append(variant)
        return variants
    for threshold in thresholds:
        variant = seg.copy()
        if rule == "et_to_ncr.volume_mm3":
            changed = relabel_et_as_ncr(variant, spacing, volume_mm3=threshold)
        elif rule == "et_to_ncr.et_tc_ratio":
            changed = relabel_et_as_ncr(variant, spacing, ratio=threshold)
        else:
            raise ValueError(f"unknown rule {rule!r}")
        variants.append(variant if changed else seg)
    return variants


def score_step(case: Case, current: Rules, rule: Optional[str], thresholds: Sequence[float], metric: str,
               regions: Sequence[str], current_scores: Optional[Dict[str, float]] = None
               ) -> Tuple[Dict[str, float], List[Dict[str, float]]]:
    """Scores of ``case`` with the ``current`` rules, and with ``rule`` added at each threshold.

    ``current_scores``, when known, spares scoring the masks that ``rule`` leaves unchanged.
    """
    scorer = _Scorer(case, metric, regions)
    base = apply(case.prediction, case.spacing, current, check=False)
    if current_scores is not None:
        scorer.seed(base, current_scores)
    base_scores = scorer(base)
    if rule is None:
        return base_scores, []
    if _comes_last(current, rule):
        variants = step_variants(base, case.spacing, rule, thresholds)
    else:
        variants = [apply(case.prediction, case.spacing, with_rule(current, rule, t), check=False)
                    for t in thresholds]
    return base_scores, [base_scores if v is base else scorer(v) for v in variants]


def _score_job(job: tuple) -> Tuple[Dict[str, float], List[Dict[str, float]]]:
    return score_step(*job)


@dataclass
class StepRecord:
    """One tuned rule: the score of every candidate, the best one and whether it was kept."""

    rule: str
    candidates: Dict[str, float]          # threshold (as text) -> score
    threshold: float                      # the best candidate
    before: float                         # score with the rules kept so far
    after: float                          # score with the best candidate added
    accepted: bool
    regions_before: Dict[str, float] = field(default_factory=dict)
    regions_after: Dict[str, float] = field(default_factory=dict)


@dataclass
class TuningResult:
    """What :func:`tune` chose and how: the rules, the scores before and after, every step."""

    rules: Rules
    metric: str
    regions: Tuple[str, ...]
    before: float
    after: float
    regions_before: Dict[str, float]
    regions_after: Dict[str, float]
    steps: List[StepRecord]
    case_ids: List[str]
    folds: List[str]
    candidates: Candidates
    sources: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The ``tuning`` record of the rules file."""
        return {"metric": self.metric, "regions": list(self.regions), "n_cases": len(self.case_ids),
                "folds": list(self.folds), "before": self.before, "after": self.after,
                "regions_before": self.regions_before, "regions_after": self.regions_after,
                "rules": self.rules.describe(), "steps": [asdict(s) for s in self.steps],
                "candidates": {k: list(v) for k, v in asdict(self.candidates).items()},
                "case_ids": list(self.case_ids), **({"sources": self.sources} if self.sources else {})}

    def table(self) -> str:
        """The steps as a small text table (for the console)."""
        lines = [f"{'rule':<28} {'best':>8} {'before':>9} {'after':>9}  kept"]
        for s in self.steps:
            lines.append(f"{s.rule:<28} {s.threshold:>8g} {s.before:>9.5f} {s.after:>9.5f}  "
                         f"{'yes' if s.accepted else 'no'}")
        lines.append(f"{self.metric} over {len(self.case_ids)} cases: {self.before:.5f} -> {self.after:.5f} "
                     f"({self.rules.describe()})")
        return "\n".join(lines)


def _means(per_case: List[Dict[str, float]], regions: Sequence[str]) -> Tuple[float, Dict[str, float]]:
    by_region = {r: float(np.mean([c[r] for c in per_case])) for r in regions}
    return float(np.mean([np.mean([c[r] for r in regions]) for c in per_case])), by_region


def tune(cases: Sequence[Case], metric: str = "lesion-dice", candidates: Candidates = Candidates(),
         regions: Sequence[str] = REGIONS, num_processes: int = 1) -> TuningResult:
    """Greedy nnU-Net-style search of :class:`~.rules.Rules` over pooled validation cases.

    Args:
        cases: validation cases of all folds (:func:`load_case`).
        metric: ``"lesion-dice"`` (BraTS 2023 lesion-wise Dice) or ``"dice"``.
        candidates: threshold grids and the structures whose components are tuned.
        regions: regions whose per-case mean is the score (default WT, TC, ET).
        num_processes: worker processes (cases are scored in parallel).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    regions = tuple(regions)
    if not regions or any(r not in METRIC_REGIONS for r in regions):
        raise ValueError(f"regions must be some of {', '.join(METRIC_REGIONS)}, got {list(regions)}")
    if not cases:
        raise ValueError("no validation cases to tune post-processing on")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("a case appears twice among the validation cases")
    pool = None
    if num_processes > 1 and len(cases) > 1:
        pool = ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn"))
    try:
        def score_all(rule: Optional[str], thresholds: Sequence[float], known: Optional[list] = None):
            jobs = [(case, current, rule, tuple(thresholds), metric, regions, None if known is None else known[i])
                    for i, case in enumerate(cases)]
            results = list(pool.map(_score_job, jobs)) if pool else [_score_job(job) for job in jobs]
            base = [r[0] for r in results]
            return base, [[r[1][k] for r in results] for k in range(len(thresholds))]  # per threshold

        current = Rules()
        baseline, _ = score_all(None, ())
        score, by_region = _means(baseline, regions)
        start, start_regions = score, by_region
        steps: List[StepRecord] = []
        per_case = baseline  # the scores of every case with the rules kept so far
        for rule, thresholds in candidates.steps():
            _, results = score_all(rule, thresholds, per_case)
            means = [_means(r, regions) for r in results]
            best = int(np.argmax([m[0] for m in means]))  # first maximum: the smallest threshold
            accepted = means[best][0] > score + 1e-12
            steps.append(StepRecord(rule, {f"{t:g}": m[0] for t, m in zip(thresholds, means)}, thresholds[best],
                                    score, means[best][0], accepted, by_region, means[best][1]))
            logger.info("%s: best %g, %s %.5f -> %.5f, %s", rule, thresholds[best], metric, score, means[best][0],
                        "kept" if accepted else "not kept")
            if accepted:
                current, (score, by_region) = with_rule(current, rule, thresholds[best]), means[best]
                per_case = results[best]
    finally:
        if pool is not None:
            pool.shutdown()
    folds = sorted({c.fold for c in cases}, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    return TuningResult(current, metric, regions, start, score, start_regions, by_region, steps, ids, folds,
                        candidates)


def load_cases(pairs: Sequence[CasePair], num_processes: int = 1) -> List[Case]:
    """:func:`load_case` for every pair (in parallel with ``num_processes`` > 1)."""
    if num_processes > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            return list(pool.map(load_case, pairs))
    return [load_case(p) for p in pairs]


def tune_folder(predictions: PathLike, labels: Optional[PathLike] = None,
                folds: Optional[Sequence[Union[int, str]]] = None, metric: str = "lesion-dice",
                candidates: Candidates = Candidates(), regions: Sequence[str] = REGIONS,
                output: Optional[PathLike] = None, num_processes: int = 1,
                file_ending: Optional[str] = None) -> TuningResult:
    """Tune on a strategy's pooled fold predictions and write the rules file.

    Args:
        predictions: a results folder with ``fold_k/validation`` predictions, or a flat
            folder of predictions (see :mod:`.sources`).
        labels: the references (default: the dataset's ``gt_segmentations``, else ``labelsTr``).
        folds: folds to pool (default: every ``fold_k`` but ``fold_all``).
        metric, candidates, regions, num_processes: see :func:`tune`.
        output: the rules file (written atomically); default
            ``<predictions>/brats_postprocessing.json``, next to the model.
        file_ending: default from ``dataset.json``, else ``.nii.gz``.
    """
    from nnunet_transfer.postprocessing.io import FILE_NAME, write_rules

    root = expand(predictions)
    pairs = collect_cases(root, labels, folds, file_ending)
    logger.info("tuning post-processing on %d validation cases of %s (fold(s) %s)", len(pairs), root,
                ", ".join(sorted({p.fold for p in pairs})))
    cases = load_cases(pairs, num_processes)
    result = tune(cases, metric, candidates, regions, num_processes)
    result.sources = {"predictions": str(root), "labels": str(pairs[0].reference_file.parent)}
    target = Path(output) if output is not None else root / FILE_NAME
    write_rules(target, result.rules, result.to_dict())
    logger.info("wrote %s: %s", target, result.rules.describe())
    return result

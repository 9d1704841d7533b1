"""The paper's Table 2: strategies compared on Dice and HD95 with paired statistics.

A *strategy* is given as one or more paths, each of which may be

* an nnU-Net results folder ``$nnUNet_results/DatasetXXX/Trainer__Plans__Config`` (its
  ``fold_k/validation`` folders are used; ``fold_all`` is skipped), or a
  :func:`~nnunet_transfer.evaluation.cross_domain.predict_folds` output folder (same layout);
* one fold's folder (``fold_k``) or its ``validation`` folder;
* a summary JSON file (ours, from ``nnunet-transfer evaluate``).

For every fold the summary is taken from ``validation/summary.json`` when it holds our
metrics (HD95 per NCR/ED/ET, same HD95 definition); otherwise from the cache
``validation/summary_brats.json``; otherwise the fold's predictions are evaluated against
the references (``gt_dir``, by default ``$nnUNet_preprocessed/DatasetXXX/gt_segmentations``)
and the cache is written. nnU-Net's own ``summary.json`` (Dice only) is left untouched.

Table 2 reports, per strategy, mean Dice and mean HD95 of NCR, ED, ET and their average:
the mean over each fold's cases, then mean and standard deviation (ddof=1) over folds.
Each strategy is tested against the ``reference`` one with paired t-tests
(``scipy.stats.ttest_rel``) and Wilcoxon signed-rank tests (``scipy.stats.wilcoxon``), on
the per-fold means (paired by fold) and on the per-case values (paired by case id). All
strategies must have been validated on the same folds and cases; otherwise a
``ValueError`` lists the differences.

Outputs in ``out_dir``: ``table2.md``, ``table2.csv``, ``comparison.json`` and
``comparison.png`` (box plots of per-case Dice and HD95 per label, by strategy).

*Post-processed rows.* ``postprocessing={"DANN": None}`` adds the row "DANN + post-processing"
right after "DANN": :func:`postprocess_strategy` applies the strategy's tuned BraTS rules
(``<results folder>/brats_postprocessing.json`` from ``nnunet-transfer tune-postprocessing``,
or the file given) to every fold's validation predictions, into the sibling folder
``<results folder>/brats_postprocessed/fold_k/validation``, and evaluates them there
(``summary_brats.json``). An ensemble (:mod:`.ensemble`) is a row like any results folder.

*Notes* (``notes`` in ``comparison.json``, a section of ``table2.md``) say which pairs of
combined-dataset rows differ in one design choice only, e.g. that Combined (uniform batches)
vs Combined (balanced batches) isolates the sampling and Combined (balanced batches) vs DANN
isolates the domain loss. A row's design is read from its trainer class (this plugin's
``-tr`` name in an nnU-Net results folder path, ``.../DatasetXXX/Trainer__Plans__Config``);
rows compare only when dataset, plans, configuration, recipe and the target labels used match
(every one; or, for the label-hiding trainers, the same labelled cases per fold, read from
each fold's ``debug.json``). Further notes quote
each trained row's optimizer, initial learning rate, schedule, batch size and seed from
nnU-Net's ``fold_k/debug.json`` (:mod:`.recipes`).

Example:
    >>> result = compare_strategies(  # doctest: +SKIP
    ...     {"Baseline": ["baseline_preds"], "Fine-Tuning": ["$nnUNet_results/Dataset233_SSA/FT__nnUNetPlans__3d_fullres"]},
    ...     reference="Baseline", out_dir="comparison")
    >>> print(result["markdown"])  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_transfer.evaluation.metrics import EMPTY_PENALTY
from nnunet_transfer.evaluation.recipes import debug_files, recipe_notes
from nnunet_transfer.postprocessing.sources import expand

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
CACHE_NAME = "summary_brats.json"
POSTPROCESSED_DIR = "brats_postprocessed"  # <results folder>/brats_postprocessed/fold_k/validation
POSTPROCESSED_LABEL = "{} + post-processing"
METRICS = ("Dice", "HD95")
AVERAGE = "Average"

# strategy -> fold -> case id -> structure -> metric -> value
StrategyData = Dict[str, Dict[str, Dict[str, Dict[str, float]]]]


def _fold_name(path: Path, default: str) -> str:
    for part in reversed(path.parts):
        match = re.fullmatch(r"fold_(\w+)", part)
        if match:
            return match.group(1)
    return default


def _is_ours(summary: dict, hd95: Optional[str], labels: Sequence[str]) -> bool:
    entries = summary.get("metric_per_case") or []
    if not entries or not all(label in entries[0].get("metrics", {}) for label in labels):
        return False
    if not all("HD95" in entries[0]["metrics"][label] for label in labels):
        return False
    used = (summary.get("config") or {}).get("hd95")
    return hd95 is None or used is None or used == hd95


def _cases_from_summary(summary: dict, source: Path) -> Dict[str, Dict[str, Dict[str, float]]]:
    cases = {}
    for entry in summary["metric_per_case"]:
        case_id = entry.get("case_id") or Path(entry.get("reference_file", "")).name.split(".")[0]
        if not case_id:
            raise ValueError(f"{source}: an entry of metric_per_case has no case id nor reference_file")
        if case_id in cases:
            raise ValueError(f"{source}: case {case_id} appears twice")
        cases[case_id] = entry["metrics"]
    return cases


def _results_folder_info(validation_dir: Path) -> Tuple[Optional[Path], Optional[str]]:
    """(default gt folder, file ending) for an nnU-Net-style ``.../Dataset/Config/fold_k/validation``."""
    model_dir = validation_dir.parent.parent
    file_ending = None
    dataset_json = model_dir / "dataset.json"
    if dataset_json.is_file():
        file_ending = json.loads(dataset_json.read_text()).get("file_ending")
    gt_dir = None
    from nnunet_transfer.postprocessing.sources import dataset_name as dataset_of

    dataset_name = dataset_of(model_dir) or ""  # DatasetXXX parent, else plans.json (an ensemble-folds output)
    if dataset_name.startswith("Dataset"):
        from nnunet_transfer import config

        preprocessed = config.nnunet_preprocessed(required=False)
        if preprocessed is not None and (preprocessed / dataset_name / "gt_segmentations").is_dir():
            gt_dir = preprocessed / dataset_name / "gt_segmentations"
    return gt_dir, file_ending


def _load_validation_dir(validation_dir: Path, labels: Sequence[str], gt_dir: Optional[Path], hd95: str,
                         empty_penalty: float, num_processes: int, file_ending: Optional[str]) -> dict:
    for name in ("summary.json", CACHE_NAME):
        candidate = validation_dir / name
        if candidate.is_file():
            summary = json.loads(candidate.read_text())
            if _is_ours(summary, hd95, labels):
                logger.info("using %s", candidate)
                return summary
    from nnunet_transfer.evaluation.evaluate import evaluate_folder, list_cases

    default_gt, default_ending = _results_folder_info(validation_dir)
    gt = gt_dir or default_gt
    ending = file_ending or default_ending or ".nii.gz"
    if gt is None:
        raise FileNotFoundError(
            f"{validation_dir} has no summary with HD95 and no reference folder was found for its predictions; "
            f"pass gt_dir (--gt-dir) or set nnUNet_preprocessed.")
    if not list_cases(validation_dir, ending):
        raise FileNotFoundError(f"{validation_dir} holds neither a usable summary nor predictions ending in {ending!r}.")
    logger.info("evaluating %s against %s", validation_dir, gt)
    return evaluate_folder(gt, validation_dir, validation_dir / CACHE_NAME, regions=True,
                           num_processes=num_processes, hd95=hd95, file_ending=ending, empty_penalty=empty_penalty)


def load_strategy(paths: Union[PathLike, Sequence[PathLike]], labels: Sequence[str] = ("NCR", "ED", "ET"),
                  gt_dir: Optional[PathLike] = None, hd95: str = "medpy", empty_penalty: float = EMPTY_PENALTY,
                  num_processes: int = 1, file_ending: Optional[str] = None,
                  folds: Optional[Sequence[Union[int, str]]] = None) -> Dict[str, Dict[str, Dict[str, Dict[str, float]]]]:
    """Per-case metrics of one strategy: ``{fold: {case_id: {structure: {metric: value}}}}``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    gt_dir = Path(gt_dir) if gt_dir is not None else None
    wanted = None if folds is None else {str(f) for f in folds}
    result: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}

    def add(fold: str, summary: dict, source: Path) -> None:
        if wanted is not None and fold not in wanted:
            return
        if fold in result:
            raise ValueError(f"fold {fold} is given twice (again by {source})")
        if not _is_ours(summary, None, labels):
            raise ValueError(f"{source} has no Dice/HD95 for {', '.join(labels)}; evaluate it with "
                             f"`nnunet-transfer evaluate` first")
        used = (summary.get("config") or {}).get("hd95")
        if used is not None and used != hd95:
            raise ValueError(f"{source} was evaluated with the {used!r} HD95 definition, not {hd95!r}; "
                             f"re-evaluate it or pass hd95={used!r} (--hd95 {used})")
        result[fold] = _cases_from_summary(summary, source)

    load = dict(labels=labels, gt_dir=gt_dir, hd95=hd95, empty_penalty=empty_penalty,
                num_processes=num_processes, file_ending=file_ending)
    for index, raw in enumerate(paths):
        path = expand(raw)
        if path.is_file():
            add(_fold_name(path.parent, str(index)), json.loads(path.read_text()), path)
        elif path.is_dir():
            fold_dirs = sorted(p for p in path.glob("fold_*") if p.is_dir() and p.name != "fold_all")
            if fold_dirs:
                for fold_dir in fold_dirs:
                    fold = fold_dir.name[len("fold_"):]
                    if wanted is not None and fold not in wanted:
                        continue
                    validation = fold_dir / "validation"
                    if not validation.is_dir():
                        raise FileNotFoundError(f"{fold_dir} has no validation folder (was the fold trained?)")
                    add(fold, _load_validation_dir(validation, **load), validation)
            else:
                validation = path / "validation" if (path / "validation").is_dir() else path
                add(_fold_name(validation, str(index)), _load_validation_dir(validation, **load), validation)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    if not result:
        raise ValueError(f"no folds found in {', '.join(map(str, paths))}")
    return result


def _check_same_cases(data: StrategyData, reference: str) -> None:
    ref = data[reference]
    problems = []
    for name, folds in data.items():
        if set(folds) != set(ref):
            problems.append(f"{name} has folds {sorted(folds)} but {reference} has {sorted(ref)}")
            continue
        for fold in sorted(ref):
            only_here = sorted(set(folds[fold]) - set(ref[fold]))
            only_ref = sorted(set(ref[fold]) - set(folds[fold]))
            if only_here or only_ref:
                problems.append(f"fold {fold}: {name} was validated on a different case set than {reference} "
                                f"(only in {name}: {only_here[:5]}{'...' if len(only_here) > 5 else ''}; "
                                f"only in {reference}: {only_ref[:5]}{'...' if len(only_ref) > 5 else ''})")
    all_cases = [c for fold in ref.values() for c in fold]
    if len(all_cases) != len(set(all_cases)):
        problems.append(f"{reference}: some cases are validated in more than one fold")
    if problems:
        raise ValueError("Strategies were not validated on the same folds and cases, so they cannot be paired: "
                         + "; ".join(problems))


def _case_value(metrics: Dict[str, Dict[str, float]], labels: Sequence[str], metric: str, column: str) -> float:
    if column == AVERAGE:
        return float(np.mean([metrics[label][metric] for label in labels]))
    return float(metrics[column][metric])


def _paired_tests(values: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    from scipy import stats

    out = {"n": int(len(values)), "mean_difference": float(np.mean(values - reference)) if len(values) else math.nan,
           "t_statistic": math.nan, "t_pvalue": math.nan, "wilcoxon_statistic": math.nan, "wilcoxon_pvalue": math.nan}
    if len(values) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = stats.ttest_rel(values, reference)
        out["t_statistic"], out["t_pvalue"] = float(t.statistic), float(t.pvalue)
        if np.any(values != reference):
            try:
                w = stats.wilcoxon(values, reference)
                out["wilcoxon_statistic"], out["wilcoxon_pvalue"] = float(w.statistic), float(w.pvalue)
            except ValueError as exc:  # e.g. too few non-zero differences
                logger.debug("wilcoxon skipped: %s", exc)
    return out


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def build_table(data: StrategyData, reference: str, labels: Sequence[str] = ("NCR", "ED", "ET")) -> dict:
    """Table 2 and the paired tests from loaded per-case metrics (no files written)."""
    if reference not in data:
        raise ValueError(f"reference strategy {reference!r} is not among the strategies {sorted(data)}")
    _check_same_cases(data, reference)
    folds = sorted(data[reference], key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    case_ids = [c for fold in folds for c in sorted(data[reference][fold])]
    columns = [*labels, AVERAGE]
    per_fold: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    per_case: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    table: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    for name, strategy in data.items():
        per_fold[name], per_case[name], table[name] = {}, {}, {}
        case_lookup = {c: m for fold in strategy.values() for c, m in fold.items()}
        for metric in METRICS:
            per_fold[name][metric], per_case[name][metric], table[name][metric] = {}, {}, {}
            for column in columns:
                fold_means = [float(np.mean([_case_value(m, labels, metric, column)
                                             for m in strategy[fold].values()])) for fold in folds]
                per_fold[name][metric][column] = fold_means
                per_case[name][metric][column] = [_case_value(case_lookup[c], labels, metric, column)
                                                  for c in case_ids]
                table[name][metric][column] = {"mean": float(np.mean(fold_means)), "std": _std(fold_means)}
    tests: Dict[str, dict] = {}
    for name in data:
        if name == reference:
            continue
        tests[name] = {}
        for level, source in (("per_fold", per_fold), ("per_case", per_case)):
            tests[name][level] = {metric: {column: _paired_tests(np.asarray(source[name][metric][column]),
                                                                 np.asarray(source[reference][metric][column]))
                                           for column in columns} for metric in METRICS}
    return {"reference": reference, "labels": list(labels), "columns": columns, "folds": folds,
            "case_ids": case_ids, "strategies": list(data), "table": table, "tests": tests,
            "per_fold": per_fold, "per_case": per_case}


@dataclass(frozen=True)
class MixedDomainDesign:
    """How a row trained on a combined dataset draws its batches, and its domain loss."""

    target_share: Optional[float]         # share of every batch from the target domain; None: uniform
    domain_loss: bool                     # a domain classifier's loss is added (DANN)
    gradient_reversal: bool               # ... and reaches the encoder reversed
    setting: Tuple[str, ...]              # dataset, plans, configuration, recipe, target labels: must match
    batch_per_domain: bool = False        # each domain gets the batch size (labels-hiding trainers)

    @property
    def sampling(self) -> str:
        if self.target_share is None:
            return "cases drawn uniformly"
        if self.batch_per_domain:
            return "a batch of source and one of target cases per step"
        return f"domain-balanced batches, target share {self.target_share:g}"

    @property
    def loss(self) -> str:
        if not self.domain_loss:
            return "no domain loss"
        return f"a domain loss {'behind' if self.gradient_reversal else 'without'} gradient reversal"


def mixed_domain_design(paths: Union[PathLike, Sequence[PathLike]],
                        folds: Optional[Sequence[str]] = None) -> Optional[MixedDomainDesign]:
    """The design of a row in a results folder of this plugin's MixedDomain* or DANN* trainers, else None.

    ``folds``: the folds the table compares (default: every ``fold_k``), whose runs' target labels count.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found = set()
    for raw in paths:
        parts = expand(raw).parts
        if POSTPROCESSED_DIR in parts:  # post-processed: differs from its row in more than the design
            return None
        for index, part in enumerate(parts):
            pieces = part.split("__")  # nnU-Net's Trainer__Plans__Configuration
            if len(pieces) == 3 and all(pieces) and pieces[0].isidentifier():
                found.add((parts[index - 1] if index else "", *pieces))
    if len(found) != 1:
        return None
    (dataset, trainer, plans, configuration), = found
    try:
        from nnunet_transfer.training import trainers
        from nnunet_transfer.training.mixins import DomainAdversarialMixin, DomainAwareMixin, PaperRecipeMixin
    except ImportError as exc:  # e.g. no torch: the table does without notes
        logger.debug("no design notes: %s", exc)
        return None
    cls = getattr(trainers, trainer, None)
    if not isinstance(cls, type) or not issubclass(cls, DomainAwareMixin):
        return None
    adversarial = issubclass(cls, DomainAdversarialMixin)
    recipe = "paper" if issubclass(cls, PaperRecipeMixin) else "nnU-Net"
    return MixedDomainDesign(target_share=cls.target_share, domain_loss=adversarial,
                             gradient_reversal=adversarial and bool(cls.reverse_gradients),
                             setting=(dataset, plans, configuration, recipe, target_label_regime(cls, paths, folds)),
                             batch_per_domain=bool(getattr(cls, "batch_per_domain", False)))


def target_label_regime(cls: type, paths: Sequence[PathLike], folds: Optional[Sequence[str]] = None) -> str:
    """Which target labels a row's training used: every one, or the runs' recorded decision.

    Trainers without :class:`~nnunet_transfer.training.labels.TargetLabelsMixin` use every
    label. For the others the decision is read from each fold's ``debug.json``
    (``target_labels``, the run state nnU-Net records as a string): the cases that kept their
    labels in each fold and how the hidden ones trained, so that two rows match only when they
    trained on the same labelled cases. A fold without that record makes the regime name the
    row's folders, so that it matches no other row. Only the compared ``folds`` count (default:
    every ``fold_k``; ``fold_all`` never: :func:`~nnunet_transfer.evaluation.recipes.debug_files`).
    """
    from nnunet_transfer.training.labels import TargetLabelsMixin

    if not issubclass(cls, TargetLabelsMixin):
        return "every target label"
    regimes = []
    for fold, debug in debug_files(paths, folds):
        try:
            saved = json.loads(debug.read_text()).get("target_labels")
            saved = ast.literal_eval(saved) if isinstance(saved, str) else saved
        except (OSError, ValueError, SyntaxError):
            saved = None
        if not isinstance(saved, dict):
            return f"undetermined ({debug} records no target_labels)"
        regimes.append((fold, sorted(saved.get("labelled") or []), saved.get("hidden_label_use")))
    if not regimes:
        return f"undetermined ({', '.join(map(str, paths))}: no fold_*/debug.json)"
    return f"labelled target cases per fold (and hidden-label use): {sorted(regimes)}"


def _difference(a: MixedDomainDesign, b: MixedDomainDesign) -> Optional[str]:
    """The one design choice two rows differ in ("sampling", "domain loss", ...), or None."""
    if a.setting != b.setting:
        return None
    sampling = (a.target_share, a.batch_per_domain) != (b.target_share, b.batch_per_domain)
    if a.domain_loss != b.domain_loss:
        return "sampling and domain loss" if sampling else "domain loss"
    if a.domain_loss and a.gradient_reversal != b.gradient_reversal:
        return "sampling and gradient reversal" if sampling else "gradient reversal"
    return "sampling" if sampling else None


def design_notes(designs: Mapping[str, MixedDomainDesign]) -> List[str]:
    """One note per row and the later rows that differ from it in the same design choice(s)."""
    names = list(designs)
    notes = []
    for index, first in enumerate(names):
        groups: Dict[str, List[str]] = {}
        for other in names[index + 1:]:
            factor = _difference(designs[first], designs[other])
            if factor is not None:
                groups.setdefault(factor, []).append(other)
        a = designs[first]
        for factor, others in groups.items():
            versus = f"{first} vs {' / '.join(others)}"
            if factor == "sampling":
                details = "; ".join(f"{n}: {designs[n].sampling}" for n in [first, *others])
                loss = f"segmentation and {a.loss}" if a.domain_loss else "segmentation only"
                notes.append(f"{versus} isolates the sampling: they share the loss ({loss}) and differ in how "
                             f"batches are drawn only ({details}).")
            elif factor in ("domain loss", "gradient reversal"):
                details = "; ".join(f"{n}: {designs[n].loss}" for n in [first, *others])
                notes.append(f"{versus} isolates the {factor}: they share the sampler ({a.sampling}) and differ in "
                             f"the {factor} only ({details}).")
            else:
                both = factor.replace(" and ", " and the ")
                notes.append(f"{versus} differ in both the {both} at once: their difference is not due to "
                             f"either alone.")
    return notes


def _fmt_p(p: float) -> str:
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.4f}"


def to_markdown(result: dict) -> str:
    """Markdown rendering of :func:`build_table`'s result."""
    columns = result["columns"]
    lines = [f"## Table 2: mean Dice and HD95 (mm), mean ± std over {len(result['folds'])} fold(s)", "",
             "| Method | " + " | ".join(f"Dice {c}" for c in columns) + " | "
             + " | ".join(f"HD95 {c}" for c in columns) + " |",
             "|---" * (1 + 2 * len(columns)) + "|"]
    for name in result["strategies"]:
        cells = [f"{result['table'][name][m][c]['mean']:.3f} ± {result['table'][name][m][c]['std']:.3f}"
                 for m in METRICS for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for level, title in (("per_fold", "per-fold means, paired by fold"), ("per_case", "per-case values, paired by case id")):
        lines += ["", f"### Paired tests against {result['reference']} ({title}): t-test p / Wilcoxon p", "",
                  "| Method | " + " | ".join(f"Dice {c}" for c in columns) + " | "
                  + " | ".join(f"HD95 {c}" for c in columns) + " |",
                  "|---" * (1 + 2 * len(columns)) + "|"]
        for name, tests in result["tests"].items():
            cells = [f"{_fmt_p(tests[level][m][c]['t_pvalue'])} / {_fmt_p(tests[level][m][c]['wilcoxon_pvalue'])}"
                     for m in METRICS for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("notes"):
        lines += ["", "### Notes", "", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines) + "\n"


def to_csv(result: dict) -> str:
    """CSV rendering: one row per strategy, mean and std columns per metric and label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["strategy"]
    for metric in METRICS:
        for column in result["columns"]:
            header += [f"{metric}_{column}_mean", f"{metric}_{column}_std"]
    for level in ("per_fold", "per_case"):
        for metric in METRICS:
            for column in result["columns"]:
                header += [f"{level}_{metric}_{column}_ttest_p", f"{level}_{metric}_{column}_wilcoxon_p"]
    writer.writerow(header)
    for name in result["strategies"]:
        row: List[object] = [name]
        for metric in METRICS:
            for column in result["columns"]:
                cell = result["table"][name][metric][column]
                row += [f"{cell['mean']:.6g}", f"{cell['std']:.6g}"]
        for level in ("per_fold", "per_case"):
            for metric in METRICS:
                for column in result["columns"]:
                    test = result["tests"].get(name, {}).get(level, {}).get(metric, {}).get(column)
                    row += ["", ""] if test is None else [f"{test['t_pvalue']:.6g}", f"{test['wilcoxon_pvalue']:.6g}"]
        writer.writerow(row)
    return buffer.getvalue()


def plot(result: dict, path: PathLike) -> Path:
    """Box plots of per-case Dice (top) and HD95 (bottom) per label, one box per strategy (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels, strategies = result["labels"], result["strategies"]
    figure = Figure(figsize=(4.2 * len(labels), 7.5), constrained_layout=True)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(METRICS), len(labels), squeeze=False)
    for row, metric in enumerate(METRICS):
        for col, label in enumerate(labels):
            ax = axes[row][col]
            ax.boxplot([result["per_case"][s][metric][label] for s in strategies], showmeans=True)
            ax.set_xticks(range(1, len(strategies) + 1), strategies, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{label} {metric}")
            ax.set_ylabel("Dice" if metric == "Dice" else "HD95 (mm)")
            ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    figure.savefig(path, dpi=110, format="png")
    return path


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def postprocess_strategy(paths: Union[PathLike, Sequence[PathLike]], rules_file: Optional[PathLike] = None,
                         out_dir: Optional[PathLike] = None, gt_dir: Optional[PathLike] = None,
                         hd95: str = "medpy", empty_penalty: float = EMPTY_PENALTY, num_processes: int = 1,
                         file_ending: Optional[str] = None,
                         folds: Optional[Sequence[Union[int, str]]] = None) -> Path:
    """Post-process a strategy's fold predictions with its tuned rules and evaluate them: a new row's folder.

    Args:
        paths: the strategy's one fold-structured folder (an nnU-Net results folder, a
            ``predict-folds`` or ``ensemble-folds`` output).
        rules_file: the rules (default ``<folder>/brats_postprocessing.json``).
        out_dir: default ``<folder>/brats_postprocessed`` (``fold_k/validation`` below it).
        gt_dir: references (default: as ``tune-postprocessing`` finds them, see
            :mod:`nnunet_transfer.postprocessing.sources`).
        hd95, empty_penalty, num_processes, file_ending, folds: as in :func:`compare_strategies`.

    Returns:
        ``out_dir``, whose folds hold post-processed predictions and ``summary_brats.json``.
        Reruns redo only what is stale (other rules, other HD95 definition).
    """
    from nnunet_transfer.evaluation.evaluate import evaluate_folder
    from nnunet_transfer.postprocessing.folders import apply_to_folder
    from nnunet_transfer.postprocessing.io import FILE_NAME, read_rules
    from nnunet_transfer.postprocessing.sources import file_ending as ending_of, fold_folders, reference_folder

    if not isinstance(paths, (str, Path)):
        if len(paths) != 1:
            raise ValueError(f"post-processing needs the strategy's predictions as one folder with fold_k/validation, "
                             f"got {len(paths)} paths: {', '.join(map(str, paths))}")
        paths = paths[0]
    root = expand(paths)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of fold predictions; post-processing needs the "
                                f"predictions (summary files are not enough).")
    sources = fold_folders(root, folds)
    if not sources:
        raise FileNotFoundError(f"{root} has no fold_k/validation folders to post-process.")
    rules_file = expand(rules_file) if rules_file is not None else root / FILE_NAME
    rules = read_rules(rules_file)
    out = expand(out_dir) if out_dir is not None else root / POSTPROCESSED_DIR
    ending = file_ending or ending_of(root)
    apply_to_folder(root, out, rules, num_processes=num_processes, ending=ending, folds=list(sources),
                    rules_file=rules_file)
    for fold, validation in fold_folders(out, list(sources)).items():
        summary = validation / CACHE_NAME
        if summary.is_file():
            used = json.loads(summary.read_text()).get("config") or {}
            if used.get("hd95") == hd95 and used.get("empty_penalty") == float(empty_penalty):
                continue
        gt = Path(gt_dir) if gt_dir is not None else reference_folder(root, None, [sources[fold]])
        evaluate_folder(gt, validation, summary, regions=True, num_processes=num_processes, hd95=hd95,
                        file_ending=ending, empty_penalty=empty_penalty)
    return out


def compare_strategies(strategies: Mapping[str, Union[PathLike, Sequence[PathLike]]], reference: str,
                       out_dir: PathLike, labels: Sequence[str] = ("NCR", "ED", "ET"),
                       gt_dir: Optional[PathLike] = None, hd95: str = "medpy", empty_penalty: float = EMPTY_PENALTY,
                       num_processes: int = 1, file_ending: Optional[str] = None,
                       folds: Optional[Sequence[Union[int, str]]] = None,
                       postprocessing: Optional[Mapping[str, Optional[PathLike]]] = None) -> dict:
    """Build Table 2 with paired tests and write ``table2.md``, ``table2.csv``, ``comparison.json``, ``comparison.png``.

    Args:
        strategies: display name -> path(s) (see the module docstring); order is kept.
        reference: the name every other strategy is tested against (e.g. the baseline).
        out_dir: output folder (files are written to a temporary folder, then moved in).
        labels: structures of the table (their mean is the "Average" column).
        gt_dir: references for folds that still need evaluating.
        hd95, empty_penalty, num_processes, file_ending: as in ``evaluate_folder``.
        folds: restrict to these folds.
        postprocessing: strategy name -> rules file (``None``: the strategy folder's
            ``brats_postprocessing.json``); each adds the row "<name> + post-processing" after
            the strategy's row (see :func:`postprocess_strategy`).

    Returns:
        The result dict (``table``, ``tests``, ``per_fold``, ``per_case``, ``notes``, ...)
        plus ``markdown`` and ``files``.
    """
    if not strategies:
        raise ValueError("no strategies to compare")
    if reference not in strategies:
        raise ValueError(f"reference strategy {reference!r} is not among the strategies {list(strategies)}")
    postprocessing = dict(postprocessing or {})
    unknown = [name for name in postprocessing if name not in strategies]
    if unknown:
        raise ValueError(f"post-processing asked for {', '.join(map(repr, unknown))}, which "
                         f"{'is' if len(unknown) == 1 else 'are'} not among the strategies {list(strategies)}")
    if postprocessing:
        rows: Dict[str, Union[PathLike, Sequence[PathLike]]] = {}
        for name, paths in strategies.items():
            rows[name] = paths
            if name in postprocessing:
                label = POSTPROCESSED_LABEL.format(name)
                if label in strategies:
                    raise ValueError(f"the row {label!r} is given both as a strategy and by post-processing")
                rows[label] = [postprocess_strategy(paths, postprocessing[name], gt_dir=gt_dir, hd95=hd95,
                                                    empty_penalty=empty_penalty, num_processes=num_processes,
                                                    file_ending=file_ending, folds=folds)]
        strategies = rows
    data: StrategyData = {name: load_strategy(paths, labels, gt_dir, hd95, empty_penalty, num_processes,
                                              file_ending, folds) for name, paths in strategies.items()}
    result = build_table(data, reference, labels)
    designs = {name: mixed_domain_design(paths, result["folds"]) for name, paths in strategies.items()}
    result["notes"] = design_notes({name: d for name, d in designs.items() if d is not None}) + \
        recipe_notes(strategies, result["folds"])
    markdown = to_markdown(result)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compare.", dir=out_dir))
    try:
        (staging / "table2.md").write_text(markdown)
        (staging / "table2.csv").write_text(to_csv(result))
        (staging / "comparison.json").write_text(json.dumps(_json_safe({**result, "hd95": hd95}), indent=2))
        plot(result, staging / "comparison.png")
        files = {}
        for name in ("table2.md", "table2.csv", "comparison.json", "comparison.png"):
            os.replace(staging / name, out_dir / name)
            files[name] = str(out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %s", ", ".join(files.values()))
    return {**result, "markdown": markdown, "files": files}

"""The step graph of an experiment plan: one shell command per step, each knowing when it is done.

``build_steps(plan, workdir)`` returns the chain in execution order:

1. data: ``nnunet-transfer synth`` (synthetic sources), ``convert``, ``combine``;
2. ``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment`` for every dataset
   (or the plugin's small-sample fingerprint when the plan sets ``fingerprint_voxels``);
3. optionally shrink the source plans (a tiny network for CPU demos);
4. ``nnUNetv2_move_plans_between_datasets -s SOURCE -t TARGET -sp P -tp P_fromSOURCE`` for the
   target and combined datasets, so architecture, patch size and normalisation match;
5. ``nnUNetv2_preprocess`` with those plans, ``nnunet-transfer splits`` (target-domain folds);
6. ``nnUNetv2_train`` for the fold-all models (the source model), then every strategy per fold
   (``-pretrained_weights .../fold_all/checkpoint_final.pth`` for fine-tuning);
7. ``nnunet-transfer predict-folds`` for cross-domain strategies (the baseline),
   ``nnunet-transfer evaluate`` for the others, ``nnunet-transfer compare``.

Done-checks look at the files each step leaves. Training steps resume: with
``checkpoint_latest.pth`` but no ``checkpoint_final.pth`` they continue with ``--c``; with a
final checkpoint but no validation summary they rerun only the validation (``--val``).

Example:
    >>> from nnunet_transfer.experiments.plan import load_plan, shipped_plan
    >>> steps = build_steps(load_plan(shipped_plan("demo")), "demo_work")  # doctest: +SKIP
    >>> print(steps[0].shell())  # doctest: +SKIP
    nnunet-transfer synth demo_work/data/DemoGLI --domain GLI -n 12 --seed 0 --shape 64 64 48
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from nnunet_transfer import config
from nnunet_transfer.experiments.plan import DatasetSpec, Plan, Strategy, expand_source, selected_strategies

CLI = "nnunet-transfer"
STAGES = ("prepare", "train", "evaluate", "compare")


@dataclass
class Training:
    """What a training step needs to pick its resume variant."""

    fold_dir: Path
    pretrained: Optional[Path] = None
    needs_validation: bool = True

    @property
    def final(self) -> Path:
        return self.fold_dir / "checkpoint_final.pth"

    @property
    def latest(self) -> Path:
        return self.fold_dir / "checkpoint_latest.pth"

    @property
    def summary(self) -> Path:
        return self.fold_dir / "validation" / "summary.json"


@dataclass
class Step:
    """One command of the chain.

    ``done`` tells from the files on disk whether the step has finished; ``markers`` are
    files whose existence means done (used for shell guards in SLURM scripts);
    ``stage``, ``strategy`` and ``fold`` place the step in the job graph.
    """

    name: str
    command: List[str]
    done: Callable[[], bool]
    stage: str = "prepare"
    strategy: Optional[str] = None
    fold: Optional[str] = None
    markers: List[Path] = field(default_factory=list)
    training: Optional[Training] = None

    def current_command(self) -> List[str]:
        """The command to run now: for training, with ``--c`` or ``--val`` when resuming."""
        if self.training is None:
            return list(self.command)
        t = self.training
        if t.final.is_file():
            return _without_pretrained(self.command) + ["--val"]
        if t.latest.is_file():
            return _without_pretrained(self.command) + ["--c"]
        return list(self.command)

    def shell(self, command: Optional[Sequence[str]] = None) -> str:
        """The command as one shell line (unset ``$VARIABLES`` stay expandable)."""
        return shell_join(self.current_command() if command is None else list(command))


def shell_join(command: Sequence[str]) -> str:
    """``shlex.join``, except that tokens holding ``$VAR`` are double-quoted so the shell expands them."""
    return " ".join(f'"{t}"' if "$" in t and _EXPANDABLE.match(t) else shlex.quote(t) for t in command)


_EXPANDABLE = re.compile(r"^[\w$/{}.:=+,@%~-]+$")


def _without_pretrained(command: List[str]) -> List[str]:
    # nnU-Net refuses -pretrained_weights together with --c or --val
    out, skip = [], False
    for token in command:
        if skip:
            skip = False
            continue
        if token == "-pretrained_weights":
            skip = True
            continue
        out.append(token)
    return out


def _all_files(*paths: Path) -> Callable[[], bool]:
    return lambda: all(Path(p).is_file() for p in paths)


@dataclass
class Layout:
    """Where a plan's files live: nnU-Net's folders and the run's work dir."""

    plan: Plan
    workdir: Path
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def from_env(cls, plan: Plan, workdir: Union[str, Path]) -> "Layout":
        return cls(plan, Path(workdir).absolute(), config.nnunet_raw(), config.nnunet_preprocessed(),
                   config.nnunet_results())

    def raw_dir(self, spec: DatasetSpec) -> Path:
        return self.raw / spec.folder_name

    def pre_dir(self, spec: DatasetSpec) -> Path:
        return self.preprocessed / spec.folder_name

    def synth_dir(self, spec: DatasetSpec) -> Path:
        return self.workdir / "data" / spec.name

    def model_dir(self, strategy: Strategy) -> Path:
        spec = self.plan.datasets[strategy.dataset]
        plans = self.plan.plans_for(strategy.dataset)
        return self.results / spec.folder_name / f"{strategy.trainer}__{plans}__{self.plan.configuration}"

    def prediction_dir(self, strategy: Strategy) -> Path:
        return self.workdir / "predictions" / strategy.key

    def validation_dir(self, strategy: Strategy, fold: str) -> Path:
        if strategy.evaluate == "cross-domain":
            return self.prediction_dir(strategy) / f"fold_{fold}" / "validation"
        return self.model_dir(strategy) / f"fold_{fold}" / "validation"

    def comparison_dir(self) -> Path:
        return self.workdir / "comparison"


def _synth_done(folder: Path, spec: DatasetSpec) -> Callable[[], bool]:
    def done() -> bool:
        from nnunet_transfer.synth import case_id

        for index in range(spec.n):
            name = case_id(spec.domain or "GLI", index)
            if not (folder / name / f"{name}-seg.nii.gz").is_file():
                return False
        return True
    return done


def _preprocessed_done(layout: Layout, spec: DatasetSpec, plans: str) -> Callable[[], bool]:
    """Every training case of the raw dataset has its properties file in the data folder."""
    def done() -> bool:
        plans_file = layout.pre_dir(spec) / f"{plans}.json"
        dataset_json = layout.raw_dir(spec) / "dataset.json"
        if not plans_file.is_file() or not dataset_json.is_file():
            return False
        configurations = json.loads(plans_file.read_text()).get("configurations", {})
        identifier = configurations.get(layout.plan.configuration, {}).get("data_identifier")
        if identifier is None:
            return False
        data = layout.pre_dir(spec) / identifier
        ending = json.loads(dataset_json.read_text()).get("file_ending", ".nii.gz")
        cases = [p.name[: -len(f"_0000{ending}")] for p in (layout.raw_dir(spec) / "imagesTr").glob(f"*_0000{ending}")]
        return bool(cases) and all((data / f"{c}.pkl").is_file() for c in cases)
    return done


def _splits_done(layout: Layout, specs: Sequence[DatasetSpec]) -> Callable[[], bool]:
    def done() -> bool:
        for spec in specs:
            path = layout.pre_dir(spec) / "splits_final.json"
            if not path.is_file():
                return False
            try:
                if len(json.loads(path.read_text())) != layout.plan.folds:
                    return False
            except ValueError:
                return False
        return True
    return done


def _newer_than(output: Path, inputs: Callable[[], List[Path]]) -> Callable[[], bool]:
    def done() -> bool:
        if not output.is_file():
            return False
        stamps = [p.stat().st_mtime for p in inputs() if p.is_file()]
        return not stamps or output.stat().st_mtime >= max(stamps)
    return done


def _self_step(layout: Layout, step: str) -> List[str]:
    """A step the plugin runs in Python, as a shell command: ``nnunet-transfer run PLAN --step NAME``."""
    plan_path = layout.plan.path or Path(f"{layout.plan.name}.toml")
    return [CLI, "run", str(plan_path), "--workdir", str(layout.workdir), "--step", step]


def data_steps(layout: Layout) -> List[Step]:
    plan, steps = layout.plan, []
    np_ = str(plan.num_processes)
    for spec in plan.datasets.values():
        if spec.combine:
            continue
        dataset_json = layout.raw_dir(spec) / "dataset.json"
        if spec.is_synth:
            folder = layout.synth_dir(spec)
            steps.append(Step(f"synth-{spec.role}", [
                CLI, "synth", str(folder), "--domain", str(spec.domain), "-n", str(spec.n), "--seed", str(spec.seed),
                "--shape", *map(str, spec.shape)], _synth_done(folder, spec)))
            source = str(folder)
        else:
            source = expand_source(spec, check=False)
        command = [CLI, "convert", source, "-d", str(spec.id), "-n", spec.name]
        if spec.modalities:
            command += ["--modalities", *spec.modalities]
        if spec.domain:
            command += ["--domain", spec.domain]
        steps.append(Step(f"convert-{spec.role}", command + ["-np", np_], _all_files(dataset_json),
                          markers=[dataset_json]))
    for spec in plan.datasets.values():
        if spec.combine:
            dataset_json = layout.raw_dir(spec) / "dataset.json"
            ids = [str(plan.datasets[r].id) for r in spec.combine]
            steps.append(Step(f"combine-{spec.role}", [CLI, "combine", *ids, "-d", str(spec.id), "-n", spec.name],
                              _all_files(dataset_json), markers=[dataset_json]))
    return steps


def planning_steps(layout: Layout) -> List[Step]:
    plan, steps = layout.plan, []
    specs = list(plan.datasets.values())
    targets = [s for s in specs if s.role != "source"]
    for spec in specs:
        fingerprint = layout.pre_dir(spec) / "dataset_fingerprint.json"
        if plan.fingerprint_voxels is not None:
            command = _self_step(layout, f"fingerprint-{spec.role}")
        else:
            command = ["nnUNetv2_extract_fingerprint", "-d", str(spec.id), "-np", str(plan.num_processes)]
        steps.append(Step(f"fingerprint-{spec.role}", command, _all_files(fingerprint), markers=[fingerprint]))
    for spec in specs:
        plans_file = layout.pre_dir(spec) / f"{plan.plans}.json"
        command = ["nnUNetv2_plan_experiment", "-d", str(spec.id)]
        if plan.planner:
            command += ["-pl", plan.planner]
        steps.append(Step(f"plan-{spec.role}", command, _all_files(plans_file), markers=[plans_file]))
    source = plan.source
    if plan.shrink:
        shrunk = layout.pre_dir(source) / f"{plan.training_plans}.json"
        steps.append(Step("shrink-plans", _self_step(layout, "shrink-plans"), _all_files(shrunk), markers=[shrunk]))
    for spec in targets:
        moved = layout.pre_dir(spec) / f"{plan.target_plans}.json"
        steps.append(Step(f"transfer-plans-{spec.role}", [
            "nnUNetv2_move_plans_between_datasets", "-s", str(source.id), "-t", str(spec.id),
            "-sp", plan.training_plans, "-tp", plan.target_plans], _all_files(moved), markers=[moved]))
    for spec in specs:
        # the source's shrunken plans share the data of its full plans
        plans = plan.plans if spec.role == "source" else plan.target_plans
        steps.append(Step(f"preprocess-{spec.role}", [
            "nnUNetv2_preprocess", "-d", str(spec.id), "-plans_name", plans, "-c", plan.configuration,
            "-np", str(plan.num_processes)], _preprocessed_done(layout, spec, plans)))
    if targets:
        steps.append(Step("splits", [
            CLI, "splits", *[str(s.id) for s in targets], "--target-domain", plan.target_domain,
            "--folds", str(plan.folds), "--seed", str(plan.split_seed)], _splits_done(layout, targets),
            markers=[layout.pre_dir(s) / "splits_final.json" for s in targets]))
    return steps


def train_step(layout: Layout, strategy: Strategy, fold: str) -> Step:
    plan = layout.plan
    spec = plan.datasets[strategy.dataset]
    fold_dir = layout.model_dir(strategy) / f"fold_{fold}"
    command = ["nnUNetv2_train", str(spec.id), plan.configuration, fold, "-tr", strategy.trainer,
               "-p", plan.plans_for(strategy.dataset)]
    pretrained = None
    if strategy.init is not None:
        pretrained = layout.model_dir(plan.strategies[strategy.init]) / "fold_all" / "checkpoint_final.pth"
        command += ["-pretrained_weights", str(pretrained)]
    command += ["-device", plan.device]
    training = Training(fold_dir, pretrained, needs_validation=strategy.per_fold)
    markers = [training.final] + ([training.summary] if training.needs_validation else [])
    return Step(f"train-{strategy.key}-fold_{fold}", command, _all_files(*markers), stage="train",
                strategy=strategy.key, fold=fold, markers=markers, training=training)


def evaluation_steps(layout: Layout, strategy: Strategy, folds: Sequence[int]) -> List[Step]:
    plan, steps = layout.plan, []
    if strategy.evaluate == "cross-domain":
        target = plan.datasets["target"]
        for fold in folds:
            summary = layout.validation_dir(strategy, str(fold)) / "summary.json"
            steps.append(Step(f"predict-{strategy.key}-fold_{fold}", [
                CLI, "predict-folds", str(layout.model_dir(strategy)), str(target.id),
                "-o", str(layout.prediction_dir(strategy)), "-f", str(fold), "--model-folds", "all",
                "-device", plan.device], _all_files(summary), stage="evaluate", strategy=strategy.key,
                fold=str(fold), markers=[summary]))
        return steps
    spec = plan.datasets[strategy.dataset]
    for fold in folds:
        validation = layout.validation_dir(strategy, str(fold))
        summary = validation / "summary_brats.json"
        steps.append(Step(f"evaluate-{strategy.key}-fold_{fold}", [
            CLI, "evaluate", str(layout.pre_dir(spec) / "gt_segmentations"), str(validation), "-o", str(summary)],
            _all_files(summary), stage="evaluate", strategy=strategy.key, fold=str(fold), markers=[summary]))
    return steps


def compare_step(layout: Layout, strategies: Sequence[Strategy], folds: Sequence[int]) -> Step:
    plan = layout.plan
    reference = plan.strategies[plan.reference] if plan.reference else strategies[0]
    if reference not in strategies:
        strategies = [reference, *strategies]
    command = [CLI, "compare"]
    for s in strategies:
        path = layout.prediction_dir(s) if s.evaluate == "cross-domain" else layout.model_dir(s)
        command += ["--strategy", f"{s.label}={path}"]
    out = layout.comparison_dir()
    command += ["--reference", reference.label, "-o", str(out), "--folds", *map(str, folds)]

    def inputs() -> List[Path]:
        names = ("summary.json", "summary_brats.json")
        return [layout.validation_dir(s, str(f)) / n for s in strategies for f in folds for n in names]

    table = out / "table2.md"
    return Step("compare", command, _newer_than(table, inputs), stage="compare", markers=[table])


def build_steps(plan: Plan, workdir: Union[str, Path], folds: Optional[Sequence[int]] = None,
                strategies: Optional[Sequence[str]] = None, layout: Optional[Layout] = None) -> List[Step]:
    """The plan's steps in execution order, restricted to ``folds`` and ``strategies``.

    Strategies that selected ones start from (``init``) are included; the comparison is
    built when more than one strategy is selected.
    """
    layout = layout or Layout.from_env(plan, workdir)
    folds = list(range(plan.folds)) if folds is None else [int(f) for f in folds]
    bad = [f for f in folds if not 0 <= f < plan.folds]
    if bad:
        raise ValueError(f"fold(s) {', '.join(map(str, bad))} out of range: the plan has {plan.folds} folds (0..{plan.folds - 1})")
    chosen = selected_strategies(plan, list(strategies) if strategies else None)
    steps = data_steps(layout) + planning_steps(layout)
    # fold-all models first (fine-tuning starts from them), then per-fold trainings by strategy
    steps += [train_step(layout, s, "all") for s in chosen if not s.per_fold]
    steps += [train_step(layout, s, str(f)) for s in chosen if s.per_fold for f in folds]
    for s in chosen:
        steps += evaluation_steps(layout, s, folds)
    if len(chosen) > 1:
        steps.append(compare_step(layout, chosen, folds))
    names = [s.name for s in steps]
    assert len(names) == len(set(names)), "step names must be unique"
    return steps


def steps_by_name(steps: Sequence[Step]) -> Dict[str, Step]:
    return {s.name: s for s in steps}

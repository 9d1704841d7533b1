"""The step graph of an experiment plan: one shell command per step, each knowing when it is done.

``build_steps(plan, workdir)`` returns the chain in execution order:

1. data: ``nnunet-transfer synth`` (synthetic sources), ``convert``, ``combine``;
2. ``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment`` for every dataset
   (or the plugin's small-sample fingerprint when the plan sets ``fingerprint_voxels``);
3. derive each plans family's plans in its source's folder: optionally shrink the source
   plans (a tiny network for CPU demos), ``nnunet-transfer brainunet-plans`` for BrainUNet;
4. ``nnUNetv2_move_plans_between_datasets -s SOURCE -t TARGET -sp P -tp P_fromSOURCE`` for every
   other dataset a strategy of the family trains on, so architecture, patch size and
   normalisation match;
5. ``nnUNetv2_preprocess`` with those plans, ``nnunet-transfer splits`` (target-domain folds);
6. ``nnUNetv2_train`` for the fold-all models (the source model), then every strategy per fold
   (``-pretrained_weights .../fold_all/checkpoint_final.pth`` for fine-tuning);
7. ``nnunet-transfer predict-folds`` for cross-domain strategies (the baseline),
   ``nnunet-transfer evaluate`` for the others;
8. ``nnunet-transfer ensemble-folds`` for the plan's ``[ensembles.*]`` (their members train with
   ``--npz``) and ``evaluate`` for each of their folds;
9. ``nnunet-transfer tune-postprocessing`` for the rows the plan's ``postprocessing`` names;
10. ``nnunet-transfer compare`` (with ``--postprocessing LABEL`` for those rows).

Only what the chosen strategies need is prepared (see :func:`usage`); with a comparison, its
reference strategy is added to the chosen ones. Each step names the steps it needs
(``Step.after``: the steps that write the files it reads), so independent steps may run at
once (``run --jobs``); the list order is one valid order. Done-checks look at
the files each step leaves (SLURM scripts ask them through ``Step.done_command``). Training steps resume: with
``checkpoint_latest.pth`` but no ``checkpoint_final.pth`` they continue with ``--c``; with a
final checkpoint but no validation summary (or, for an ensemble member, without the
validation's probabilities) they rerun only the validation (``--val``).

Example:
    >>> from nnunet_transfer.experiments.plan import load_plan, shipped_plan
    >>> steps = build_steps(load_plan(shipped_plan("demo")), "demo_work")  # doctest: +SKIP
    >>> print(steps[0].shell())  # doctest: +SKIP
    nnunet-transfer synth demo_work/data/DemoGLI --domain GLI -n 12 --seed 0 --shape 64 64 48
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

from nnunet_transfer import config
from nnunet_transfer.experiments.plan import (DEFAULT_FAMILY, POSTPROCESSED_LABEL, DatasetSpec, Ensemble, Plan,
                                              PlansFamily, Strategy, expand_source, selected_ensembles,
                                              selected_strategies)

logger = logging.getLogger(__name__)

CLI = "nnunet-transfer"
NOT_DONE = 3  # exit status of `nnunet-transfer run PLAN --step-done NAME` for a step not done yet
STAGES = ("prepare", "train", "evaluate", "compare")
# what a person reads a run's time by (a step's phase follows from its name, see phase_of)
PHASES = ("data", "planning/preprocessing", "training", "prediction", "evaluation", "comparison")
_PHASE_OF_HEAD = {"synth": "data", "convert": "data", "combine": "data", "train": "training",
                  "predict": "prediction", "ensemble": "prediction", "evaluate": "evaluation",
                  "tune": "evaluation", "compare": "comparison"}


def phase_of(name: str) -> str:
    """The phase of a step, from its name (also for names read back from ``run_log.jsonl``).

    >>> phase_of("train-dann-fold_0"), phase_of("preprocess-target"), phase_of("synth-source")
    ('training', 'planning/preprocessing', 'data')
    """
    return _PHASE_OF_HEAD.get(name.split("-", 1)[0], "planning/preprocessing")


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
    files it writes (the runner names them when a step leaves its done-check false, and
    steps that need them are ordered after it); ``done_command`` asks that same ``done``
    from a shell (``nnunet-transfer run PLAN --workdir W ... --step-done NAME``: exit 0 when
    done, :data:`NOT_DONE` when not; set by :func:`build_steps` for plans read from a file),
    which SLURM scripts use as each step's guard; ``stage``, ``strategy`` and ``fold`` place
    the step in the job graph; ``after`` names the steps that must finish first (set by
    :func:`build_steps`; steps not in the run are ignored); ``job`` ``"compare"`` puts the step
    into the comparison's SLURM job instead of its strategy's (steps that pool the folds of a
    row: ensembles, their evaluations, post-processing tuning).
    """

    name: str
    command: List[str]
    done: Callable[[], bool]
    stage: str = "prepare"
    strategy: Optional[str] = None
    fold: Optional[str] = None
    markers: List[Path] = field(default_factory=list)
    training: Optional[Training] = None
    env: Dict[str, str] = field(default_factory=dict)  # set for this command only (over the plan's)
    after: List[str] = field(default_factory=list)
    done_command: Optional[List[str]] = None
    job: Optional[str] = None

    @property
    def phase(self) -> str:
        """``data``, ``planning/preprocessing``, ``training``, ``prediction``, ``evaluation`` or ``comparison``."""
        return "training" if self.training is not None else phase_of(self.name)

    @property
    def uses_gpu(self) -> bool:
        """Whether the command runs a network on a GPU (``-device cuda``): trainings and predictions."""
        command = self.command
        return "-device" in command[:-1] and command[command.index("-device") + 1].startswith("cuda")

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
        """The command as one shell line, led by the step's own variables (``A=1 cmd``)."""
        line = shell_join(self.current_command() if command is None else list(command))
        return env_prefix(self.env) + line


def env_prefix(env: Mapping[str, str]) -> str:
    """``NAME=value `` assignments that set ``env`` for one shell command.

    >>> env_prefix({"nnUNetTransfer_num_epochs": "6"})
    'nnUNetTransfer_num_epochs=6 '
    """
    return "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())


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
    """Where a plan's files live: nnU-Net's folders and the run's work dir.

    Models go to ``$nnUNet_results/DatasetXXX/<trainer>__<plans>__<configuration>``, shared by
    every plan with the same dataset, trainer and plans. Predictions of cross-domain
    strategies (``predictions/<strategy>``), the comparison, logs and synthetic data go to the
    work dir, which is one plan's (:func:`check_predictions_owner` refuses to mix models there).
    """

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
        plans = self.plan.plans_for(strategy)
        return self.results / spec.folder_name / f"{strategy.trainer}__{plans}__{self.plan.configuration}"

    def prediction_dir(self, strategy: Strategy) -> Path:
        return self.workdir / "predictions" / strategy.key

    def validation_dir(self, strategy: Strategy, fold: str) -> Path:
        if strategy.evaluate == "cross-domain":
            return self.prediction_dir(strategy) / f"fold_{fold}" / "validation"
        return self.model_dir(strategy) / f"fold_{fold}" / "validation"

    def comparison_dir(self) -> Path:
        return self.workdir / "comparison"

    def ensemble_dir(self, ensemble: Ensemble) -> Path:
        """``WORKDIR/predictions/<ensemble>`` (``ensemble-folds`` output: ``fold_k/validation``)."""
        return self.workdir / "predictions" / ensemble.key

    def row_dir(self, row: Union[Strategy, Ensemble]) -> Path:
        """The fold-structured folder of a comparison row: its results folder, predictions or ensemble."""
        if isinstance(row, Ensemble):
            return self.ensemble_dir(row)
        return self.prediction_dir(row) if row.evaluate == "cross-domain" else self.model_dir(row)


def _synth_done(folder: Path, spec: DatasetSpec) -> Callable[[], bool]:
    """Every case is there, written with the plan's settings (a changed plan reruns the step, which refuses)."""
    def done() -> bool:
        from nnunet_transfer.synth import case_id, recorded_settings, settings

        recorded = recorded_settings(folder)
        if recorded is not None and recorded != settings(spec.domain or "GLI", spec.seed, spec.shape, spec.tumours):
            return False
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


def done_command(layout: Layout, name: str, folds: Optional[Sequence[int]] = None,
                 strategies: Optional[Sequence[str]] = None) -> List[str]:
    """The shell command asking the runner whether step ``name`` (of this selection) is done.

    It rebuilds the steps of the same plan, work dir, folds and strategies and exits 0 when
    the step's ``done()`` is true, :data:`NOT_DONE` when it is not (and 1 on errors, such as a
    plan edited since, that no longer has the step).
    """
    plan_path = layout.plan.path or Path(f"{layout.plan.name}.toml")
    command = [CLI, "run", str(plan_path), "--workdir", str(layout.workdir)]
    if folds is not None:
        command += ["--folds", *map(str, folds)]
    if strategies:
        command += ["--strategies", *strategies]
    return command + ["--step-done", name]


@dataclass
class Usage:
    """What the chosen strategies need prepared: families (bases first), datasets, transfers."""

    families: List[PlansFamily]                      # to derive, in order (a family after its base)
    trained: Dict[str, List[str]]                    # family key -> datasets its strategies train on
    datasets: List[str]                              # fingerprinted, planned (plan order)
    converted: List[str]                             # converted or combined (plan order)
    split: List[str]                                 # get target-domain splits


def usage(plan: Plan, strategies: Optional[Sequence[Strategy]] = None) -> Usage:
    """The families and datasets the strategies (default: all) train with, on and predict onto."""
    strategies = list(plan.strategies.values()) if strategies is None else list(strategies)
    used = {s.plans for s in strategies}
    order: List[PlansFamily] = []

    def visit(family: PlansFamily) -> None:
        if family in order:
            return
        base = plan.base_family(family)
        if base is not None:
            visit(base)
        order.append(family)

    for family in plan.families.values():  # the plan's own plans first, then in declaration order
        if family.key in used:
            visit(family)
    trained = {f.key: [r for r in plan.datasets if any(s.plans == f.key and s.dataset == r for s in strategies)]
               for f in order}
    needed = {f.source for f in order if f.key in used}
    needed |= {s.dataset for s in strategies}
    needed |= {plan.family(s).target for s in strategies if s.evaluate == "cross-domain"}
    datasets = [r for r in plan.datasets if r in needed]
    inputs = {part for r in datasets for part in plan.datasets[r].combine}
    converted = [r for r in plan.datasets if r in needed or r in inputs]
    sources = {f.source for f in plan.families.values()}
    return Usage(order, trained, datasets, converted, [r for r in datasets if r not in sources])


def data_steps(layout: Layout, strategies: Optional[Sequence[Strategy]] = None) -> List[Step]:
    plan, steps = layout.plan, []
    np_ = str(plan.num_processes)
    specs = [plan.datasets[r] for r in usage(plan, strategies).converted]
    for spec in specs:
        if spec.combine:
            continue
        dataset_json = layout.raw_dir(spec) / "dataset.json"
        after = [f"synth-{spec.role}"] if spec.is_synth else []
        if spec.is_synth:
            folder = layout.synth_dir(spec)
            steps.append(Step(f"synth-{spec.role}", [
                CLI, "synth", str(folder), "--domain", str(spec.domain), "-n", str(spec.n), "--seed", str(spec.seed),
                "--shape", *map(str, spec.shape), *(["--tumours", spec.tumours] if spec.tumours else [])],
                _synth_done(folder, spec)))
            source = str(folder)
        else:
            source = expand_source(spec, check=False)
        command = [CLI, "convert", source, "-d", str(spec.id), "-n", spec.name]
        if spec.modalities:
            command += ["--modalities", *spec.modalities]
        if spec.domain:
            command += ["--domain", spec.domain]
        command += list(spec.convert_args)
        steps.append(Step(f"convert-{spec.role}", command + ["-np", np_], _all_files(dataset_json),
                          markers=[dataset_json], after=after))
    for spec in specs:
        if spec.combine:
            dataset_json = layout.raw_dir(spec) / "dataset.json"
            ids = [str(plan.datasets[r].id) for r in spec.combine]
            command = [CLI, "combine", *ids, "-d", str(spec.id), "-n", spec.name, "--target-domain", plan.target_domain]
            steps.append(Step(f"combine-{spec.role}", command,
                              _all_files(dataset_json), markers=[dataset_json],
                              after=[_raw_step(plan, r) for r in spec.combine]))
    return steps


def _raw_step(plan: Plan, role: str) -> str:
    """The step that writes a dataset's raw folder."""
    return f"{'combine' if plan.datasets[role].combine else 'convert'}-{role}"


def _suffix(family: PlansFamily) -> str:
    """Step-name suffix of a family's steps (none for the plan's own plans, as before families)."""
    return "" if family.key == DEFAULT_FAMILY else f"-{family.key}"


def derive_step(layout: Layout, family: PlansFamily) -> Step:
    """Derive a family's plans in its source's preprocessed folder (brainunet-plans or shrink)."""
    plan = layout.plan
    source = plan.datasets[family.source]
    derived = layout.pre_dir(source) / f"{family.name}.json"
    if family.derive == "brainunet-plans":
        command = [CLI, "brainunet-plans", str(source.id), "-p", family.base, "-o", family.name,
                   "-c", plan.configuration, *family.args]
        name = f"derive-plans-{family.key}"
    else:
        name = "shrink-plans" if family.key == DEFAULT_FAMILY else f"derive-plans-{family.key}"
        command = _self_step(layout, name)
    return Step(name, command, _all_files(derived), markers=[derived])


def planning_steps(layout: Layout, strategies: Optional[Sequence[Strategy]] = None) -> List[Step]:
    plan, steps = layout.plan, []
    use = usage(plan, strategies)
    specs = [plan.datasets[r] for r in use.datasets]
    for spec in specs:
        fingerprint = layout.pre_dir(spec) / "dataset_fingerprint.json"
        if plan.fingerprint_voxels is not None:
            command = _self_step(layout, f"fingerprint-{spec.role}")
        else:
            command = ["nnUNetv2_extract_fingerprint", "-d", str(spec.id), "-np", str(plan.num_processes)]
        steps.append(Step(f"fingerprint-{spec.role}", command, _all_files(fingerprint), markers=[fingerprint],
                          after=[_raw_step(plan, spec.role)]))
    makers: Dict[tuple, str] = {}  # (dataset, plans name) -> the step that writes those plans
    for spec in specs:
        plans_file = layout.pre_dir(spec) / f"{plan.plans}.json"
        command = ["nnUNetv2_plan_experiment", "-d", str(spec.id)]
        if plan.planner:
            command += ["-pl", plan.planner]
        steps.append(Step(f"plan-{spec.role}", command, _all_files(plans_file), markers=[plans_file],
                          after=[f"fingerprint-{spec.role}"]))
        makers[(spec.role, plan.plans)] = f"plan-{spec.role}"
    for family in use.families:
        if family.derive is not None:
            step = derive_step(layout, family)
            step.after = _present([f"plan-{family.source}", makers.get((family.source, family.base))])
            makers[(family.source, family.name)] = step.name
            steps.append(step)
    for family in use.families:
        source = plan.datasets[family.source]
        for role in use.trained[family.key]:
            if role == family.source:
                continue
            spec = plan.datasets[role]
            moved = layout.pre_dir(spec) / f"{family.transferred_name}.json"
            name = f"transfer-plans-{role}{_suffix(family)}"
            steps.append(Step(name, [
                "nnUNetv2_move_plans_between_datasets", "-s", str(source.id), "-t", str(spec.id),
                "-sp", family.name, "-tp", family.transferred_name], _all_files(moved), markers=[moved],
                after=_present([makers.get((family.source, family.name), f"plan-{family.source}"), f"plan-{role}"])))
            makers[(role, family.transferred_name)] = name
    preprocessed = set()
    last_preprocess: Dict[str, str] = {}  # a dataset's preprocessing steps run one after another
    for family in use.families:
        if not use.trained[family.key]:
            continue  # only derived as the base of another family
        # the source first (shrunken plans share the data of the plans they shrink)
        jobs = [(family.source, plan.data_plans(family))]
        jobs += [(r, family.transferred_name) for r in use.trained[family.key] if r != family.source]
        for role, plans in jobs:
            if (role, plans) in preprocessed:
                continue
            preprocessed.add((role, plans))
            spec = plan.datasets[role]
            name = f"preprocess-{role}{_suffix(family)}"
            steps.append(Step(name, [
                "nnUNetv2_preprocess", "-d", str(spec.id), "-plans_name", plans, "-c", plan.configuration,
                "-np", str(plan.num_processes)], _preprocessed_done(layout, spec, plans),
                after=_present([makers.get((role, plans)), last_preprocess.get(role)])))
            last_preprocess[role] = name
    targets = [plan.datasets[r] for r in use.split]
    if targets:
        steps.append(Step("splits", [
            CLI, "splits", *[str(s.id) for s in targets], "--target-domain", plan.target_domain,
            "--folds", str(plan.folds), "--seed", str(plan.split_seed)], _splits_done(layout, targets),
            markers=[layout.pre_dir(s) / "splits_final.json" for s in targets],
            after=_present([f"plan-{s.role}" for s in targets] + [last_preprocess.get(s.role) for s in targets])))
    return steps


def _present(names: Sequence[Optional[str]]) -> List[str]:
    """``names`` without ``None`` and repeats, in order."""
    out: List[str] = []
    for name in names:
        if name is not None and name not in out:
            out.append(name)
    return out


def train_step(layout: Layout, strategy: Strategy, fold: str) -> Step:
    plan = layout.plan
    spec = plan.datasets[strategy.dataset]
    fold_dir = layout.model_dir(strategy) / f"fold_{fold}"
    command = ["nnUNetv2_train", str(spec.id), plan.configuration, fold, "-tr", strategy.trainer,
               "-p", plan.plans_for(strategy)]
    pretrained = None
    if strategy.init is not None:
        pretrained = layout.model_dir(plan.strategies[strategy.init]) / "fold_all" / "checkpoint_final.pth"
        command += ["-pretrained_weights", str(pretrained)]
    probabilities = strategy.per_fold and strategy.key in plan.ensemble_members
    if probabilities:  # an ensemble averages its validation's softmax probabilities
        command.append("--npz")
    command += ["-device", plan.device]
    training = Training(fold_dir, pretrained, needs_validation=strategy.per_fold)
    markers = [training.final] + ([training.summary] if training.needs_validation else [])
    done = _all_files(*markers)
    if probabilities:
        done = _and(done, _probabilities_done(training.summary.parent))
    return Step(f"train-{strategy.key}-fold_{fold}", command, done, stage="train",
                strategy=strategy.key, fold=fold, markers=markers, training=training, env=dict(strategy.env))


def _and(*checks: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(check() for check in checks)


def _probabilities_done(validation: Path) -> Callable[[], bool]:
    """Every validation prediction has its ``.npz`` probabilities and ``.pkl`` properties (``--npz``)."""
    def done() -> bool:
        try:
            ending = json.loads((validation.parent.parent / "dataset.json").read_text()).get("file_ending", ".nii.gz")
        except (OSError, ValueError, AttributeError):
            ending = ".nii.gz"
        cases = [p.name[: -len(ending)] for p in validation.glob(f"*{ending}")]
        return bool(cases) and all((validation / f"{c}.npz").is_file() and (validation / f"{c}.pkl").is_file()
                                   for c in cases)
    return done


def check_predictions_owner(layout: Layout, strategy: Strategy) -> None:
    """Refuse a work dir whose predictions for ``strategy`` were made by another model.

    ``predict-folds`` reuses the cases it finds predicted, and its output folder is
    ``WORKDIR/predictions/<strategy>``: two plans (or an edited plan) with the same strategy
    key but other models must not share a work dir. The model is the ``source_model`` that
    ``predict-folds`` records in the folder's ``dataset.json``.
    """
    folder = layout.prediction_dir(strategy)
    try:
        made_by = json.loads((folder / "dataset.json").read_text()).get("source_model")
    except (OSError, ValueError):
        return  # nothing predicted yet (or no record to go by)
    model = layout.model_dir(strategy)
    if made_by and Path(made_by).resolve() != model.resolve():
        raise ValueError(f"{folder} holds predictions of {made_by}, not of {model} (strategy {strategy.key!r} of "
                         f"plan {layout.plan.name!r}). Fix: run every plan in a work dir of its own (--workdir; the "
                         f"default is runs/<plan name>), or, if those predictions are stale (made before the plan "
                         f"changed the strategy's trainer or plans), move {folder} away to predict again.")


def evaluation_steps(layout: Layout, strategy: Strategy, folds: Sequence[int]) -> List[Step]:
    plan, steps = layout.plan, []
    if strategy.evaluate == "cross-domain":
        check_predictions_owner(layout, strategy)
        target = plan.datasets[plan.family(strategy).target]
        for fold in folds:
            summary = layout.validation_dir(strategy, str(fold)) / "summary.json"
            steps.append(Step(f"predict-{strategy.key}-fold_{fold}", [
                CLI, "predict-folds", str(layout.model_dir(strategy)), str(target.id),
                "-o", str(layout.prediction_dir(strategy)), "-f", str(fold), "--model-folds", "all",
                *([] if plan.test_time_mirroring else ["--no-mirroring"]),
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


def references(layout: Layout, row: Union[Strategy, Ensemble], steps: Sequence[Step] = ()) -> Path:
    """The reference label maps of a row's validation cases.

    ``$nnUNet_preprocessed/DatasetXXX/gt_segmentations`` of the dataset whose cases the row
    predicts (a strategy's own, the family target of a cross-domain one, an ensemble's first
    member's); for a cross-domain row whose target ``steps`` do not preprocess, that dataset's
    ``labelsTr`` (of which ``gt_segmentations`` is nnU-Net's copy, and which ``predict-folds``
    then evaluates against).
    """
    plan = layout.plan
    if isinstance(row, Ensemble):
        return layout.pre_dir(plan.datasets[plan.strategies[row.members[0]].dataset]) / "gt_segmentations"
    if row.evaluate != "cross-domain":
        return layout.pre_dir(plan.datasets[row.dataset]) / "gt_segmentations"
    target = plan.datasets[plan.family(row).target]
    if any(s.command[:1] == ["nnUNetv2_preprocess"] and _option(s.command, "-d") == str(target.id) for s in steps):
        return layout.pre_dir(target) / "gt_segmentations"
    return layout.raw_dir(target) / "labelsTr"


def ensemble_steps(layout: Layout, ensemble: Ensemble, folds: Sequence[int]) -> List[Step]:
    """``ensemble-<key>`` (``nnunet-transfer ensemble-folds``) and ``evaluate-<key>-fold_<k>`` per fold.

    The ensemble is done when ``ensemble.json`` records these members and folds and is newer
    than every member's validation probabilities (what ``ensemble-folds`` itself checks before
    redoing it, so the two agree). The steps run in the comparison's SLURM job (``job``).
    """
    plan = layout.plan
    members = [plan.strategies[m] for m in ensemble.members]
    dirs = [layout.model_dir(m) for m in members]
    out = layout.ensemble_dir(ensemble)
    marker = out / "ensemble.json"
    names = [str(f) for f in folds]

    def inputs() -> List[Path]:
        found = []
        for folder in dirs:
            for fold in names:
                found += (folder / f"fold_{fold}" / "validation").glob("*.npz")
        return found

    newer = _newer_than(marker, inputs)

    def done() -> bool:
        try:
            recorded = json.loads(marker.read_text())
            same = ([Path(m).resolve() for m in recorded["members"]] == [d.resolve() for d in dirs]
                    and [str(f) for f in recorded["folds"]] == names)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return same and newer()

    step = Step(f"ensemble-{ensemble.key}", [
        CLI, "ensemble-folds", *map(str, dirs), "-o", str(out), "-f", *names, "-np", str(plan.num_processes)],
        done, stage="evaluate", strategy=ensemble.key, markers=[marker], job="compare",
        after=[f"train-{m.key}-fold_{f}" for m in members for f in names])
    steps = [step]
    gt = references(layout, ensemble)
    for fold in names:
        validation = out / f"fold_{fold}" / "validation"
        summary = validation / "summary_brats.json"
        steps.append(Step(f"evaluate-{ensemble.key}-fold_{fold}", [
            CLI, "evaluate", str(gt), str(validation), "-o", str(summary)], _all_files(summary), stage="evaluate",
            strategy=ensemble.key, fold=fold, markers=[summary], job="compare", after=[step.name]))
    return steps


def tune_step(layout: Layout, row: Union[Strategy, Ensemble], folds: Sequence[int], labels: Path,
              after: Sequence[str] = ()) -> Step:
    """``tune-postprocessing-<key>``: BraTS post-processing rules tuned on the row's pooled folds.

    Done when ``DIR/brats_postprocessing.json`` is newer than every ``DIR/fold_k/validation/summary*.json``
    and records the run's folds and the plan's metric. Runs in the comparison's SLURM job.
    """
    plan = layout.plan
    folder = layout.row_dir(row)
    rules = folder / "brats_postprocessing.json"
    names = [str(f) for f in folds]

    def inputs() -> List[Path]:
        return [p for f in names for p in (folder / f"fold_{f}" / "validation").glob("summary*.json")]

    newer = _newer_than(rules, inputs)

    def done() -> bool:
        try:
            tuning = json.loads(rules.read_text())["tuning"]
            same = sorted(map(str, tuning["folds"]), key=int) == sorted(names, key=int) and \
                tuning.get("metric") == plan.postprocessing_metric
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return same and newer()

    return Step(f"tune-postprocessing-{row.key}", [
        CLI, "tune-postprocessing", str(folder), "-f", *names, "--metric", plan.postprocessing_metric,
        "-np", str(plan.num_processes), "--labels", str(labels)], done, stage="evaluate", strategy=row.key,
        markers=[rules], job="compare", after=list(after))


def compare_step(layout: Layout, strategies: Sequence[Strategy], folds: Sequence[int],
                 ensembles: Sequence[Ensemble] = ()) -> Step:
    plan = layout.plan
    reference = plan.strategies[plan.reference] if plan.reference else strategies[0]
    if reference not in strategies:  # the chosen strategies' predictions were checked by evaluation_steps
        if reference.evaluate == "cross-domain":
            check_predictions_owner(layout, reference)
        strategies = [reference, *strategies]
    rows: List[Union[Strategy, Ensemble]] = [*strategies, *ensembles]
    postprocessed = [r for r in rows if r.key in plan.postprocessing]
    command = [CLI, "compare"]
    for row in rows:
        command += ["--strategy", f"{row.label}={layout.row_dir(row)}"]
    for row in postprocessed:  # the row "LABEL + post-processing" after LABEL's
        command += ["--postprocessing", row.label]
    out = layout.comparison_dir()
    command += ["--reference", reference.label, "-o", str(out)]
    if postprocessed:  # compare applies the rules and evaluates the post-processed folds itself
        command += ["-np", str(plan.num_processes)]
    command += ["--folds", *map(str, folds)]

    def inputs() -> List[Path]:
        names = ("summary.json", "summary_brats.json")
        return ([layout.row_dir(r) / f"fold_{f}" / "validation" / n for r in rows for f in folds for n in names]
                + [layout.row_dir(r) / "brats_postprocessing.json" for r in postprocessed])

    table = out / "table2.md"
    newer = _newer_than(table, inputs)
    labels = sorted([r.label for r in rows] + [POSTPROCESSED_LABEL.format(r.label) for r in postprocessed])

    def done() -> bool:  # and of the same rows: a comparison of another selection is redone
        if not newer():
            return False
        try:
            return sorted(json.loads((out / "comparison.json").read_text())["table"]) == labels
        except (OSError, ValueError, KeyError, TypeError):
            return False

    return Step("compare", command, done, stage="compare", markers=[table])


def build_steps(plan: Plan, workdir: Union[str, Path], folds: Optional[Sequence[int]] = None,
                strategies: Optional[Sequence[str]] = None, layout: Optional[Layout] = None) -> List[Step]:
    """The plan's steps in execution order, restricted to ``folds`` and ``strategies``.

    Strategies that selected ones start from (``init``) are included; the comparison is
    built when more than one strategy is selected, and then its reference strategy (and what
    that starts from) is included too. ``strategies`` may name ensembles (their members are
    included); without ``strategies`` every ensemble is built, with them the ones named. Rows
    named by the plan's ``postprocessing`` get a tuning step. Each step's ``after`` names the
    steps it needs.
    """
    layout = layout or Layout.from_env(plan, workdir)
    given_folds = None if folds is None else [int(f) for f in folds]
    folds = list(range(plan.folds)) if folds is None else [int(f) for f in folds]
    bad = [f for f in folds if not 0 <= f < plan.folds]
    if bad:
        raise ValueError(f"fold(s) {', '.join(map(str, bad))} out of range: the plan has {plan.folds} folds (0..{plan.folds - 1})")
    chosen = _chosen(plan, list(strategies) if strategies else None)
    ensembles = selected_ensembles(plan, list(strategies) if strategies else None)
    steps = data_steps(layout, chosen) + planning_steps(layout, chosen)
    # fold-all models first (fine-tuning starts from them), then per-fold trainings by strategy
    steps += [train_step(layout, s, "all") for s in chosen if not s.per_fold]
    steps += [train_step(layout, s, str(f)) for s in chosen if s.per_fold for f in folds]
    for s in chosen:
        steps += evaluation_steps(layout, s, folds)
    for e in ensembles:
        steps += ensemble_steps(layout, e, folds)
    for row in [*chosen, *ensembles]:
        if row.key in plan.postprocessing:  # after every step of the row: its folds' predictions and summaries
            made = [s.name for s in steps if s.strategy == row.key]
            steps.append(tune_step(layout, row, folds, references(layout, row, steps), after=made))
    if len(chosen) > 1:
        steps.append(compare_step(layout, chosen, folds, ensembles))
    names = [s.name for s in steps]
    assert len(names) == len(set(names)), "step names must be unique"
    _link(layout, steps)
    if plan.path is not None:  # a plan read from a file: the shell can ask the runner (SLURM guards)
        for step in steps:
            step.done_command = done_command(layout, step.name, given_folds, list(strategies) if strategies else None)
    return steps


def _chosen(plan: Plan, names: Optional[List[str]]) -> List[Strategy]:
    """The selected strategies, the ones they start from, and the comparison's reference (logged when added)."""
    chosen = selected_strategies(plan, names)
    if not names:
        return chosen
    reference = plan.reference or chosen[0].key
    if len(chosen) > 1 and reference not in {s.key for s in chosen}:
        chosen = selected_strategies(plan, [*names, reference])
    expanded = list(dict.fromkeys(m for n in names for m in (plan.ensembles[n].members if n in plan.ensembles
                                                              else (n,))))
    added = [s.key for s in chosen if s.key not in names]
    for key in added:
        whys = []
        ensembles = [n for n in names if n in plan.ensembles and key in plan.ensembles[n].members]
        if ensembles:
            whys.append(f"a member of ensemble{'s' if len(ensembles) > 1 else ''} {', '.join(ensembles)}")
        users = [n for n in expanded if _starts_from(plan, n, key)]
        if users:
            whys.append(f"{', '.join(users)} start{'s' if len(users) == 1 else ''} from it")
        if not whys or key == reference and len(chosen) > 1:
            whys.append("the comparison's reference")
        why = "; ".join(whys)
        logger.info("added strategy %s: %s", key, why)
    return chosen


def _starts_from(plan: Plan, name: str, key: str) -> bool:
    init = plan.strategies[name].init
    while init is not None:
        if init == key:
            return True
        init = plan.strategies[init].init
    return False


def _link(layout: Layout, steps: Sequence[Step]) -> None:
    """Set ``after`` of trainings, predictions, evaluations and the comparison; prune names not in the run.

    A step needs the steps that write the files it reads: a training its plans file (planned,
    derived or transferred), its preprocessed data, its splits (per-fold trainings) and the
    checkpoint it starts from; a prediction the model, the target's raw data, splits and
    ground truth; an evaluation its training; the comparison every prediction and evaluation
    (ensembles and post-processing tunings included: they are of the evaluate stage and set
    their own ``after``). The same facts (``init``, the stages) order the SLURM jobs.
    """
    plan = layout.plan
    writers: Dict[Path, str] = {}
    for step in steps:
        for marker in step.markers:
            writers.setdefault(Path(marker), step.name)
    preprocessing = [s for s in steps if s.command[:1] == ["nnUNetv2_preprocess"]]

    def preprocessed(spec: DatasetSpec, plans: Optional[str] = None) -> List[str]:
        return [s.name for s in preprocessing if _option(s.command, "-d") == str(spec.id)
                and (plans is None or _option(s.command, "-plans_name") == plans)]

    splits = lambda spec: writers.get(layout.pre_dir(spec) / "splits_final.json")  # noqa: E731
    for step in steps:
        strategy = plan.strategies.get(step.strategy) if step.strategy else None
        if step.training is not None and strategy is not None:
            spec, family = plan.datasets[strategy.dataset], plan.family(strategy)
            data = plan.data_plans(family) if strategy.dataset == family.source else family.transferred_name
            step.after += [writers.get(layout.pre_dir(spec) / f"{plan.plans_for(strategy)}.json"),
                           *preprocessed(spec, data), splits(spec) if strategy.per_fold else None,
                           writers.get(step.training.pretrained) if step.training.pretrained else None]
        elif step.stage == "evaluate" and strategy is not None and step.fold is not None:
            if strategy.evaluate == "cross-domain":
                target = plan.datasets[plan.family(strategy).target]
                step.after += [f"train-{strategy.key}-fold_all", writers.get(layout.raw_dir(target) / "dataset.json"),
                               splits(target), *preprocessed(target)]
            else:
                step.after.append(f"train-{strategy.key}-fold_{step.fold}")
        elif step.stage == "compare":
            step.after += [s.name for s in steps if s.stage == "evaluate"]
    names = {s.name for s in steps}
    for step in steps:
        step.after = [n for n in _present(step.after) if n in names and n != step.name]


def _option(command: Sequence[str], flag: str) -> Optional[str]:
    return command[command.index(flag) + 1] if flag in command[:-1] else None


def steps_by_name(steps: Sequence[Step]) -> Dict[str, Step]:
    return {s.name: s for s in steps}

"""Experiment plans: TOML files naming datasets, nnU-Net settings and transfer strategies.

A plan is validated on load; every error names the file and the bad key, e.g.
``demo.toml: strategies.finetune.init: unknown strategy 'basline' (known: baseline, combined)``.

Layout (see ``plans/brats_ssa_table2.toml`` for a full example)::

    name = "brats_ssa_table2"
    configuration = "3d_fullres"
    folds = 10                      # target-domain cross-validation folds
    target_domain = "SSA"
    reference = "baseline"          # strategy the others are tested against

    [datasets.source]               # roles: source, target, combined (optional)
    id = 231
    name = "BraTS23GLI"
    source = "$BRATS_GLI"           # a BraTS folder (variables expanded) or "synth"

    [datasets.combined]
    id = 233
    name = "BraTS23GLISSA"
    combine = ["source", "target"]

    [strategies.finetune]
    label = "Fine-Tuning"
    trainer = "nnUNetTrainerFineTune"
    dataset = "target"
    init = "baseline"               # starts from that strategy's fold-all checkpoint

Example:
    >>> from nnunet_transfer.experiments.plan import load_plan, shipped_plan
    >>> plan = load_plan(shipped_plan("brats_ssa_table2"))
    >>> plan.folds, list(plan.strategies)[:2]
    (10, ['baseline', 'combined'])
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROLES = ("source", "target", "combined")
EVALUATIONS = ("validation", "cross-domain")
PLANS_DIR = Path(__file__).resolve().parent.parent / "plans"


class PlanError(ValueError):
    """A plan file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a plan: where its cases come from and its nnU-Net id and name."""

    role: str
    id: int
    name: str
    source: Optional[str] = None          # BraTS folder, or "synth"
    combine: Tuple[str, ...] = ()         # roles combined into this dataset
    domain: Optional[str] = None
    n: int = 4                            # synth only
    seed: int = 0
    shape: Tuple[int, int, int] = (64, 64, 48)
    modalities: Tuple[str, ...] = ()

    @property
    def folder_name(self) -> str:
        """nnU-Net's folder name, e.g. ``Dataset231_BraTS23GLI``."""
        return f"Dataset{self.id:03d}_{self.name}"

    @property
    def is_synth(self) -> bool:
        return self.source == "synth"


@dataclass(frozen=True)
class Strategy:
    """One row of the comparison: a trainer, the dataset it trains on, how it starts and is evaluated."""

    key: str
    trainer: str
    dataset: str
    label: str
    fold: Optional[str] = None            # "all": trained once on every case instead of per fold
    init: Optional[str] = None            # strategy whose fold-all checkpoint it starts from
    evaluate: str = "validation"          # or "cross-domain": predicted onto the target folds

    @property
    def per_fold(self) -> bool:
        return self.fold is None


@dataclass(frozen=True)
class Plan:
    """A validated experiment plan."""

    name: str
    path: Optional[Path]
    datasets: Dict[str, DatasetSpec]
    strategies: Dict[str, Strategy]
    configuration: str = "3d_fullres"
    folds: int = 5
    target_domain: str = "SSA"
    reference: Optional[str] = None
    description: str = ""
    plans: str = "nnUNetPlans"
    planner: Optional[str] = None
    transferred_plans: Optional[str] = None
    split_seed: int = 12345
    device: str = "cuda"
    num_processes: int = 4
    fingerprint_voxels: Optional[float] = None
    shrink: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    slurm: Dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> DatasetSpec:
        return self.datasets["source"]

    @property
    def training_plans(self) -> str:
        """Plans the source dataset trains with (the shrunken ones when the plan shrinks)."""
        return str(self.shrink.get("plans_name", f"{self.plans}Tiny")) if self.shrink else self.plans

    @property
    def target_plans(self) -> str:
        """Plans name of the source plans moved to the target and combined datasets."""
        return self.transferred_plans or f"{self.training_plans}_from{self.source.id}"

    def plans_for(self, role: str) -> str:
        return self.training_plans if role == "source" else self.target_plans


_TOP_KEYS = {"name", "description", "configuration", "folds", "target_domain", "reference", "plans", "planner",
             "transferred_plans", "split_seed", "device", "num_processes", "datasets", "strategies", "overrides",
             "slurm"}
_DATASET_KEYS = {"id", "name", "source", "combine", "domain", "n", "seed", "shape", "modalities"}
_STRATEGY_KEYS = {"trainer", "dataset", "label", "fold", "init", "evaluate"}
_OVERRIDE_KEYS = {"fingerprint_voxels", "shrink", "env"}
_SHRINK_KEYS = {"plans_name", "max_features", "n_stages", "patch_size", "batch_size", "width_divisor"}
_SLURM_KEYS = {"partition", "gres", "gpus", "time", "cpus_per_task", "mem", "account", "qos", "setup", "extra",
               "prepare"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class _Reader:
    def __init__(self, origin: str):
        self.origin = origin

    def error(self, key: str, message: str) -> PlanError:
        return PlanError(f"{self.origin}: {key}: {message}")

    def table(self, data: Any, key: str) -> dict:
        if not isinstance(data, dict):
            raise self.error(key, f"must be a table, got {type(data).__name__}")
        return data

    def unknown(self, data: Mapping, allowed: set, key: str) -> None:
        for name in data:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.error(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def get(self, data: Mapping, name: str, kind: Union[type, Tuple[type, ...]], key: str,
            default: Any = ..., check=None, hint: str = "") -> Any:
        where = f"{key}.{name}" if key else name
        if name not in data:
            if default is ...:
                raise self.error(where, "missing (required)")
            return default
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(where, f"must be {names}, got {value!r}")
        if check is not None and not check(value):
            raise self.error(where, f"invalid value {value!r}{': ' + hint if hint else ''}")
        return value


def _dataset(reader: _Reader, role: str, data: dict) -> DatasetSpec:
    key = f"datasets.{role}"
    reader.table(data, key)
    reader.unknown(data, _DATASET_KEYS, key)
    dataset_id = reader.get(data, "id", int, key, check=lambda v: 1 <= v <= 999, hint="nnU-Net ids are 1..999")
    name = reader.get(data, "name", str, key, check=lambda v: bool(_NAME.match(v)),
                      hint="letters, digits, '_', '.', '-' only")
    source = reader.get(data, "source", str, key, default=None)
    combine = tuple(reader.get(data, "combine", list, key, default=[]))
    if (source is None) == (not combine):
        raise reader.error(key, "give exactly one of 'source' (a BraTS folder or \"synth\") and 'combine'")
    for other in combine:
        if other not in ROLES or other == role:
            raise reader.error(f"{key}.combine", f"unknown dataset role {other!r} (use source, target)")
    shape = tuple(reader.get(data, "shape", list, key, default=[64, 64, 48]))
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 8 for s in shape):
        raise reader.error(f"{key}.shape", f"must be three integers >= 8, got {list(shape)}")
    synth_only = [k for k in ("n", "seed", "shape") if k in data]
    if synth_only and source != "synth":
        raise reader.error(f"{key}.{synth_only[0]}", "only meaningful with source = \"synth\"")
    domain = reader.get(data, "domain", str, key, default=None)
    if source == "synth" and domain is None:
        raise reader.error(f"{key}.domain", "missing (required with source = \"synth\": GLI or SSA)")
    return DatasetSpec(
        role=role, id=dataset_id, name=name, source=source, combine=combine, domain=domain,
        n=reader.get(data, "n", int, key, default=4, check=lambda v: v >= 1), seed=reader.get(data, "seed", int, key, default=0),
        shape=shape,  # type: ignore[arg-type]
        modalities=tuple(reader.get(data, "modalities", list, key, default=[])),
    )


def _strategy(reader: _Reader, key_name: str, data: dict) -> Strategy:
    key = f"strategies.{key_name}"
    reader.table(data, key)
    reader.unknown(data, _STRATEGY_KEYS, key)
    fold = reader.get(data, "fold", str, key, default=None, check=lambda v: v == "all",
                      hint='only "all" (train once on every case) is supported')
    return Strategy(
        key=key_name,
        trainer=reader.get(data, "trainer", str, key, check=lambda v: v.isidentifier(), hint="a Python class name"),
        dataset=reader.get(data, "dataset", str, key, check=lambda v: v in ROLES, hint=f"one of {', '.join(ROLES)}"),
        label=reader.get(data, "label", str, key, default=key_name),
        fold=fold,
        init=reader.get(data, "init", str, key, default=None),
        evaluate=reader.get(data, "evaluate", str, key, default="validation", check=lambda v: v in EVALUATIONS,
                            hint=f"one of {', '.join(EVALUATIONS)}"),
    )


def parse_plan(data: dict, origin: str = "<plan>", path: Optional[Path] = None) -> Plan:
    """Validate a plan given as a dict (as read from TOML)."""
    r = _Reader(origin)
    r.unknown(data, _TOP_KEYS, "")
    datasets_raw = r.table(r.get(data, "datasets", dict, ""), "datasets")
    r.unknown(datasets_raw, set(ROLES), "datasets")
    datasets = {role: _dataset(r, role, value) for role, value in datasets_raw.items()}
    for role in ("source", "target"):
        if role not in datasets:
            raise r.error(f"datasets.{role}", "missing (required)")
    ids = {}
    for role, spec in datasets.items():
        if spec.id in ids:
            raise r.error(f"datasets.{role}.id", f"{spec.id} is also the id of datasets.{ids[spec.id]}")
        ids[spec.id] = role
        for other in spec.combine:
            if other not in datasets:
                raise r.error(f"datasets.{role}.combine", f"dataset role {other!r} is not defined")
    strategies_raw = r.table(r.get(data, "strategies", dict, ""), "strategies")
    if not strategies_raw:
        raise r.error("strategies", "at least one strategy is needed")
    strategies = {}
    for key_name, value in strategies_raw.items():
        if not _NAME.match(key_name):
            raise r.error(f"strategies.{key_name}", "strategy names may hold letters, digits, '_', '.', '-' only")
        strategies[key_name] = _strategy(r, key_name, value)
    for s in strategies.values():
        key = f"strategies.{s.key}"
        if s.dataset not in datasets:
            raise r.error(f"{key}.dataset", f"dataset role {s.dataset!r} is not defined in [datasets]")
        if s.per_fold and s.dataset == "source":
            raise r.error(f"{key}.fold", "strategies on the source dataset train once: set fold = \"all\" "
                                         "(target-domain folds exist in the target and combined datasets only)")
        if s.evaluate == "cross-domain" and s.per_fold:
            raise r.error(f"{key}.evaluate", "cross-domain evaluation needs a model trained once (fold = \"all\")")
        if s.evaluate == "validation" and not s.per_fold:
            raise r.error(f"{key}.evaluate", "a fold-all model has no held-out cases: use evaluate = \"cross-domain\"")
        if s.init is not None:
            if s.init not in strategies:
                raise r.error(f"{key}.init", f"unknown strategy {s.init!r} (known: {', '.join(strategies)})")
            if strategies[s.init].per_fold:
                raise r.error(f"{key}.init", f"strategy {s.init!r} is trained per fold; init needs a fold-all model")
            if s.init == s.key:
                raise r.error(f"{key}.init", "a strategy cannot start from itself")
    configuration = r.get(data, "configuration", str, "", default="3d_fullres")
    reference = r.get(data, "reference", str, "", default=next(iter(strategies)))
    if reference not in strategies:
        raise r.error("reference", f"unknown strategy {reference!r} (known: {', '.join(strategies)})")
    overrides = r.table(r.get(data, "overrides", dict, "", default={}), "overrides")
    r.unknown(overrides, _OVERRIDE_KEYS, "overrides")
    shrink = r.table(r.get(overrides, "shrink", dict, "overrides", default={}), "overrides.shrink")
    r.unknown(shrink, _SHRINK_KEYS, "overrides.shrink")
    env_raw = r.table(r.get(overrides, "env", dict, "overrides", default={}), "overrides.env")
    env = {}
    for name, value in env_raw.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise r.error(f"overrides.env.{name}", f"must be a string or number, got {value!r}")
        env[name] = str(value)
    slurm = r.table(r.get(data, "slurm", dict, "", default={}), "slurm")
    r.unknown(slurm, _SLURM_KEYS, "slurm")
    fingerprint_voxels = r.get(overrides, "fingerprint_voxels", (int, float), "overrides", default=None,
                               check=lambda v: v > 0)
    return Plan(
        name=r.get(data, "name", str, "", default=path.stem if path else "plan"),
        path=path,
        datasets=datasets,
        strategies=strategies,
        configuration=configuration,
        folds=r.get(data, "folds", int, "", default=5, check=lambda v: v >= 2, hint="at least 2 folds"),
        target_domain=r.get(data, "target_domain", str, "", default="SSA"),
        reference=reference,
        description=r.get(data, "description", str, "", default=""),
        plans=r.get(data, "plans", str, "", default="nnUNetPlans"),
        planner=r.get(data, "planner", str, "", default=None),
        transferred_plans=r.get(data, "transferred_plans", str, "", default=None),
        split_seed=r.get(data, "split_seed", int, "", default=12345),
        device=r.get(data, "device", str, "", default="cuda", check=lambda v: v in ("cuda", "cpu", "mps"),
                     hint="cuda, cpu or mps"),
        num_processes=r.get(data, "num_processes", int, "", default=4, check=lambda v: v >= 1),
        fingerprint_voxels=None if fingerprint_voxels is None else float(fingerprint_voxels),
        shrink=dict(shrink),
        env=env,
        slurm=dict(slurm),
    )


def load_plan(path: Union[str, Path]) -> Plan:
    """Read and validate a plan file (TOML). ``path`` may also name a shipped plan (``demo``)."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and (PLANS_DIR / f"{path.name}.toml").is_file():
        path = PLANS_DIR / f"{path.name}.toml"
    if not path.is_file():
        shipped = ", ".join(p.stem for p in sorted(PLANS_DIR.glob("*.toml")))
        raise FileNotFoundError(f"plan file {path} does not exist (shipped plans: {shipped})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path.name}: not valid TOML: {exc}") from None
    return parse_plan(data, origin=path.name, path=path.resolve())


def shipped_plan(name: str) -> Path:
    """Path of a plan shipped with the package (``brats_ssa_table2``, ``demo``)."""
    path = PLANS_DIR / f"{name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped plan {name!r} in {PLANS_DIR}")
    return path


def expand_source(spec: DatasetSpec, check: bool = True) -> str:
    """The dataset's source folder with environment variables expanded.

    With ``check``, an unset variable is an error naming the dataset.
    """
    value = os.path.expandvars(os.path.expanduser(spec.source or ""))
    if check and "$" in value:
        missing = re.findall(r"\$\{?(\w+)", value)
        raise ValueError(f"datasets.{spec.role}.source {spec.source!r}: environment variable "
                         f"{', '.join(missing)} is not set; export it (the BraTS folder) or edit the plan")
    return value


def selected_strategies(plan: Plan, names: Optional[List[str]] = None) -> List[Strategy]:
    """Strategies to run, in plan order, with the ones they start from added."""
    if not names:
        return list(plan.strategies.values())
    unknown = [n for n in names if n not in plan.strategies]
    if unknown:
        raise ValueError(f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                         f"(the plan has: {', '.join(plan.strategies)})")
    wanted = set(names)
    for name in names:
        init = plan.strategies[name].init
        while init is not None:
            wanted.add(init)
            init = plan.strategies[init].init
    return [s for s in plan.strategies.values() if s.key in wanted]

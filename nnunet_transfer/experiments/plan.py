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

Rows beyond the strategies: ``postprocessing`` (``true``, or strategy and ensemble keys) tunes
BraTS post-processing on each named row's cross-validation and adds the row "LABEL +
post-processing"; ``[ensembles.KEY]`` averages members' probabilities fold by fold::

    postprocessing = true           # or ["finetune", "dann"]; postprocessing_metric = "dice"

    [ensembles.dann_finetune]
    members = ["dann", "finetune"]  # per-fold strategies; they train with --npz
    label = "DANN + Fine-Tuning"    # default: the members' labels joined by " + "

Strategies train with the plan's ``plans`` (the *default* plans family) unless they name
another family (``plans = "brainunet"``), derived from a source dataset's plans::

    [plans_families.brainunet]
    source = "source_3ch"           # dataset whose plans it derives from (default "source")
    target = "target_3ch"           # dataset cross-domain strategies predict onto (default "target")
    derive = "brainunet-plans"      # or "shrink" (with a shrink = {...} table)
    args = ["--max-features", "160"]
    name = "nnUNetPlans_BrainUNet"  # moved to the other datasets as nnUNetPlans_BrainUNet_from<source id>

Example:
    >>> from nnunet_transfer.experiments.plan import load_plan, shipped_plan
    >>> plan = load_plan(shipped_plan("brats_ssa_table2"))
    >>> plan.folds, list(plan.strategies)[:2]
    (10, ['baseline', 'combined'])
"""

from __future__ import annotations

import os
import importlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROLES = ("source", "target", "combined")  # dataset keys with a meaning; others may be added
REQUIRED_DATASETS = ("source", "target")
EVALUATIONS = ("validation", "cross-domain")
POSTPROCESSING_METRICS = ("lesion-dice", "dice")  # `nnunet-transfer tune-postprocessing --metric`
POSTPROCESSED_LABEL = "{} + post-processing"  # the comparison's row of a post-processed row (evaluation.compare)
DERIVATIONS = ("brainunet-plans", "shrink")
DEFAULT_FAMILY = "default"
DEFAULT_MODALITIES = ("t1n", "t1c", "t2w", "t2f")  # what `nnunet-transfer convert` keeps by default
# options of `nnunet-transfer convert` that the plan sets itself (not allowed in convert_args)
_CONVERT_OWN = {"-d": "id", "--dataset-id": "id", "-n": "name", "--name": "name", "--modalities": "modalities",
                "--domain": "domain", "-np": "num_processes", "--num-processes": "num_processes"}
# options of `nnunet-transfer brainunet-plans` that a plans family sets itself (not allowed in args)
_DERIVE_OWN = {"-p": "base", "--plans": "base", "-o": "name", "--output": "name", "-c": "configuration",
               "--configurations": "configuration"}
#: The shipped plans: ``plans/`` of a checkout, installed as the ``nnunet_transfer.plans`` package.
PLANS_DIR = Path(importlib.import_module("nnunet_transfer.plans").__file__).resolve().parent


class PlanError(ValueError):
    """A plan file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a plan: where its cases come from and its nnU-Net id and name.

    ``role`` is the dataset's key in the plan (``source``, ``target``, ``combined`` or any
    other name, e.g. ``source_3ch`` for a three-channel conversion of the source).
    """

    role: str
    id: int
    name: str
    source: Optional[str] = None          # BraTS folder, or "synth"
    combine: Tuple[str, ...] = ()         # roles combined into this dataset
    domain: Optional[str] = None
    n: int = 4                            # synth only
    seed: int = 0
    shape: Tuple[int, int, int] = (64, 64, 48)
    tumours: Optional[str] = None         # synth only: another domain's tumour population
    modalities: Tuple[str, ...] = ()
    convert_args: Tuple[str, ...] = ()    # passed through to `nnunet-transfer convert`

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
    plans: str = DEFAULT_FAMILY           # plans family it trains with
    env: Dict[str, str] = field(default_factory=dict)  # its trainings' variables, over overrides.env

    @property
    def per_fold(self) -> bool:
        return self.fold is None


@dataclass(frozen=True)
class Ensemble:
    """A row of the comparison averaging per-fold strategies (``nnunet-transfer ensemble-folds``)."""

    key: str
    label: str
    members: Tuple[str, ...]              # strategy keys, per fold and evaluated on their validation folds


@dataclass(frozen=True)
class PlansFamily:
    """nnU-Net plans derived from a source dataset's plans, and moved to the datasets trained with them.

    The source dataset trains with ``name``; every other dataset with ``transferred_name``
    (``nnUNetv2_move_plans_between_datasets -s SOURCE -t OTHER -sp NAME -tp NAME_fromSOURCE``).
    The ``default`` family is the plan's top-level ``plans`` (shrunken with ``overrides.shrink``).
    """

    key: str
    name: str                             # plans the source dataset trains with
    base: str                             # plans it is derived from (in the source's preprocessed folder)
    source: str = "source"                # dataset key
    target: str = "target"                # dataset key cross-domain strategies predict onto
    derive: Optional[str] = None          # "brainunet-plans", "shrink", or None (the base plans themselves)
    args: Tuple[str, ...] = ()            # options of `nnunet-transfer brainunet-plans`
    shrink: Dict[str, Any] = field(default_factory=dict)
    transferred_name: str = ""            # plans name on the other datasets


@dataclass(frozen=True)
class Plan:
    """A validated experiment plan."""

    name: str
    path: Optional[Path]
    datasets: Dict[str, DatasetSpec]
    strategies: Dict[str, Strategy]
    families: Dict[str, PlansFamily] = field(default_factory=dict)
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
    test_time_mirroring: bool = True      # False: validations and baseline predictions do not mirror
    shrink: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    slurm: Dict[str, Any] = field(default_factory=dict)
    ensembles: Dict[str, Ensemble] = field(default_factory=dict)
    postprocessing: Tuple[str, ...] = ()  # strategy and ensemble keys whose rows are also post-processed
    postprocessing_metric: str = "lesion-dice"

    @property
    def source(self) -> DatasetSpec:
        return self.datasets["source"]

    @property
    def ensemble_members(self) -> Tuple[str, ...]:
        """Strategies some ensemble averages (their trainings save probabilities: ``--npz``), in plan order."""
        members = {m for e in self.ensembles.values() for m in e.members}
        return tuple(k for k in self.strategies if k in members)

    def label_of(self, key: str) -> str:
        """The comparison label of a strategy or ensemble key."""
        return self.strategies[key].label if key in self.strategies else self.ensembles[key].label

    @property
    def training_plans(self) -> str:
        """Plans the source dataset trains with (the shrunken ones when the plan shrinks)."""
        return _default_plans_name(self.plans, self.shrink)

    @property
    def target_plans(self) -> str:
        """Plans name of the source plans moved to the target and combined datasets."""
        return self.transferred_plans or f"{self.training_plans}_from{self.source.id}"

    def family(self, strategy: Strategy) -> PlansFamily:
        """The plans family a strategy trains with."""
        return self.families[strategy.plans]

    def plans_for(self, strategy: Strategy) -> str:
        """The ``-p`` plans name of a strategy's training: its family's, transferred off the family source."""
        family = self.family(strategy)
        return family.name if strategy.dataset == family.source else family.transferred_name

    def data_plans(self, family: PlansFamily) -> str:
        """Plans to preprocess the family's source with (shrunken plans share their base's data)."""
        while family.derive == "shrink":
            base = self.base_family(family)
            if base is None:
                return family.base
            family = base
        return family.name

    def base_family(self, family: PlansFamily) -> Optional[PlansFamily]:
        """The family whose plans ``family`` is derived from, if any (else nnU-Net's planned ``base``)."""
        for other in self.families.values():
            if other.key != family.key and other.source == family.source and other.name == family.base:
                return other
        return None


_TOP_KEYS = {"name", "description", "configuration", "folds", "target_domain", "reference", "plans", "planner",
             "transferred_plans", "split_seed", "device", "num_processes", "datasets", "strategies", "overrides",
             "slurm", "plans_families", "test_time_mirroring", "postprocessing", "postprocessing_metric",
             "ensembles"}
_ENSEMBLE_KEYS = {"members", "label"}
_DATASET_KEYS = {"id", "name", "source", "combine", "domain", "tumours", "n", "seed", "shape", "modalities",
                 "convert_args"}
_STRATEGY_KEYS = {"trainer", "dataset", "label", "fold", "init", "evaluate", "plans", "env"}
_FAMILY_KEYS = {"source", "target", "base", "derive", "args", "name", "transferred_name", "shrink"}
_OVERRIDE_KEYS = {"fingerprint_voxels", "shrink", "env"}
_SHRINK_KEYS = {"plans_name", "max_features", "n_stages", "patch_size", "batch_size", "width_divisor"}
_SLURM_KEYS = {"partition", "gres", "gpus", "time", "cpus_per_task", "mem", "account", "qos", "setup", "extra",
               "prepare"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
        if not isinstance(other, str) or other == role:
            raise reader.error(f"{key}.combine", f"invalid dataset {other!r} (name other datasets, e.g. source, target)")
    shape = tuple(reader.get(data, "shape", list, key, default=[64, 64, 48]))
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 8 for s in shape):
        raise reader.error(f"{key}.shape", f"must be three integers >= 8, got {list(shape)}")
    synth_only = [k for k in ("n", "seed", "shape", "tumours") if k in data]
    if synth_only and source != "synth":
        raise reader.error(f"{key}.{synth_only[0]}", "only meaningful with source = \"synth\"")
    domain = reader.get(data, "domain", str, key, default=None)
    if source == "synth" and domain is None:
        raise reader.error(f"{key}.domain", "missing (required with source = \"synth\": GLI or SSA)")
    tumours = reader.get(data, "tumours", str, key, default=None, check=lambda v: v.upper() in ("GLI", "SSA"),
                         hint="GLI or SSA: the synthetic population whose tumours the cases draw")
    modalities = _strings(reader, data, "modalities", key)
    if combine and modalities:
        raise reader.error(f"{key}.modalities", "a combined dataset has the channels of the datasets it combines")
    convert_args = _strings(reader, data, "convert_args", key)
    if combine and convert_args:
        raise reader.error(f"{key}.convert_args", "only datasets converted from a source take convert options")
    for token in convert_args:
        option = token.split("=", 1)[0]
        if option in _CONVERT_OWN:
            raise reader.error(f"{key}.convert_args", f"{option} is set by the plan: use the dataset's "
                                                      f"'{_CONVERT_OWN[option]}' key instead")
    return DatasetSpec(
        role=role, id=dataset_id, name=name, source=source, combine=combine, domain=domain,
        n=reader.get(data, "n", int, key, default=4, check=lambda v: v >= 1), seed=reader.get(data, "seed", int, key, default=0),
        shape=shape,  # type: ignore[arg-type]
        tumours=tumours.upper() if tumours else None,
        modalities=modalities, convert_args=convert_args,
    )


def _strings(reader: _Reader, data: Mapping, name: str, key: str) -> Tuple[str, ...]:
    values = reader.get(data, name, list, key, default=[])
    for value in values:
        if not isinstance(value, str):
            raise reader.error(f"{key}.{name}", f"must be a list of strings, got {value!r} in it")
    return tuple(values)


def _strategy(reader: _Reader, key_name: str, data: dict) -> Strategy:
    key = f"strategies.{key_name}"
    reader.table(data, key)
    reader.unknown(data, _STRATEGY_KEYS, key)
    fold = reader.get(data, "fold", str, key, default=None, check=lambda v: v == "all",
                      hint='only "all" (train once on every case) is supported')
    return Strategy(
        key=key_name,
        trainer=reader.get(data, "trainer", str, key, check=lambda v: v.isidentifier(), hint="a Python class name"),
        dataset=reader.get(data, "dataset", str, key),
        label=reader.get(data, "label", str, key, default=key_name),
        fold=fold,
        init=reader.get(data, "init", str, key, default=None),
        evaluate=reader.get(data, "evaluate", str, key, default="validation", check=lambda v: v in EVALUATIONS,
                            hint=f"one of {', '.join(EVALUATIONS)}"),
        plans=reader.get(data, "plans", str, key, default=DEFAULT_FAMILY),
        env=_env_table(reader, reader.get(data, "env", dict, key, default={}), f"{key}.env"),
    )


def _env_table(reader: _Reader, data: Any, key: str) -> Dict[str, str]:
    """Environment variables of a plan table: names to strings (numbers are written as text)."""
    env = {}
    for name, value in reader.table(data, key).items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise reader.error(f"{key}.{name}", f"must be a string or number, got {value!r}")
        if not _ENV_NAME.match(name):
            raise reader.error(f"{key}.{name}", "is not a valid environment variable name")
        env[name] = str(value)
    return env


def _default_plans_name(plans: str, shrink: Mapping[str, Any]) -> str:
    return str(shrink.get("plans_name", f"{plans}Tiny")) if shrink else plans


def _shrink_table(reader: _Reader, data: Any, key: str) -> Dict[str, Any]:
    shrink = reader.table(data, key)
    reader.unknown(shrink, _SHRINK_KEYS, key)
    return dict(shrink)


def _family(reader: _Reader, key_name: str, data: Any, base: str) -> PlansFamily:
    key = f"plans_families.{key_name}"
    if not _NAME.match(key_name):
        raise reader.error(key, "plans family names may hold letters, digits, '_', '.', '-' only")
    if key_name == DEFAULT_FAMILY:
        raise reader.error(key, f"{DEFAULT_FAMILY!r} is the plan's own plans (top-level plans, transferred_plans, "
                                f"overrides.shrink); give this family another name")
    reader.table(data, key)
    reader.unknown(data, _FAMILY_KEYS, key)
    derive = reader.get(data, "derive", str, key, check=lambda v: v in DERIVATIONS,
                        hint=f"one of {', '.join(DERIVATIONS)}")
    name = reader.get(data, "name", str, key, check=lambda v: bool(_NAME.match(v)),
                      hint="a plans name: letters, digits, '_', '.', '-' only")
    base = reader.get(data, "base", str, key, default=base, check=lambda v: bool(_NAME.match(v)),
                      hint="a plans name: letters, digits, '_', '.', '-' only")
    if name == base:
        raise reader.error(f"{key}.name", f"the derived plans need another name than their base {base!r}")
    args = _strings(reader, data, "args", key)
    if args and derive != "brainunet-plans":
        raise reader.error(f"{key}.args", "options of `nnunet-transfer brainunet-plans`: only with "
                                          "derive = \"brainunet-plans\" (shrink takes a shrink table)")
    for token in args:
        option = token.split("=", 1)[0]
        if option in _DERIVE_OWN:
            raise reader.error(f"{key}.args", f"{option} is set by the plan: use the family's "
                                              f"'{_DERIVE_OWN[option]}' key instead")
    shrink = _shrink_table(reader, data.get("shrink", {}), f"{key}.shrink")
    if derive == "shrink" and not shrink:
        raise reader.error(f"{key}.shrink", "missing (required with derive = \"shrink\")")
    if derive != "shrink" and shrink:
        raise reader.error(f"{key}.shrink", "only with derive = \"shrink\"")
    if "plans_name" in shrink:
        raise reader.error(f"{key}.shrink.plans_name", "the family's 'name' names the shrunken plans")
    return PlansFamily(
        key=key_name, name=name, base=base,
        source=reader.get(data, "source", str, key, default="source"),
        target=reader.get(data, "target", str, key, default="target"),
        derive=derive, args=args, shrink=shrink,
        transferred_name=reader.get(data, "transferred_name", str, key, default="",
                                    check=lambda v: bool(_NAME.match(v)), hint="a plans name"),
    )


def _modalities(datasets: Mapping[str, DatasetSpec], role: str) -> Tuple[str, ...]:
    """Input channels of a dataset (a combined dataset has those of its first part)."""
    spec = datasets[role]
    if spec.combine:
        return _modalities(datasets, spec.combine[0])
    return spec.modalities or DEFAULT_MODALITIES


def _check_families(r: _Reader, datasets: Dict[str, DatasetSpec], families: Dict[str, PlansFamily],
                    plans: str) -> None:
    for family in families.values():
        key = "plans" if family.key == DEFAULT_FAMILY else f"plans_families.{family.key}"
        for which in ("source", "target"):
            role = getattr(family, which)
            if role not in datasets:
                raise r.error(f"{key}.{which}", f"dataset {role!r} is not defined in [datasets] "
                                                f"(known: {', '.join(datasets)})")
        if family.source == family.target:
            raise r.error(f"{key}.target", "the target dataset must differ from the source dataset")
        if _modalities(datasets, family.target) != _modalities(datasets, family.source):
            raise r.error(f"{key}.target", f"dataset {family.target!r} has channels "
                                           f"{list(_modalities(datasets, family.target))}, the family's source "
                                           f"{family.source!r} {list(_modalities(datasets, family.source))}: "
                                           f"a model of these plans cannot predict it")
        same_source = [f for f in families.values() if f.key != family.key and f.source == family.source]
        for other in same_source:
            if other.name == family.name:
                raise r.error(f"{key}.name", f"{family.name!r} is also the plans name of the family "
                                             f"{other.key!r} on dataset {family.source!r}")
        if family.derive is not None and family.base != plans and not any(f.name == family.base for f in same_source):
            made = [plans] + [f.name for f in same_source]
            raise r.error(f"{key}.base", f"no step makes plans {family.base!r} for dataset {family.source!r} "
                                         f"(use one of {', '.join(made)})")
    for family in families.values():  # no circular derivations
        seen, current = [family.key], family
        while True:
            parent = next((f for f in families.values() if f.key != current.key and f.source == current.source
                           and f.name == current.base), None)
            if parent is None:
                break
            if parent.key in seen:
                raise r.error(f"plans_families.{family.key}.base", f"circular derivation: {' -> '.join(seen)} -> "
                                                                   f"{parent.key}")
            seen.append(parent.key)
            current = parent


def parse_plan(data: dict, origin: str = "<plan>", path: Optional[Path] = None) -> Plan:
    """Validate a plan given as a dict (as read from TOML)."""
    r = _Reader(origin)
    r.unknown(data, _TOP_KEYS, "")
    datasets_raw = r.table(r.get(data, "datasets", dict, ""), "datasets")
    for role in datasets_raw:
        if not _NAME.match(role):
            raise r.error(f"datasets.{role}", "dataset names may hold letters, digits, '_', '.', '-' only")
    datasets = {role: _dataset(r, role, value) for role, value in datasets_raw.items()}
    for role in REQUIRED_DATASETS:
        if role not in datasets:
            raise r.error(f"datasets.{role}", "missing (required)")
    ids = {}
    for role, spec in datasets.items():
        if spec.id in ids:
            raise r.error(f"datasets.{role}.id", f"{spec.id} is also the id of datasets.{ids[spec.id]}")
        ids[spec.id] = role
        for other in spec.combine:
            if other not in datasets:
                raise r.error(f"datasets.{role}.combine", f"dataset {other!r} is not defined "
                                                          f"(known: {', '.join(datasets)})")
            if datasets[other].combine:
                raise r.error(f"datasets.{role}.combine", f"dataset {other!r} is itself combined; "
                                                          f"combine converted datasets")
        channels = {_modalities(datasets, other) for other in spec.combine}
        if len(channels) > 1:
            raise r.error(f"datasets.{role}.combine", "the combined datasets have different channels "
                                                      "(modalities); combine datasets converted alike")

    # plans families: the plan's own plans ("default"), then [plans_families.*]
    overrides = r.table(r.get(data, "overrides", dict, "", default={}), "overrides")
    r.unknown(overrides, _OVERRIDE_KEYS, "overrides")
    shrink = _shrink_table(r, r.get(overrides, "shrink", dict, "overrides", default={}), "overrides.shrink")
    plans = r.get(data, "plans", str, "", default="nnUNetPlans")
    transferred_plans = r.get(data, "transferred_plans", str, "", default=None)
    families = {DEFAULT_FAMILY: PlansFamily(
        key=DEFAULT_FAMILY, name=_default_plans_name(plans, shrink), base=plans,
        derive="shrink" if shrink else None, shrink=shrink, transferred_name=transferred_plans or "")}
    families_raw = r.table(r.get(data, "plans_families", dict, "", default={}), "plans_families")
    for key_name, value in families_raw.items():
        families[key_name] = _family(r, key_name, value, plans)
    _check_families(r, datasets, families, plans)
    families = {k: replace(f, transferred_name=f.transferred_name or f"{f.name}_from{datasets[f.source].id}")
                for k, f in families.items()}

    strategies_raw = r.table(r.get(data, "strategies", dict, ""), "strategies")
    if not strategies_raw:
        raise r.error("strategies", "at least one strategy is needed")
    strategies = {}
    for key_name, value in strategies_raw.items():
        if not _NAME.match(key_name):
            raise r.error(f"strategies.{key_name}", "strategy names may hold letters, digits, '_', '.', '-' only")
        strategies[key_name] = _strategy(r, key_name, value)
    sources = {f.source for f in families.values()}
    labels: Dict[str, str] = {}
    for s in strategies.values():
        key = f"strategies.{s.key}"
        if s.label in labels:
            raise r.error(f"{key}.label", f"{s.label!r} is also the label of strategies.{labels[s.label]} "
                                          f"(labels name the rows of the comparison)")
        _check_label(r, s.label, f"{key}.label")
        labels[s.label] = s.key
        if s.plans not in families:
            raise r.error(f"{key}.plans", f"unknown plans family {s.plans!r} (known: {', '.join(families)})")
        family = families[s.plans]
        if s.dataset not in datasets:
            raise r.error(f"{key}.dataset", f"dataset {s.dataset!r} is not defined in [datasets] "
                                            f"(known: {', '.join(datasets)})")
        if _modalities(datasets, s.dataset) != _modalities(datasets, family.source):
            raise r.error(f"{key}.dataset", f"dataset {s.dataset!r} has channels {list(_modalities(datasets, s.dataset))}"
                                            f" but plans family {s.plans!r} comes from {family.source!r} with "
                                            f"{list(_modalities(datasets, family.source))}")
        if s.per_fold and s.dataset in sources:
            raise r.error(f"{key}.fold", f"strategies on a source dataset ({s.dataset!r}) train once: set fold = "
                                         "\"all\" (target-domain folds exist in the other datasets only)")
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
            if strategies[s.init].plans != s.plans:
                raise r.error(f"{key}.init", f"strategy {s.init!r} trains with plans family "
                                             f"{strategies[s.init].plans!r}, this one with {s.plans!r}: weights "
                                             f"only load into the same network")
    configuration = r.get(data, "configuration", str, "", default="3d_fullres")
    reference = r.get(data, "reference", str, "", default=next(iter(strategies)))
    if reference not in strategies:
        raise r.error("reference", f"unknown strategy {reference!r} (known: {', '.join(strategies)})")
    ensembles = _ensembles(r, r.get(data, "ensembles", dict, "", default={}), strategies)
    postprocessing = _postprocessing(r, data, strategies, ensembles)
    env = _env_table(r, r.get(overrides, "env", dict, "overrides", default={}), "overrides.env")
    slurm = r.table(r.get(data, "slurm", dict, "", default={}), "slurm")
    r.unknown(slurm, _SLURM_KEYS, "slurm")
    fingerprint_voxels = r.get(overrides, "fingerprint_voxels", (int, float), "overrides", default=None,
                               check=lambda v: v > 0)
    return Plan(
        name=r.get(data, "name", str, "", default=path.stem if path else "plan"),
        path=path,
        datasets=datasets,
        strategies=strategies,
        families=families,
        configuration=configuration,
        folds=r.get(data, "folds", int, "", default=5, check=lambda v: v >= 2, hint="at least 2 folds"),
        target_domain=r.get(data, "target_domain", str, "", default="SSA"),
        reference=reference,
        description=r.get(data, "description", str, "", default=""),
        plans=plans,
        planner=r.get(data, "planner", str, "", default=None),
        transferred_plans=transferred_plans,
        split_seed=r.get(data, "split_seed", int, "", default=12345),
        device=r.get(data, "device", str, "", default="cuda", check=lambda v: v in ("cuda", "cpu", "mps"),
                     hint="cuda, cpu or mps"),
        num_processes=r.get(data, "num_processes", int, "", default=4, check=lambda v: v >= 1),
        test_time_mirroring=r.get(data, "test_time_mirroring", bool, "", default=True),
        fingerprint_voxels=None if fingerprint_voxels is None else float(fingerprint_voxels),
        shrink=dict(shrink),
        env=env,
        slurm=dict(slurm),
        ensembles=ensembles,
        postprocessing=postprocessing,
        postprocessing_metric=r.get(data, "postprocessing_metric", str, "", default="lesion-dice",
                                    check=lambda v: v in POSTPROCESSING_METRICS,
                                    hint=f"one of {', '.join(POSTPROCESSING_METRICS)}"),
    )


def _check_label(r: _Reader, label: str, key: str) -> None:
    if "=" in label or not label.strip() or label != label.strip():
        raise r.error(key, f"invalid label {label!r}: labels name the rows of the comparison "
                           f"(compare --strategy LABEL=PATH), so they are not empty, hold no '=' and "
                           f"neither start nor end with spaces")


def _ensembles(r: _Reader, data: dict, strategies: Mapping[str, Strategy]) -> Dict[str, Ensemble]:
    """``[ensembles.KEY]``: members (per-fold strategies evaluated on their folds) and a label."""
    labels = {s.label: f"strategies.{s.key}" for s in strategies.values()}
    ensembles: Dict[str, Ensemble] = {}
    for key_name, value in data.items():
        key = f"ensembles.{key_name}"
        if not _NAME.match(key_name):
            raise r.error(key, "ensemble names may hold letters, digits, '_', '.', '-' only")
        if key_name in strategies:
            raise r.error(key, f"{key_name!r} is also a strategy: ensembles and strategies share one namespace "
                               f"(--strategies, step names, predictions/<key>)")
        r.table(value, key)
        r.unknown(value, _ENSEMBLE_KEYS, key)
        members = _strings(r, value, "members", key)
        if "members" not in value:
            raise r.error(f"{key}.members", "missing (required: the strategies to average, at least two)")
        if len(members) < 2:
            raise r.error(f"{key}.members", f"an ensemble needs at least two strategies, got {list(members)}")
        if len(set(members)) != len(members):
            raise r.error(f"{key}.members", f"a strategy is named twice: {list(members)}")
        for member in members:
            if member not in strategies:
                raise r.error(f"{key}.members", f"unknown strategy {member!r} (known: {', '.join(strategies)})")
            s = strategies[member]
            if not s.per_fold or s.evaluate != "validation":
                raise r.error(f"{key}.members", f"strategy {member!r} is trained once (fold = \"all\") and "
                                                f"evaluated cross-domain; an ensemble averages the validation "
                                                f"probabilities of per-fold trainings")
        label = r.get(value, "label", str, key, default=" + ".join(strategies[m].label for m in members))
        _check_label(r, label, f"{key}.label")
        if label in labels:
            raise r.error(f"{key}.label", f"{label!r} is also the label of {labels[label]} "
                                          f"(labels name the rows of the comparison)")
        labels[label] = key
        ensembles[key_name] = Ensemble(key=key_name, label=label, members=members)
    return ensembles


def _postprocessing(r: _Reader, data: Mapping, strategies: Mapping[str, Strategy],
                    ensembles: Mapping[str, Ensemble]) -> Tuple[str, ...]:
    """``postprocessing``: ``true`` (every strategy and ensemble), ``false``, or a list of their keys."""
    value = data.get("postprocessing", False)
    rows = [*strategies, *ensembles]
    if isinstance(value, bool):
        chosen = tuple(rows) if value else ()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in rows]
        if unknown:
            known = ", ".join(strategies) + (f"; ensembles: {', '.join(ensembles)}" if ensembles else "")
            raise r.error("postprocessing", f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} "
                                            f"{', '.join(map(repr, unknown))} (known: {known})")
        if len(set(value)) != len(value):
            raise r.error("postprocessing", f"a strategy is named twice: {value}")
        chosen = tuple(k for k in rows if k in value)  # in table order
    else:
        raise r.error("postprocessing", f"must be true, false or a list of strategy and ensemble keys, got {value!r}")
    labels = {s.label for s in strategies.values()} | {e.label for e in ensembles.values()}
    for key in chosen:
        label = strategies[key].label if key in strategies else ensembles[key].label
        if POSTPROCESSED_LABEL.format(label) in labels:
            raise r.error("postprocessing", f"the post-processed row of {key!r}, "
                                            f"{POSTPROCESSED_LABEL.format(label)!r}, is also the label of a row")
    return chosen


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
    """Strategies to run, in plan order, with the ones they start from added.

    ``names`` may hold ensemble keys: an ensemble pulls in its members.
    """
    if not names:
        return list(plan.strategies.values())
    unknown = [n for n in names if n not in plan.strategies and n not in plan.ensembles]
    if unknown:
        ensembles = f"; ensembles: {', '.join(plan.ensembles)}" if plan.ensembles else ""
        raise ValueError(f"unknown strateg{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                         f"(the plan has: {', '.join(plan.strategies)}{ensembles})")
    names = [m for n in names for m in (plan.ensembles[n].members if n in plan.ensembles else (n,))]
    wanted = set(names)
    for name in names:
        init = plan.strategies[name].init
        while init is not None:
            wanted.add(init)
            init = plan.strategies[init].init
    return [s for s in plan.strategies.values() if s.key in wanted]


def selected_ensembles(plan: Plan, names: Optional[List[str]] = None) -> List[Ensemble]:
    """Ensembles to build: all without ``names``, else the ones named (by key), in plan order."""
    if not names:
        return list(plan.ensembles.values())
    return [e for e in plan.ensembles.values() if e.key in names]

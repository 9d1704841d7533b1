"""SLURM emission: sbatch scripts for a plan's steps and a submit script chaining them.

``emit_slurm(plan, steps, out_dir)`` writes

* ``00_prepare.sbatch``: data, fingerprints, plans, plans transfer, preprocessing, splits
  (CPU job; each step guarded by a test of the files it leaves);
* ``10_<strategy>.sbatch`` per strategy: a job array over the folds (``--array=0-9``), each
  task training its fold (continuing with ``--c`` from ``checkpoint_latest.pth``) and
  evaluating it; fold-all strategies (the source model) are one job that also predicts the
  target folds when evaluated cross-domain;
* ``90_compare.sbatch``: the Table-2 comparison;
* ``submit.sh``: ``sbatch --parsable`` of each script with ``--dependency=afterok:...`` on the
  prepare job, on the job of the model a strategy starts from (fine-tuning waits for
  pre-training), and, for the comparison, on every training job.

Resources come from the plan's ``[slurm]`` table (``partition``, ``gres``, ``gpus``, ``time``,
``cpus_per_task``, ``mem``, ``account``, ``qos``, ``setup`` lines, ``extra`` ``#SBATCH`` lines;
``[slurm.prepare]`` overrides them for the CPU jobs) and from command-line options.

Example:
    >>> emit_slurm(plan, steps, "slurm_jobs", options={"gres": "gpu:a100:1"})  # doctest: +SKIP
    [PosixPath('slurm_jobs/00_prepare.sbatch'), ..., PosixPath('slurm_jobs/submit.sh')]
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from nnunet_transfer import config
from nnunet_transfer.experiments.plan import Plan
from nnunet_transfer.experiments.runner import plan_env
from nnunet_transfer.experiments.steps import Step, _without_pretrained

_RESOURCE_FLAGS = (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("time", "time"),
                   ("cpus_per_task", "cpus-per-task"), ("mem", "mem"), ("gres", "gres"), ("gpus", "gpus"))


def _var(name: str) -> str:
    return "job_" + re.sub(r"\W", "_", name)


def _resources(plan: Plan, options: Mapping[str, Any], gpu: bool) -> Dict[str, Any]:
    settings = {k: v for k, v in plan.slurm.items() if k != "prepare"}
    settings.update({k: v for k, v in options.items() if v is not None})
    if not gpu:
        settings.pop("gres", None)
        settings.pop("gpus", None)
        settings.update(plan.slurm.get("prepare", {}))
    return settings


def _header(plan: Plan, name: str, settings: Mapping[str, Any], log_dir: Path, array: Optional[str]) -> List[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={plan.name}-{name}"]
    pattern = "%x-%A_%a.out" if array else "%x-%j.out"
    lines.append(f"#SBATCH --output={log_dir / pattern}")
    for key, flag in _RESOURCE_FLAGS:
        if settings.get(key) not in (None, ""):
            lines.append(f"#SBATCH --{flag}={settings[key]}")
    if array:
        lines.append(f"#SBATCH --array={array}")
    lines += [str(line) for line in settings.get("extra", [])]
    lines += ["", "set -euo pipefail"]
    env = {}
    for var in (config.RAW, config.PREPROCESSED, config.RESULTS):
        value = os.environ.get(var)
        if value:
            env[var] = str(Path(value).absolute())
    env.update(plan_env(plan))
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [str(line) for line in settings.get("setup", [])]
    return lines


def _guarded(step: Step) -> List[str]:
    """Shell lines that run ``step`` unless its marker files exist; training resumes."""
    command = step.shell(step.command)
    if step.training is not None:
        t = step.training
        base = _without_pretrained(step.command)
        done = " && ".join(f"[ -f {shlex.quote(str(p))} ]" for p in step.markers)
        return [f"# {step.name}",
                f"if {done}; then echo 'done: {step.name}'",
                f"elif [ -f {shlex.quote(str(t.final))} ]; then {step.shell(base + ['--val'])}",
                f"elif [ -f {shlex.quote(str(t.latest))} ]; then {step.shell(base + ['--c'])}",
                f"else {command}; fi"]
    if not step.markers:
        return [f"# {step.name}", command]
    done = " && ".join(f"[ -f {shlex.quote(str(p))} ]" for p in step.markers)
    return [f"# {step.name}", f"if {done}; then echo 'done: {step.name}'; else {command}; fi"]


def _array_spec(folds: Sequence[str]) -> str:
    numbers = sorted(int(f) for f in folds)
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


def emit_slurm(plan: Plan, steps: Sequence[Step], out_dir: Union[str, Path],
               options: Optional[Mapping[str, Any]] = None) -> List[Path]:
    """Write the sbatch scripts and ``submit.sh`` into ``out_dir`` (replacing earlier ones)."""
    options = dict(options or {})
    out_dir = Path(out_dir).absolute()
    log_dir = out_dir / "logs"
    scripts: Dict[str, List[str]] = {}
    depends: Dict[str, List[str]] = {}

    prepare = [s for s in steps if s.stage == "prepare"]
    if prepare:
        lines = _header(plan, "prepare", _resources(plan, options, gpu=False), log_dir, None)
        for step in prepare:
            lines += [""] + _guarded(step)
        scripts["00_prepare"] = lines
        depends["00_prepare"] = []
    by_strategy: Dict[str, List[Step]] = {}
    for step in steps:
        if step.strategy is not None:
            by_strategy.setdefault(step.strategy, []).append(step)
    job_of: Dict[str, str] = {}
    for key, strategy_steps in by_strategy.items():
        strategy = plan.strategies[key]
        name = f"10_{key}"
        job_of[key] = name
        settings = _resources(plan, options, gpu=True)
        if strategy.per_fold:
            folds = sorted({s.fold for s in strategy_steps if s.fold is not None}, key=int)
            lines = _header(plan, key, settings, log_dir, _array_spec(folds))
            lines += ["", 'case "$SLURM_ARRAY_TASK_ID" in']
            for fold in folds:
                lines.append(f"  {fold})")
                for step in (s for s in strategy_steps if s.fold == fold):
                    lines += ["    " + line for line in _guarded(step)]
                lines.append("    ;;")
            lines += ['  *) echo "no fold $SLURM_ARRAY_TASK_ID in this job" >&2; exit 1 ;;', "esac"]
        else:
            lines = _header(plan, key, settings, log_dir, None)
            for step in strategy_steps:
                lines += [""] + _guarded(step)
        scripts[name] = lines
        depends[name] = (["00_prepare"] if prepare else [])
        if strategy.init is not None and strategy.init in by_strategy:
            depends[name].append(f"10_{strategy.init}")
    compare = [s for s in steps if s.stage == "compare"]
    if compare:
        lines = _header(plan, "compare", _resources(plan, options, gpu=False), log_dir, None)
        for step in compare:
            lines += [""] + _guarded(step)
        scripts["90_compare"] = lines
        depends["90_compare"] = (["00_prepare"] if prepare else []) + list(job_of.values())

    submit = ["#!/bin/bash", f"# submit the jobs of plan {plan.name}; each waits (afterok) for the ones it needs",
              "set -euo pipefail", 'cd "$(dirname "$0")"', f"mkdir -p {shlex.quote(str(log_dir))}",
              "submit() { sbatch --parsable \"$@\" | cut -d';' -f1; }"]
    for name in scripts:
        deps = depends[name]
        flag = f"--dependency=afterok:{':'.join('$' + _var(d) for d in deps)} " if deps else ""
        submit.append(f"{_var(name)}=$(submit {flag}{name}.sbatch)")
        submit.append(f'echo "{name}: job ${_var(name)}"')

    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "submit.sh").is_file():
        raise FileExistsError(f"{out_dir} exists and holds no earlier SLURM scripts (no submit.sh); "
                              f"choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / "logs").mkdir()
        for name, lines in scripts.items():
            (staging / f"{name}.sbatch").write_text("\n".join(lines) + "\n")
        (staging / "submit.sh").write_text("\n".join(submit) + "\n")
        for path in staging.iterdir():
            if path.is_file():
                path.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / f"{name}.sbatch" for name in scripts] + [out_dir / "submit.sh"]

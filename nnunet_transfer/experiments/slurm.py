"""SLURM emission: sbatch scripts for a plan's steps and a submit script chaining them.

``emit_slurm(plan, steps, out_dir)`` writes

* ``00_prepare.sbatch``: data, fingerprints, plans, plans transfer, preprocessing, splits
  (CPU job);
* ``10_<strategy>.sbatch`` per strategy: a job array over the folds (``--array=0-9``), each
  task training its fold (continuing with ``--c`` from ``checkpoint_latest.pth``) and
  evaluating it; fold-all strategies (the source model) are one job that also predicts the
  target folds when evaluated cross-domain;
* ``90_compare.sbatch``: the Table-2 comparison, after the steps that pool a row's folds
  (``Step.job == "compare"``: ``ensemble-folds`` and the ensembles' evaluations,
  ``tune-postprocessing``), in the chain's order (CPU job);
* ``submit.sh``: ``sbatch --parsable --kill-on-invalid-dep=yes`` of each script with
  ``--dependency=afterok:...`` on the prepare job, on the job of the model a strategy starts
  from (fine-tuning waits for pre-training), and, for the comparison, on every training job;
  a job whose dependency fails or is cancelled is cancelled too, none waits forever. It
  writes the job ids to ``job_ids.txt``.

Every step of a script is skipped when it is done, by the local runner's own check: the
guard runs ``Step.done_command`` (``nnunet-transfer run PLAN --workdir W [--folds ...]
[--strategies ...] --step-done NAME``, exit 0 when done), so a resubmission neither makes the
synthetic data nor preprocesses again, and redoes a comparison only as ``run`` would. Steps
built without a plan file fall back to testing their marker files.

Resuming (after a failure, a time limit, ``scancel``): cancel what is left of the earlier
submission (``scancel`` the ids ``submit.sh`` printed and wrote to ``job_ids.txt``), then run
``submit.sh`` again: finished steps print ``done: <step>``, interrupted trainings continue with
``--c``. Resubmitting while a task of the old submission still trains its fold would start a
second ``--c`` training of that fold, so ``submit.sh`` refuses while jobs of yours named like
the plan's (``squeue -u $USER -n PLAN-prepare,...``) are queued or running, printing them and
the ``scancel`` command; ``submit.sh --force`` submits anyway.

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
from nnunet_transfer.experiments.steps import NOT_DONE, Step, _without_pretrained, shell_join

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


def _job_name(plan: Plan, name: str) -> str:
    return f"{plan.name}-{name}"


def _header(plan: Plan, name: str, settings: Mapping[str, Any], log_dir: Path, array: Optional[str],
            steps: Sequence[Step]) -> List[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={_job_name(plan, name)}"]
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
    for var, folder in ((config.RAW, config.nnunet_raw), (config.PREPROCESSED, config.nnunet_preprocessed),
                        (config.RESULTS, config.nnunet_results)):
        value = folder(required=False)
        if value:
            env[var] = str(value.absolute())
    env.update(plan_env(plan))
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [str(line) for line in settings.get("setup", [])]
    if any(s.done_command is not None for s in steps):
        lines += [""] + _STEP_DONE
    return lines


# the scripts' guard: asks the runner whether a step is done (Step.done_command), stops the job on errors
_STEP_DONE = [
    "# step_done COMMAND...: whether a step is done, by the runner's own check (nnunet-transfer run PLAN",
    f"# --workdir W ... --step-done NAME exits 0 when done, {NOT_DONE} when not); any other exit status (e.g. a",
    "# plan edited since these scripts were written) stops the job",
    "step_done() {",
    "  local rc=0",
    '  "$@" || rc=$?',
    f'  case "$rc" in 0) return 0 ;; {NOT_DONE}) return 1 ;; esac',
    '  echo "error: the done-check of a step failed (exit $rc): $*" >&2',
    '  exit "$rc"',
    "}",
]


def _done_test(step: Step) -> Optional[str]:
    """The shell test that ``step`` is done: the runner's own check, else its marker files, else none."""
    if step.done_command is not None:
        return "step_done " + shell_join(step.done_command)
    if step.markers:
        return " && ".join(f"[ -f {shlex.quote(str(p))} ]" for p in step.markers)
    return None


def _guarded(step: Step) -> List[str]:
    """Shell lines that run ``step`` unless it is done; training resumes (``--val``, ``--c``)."""
    command = step.shell(step.command)
    done = _done_test(step)
    if step.training is not None:
        t = step.training
        base = _without_pretrained(step.command)
        return [f"# {step.name}",
                f"if {done or 'false'}; then echo 'done: {step.name}'",
                f"elif [ -f {shlex.quote(str(t.final))} ]; then {step.shell(base + ['--val'])}",
                f"elif [ -f {shlex.quote(str(t.latest))} ]; then {step.shell(base + ['--c'])}",
                f"else {command}; fi"]
    if done is None:
        return [f"# {step.name}", command]
    return [f"# {step.name}", f"if {done}; then echo 'done: {step.name}'; else {command}; fi"]


def _array_spec(folds: Sequence[str]) -> str:
    numbers = sorted(int(f) for f in folds)
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


def _submit_script(plan: Plan, scripts: Mapping[str, List[str]], depends: Mapping[str, List[str]],
                   names: Sequence[str], log_dir: Path) -> List[str]:
    """``submit.sh``: refuse while jobs of the plan are queued, submit each script, record the job ids."""
    joined = ",".join(names)
    what = f"jobs of plan {plan.name}"
    lines = [
        "#!/bin/bash",
        f"# Submit the jobs of plan {plan.name}. Each waits (afterok) for the ones it needs; a job whose",
        "# dependency fails or is cancelled is cancelled too (--kill-on-invalid-dep=yes).",
        "# Resume (after a failure, a time limit or scancel): cancel what is left of the earlier submission",
        "# (scancel the ids it printed, also in job_ids.txt), then run this script again: every step",
        "# that is done is skipped, interrupted trainings continue from checkpoint_latest.pth (--c).",
        f"# It refuses while jobs named {joined} of yours are queued or running",
        "# (their trainings would run twice at once); --force submits anyway.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "force=0",
        'case "${1:-}" in',
        "  --force) force=1 ;;",
        '  "") ;;',
        '  *) echo "usage: bash $0 [--force]" >&2; exit 2 ;;',
        "esac",
        f"names={shlex.quote(joined)}",
        'if [ "$force" = 0 ] && command -v squeue >/dev/null 2>&1; then',
        "  active=$(squeue -h -u \"$(id -un)\" -n \"$names\" -o '%A %i %j %T %Z') || {",
        f'    echo "submit.sh: squeue failed, so it cannot tell whether {what} are still queued;'
        ' bash $0 --force submits anyway" >&2; exit 1; }',
        '  if [ -n "$active" ]; then',
        f'    {{ echo "submit.sh: {what} are still queued or running (array job, job, name, state, folder):"',
        '      echo "$active"',
        '      echo "Submitting again would train the folds they train a second time at once (--c from the same'
        ' checkpoint)."',
        "      echo \"Cancel them first: scancel $(echo \"$active\" | cut -d' ' -f1 | sort -u | tr '\\n' ' ')\"",
        '      echo "then run bash $0 again to resume (bash $0 --force submits anyway)."; } >&2',
        "    exit 1",
        "  fi",
        "fi",
        f"mkdir -p {shlex.quote(str(log_dir))}",
        ": > job_ids.txt",
        "submit() { sbatch --parsable --kill-on-invalid-dep=yes \"$@\" | cut -d';' -f1; }",
    ]
    for name in scripts:
        deps = depends[name]
        flag = f"--dependency=afterok:{':'.join('$' + _var(d) for d in deps)} " if deps else ""
        lines.append(f"{_var(name)}=$(submit {flag}{name}.sbatch)")
        lines.append(f'echo "{name}: job ${_var(name)}"')
        lines.append(f'echo "{name} ${_var(name)}" >> job_ids.txt')
    ids = " ".join(f"${_var(name)}" for name in scripts)
    lines.append(f'echo "job ids in $PWD/job_ids.txt; to cancel this submission: scancel {ids}"')
    return lines


def emit_slurm(plan: Plan, steps: Sequence[Step], out_dir: Union[str, Path],
               options: Optional[Mapping[str, Any]] = None) -> List[Path]:
    """Write the sbatch scripts and ``submit.sh`` into ``out_dir`` (replacing earlier ones)."""
    options = dict(options or {})
    out_dir = Path(out_dir).absolute()
    log_dir = out_dir / "logs"
    scripts: Dict[str, List[str]] = {}
    depends: Dict[str, List[str]] = {}
    names: List[str] = []  # the jobs' names (submit.sh looks for ones still queued)

    prepare = [s for s in steps if s.stage == "prepare"]
    if prepare:
        lines = _header(plan, "prepare", _resources(plan, options, gpu=False), log_dir, None, prepare)
        names.append(_job_name(plan, "prepare"))
        for step in prepare:
            lines += [""] + _guarded(step)
        scripts["00_prepare"] = lines
        depends["00_prepare"] = []
    by_strategy: Dict[str, List[Step]] = {}
    for step in steps:
        if step.strategy is not None and step.job != "compare":
            by_strategy.setdefault(step.strategy, []).append(step)
    job_of: Dict[str, str] = {}
    for key, strategy_steps in by_strategy.items():
        strategy = plan.strategies[key]
        name = f"10_{key}"
        job_of[key] = name
        settings = _resources(plan, options, gpu=True)
        if strategy.per_fold:
            folds = sorted({s.fold for s in strategy_steps if s.fold is not None}, key=int)
            lines = _header(plan, key, settings, log_dir, _array_spec(folds), strategy_steps)
            lines += ["", 'case "$SLURM_ARRAY_TASK_ID" in']
            for fold in folds:
                lines.append(f"  {fold})")
                for step in (s for s in strategy_steps if s.fold == fold):
                    lines += ["    " + line for line in _guarded(step)]
                lines.append("    ;;")
            lines += ['  *) echo "no fold $SLURM_ARRAY_TASK_ID in this job" >&2; exit 1 ;;', "esac"]
        else:
            lines = _header(plan, key, settings, log_dir, None, strategy_steps)
            for step in strategy_steps:
                lines += [""] + _guarded(step)
        scripts[name] = lines
        names.append(_job_name(plan, key))
        depends[name] = (["00_prepare"] if prepare else [])
        if strategy.init is not None and strategy.init in by_strategy:
            depends[name].append(f"10_{strategy.init}")
    compare = [s for s in steps if s.stage == "compare" or s.job == "compare"]
    if compare:
        lines = _header(plan, "compare", _resources(plan, options, gpu=False), log_dir, None, compare)
        names.append(_job_name(plan, "compare"))
        for step in compare:
            lines += [""] + _guarded(step)
        scripts["90_compare"] = lines
        depends["90_compare"] = (["00_prepare"] if prepare else []) + list(job_of.values())

    submit = _submit_script(plan, scripts, depends, names, log_dir)
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

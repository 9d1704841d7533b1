"""Run a plan's steps in order, skipping finished ones; dry runs; the plugin's Python steps.

Each command runs as a subprocess with the plan's environment overrides and
``nnUNet_extTrainer`` pointing at this plugin's trainers. Its output goes to the console
and to ``WORKDIR/logs/<step>.log``; every command is logged with its duration, and a line
per command is appended to ``WORKDIR/run_log.jsonl``. A failed command stops the run with
an error naming the step and its log; rerunning continues where it stopped.

Example:
    >>> from nnunet_transfer.experiments import load_plan, shipped_plan, build_steps, dry_run
    >>> plan = load_plan(shipped_plan("demo"))
    >>> print(dry_run(plan, build_steps(plan, "demo_work")))  # doctest: +SKIP
    export nnUNetTransfer_num_epochs=3
    nnunet-transfer synth /abs/demo_work/data/DemoGLI --domain GLI -n 12 --seed 0 --shape 64 64 48
    ...
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from nnunet_transfer import config
from nnunet_transfer.experiments.plan import DEFAULT_FAMILY, Plan, PlansFamily, expand_source
from nnunet_transfer.experiments.steps import Layout, Step

logger = logging.getLogger(__name__)

# executor(step, command, env, log_file) -> exit status
Executor = Callable[[Step, List[str], Dict[str, str], Path], int]


@dataclass
class RunReport:
    """What a run did: steps run (with seconds) and steps skipped as done."""

    ran: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def plan_env(plan: Plan) -> Dict[str, str]:
    """Variables the plan's commands need on top of the current environment."""
    env = dict(plan.env)
    env[config.EXT_TRAINER] = config.ext_trainer_search_path()
    if not plan.test_time_mirroring:
        env[config.TEST_TIME_MIRRORING] = "0"
    return env


def subprocess_executor(echo: bool = True) -> Executor:
    """Run the command, copying its output to ``log_file`` (and to stdout with ``echo``)."""
    def execute(step: Step, command: List[str], env: Dict[str, str], log_file: Path) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as log:
            log.write(f"$ {step.shell(command)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
            except FileNotFoundError:
                raise RuntimeError(f"step {step.name}: command {command[0]!r} not found; is it installed and on PATH?") from None
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    if echo:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                return proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    return execute


def dry_run(plan: Plan, steps: Sequence[Step]) -> str:
    """The shell commands a run would execute now, in order; finished steps as comments."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in plan_env(plan).items()]
    for step in steps:
        if step.done():
            lines.append(f"# done: {step.shell(step.command)}")
        else:
            lines.append(step.shell())
    return "\n".join(lines)


def run_steps(plan: Plan, steps: Sequence[Step], workdir: Path, executor: Optional[Executor] = None) -> RunReport:
    """Run the steps that are not done, in order; raise ``RuntimeError`` on the first failure."""
    from tqdm import tqdm

    workdir = Path(workdir)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    executor = executor or subprocess_executor()
    env = plan_env(plan)
    report = RunReport()
    todo = [s for s in steps if not s.done()]
    report.skipped = [s.name for s in steps if s not in todo]
    if report.skipped:
        logger.info("%d of %d steps already done, skipping them", len(report.skipped), len(steps))
    for step in tqdm(todo, desc=f"{plan.name}", unit="step", disable=None):
        if step.done():  # made by an earlier step (e.g. plans that share preprocessed data)
            logger.info("[%s] already done", step.name)
            report.skipped.append(step.name)
            continue
        command = step.current_command()
        if step.training is not None and command != step.command:
            logger.info("resuming %s (%s)", step.name, command[-1])
        log_file = workdir / "logs" / f"{step.name}.log"
        logger.info("[%s] $ %s", step.name, step.shell(command))
        started = time.time()
        status = executor(step, command, {**env, **step.env}, log_file)
        seconds = time.time() - started
        report.seconds[step.name] = seconds
        with open(workdir / "run_log.jsonl", "a") as record:
            record.write(json.dumps({"step": step.name, "command": command, "status": status,
                                     "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        logger.info("[%s] finished with status %d in %.1f s", step.name, status, seconds)
        if status != 0:
            raise RuntimeError(f"step {step.name} failed (exit status {status}) after {seconds:.1f} s: "
                               f"{step.shell(command)}; see {log_file}. Rerun the same command to resume.")
        if not step.done():
            raise RuntimeError(f"step {step.name} exited normally but its outputs are missing "
                               f"({', '.join(map(str, step.markers)) or 'see its done-check'}); see {log_file}")
        report.ran.append(step.name)
    return report


def run_python_step(plan: Plan, layout: Layout, name: str) -> None:
    """Run one of the plugin's Python steps (``fingerprint-<dataset>``, ``shrink-plans``, ``derive-plans-<family>``)."""
    from nnunet_transfer.planning import extract_fingerprint, shrink_plans, write_plans

    if name.startswith("fingerprint-"):
        role = name[len("fingerprint-"):]
        if role not in plan.datasets:
            raise ValueError(f"unknown step {name!r}: no dataset role {role!r} in the plan")
        voxels = plan.fingerprint_voxels if plan.fingerprint_voxels is not None else 1e8
        logger.info("fingerprint of dataset %d with %g foreground voxels", plan.datasets[role].id, voxels)
        extract_fingerprint(plan.datasets[role].id, num_processes=plan.num_processes, foreground_voxels=voxels)
        return
    family = _shrink_family(plan, name)
    if family is not None:
        folder = layout.pre_dir(plan.datasets[family.source])
        source = folder / f"{family.base}.json"
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist; plan dataset {plan.datasets[family.source].id} "
                                    f"first (nnUNetv2_plan_experiment, or the step that derives {family.base})")
        options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in family.shrink.items() if k != "plans_name"}
        small = shrink_plans(json.loads(source.read_text()), family.name, configuration=plan.configuration,
                             **options)
        write_plans(folder, small)
        return
    raise ValueError(f"unknown step {name!r}: the plugin runs fingerprint-<dataset>, shrink-plans and "
                     f"derive-plans-<family> (of shrink families) itself")


def _shrink_family(plan: Plan, name: str) -> Optional[PlansFamily]:
    if name == "shrink-plans":
        family = plan.families[DEFAULT_FAMILY]
    elif name.startswith("derive-plans-") and name[len("derive-plans-"):] in plan.families:
        family = plan.families[name[len("derive-plans-"):]]
    else:
        return None
    if family.derive != "shrink":
        raise ValueError(f"step {name!r}: plans family {family.key!r} is not derived by shrinking")
    return family


def check_sources(plan: Plan, layout: Layout, steps: Optional[Sequence[Step]] = None) -> None:
    """Fail early when a BraTS folder still to convert (by ``steps``, default all) is not set or missing."""
    names = None if steps is None else {s.name for s in steps}
    for spec in plan.datasets.values():
        if names is not None and f"convert-{spec.role}" not in names:
            continue
        if spec.source and not spec.is_synth and not (layout.raw_dir(spec) / "dataset.json").is_file():
            folder = Path(expand_source(spec))
            if not folder.is_dir():
                raise FileNotFoundError(f"datasets.{spec.role}.source: folder {folder} does not exist")

"""Run a plan's steps (in order, or several at once), skipping finished ones; progress, status, dry runs.

Each command runs as a subprocess with the plan's environment overrides and
``nnUNet_extTrainer`` pointing at this plugin's trainers. Its output goes to
``WORKDIR/logs/<step>.log`` (and to the console when echoed); the runner logs one line
when a step starts and one when it ends, with its number ("step 17 of 42"), its duration
and an estimate of the time left, and, during a training, its epochs and pseudo Dice
(parsed from nnU-Net's output). A line per command is appended to ``WORKDIR/run_log.jsonl``;
while a step runs, ``WORKDIR/logs/<step>.running`` holds the runner's pid (``step_states``
reads both). A failed command stops the run with an error naming the step and its log;
rerunning continues where it stopped.

``run_steps(..., jobs=N)`` runs up to N independent steps at once, each after the steps it
needs (``Step.after``), with ``gpus`` one GPU per training or prediction
(``CUDA_VISIBLE_DEVICES``) and the CPU threads shared out (:func:`sharing_env`).

The time left is estimated from the durations in ``run_log.jsonl`` (earlier runs in the
same work dir) and of this run: a step by its own last duration, else by the median of its
strategy's other folds, of its phase (training, prediction, ...), of trainings or of other
steps, else of all steps; with several jobs, by scheduling those estimates on the job slots.

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
import re
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from nnunet_transfer import config
from nnunet_transfer.experiments.plan import DEFAULT_FAMILY, Plan, PlansFamily, expand_source
from nnunet_transfer.experiments.steps import PHASES, Layout, Step, phase_of

logger = logging.getLogger(__name__)

# executor(step, command, env, log_file) -> exit status
Executor = Callable[[Step, List[str], Dict[str, str], Path], int]

RUN_LOG = "run_log.jsonl"
INTERRUPTED = 130  # the status recorded for a step stopped by Ctrl-C


@dataclass
class RunReport:
    """What a run did: steps run (with seconds), steps skipped as done, the run's wall time."""

    ran: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def phase_seconds(self) -> Dict[str, float]:
        """Seconds of the steps run, by phase (``steps.PHASES``), phases without steps left out."""
        out: Dict[str, float] = {}
        for phase in PHASES:
            total = sum(t for name, t in self.seconds.items() if phase_of(name) == phase)
            if any(phase_of(name) == phase for name in self.seconds):
                out[phase] = total
        return out


def plan_env(plan: Plan) -> Dict[str, str]:
    """Variables the plan's commands need on top of the current environment.

    The plan's ``num_processes`` also sizes nnU-Net's own pools (``nnUNet_def_n_proc``,
    ``nnUNet_n_proc_DA``, at least 1: 0 crashes ``nnUNetv2_plan_experiment``) unless the user
    set them.
    """
    env = dict(plan.env)
    env[config.EXT_TRAINER] = config.ext_trainer_search_path()
    if not plan.test_time_mirroring:
        env[config.TEST_TIME_MIRRORING] = "0"
    for name in (config.DEF_N_PROC, config.N_PROC_DA):
        if not config.user_set(name) and name not in plan.env:
            env[name] = str(max(1, plan.num_processes))
    return env


def available_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def sharing_env(env: Mapping[str, str], jobs: int, cpus: Optional[int] = None) -> Dict[str, str]:
    """Thread and worker counts for one of ``jobs`` concurrent commands: the cores shared out.

    ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``PYTHON_CPU_COUNT`` (Python 3.13+:
    ``os.cpu_count()``, which nnU-Net's CPU training uses for torch's threads) become
    ``max(1, cpus // jobs)``; nnU-Net's pools (from ``env``, the plan's) are capped by it.
    Variables the user set are left alone.
    """
    if jobs <= 1:
        return {}
    share = max(1, (cpus or available_cpus()) // jobs)
    out = {name: str(share) for name in config.THREAD_VARIABLES if not config.user_set(name)}
    for name in (config.DEF_N_PROC, config.N_PROC_DA):
        if not config.user_set(name):
            try:
                own = int(env.get(name, share))
            except ValueError:
                own = share
            out[name] = str(max(1, min(own, share)))
    return out


# -- progress of a training, from nnU-Net's output ------------------------------------------------

_EPOCH = re.compile(r":\s*Epoch (\d+)\s*$")
_PSEUDO_DICE = re.compile(r"Pseudo dice\s*\[(.*)\]")
_EPOCH_TIME = re.compile(r"Epoch time:\s*([0-9.]+)\s*s")
_NUM_EPOCHS = re.compile(r"nnunet-transfer: num_epochs = (\d+)")
_NP_SCALAR = re.compile(r"np\.\w+\(([^()]*)\)")


def parse_pseudo_dice(text: str) -> List[float]:
    """The values of nnU-Net's ``Pseudo dice [...]`` list (plain floats or ``np.float32(...)``).

    >>> parse_pseudo_dice("[np.float32(0.0), np.float32(0.647)]")
    [0.0, 0.647]
    >>> parse_pseudo_dice("[0.5, nan]")
    [0.5, nan]
    """
    inner = _NP_SCALAR.sub(r"\1", text.strip().strip("[]"))
    values = []
    for part in inner.split(","):
        try:
            values.append(float(part.strip()))
        except ValueError:
            continue
    return values


class TrainingProgress:
    """Turns a training's output lines into one log line per epoch (epoch, pseudo Dice, time left)."""

    def __init__(self, name: str, log: Optional[Callable[[str], None]] = None):
        self.name = name
        self.log = log or (lambda message: logger.info("%s", message))
        self.total: Optional[int] = None
        self.epoch: Optional[int] = None
        self.dice: Optional[List[float]] = None
        self.epoch_seconds: Optional[float] = None
        self.times: List[float] = []
        self.reported: Optional[int] = None

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        match = _NUM_EPOCHS.search(line)
        if match:
            self.total = int(match.group(1))
            return
        match = _EPOCH.search(line)
        if match:
            self.flush()
            self.epoch, self.dice, self.epoch_seconds = int(match.group(1)), None, None
            return
        match = _PSEUDO_DICE.search(line)
        if match:
            self.dice = parse_pseudo_dice(match.group(1))
            return
        match = _EPOCH_TIME.search(line)
        if match:
            self.epoch_seconds = float(match.group(1))
            self.times.append(self.epoch_seconds)
            self.flush()

    def flush(self) -> None:
        """Log the current epoch if it has not been logged and has a pseudo Dice or a time."""
        if self.epoch is None or self.reported == self.epoch or (self.dice is None and self.epoch_seconds is None):
            return
        self.reported = self.epoch
        done = self.epoch + 1  # nnU-Net counts epochs from 0
        total = self.total if self.total is not None and self.total >= done else None
        parts = [f"{self.name}: epoch {done}" + (f" of {total}" if total else "")]
        if self.dice is not None:
            values = " ".join(f"{v:.3f}" for v in self.dice)
            mean = statistics.fmean(self.dice) if self.dice else float("nan")
            parts.append(f"pseudo Dice {values} (mean {mean:.3f})")
        if self.epoch_seconds is not None:
            parts.append(f"{self.epoch_seconds:.1f} s/epoch")
            if total and total > done and self.times:
                left = (total - done) * statistics.fmean(self.times[-5:])
                parts.append(f"about {format_seconds(left)} left in this training")
        self.log(", ".join(parts))


def subprocess_executor(echo: bool = True, prefix: bool = False) -> Executor:
    """Run the command, copying its output to ``log_file`` (and to stdout with ``echo``).

    Without ``echo``, a training's epochs and pseudo Dice are logged (:class:`TrainingProgress`);
    with ``prefix``, echoed lines are led by ``[step]`` (for concurrent jobs). The executor's
    ``terminate()`` kills the commands still running (the runner calls it on Ctrl-C).
    """
    live: set = set()
    lock = threading.Lock()

    def execute(step: Step, command: List[str], env: Dict[str, str], log_file: Path) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        progress = TrainingProgress(step.name) if step.training is not None and not echo else None
        with open(log_file, "a", buffering=1) as log:
            log.write(f"$ {step.shell(command)}\n")
            try:
                # unbuffered Python output (unless set otherwise): progress lines arrive as they are printed
                proc = subprocess.Popen(command, env={"PYTHONUNBUFFERED": "1", **os.environ, **env},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            except FileNotFoundError:
                raise RuntimeError(f"step {step.name}: command {command[0]!r} not found; is it installed and on PATH?") from None
            with lock:
                live.add(proc)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    if echo:
                        sys.stdout.write(f"[{step.name}] {line}" if prefix else line)
                        sys.stdout.flush()
                    elif progress is not None:
                        progress.feed(line)
                if progress is not None:
                    progress.flush()
                return proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with lock:
                    live.discard(proc)

    def terminate() -> None:
        with lock:
            procs = list(live)
        for proc in procs:
            try:
                proc.kill()
            except OSError:
                pass

    execute.terminate = terminate  # type: ignore[attr-defined]
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


# -- durations: the run log, estimates of the time left --------------------------------------------

def format_seconds(seconds: float) -> str:
    """A duration for people: ``45 s``, ``3 min 12 s``, ``2 h 05 min``.

    >>> format_seconds(42.3), format_seconds(192), format_seconds(7500)
    ('42 s', '3 min 12 s', '2 h 05 min')
    """
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 9.5 else f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(int(round(seconds)) // 60, 60)
    return f"{hours} h {rest:02d} min"


def read_run_log(workdir: Path) -> List[dict]:
    """The records of ``WORKDIR/run_log.jsonl`` (unreadable lines skipped)."""
    path = Path(workdir) / RUN_LOG
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _group(name: str) -> str:
    return re.sub(r"-fold_[^-]+$", "", name)


class DurationEstimator:
    """Estimated seconds of a step from the durations of steps run before (see the module doc)."""

    def __init__(self, records: Iterable[Mapping] = ()):
        self.known: Dict[str, float] = {}
        for record in records:  # a step's last full run: not a resumption (--c) or a validation (--val)
            command = record.get("command") or []
            if record.get("status") == 0 and not (command and command[-1] in ("--c", "--val")):
                try:
                    self.known[str(record["step"])] = float(record["seconds"])
                except (KeyError, TypeError, ValueError):
                    continue

    def add(self, name: str, seconds: float) -> None:
        self.known[name] = seconds

    def estimate(self, name: str) -> Tuple[Optional[float], bool]:
        """``(seconds, rough)``: rough when only steps of another kind were timed."""
        if name in self.known:
            return self.known[name], False
        training = phase_of(name) == "training"
        tiers = [(lambda n: _group(n) == _group(name), False), (lambda n: phase_of(n) == phase_of(name), False),
                 (lambda n: (phase_of(n) == "training") == training, True), (lambda n: True, True)]
        for same, rough in tiers:
            values = [t for n, t in self.known.items() if same(n)]
            if values:
                return statistics.median(values), rough
        return None, True


def estimate_left(pending: Sequence[Step], estimates: Mapping[str, float], jobs: int = 1,
                  running: Optional[Mapping[str, float]] = None, gpus: int = 0) -> float:
    """Seconds until ``pending`` (and ``running``: name -> seconds still to go) are done.

    With one job the sum; with more, a simulation that starts each step, in order, when the
    steps it needs are done and a job slot (and, with ``gpus``, a GPU for steps using one) is free.
    """
    running = dict(running or {})
    if jobs <= 1:
        return sum(running.values()) + sum(estimates.get(s.name, 0.0) for s in pending)
    waiting = {s.name for s in pending} | set(running)
    queue = list(pending)
    clock = 0.0
    active: Dict[str, Tuple[float, bool]] = {name: (left, False) for name, left in running.items()}
    while queue or active:
        started = True
        while started and len(active) < jobs:
            started = False
            gpu_busy = sum(1 for _, uses in active.values() if uses)
            for i, step in enumerate(queue):
                uses = bool(gpus) and step.uses_gpu
                if any(d in waiting and d != step.name for d in step.after) or (uses and gpu_busy >= gpus):
                    continue
                active[step.name] = (clock + estimates.get(step.name, 0.0), uses)
                queue.pop(i)
                started = True
                break
        if not active:  # what is left waits for steps that will not run
            break
        name = min(active, key=lambda n: active[n][0])
        clock = max(clock, active.pop(name)[0])
        waiting.discard(name)
    return clock


# -- the state of a step: running files, step_states ----------------------------------------------

def running_file(workdir: Path, name: str) -> Path:
    return Path(workdir) / "logs" / f"{name}.running"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass
class StepState:
    """Where a step stands: ``done``, ``pending``, ``running``, ``failed`` or ``interrupted``."""

    name: str
    state: str
    log: Path
    detail: str = ""
    seconds: Optional[float] = None


def step_states(steps: Sequence[Step], workdir: Path) -> List[StepState]:
    """The state of each step, from its files, ``run_log.jsonl`` and ``logs/<step>.running``.

    ``running``: a runner (pid, host in the running file) is executing it; ``interrupted``: the
    running file's runner is gone (killed), or the last run was stopped by Ctrl-C; ``failed``:
    its last run ended with a non-zero status and it is not done.
    """
    workdir = Path(workdir)
    last: Dict[str, dict] = {}
    for record in read_run_log(workdir):
        last[str(record["step"])] = record
    here = socket.gethostname()
    out = []
    for step in steps:
        log = workdir / "logs" / f"{step.name}.log"
        record = last.get(step.name)
        seconds = record.get("seconds") if record else None
        marker = running_file(workdir, step.name)
        info = None
        if marker.is_file():
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                info = {}
        if info is not None:
            pid, host = info.get("pid"), info.get("host", here)
            since = info.get("started_ts")
            age = f", for {format_seconds(time.time() - since)}" if isinstance(since, (int, float)) else ""
            gpu = f", GPU {info['gpu']}" if info.get("gpu") is not None else ""
            if host != here:
                out.append(StepState(step.name, "running", log, f"on {host}, pid {pid}{gpu}{age}"))
                continue
            if isinstance(pid, int) and _pid_alive(pid):
                out.append(StepState(step.name, "running", log, f"pid {pid}{gpu}{age}"))
                continue
        if step.done():
            out.append(StepState(step.name, "done", log, "", seconds))
        elif info is not None:
            out.append(StepState(step.name, "interrupted", log, f"its runner (pid {info.get('pid')}) is gone"))
        elif record is not None and record.get("status") not in (0, None):
            if record.get("interrupted") or record.get("status") == INTERRUPTED:
                out.append(StepState(step.name, "interrupted", log, "stopped by Ctrl-C", seconds))
            else:
                out.append(StepState(step.name, "failed", log, f"exit status {record.get('status')}"
                                     + (f": {record['error']}" if record.get("error") else ""), seconds))
        else:
            out.append(StepState(step.name, "pending", log))
    return out


# -- the run --------------------------------------------------------------------------------------

class _Run:
    """One call of :func:`run_steps`: starts steps, records them, reports progress."""

    def __init__(self, plan: Plan, steps: Sequence[Step], workdir: Path, executor: Executor, jobs: int,
                 gpus: Sequence[str]):
        self.plan, self.steps, self.workdir, self.executor = plan, list(steps), Path(workdir), executor
        self.jobs, self.gpus = max(1, int(jobs)), list(gpus)
        self.env = plan_env(plan)
        self.env.update(sharing_env(self.env, self.jobs))
        self.number = {s.name: i + 1 for i, s in enumerate(self.steps)}
        self.report = RunReport()
        self.estimator = DurationEstimator(read_run_log(self.workdir))
        self.lock = threading.Lock()
        self.started: Dict[str, float] = {}  # running step -> start time
        self.pending: List[Step] = []
        self.interrupted = False

    # progress
    def left(self) -> str:
        with self.lock:
            running = dict(self.started)
        pending = [s for s in self.pending if s.name not in running]
        count = len(pending) + len(running)
        if count == 0:
            return "nothing left to run"
        estimates, rough = {}, 0
        for step in [*pending, *(s for s in self.steps if s.name in running)]:
            value, is_rough = self.estimator.estimate(step.name)
            if value is None:
                return f"{count} step{'s' if count != 1 else ''} to go"
            estimates[step.name] = value
            rough += is_rough
        now = time.time()
        going = {n: max(0.0, estimates[n] - (now - t)) for n, t in running.items()}
        seconds = estimate_left(pending, estimates, self.jobs, going, len(self.gpus))
        note = f" (rough: {rough} of them not timed yet)" if rough else ""
        return f"{count} step{'s' if count != 1 else ''} to go, about {format_seconds(seconds)} left{note}"

    def record(self, step: Step, command: List[str], status: int, seconds: float, **extra) -> None:
        line = json.dumps({"step": step.name, "command": command, "status": status, "seconds": round(seconds, 3),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
        with self.lock, open(self.workdir / RUN_LOG, "a") as out:
            out.write(line + "\n")

    def execute(self, step: Step, gpu: Optional[str]) -> Tuple[int, float, List[str]]:
        """Run one step (in the calling thread): running file, executor, run-log record."""
        command = step.current_command()
        if step.training is not None and command != step.command:
            logger.info("resuming %s (%s)", step.name, command[-1])
        log_file = self.workdir / "logs" / f"{step.name}.log"
        where = f" on GPU {gpu}" if gpu is not None else ""
        logger.info("step %d of %d: %s%s: $ %s", self.number[step.name], len(self.steps), step.name, where,
                    step.shell(command))
        env = {**self.env, **step.env}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        marker = running_file(self.workdir, step.name)
        started = time.time()
        marker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "gpu": gpu,
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "started_ts": started,
                                      "command": command}))
        with self.lock:
            self.started[step.name] = started
        try:
            try:
                status = self.executor(step, command, env, log_file)
            except KeyboardInterrupt:
                self.record(step, command, INTERRUPTED, time.time() - started, interrupted=True)
                raise
            except BaseException as exc:
                self.record(step, command, -1, time.time() - started, error=str(exc))
                raise
            seconds = time.time() - started
            if self.interrupted and status != 0:
                self.record(step, command, status, seconds, interrupted=True)
            else:
                self.record(step, command, status, seconds)
            return status, seconds, command
        finally:
            with self.lock:
                self.started.pop(step.name, None)
            try:
                marker.unlink()
            except OSError:
                pass

    def finish(self, step: Step, status: int, seconds: float, command: List[str]) -> Optional[str]:
        """Book a finished step; the error message when it failed."""
        self.report.seconds[step.name] = seconds
        log_file = self.workdir / "logs" / f"{step.name}.log"
        number = f"step {self.number[step.name]} of {len(self.steps)}"
        if status != 0:
            logger.error("%s: %s failed with status %d after %s; see %s", number, step.name, status,
                         format_seconds(seconds), log_file)
            return (f"step {step.name} failed (exit status {status}) after {seconds:.1f} s: "
                    f"{step.shell(command)}; see {log_file}.")
        if not step.done():
            logger.error("%s: %s exited normally but its outputs are missing; see %s", number, step.name, log_file)
            return (f"step {step.name} exited normally but its outputs are missing "
                    f"({', '.join(map(str, step.markers)) or 'see its done-check'}); see {log_file}")
        if command and command[-1] not in ("--c", "--val"):
            self.estimator.add(step.name, seconds)
        self.report.ran.append(step.name)
        logger.info("%s: %s done in %s; %s", number, step.name, format_seconds(seconds), self.left())
        return None

    def skip(self, step: Step) -> None:
        logger.info("[%s] already done", step.name)
        self.report.skipped.append(step.name)

    def start_message(self, todo: Sequence[Step]) -> None:
        done = len(self.steps) - len(todo)
        how = ""
        if self.jobs > 1:
            how = f", {self.jobs} at a time" + (f" (GPUs {','.join(self.gpus)})" if self.gpus else "")
        logger.info("%s: %d steps, %d already done, %d to run%s; %s", self.plan.name, len(self.steps), done,
                    len(todo), how, self.left())

    # the two schedules
    def sequential(self, todo: Sequence[Step]) -> None:
        for step in todo:
            if step.done():  # made by an earlier step (e.g. plans that share preprocessed data)
                self.skip(step)
                self.pending.remove(step)
                continue
            status, seconds, command = self.execute(step, self.gpus[0] if self.gpus and step.uses_gpu else None)
            self.pending.remove(step)
            message = self.finish(step, status, seconds, command)
            if message is not None:
                raise RuntimeError(message + (" Rerun the same command to resume." if status != 0 else ""))

    def parallel(self, todo: Sequence[Step]) -> None:
        names = {s.name for s in self.steps}
        finished = {s.name for s in self.steps} - {s.name for s in todo}
        free = list(self.gpus)
        running: Dict[Future, Tuple[Step, Optional[str]]] = {}
        failures: List[Tuple[int, str, int]] = []  # (step number, message, status)
        errors: List[BaseException] = []
        stop = False
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="step") as pool:
            try:
                while True:
                    i = 0
                    while not stop and len(running) < self.jobs and i < len(self.pending):
                        step = self.pending[i]
                        uses = bool(self.gpus) and step.uses_gpu
                        if any(d in names and d not in finished for d in step.after) or (uses and not free):
                            i += 1
                            continue
                        self.pending.pop(i)
                        if step.done():
                            self.skip(step)
                            finished.add(step.name)
                            i = 0
                            continue
                        gpu = free.pop(0) if uses else None
                        running[pool.submit(self.execute, step, gpu)] = (step, gpu)
                    if not running:
                        break
                    completed, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in completed:
                        step, gpu = running.pop(future)
                        if gpu is not None:
                            free.append(gpu)
                            free.sort(key=self.gpus.index)
                        try:
                            status, seconds, command = future.result()
                        except BaseException as exc:  # the executor raised (also KeyboardInterrupt from it)
                            logger.error("step %s: %s", step.name, exc or type(exc).__name__)
                            errors.append(exc)
                            stop = True
                            continue
                        message = self.finish(step, status, seconds, command)
                        if message is None:
                            finished.add(step.name)
                        else:
                            failures.append((self.number[step.name], message, status))
                            stop = True
                    if stop and running:
                        logger.info("not starting more steps; waiting for %s to finish",
                                    ", ".join(s.name for s, _ in running.values()))
            except KeyboardInterrupt:
                self.interrupted = True
                logger.error("interrupted; stopping %s", ", ".join(s.name for s, _ in running.values()) or "nothing")
                terminate = getattr(self.executor, "terminate", None)
                if terminate is not None:
                    terminate()
                raise
        if errors:
            raise errors[0]
        if failures:
            failures.sort()
            text = " ".join(m for _, m, _ in failures)
            if len(failures) > 1:
                text = f"{len(failures)} steps failed: {text}"
            rerun = any(status != 0 for _, _, status in failures)
            raise RuntimeError(text + (" Rerun the same command to resume." if rerun else ""))
        if self.pending:
            raise RuntimeError("steps never became ready (they wait for steps that did not run): "
                               + ", ".join(s.name for s in self.pending))

    def run(self) -> RunReport:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        clock = time.time()
        todo = [s for s in self.steps if not s.done()]
        self.report.skipped = [s.name for s in self.steps if s not in todo]
        self.pending = list(todo)
        if self.jobs > 1 and self.plan.device.startswith("cuda") and not self.gpus:
            logger.info("%d jobs share the visible GPUs; --gpus gives each its own", self.jobs)
        self.start_message(todo)
        try:
            if self.jobs > 1:
                self.parallel(todo)
            else:
                self.sequential(todo)
        finally:
            self.report.wall_seconds = time.time() - clock
        for line in run_summary(self.plan, self.steps, self.report, self.workdir):
            logger.info("%s", line)
        return self.report


def run_steps(plan: Plan, steps: Sequence[Step], workdir: Path, executor: Optional[Executor] = None,
              jobs: int = 1, gpus: Optional[Sequence[str]] = None) -> RunReport:
    """Run the steps that are not done; raise ``RuntimeError`` naming the failed step(s) and their logs.

    With ``jobs`` 1 (the default) in order, stopping at the first failure. With more, up to
    ``jobs`` steps at once, each once the steps it needs (``Step.after``) are done; a failure
    starts no more steps, lets the running ones finish, then raises. ``gpus`` (ids for
    ``CUDA_VISIBLE_DEVICES``) gives each training or prediction its own GPU, at most one such
    step per GPU at a time. The default executor logs nnU-Net's output to the step's log only.
    """
    executor = executor or subprocess_executor(echo=False)
    return _Run(plan, steps, Path(workdir), executor, jobs, list(gpus or [])).run()


def run_summary(plan: Plan, steps: Sequence[Step], report: RunReport, workdir: Path) -> List[str]:
    """Lines saying what a run did: time by phase, where the comparison and the models are."""
    lines = [f"{plan.name}: ran {len(report.ran)} step(s) in {format_seconds(report.wall_seconds)}, "
             f"{len(report.skipped)} already done"]
    phases = report.phase_seconds()
    if phases:
        lines.append("step time by phase: " + ", ".join(f"{p} {format_seconds(t)}" for p, t in phases.items()))
    compare = next((s for s in steps if s.stage == "compare"), None)
    if compare is not None:
        out = compare.markers[0].parent if compare.markers else Path(workdir) / "comparison"
        lines.append(f"comparison (table2.md, table2.csv, comparison.json, comparison.png): {out}")
    models: List[Path] = []
    for step in steps:
        if step.training is not None and step.training.fold_dir.parent not in models:
            models.append(step.training.fold_dir.parent)
    if models:
        results = config.nnunet_results(required=False)
        names = []
        for model in models:
            try:
                names.append(str(model.relative_to(results)) if results else str(model))
            except ValueError:
                names.append(str(model))
        lines.append(f"models ({len(models)}) in {results or 'nnUNet_results'}: " + ", ".join(names))
    return lines


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

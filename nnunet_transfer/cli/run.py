"""Run an experiment plan with nnU-Net's own commands: data, plans, preprocessing, training, evaluation.

    nnunet-transfer run plans/brats_ssa_table2.toml --dry-run         # print the exact commands
    nnunet-transfer run plans/brats_ssa_table2.toml                   # run (resumes where it stopped)
    nnunet-transfer run demo --folds 0 1 --strategies finetune dann   # shipped plan, a subset
    nnunet-transfer run plans/brats_ssa_table2.toml --gpus 0,1,2,3    # four jobs at once, one GPU each
    nnunet-transfer status plans/brats_ssa_table2.toml                # which steps are done, running, failed
    nnunet-transfer run plans/brats_ssa_table2.toml --emit slurm jobs/ --gres gpu:a100:1 --time 48:00:00
    bash jobs/submit.sh

The chain: synth/convert/combine the datasets; fingerprint and plan the source dataset (and
the target and combined ones); move the source plans to the target and combined datasets
(nnUNetv2_move_plans_between_datasets, plans NAME_fromSOURCE) so that architecture, patch
size and normalisation match; preprocess; write the target-domain splits; train the
fold-all source model once; train each strategy per fold (fine-tuning from the source
model's checkpoint_final.pth); predict the baseline onto the target folds; evaluate;
compare (Table 2 in WORKDIR/comparison).

Strategies may train with plans of their own (a plan's [plans_families], e.g. BrainUNet's,
derived by `nnunet-transfer brainunet-plans` after planning the source and moved like the
source plans), so one plan and one comparison can hold different networks:

    nnunet-transfer run brainunet --dry-run                           # BrainUNet: pre-train on GLI, fine-tune on SSA
    nnunet-transfer run brats_ssa_table2 --strategies brainunet_finetune   # its rows of Table 2 alone

brats_ssa_table2 trains with the paper's recipe (the _PaperRecipe trainers),
brats_ssa_table2_nnunet_recipe the same rows with nnU-Net's; give each plan a work dir of its
own (the default): the runner refuses one whose baseline predictions another model made.

Each step knows from the files it leaves whether it is done: a rerun skips finished steps
and continues interrupted trainings with --c. With --strategies, the comparison's reference
strategy (and what the chosen ones start from) is added. The runner logs a line per step
("step 17 of 42", its duration, the time left, estimated from this and earlier runs in the
work dir), each training's epochs and pseudo Dice, and a summary (time by phase, where the
comparison and the models are); nnU-Net's own output goes to WORKDIR/logs/<step>.log only
(--verbose: also to the console).

--jobs N runs up to N independent steps at once (each after the steps it needs; the CPU
threads and nnU-Net's worker pools are shared out between them unless you set
OMP_NUM_THREADS, nnUNet_n_proc_DA, ...); --gpus 0,1 gives each training or prediction a
GPU of its own (CUDA_VISIBLE_DEVICES) and defaults --jobs to the number of GPUs. A failure
starts no new steps, lets the running ones finish and names the failed ones. With
--emit slurm, --gpus is SLURM's GPU request instead (alternative to --gres).

Needs nnUNet_raw, nnUNet_preprocessed and nnUNet_results; BraTS folders in plans may use
environment variables ($BRATS_GLI).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger(__name__)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def add_selection(parser: argparse.ArgumentParser) -> None:
    """PLAN, --workdir, --folds and --strategies (shared with ``nnunet-transfer status``)."""
    parser.add_argument("plan", help="plan file (TOML), or the name of a shipped plan (brats_ssa_table2, "
                             "brats_ssa_table2_nnunet_recipe, brainunet, demo, demo_brainunet)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for synthetic data, logs, predictions and the comparison (default: runs/<plan name>)")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="target folds to run (default: all)")
    parser.add_argument("--strategies", nargs="+", default=None,
                        help="strategies to run (default: all; the ones they start from and, with a "
                             "comparison, its reference are added)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the shell commands in order, run nothing")
    parser.add_argument("--emit", nargs=2, metavar=("FORMAT", "OUTDIR"), default=None,
                        help="write job scripts instead of running: --emit slurm OUTDIR")
    parser.add_argument("-j", "--jobs", type=positive_int, default=None,
                        help="run up to N independent steps at once (default: 1, or the number of --gpus)")
    parser.add_argument("--gpus", default=None,
                        help="local GPUs for concurrent jobs, e.g. 0,1,2,3 (one each, via CUDA_VISIBLE_DEVICES); "
                             "with --emit slurm: SLURM's GPU request, alternative to --gres, e.g. 1")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--verbose", dest="stream", action="store_true",
                        help="echo nnU-Net's output to the console too (it always goes to WORKDIR/logs/<step>.log)")
    output.add_argument("--quiet", action="store_true",
                        help="do not echo nnU-Net's output (the default; kept for older scripts)")
    slurm = parser.add_argument_group("SLURM options (with --emit slurm; override the plan's [slurm] table; "
                                      "--gpus too)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--gres", default=None, help="GPU request of training jobs, e.g. gpu:a100:1")
    slurm.add_argument("--time", default=None, help="time limit, e.g. 48:00:00")
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--cpus-per-task", dest="cpus_per_task", default=None)
    slurm.add_argument("--mem", default=None, help="memory, e.g. 64G")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # the plugin's own Python steps
    # exit 0 when step NAME (of this selection) is done, steps.NOT_DONE when not: the SLURM scripts' guards
    parser.add_argument("--step-done", dest="step_done", metavar="NAME", default=None, help=argparse.SUPPRESS)


def local_gpus(text: Optional[str]) -> List[str]:
    """``--gpus 0,1,2`` as CUDA_VISIBLE_DEVICES values (ids, UUIDs or MIG names), checked.

    >>> local_gpus("0, 1,2")
    ['0', '1', '2']
    """
    if text is None:
        return []
    gpus = [g.strip() for g in str(text).split(",")]
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus {text!r}: give distinct GPU ids separated by commas, e.g. --gpus 0,1,2,3")
    return gpus


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.experiments import build_steps, dry_run, emit_slurm, load_plan, run_python_step, run_steps
    from nnunet_transfer.experiments.runner import check_sources, subprocess_executor
    from nnunet_transfer.experiments.steps import Layout

    plan = load_plan(args.plan)
    workdir = args.workdir if args.workdir is not None else Path("runs") / plan.name
    layout = Layout.from_env(plan, workdir)
    if args.step:
        run_python_step(plan, layout, args.step)
        return 0
    if getattr(args, "step_done", None):
        return step_done(plan, layout, args)
    steps = build_steps(plan, workdir, folds=args.folds, strategies=args.strategies, layout=layout)
    if args.dry_run:
        print(dry_run(plan, steps))
        return 0
    if args.emit:
        kind, out_dir = args.emit
        if kind != "slurm":
            raise ValueError(f"--emit {kind}: only 'slurm' is supported")
        options = {k: getattr(args, k) for k in ("partition", "gres", "gpus", "time", "account", "qos",
                                                 "cpus_per_task", "mem")}
        written = emit_slurm(plan, steps, out_dir, options)
        print(f"wrote {len(written) - 1} sbatch script(s) and {written[-1]}; submit with: bash {written[-1]}")
        return 0
    check_sources(plan, layout, steps)
    gpus = local_gpus(getattr(args, "gpus", None))
    if gpus and not plan.device.startswith("cuda"):
        logger.warning("--gpus %s: plan %s runs on %r, not on GPUs; ignoring --gpus", ",".join(gpus), plan.name,
                       plan.device)
        gpus = []
    jobs = getattr(args, "jobs", None) or max(1, len(gpus))
    stream = bool(getattr(args, "stream", False))
    executor = subprocess_executor(echo=stream, prefix=stream and jobs > 1)
    report = run_steps(plan, steps, layout.workdir, executor=executor, jobs=jobs, gpus=gpus)
    print(f"{plan.name}: ran {len(report.ran)} step(s) in {report.wall_seconds:.0f} s, "
          f"{len(report.skipped)} already done")
    table = layout.comparison_dir() / "table2.md"
    if table.is_file() and any(s.stage == "compare" for s in steps):
        print(table.read_text())
    return 0


def step_done(plan, layout, args: argparse.Namespace) -> int:
    """``--step-done NAME``: 0 when the step (of this selection) is done, ``NOT_DONE`` when not (SLURM guards)."""
    from nnunet_transfer.experiments import build_steps
    from nnunet_transfer.experiments.steps import NOT_DONE, steps_by_name

    quiet = logging.getLogger("nnunet_transfer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # a guard's answer is its exit status: no "added strategy" lines
    try:
        steps = build_steps(plan, layout.workdir, folds=args.folds, strategies=args.strategies, layout=layout)
    finally:
        quiet.setLevel(level)
    step = steps_by_name(steps).get(args.step_done)
    if step is None:
        raise ValueError(f"--step-done {args.step_done}: no such step in plan {plan.name} (with these --folds "
                         f"and --strategies); was the plan edited since its SLURM scripts were written? "
                         f"Emit them again")
    return 0 if step.done() else NOT_DONE

"""Run an experiment plan with nnU-Net's own commands: data, plans, preprocessing, training, evaluation.

    nnunet-transfer run plans/brats_ssa_table2.toml --dry-run         # print the exact commands
    nnunet-transfer run plans/brats_ssa_table2.toml                   # run (resumes where it stopped)
    nnunet-transfer run demo --folds 0 1 --strategies finetune dann   # shipped plan, a subset
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
and continues interrupted trainings with --c. Commands are logged with their duration;
their output goes to WORKDIR/logs/<step>.log. Needs nnUNet_raw, nnUNet_preprocessed and
nnUNet_results; BraTS folders in plans may use environment variables ($BRATS_GLI).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", help="plan file (TOML), or the name of a shipped plan (brats_ssa_table2, "
                             "brats_ssa_table2_nnunet_recipe, brainunet, demo, demo_brainunet)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for synthetic data, logs, predictions and the comparison (default: runs/<plan name>)")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="target folds to run (default: all)")
    parser.add_argument("--strategies", nargs="+", default=None,
                        help="strategies to run (default: all; the ones they start from are added)")
    parser.add_argument("--dry-run", action="store_true", help="print the shell commands in order, run nothing")
    parser.add_argument("--emit", nargs=2, metavar=("FORMAT", "OUTDIR"), default=None,
                        help="write job scripts instead of running: --emit slurm OUTDIR")
    parser.add_argument("--quiet", action="store_true", help="do not echo the commands' output (still logged)")
    slurm = parser.add_argument_group("SLURM options (with --emit slurm; override the plan's [slurm] table)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--gres", default=None, help="GPU request of training jobs, e.g. gpu:a100:1")
    slurm.add_argument("--gpus", default=None, help="alternative to --gres, e.g. 1")
    slurm.add_argument("--time", default=None, help="time limit, e.g. 48:00:00")
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--cpus-per-task", dest="cpus_per_task", default=None)
    slurm.add_argument("--mem", default=None, help="memory, e.g. 64G")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # the plugin's own Python steps


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
    report = run_steps(plan, steps, layout.workdir, executor=subprocess_executor(echo=not args.quiet))
    total = sum(report.seconds.values())
    print(f"{plan.name}: ran {len(report.ran)} step(s) in {total:.0f} s, {len(report.skipped)} already done")
    table = layout.comparison_dir() / "table2.md"
    if table.is_file() and any(s.stage == "compare" for s in steps):
        print(table.read_text())
    return 0

"""The built-in demo: every transfer strategy of the paper, end to end, on synthetic data (CPU).

    nnunet-transfer demo --workdir demo_work

It synthesises a 3T-like source domain (GLI) and a 1.5T-like target domain (SSA), converts
and combines them, fingerprints and plans the source with nnU-Net, moves those plans to the
target and combined datasets, preprocesses, writes SSA-only cross-validation splits, trains
the baseline (source only) and every strategy (combined, combined with balanced batches,
fine-tuning, fine-tuning with a frozen decoder, DANN, DANN without gradient reversal) briefly
with nnU-Net's recipe and a half-width network, predicts the baseline onto the SSA folds,
evaluates Dice and HD95, and prints the Table-2 comparison (also written with a figure to
WORKDIR/comparison).

It is the shipped plan `demo` (see `nnunet-transfer run demo --dry-run`) run through the
experiment runner, so a rerun resumes where an interrupted one stopped. nnU-Net's folders
default to WORKDIR/nnUNet_raw, WORKDIR/nnUNet_preprocessed and WORKDIR/nnUNet_results
unless nnUNet_raw, nnUNet_preprocessed and nnUNet_results are set.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# nnU-Net's worker pools follow the plan's num_processes (1 in the demo plans; the runner sets them)
CPU_DEFAULTS = {"nnUNet_compile": "f"}
# two steps at once, one core each: trainings overlap the other's start-up, validation and export
DEFAULT_JOBS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=Path("demo_work"),
                        help="folder for all demo data, models and results (default: ./demo_work)")
    parser.add_argument("--plan", default="demo", help="plan to run (default: the shipped 'demo' plan)")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="target folds to run (default: all)")
    parser.add_argument("--strategies", nargs="+", default=None, help="strategies to run (default: all)")
    parser.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"independent steps run at once, sharing the CPU cores (default: {DEFAULT_JOBS})")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--verbose", dest="stream", action="store_true",
                        help="echo nnU-Net's output to the console too (it always goes to WORKDIR/logs/<step>.log)")
    output.add_argument("--quiet", action="store_true", help="do not echo nnU-Net's output (the default)")


def prepare_environment(workdir: Path) -> None:
    """nnU-Net folders inside ``workdir`` unless set, no ``torch.compile`` on the CPU.

    The runner itself puts this plugin's trainers on ``nnUNet_extTrainer`` for every command.
    """
    from nnunet_transfer import config

    config.use_workdir_folders(workdir, create=True)
    for key, value in CPU_DEFAULTS.items():
        os.environ.setdefault(key, value)


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer import config
    from nnunet_transfer.cli import run as run_command

    args.workdir.mkdir(parents=True, exist_ok=True)
    prepare_environment(args.workdir)
    logger.info("demo work dir %s (nnUNet_raw=%s)", args.workdir, config.nnunet_raw())
    start = time.perf_counter()
    status = run_command.run(argparse.Namespace(
        plan=args.plan, workdir=args.workdir, folds=args.folds, strategies=args.strategies, dry_run=False,
        emit=None, quiet=args.quiet, stream=args.stream, step=None, jobs=args.jobs))
    logger.info("demo finished in %.1f min", (time.perf_counter() - start) / 60)
    return status

"""The ``nnunet-transfer`` console script: a thin argparse front over the package.

Each subcommand lives in its own module of this package, defining
``add_arguments(parser)`` (argparse only, cheap) and ``run(args) -> int`` (imports the
heavy modules it needs). ``nnunet-transfer --help`` therefore starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# (subcommand, module in nnunet_transfer.cli, one-line help)
SUBCOMMANDS = [
    ("env", "env", "print the environment exports nnU-Net needs to find this plugin's trainers"),
    ("synth", "synth", "write synthetic BraTS-format cases (GLI-like 3T or SSA-like 1.5T)"),
    ("convert", "convert", "convert a BraTS download into an nnU-Net raw dataset"),
    ("combine", "combine", "combine converted datasets into one two-domain dataset"),
    ("splits", "splits", "write target-domain cross-validation splits into preprocessed datasets"),
    ("to-brats", "to_brats", "turn nnU-Net predictions back into BraTS label files"),
    ("evaluate", "evaluate", "Dice and HD95 per tumour label and region, nnU-Net summary.json layout"),
    ("predict-folds", "predict_folds", "predict each target fold's validation cases with a source-domain model"),
    ("compare", "compare", "Table-2 comparison of strategies with paired statistics"),
    ("tune-postprocessing", "tune_postprocessing",
     "choose BraTS post-processing thresholds on a strategy's cross-validation predictions"),
    ("apply-postprocessing", "apply_postprocessing", "apply tuned BraTS post-processing rules to predictions"),
    ("ensemble-folds", "ensemble_folds", "ensemble strategies fold by fold with nnU-Net, for a comparison row"),
    ("brainunet-plans", "brainunet_plans", "derive BrainUNet plans from a dataset's nnU-Net plans"),
    ("segment", "segment", "segment new BraTS cases with a trained model or model bundle (BraTS label files)"),
    ("export", "export", "export a trained model as one zip bundle (segment and nnU-Net read it)"),
    ("run", "run", "run an experiment plan (plan, preprocess, train, predict, evaluate, compare)"),
    ("status", "status", "show which steps of a plan are done, pending, running or failed, with their logs"),
    ("demo", "demo", "the built-in demo: every strategy end to end on synthetic data, on the CPU"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-transfer",
        description="Transfer learning for glioma segmentation on nnU-Net v2 (BraTS GLI -> SSA). "
        "Trainers run through nnU-Net's own commands (nnUNetv2_train -tr nnUNetTrainerDANN ...); "
        "this tool converts data, writes splits, runs experiment plans, evaluates and compares.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"nnunet_transfer.cli.{module_name}")
        except ModuleNotFoundError as exc:  # subcommand not shipped in this build
            if exc.name != f"nnunet_transfer.cli.{module_name}":
                raise
            continue
        doc = (module.__doc__ or help_text).strip()
        p = sub.add_parser(name, help=help_text, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 and args.command == "env" else (
        logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("nnunet_transfer").error("interrupted; rerun the same command to resume")
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        if args.verbose > 1:
            raise
        logging.getLogger("nnunet_transfer").error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())

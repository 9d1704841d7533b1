"""Apply tuned BraTS post-processing rules to a folder of predictions.

    nnunet-transfer apply-postprocessing preds preds_pp --rules MODEL_DIR/brats_postprocessing.json
    nnunet-transfer apply-postprocessing MODEL_DIR MODEL_DIR/brats_postprocessed \\
        --rules MODEL_DIR/brats_postprocessing.json

IN_DIR is a flat folder of label maps (nnUNetv2_predict, nnUNetv2_ensemble or
nnUNetv2_apply_postprocessing output, ...) or a fold-structured one (fold_k/validation, as an
nnU-Net results folder; fold_all skipped, --folds selects); OUT_DIR gets the same layout.
Geometry and pixel type are kept; dataset.json and plans.json are copied along. The output
is staged beside OUT_DIR and moved into place when complete; OUT_DIR/
brats_postprocessing_applied.json (rules and source) marks it finished, and a rerun with the
same rules does nothing; with other rules it is redone, and predictions of cases no longer in
IN_DIR are removed from an OUT_DIR this command made. The rules file is written by `nnunet-transfer tune-postprocessing`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("in_dir", help="predictions: a flat folder or one with fold_k/validation")
    parser.add_argument("out_dir", help="output folder (same layout as IN_DIR)")
    parser.add_argument("--rules", required=True, help="rules file (brats_postprocessing.json)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="fold-structured IN_DIR: these folds only")
    parser.add_argument("--file-ending", default=None, help="image file ending (default: from dataset.json)")
    parser.add_argument("--overwrite", action="store_true", help="redo even if OUT_DIR is already current")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.postprocessing.folders import apply_to_folder
    from nnunet_transfer.postprocessing.io import read_rules

    rules = read_rules(args.rules)
    out = apply_to_folder(args.in_dir, args.out_dir, rules, num_processes=args.num_processes,
                          ending=args.file_ending, folds=args.folds, rules_file=args.rules,
                          overwrite=args.overwrite)
    print(f"{rules.describe()} -> {out}")
    return 0

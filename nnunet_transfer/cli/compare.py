"""Table-2 comparison of strategies with paired t-tests and Wilcoxon signed-rank tests.

    nnunet-transfer compare \
        --strategy "Baseline=baseline_preds" \
        --strategy "Fine-Tuning=$nnUNet_results/Dataset232_SSA/nnUNetTrainerFineTune__nnUNetPlans__3d_fullres" \
        --strategy "DANN=runs/dann/fold_0/validation/summary.json,runs/dann/fold_1/validation/summary.json" \
        --reference Baseline -o comparison

Each --strategy is NAME=PATH[,PATH...]; a PATH is an nnU-Net results folder (its
fold_k/validation folders), a predict-folds output folder, a fold or validation folder,
or a summary file written by `nnunet-transfer evaluate`. Folds without HD95 are evaluated
(references: --gt-dir, else $nnUNet_preprocessed/DatasetXXX/gt_segmentations) and cached
as validation/summary_brats.json. All strategies must cover the same folds and cases.

Prints Table 2 (mean Dice and HD95 for NCR, ED, ET and their average, mean ± std over
folds) and paired tests against --reference, per fold and per case (paired by case id);
writes table2.md, table2.csv, comparison.json and comparison.png to the output folder.

Rows with BraTS post-processing: --postprocessing NAME[=RULES_JSON] (repeat) adds the row
"NAME + post-processing" after NAME: NAME's fold predictions post-processed with its tuned
rules (default PATH/brats_postprocessing.json from `nnunet-transfer tune-postprocessing`) into
PATH/brats_postprocessed/fold_k/validation and evaluated there. An ensemble made with
`nnunet-transfer ensemble-folds` is a strategy like any results folder.

Baseline predictions from a source-domain model can be made on the fly:
    --source-model "Baseline=$nnUNet_results/Dataset231_GLI/nnUNetTrainer__nnUNetPlans__3d_fullres"
    --target-dataset 232   (runs predict-folds into OUT/Baseline first)
"""

from __future__ import annotations

import argparse


def _pair(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH[,PATH...], got {text!r}")
    name, paths = text.split("=", 1)
    if not name.strip() or not paths.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH[,PATH...], got {text!r}")
    return name.strip(), [p for p in paths.split(",") if p]


def _postprocessing(text: str):
    name, _, rules = text.partition("=")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME or NAME=RULES_JSON, got {text!r}")
    return name.strip(), (rules.strip() or None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", "-s", action="append", type=_pair, default=[], metavar="NAME=PATH[,PATH]",
                        help="a strategy to compare (repeat; order is kept in the table)")
    parser.add_argument("--reference", "-r", required=True, help="name of the strategy tested against")
    parser.add_argument("-o", "--output", default="comparison", help="output folder (default: comparison)")
    parser.add_argument("--labels", nargs="+", default=["NCR", "ED", "ET"],
                        help="structures of the table (default: NCR ED ET)")
    parser.add_argument("--folds", nargs="+", default=None, help="restrict to these folds")
    parser.add_argument("--gt-dir", default=None, help="references for folds that need evaluating")
    parser.add_argument("--hd95", choices=("medpy", "brats2023"), default="medpy", help="HD95 definition")
    parser.add_argument("--empty-penalty", type=float, default=374.0, help="HD95 when one mask is empty")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="evaluation worker processes")
    parser.add_argument("--file-ending", default=None, help="prediction file ending (default: from dataset.json)")
    parser.add_argument("--source-model", action="append", type=_pair, default=[], metavar="NAME=MODEL_DIR",
                        help="predict the target folds with this source-domain model first (see predict-folds)")
    parser.add_argument("--target-dataset", default=None, help="target dataset id or name for --source-model")
    parser.add_argument("--no-mirroring", action="store_true", help="--source-model: disable test-time mirroring")
    parser.add_argument("--postprocessing", action="append", type=_postprocessing, default=[],
                        metavar="NAME[=RULES_JSON]",
                        help="also a row 'NAME + post-processing' with NAME's tuned rules (repeat)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_transfer.evaluation.compare import compare_strategies

    strategies = {}
    out_dir = Path(args.output)
    for name, paths in args.source_model:
        if args.target_dataset is None:
            raise ValueError("--source-model needs --target-dataset")
        from nnunet_transfer.evaluation.cross_domain import predict_folds

        folds = [int(f) for f in args.folds] if args.folds else None
        target = out_dir / name.replace("/", "_")
        predict_folds(paths[0], args.target_dataset, folds, target, use_mirroring=not args.no_mirroring,
                      hd95=args.hd95, empty_penalty=args.empty_penalty, num_processes=args.num_processes)
        strategies[name] = [target]
    for name, paths in args.strategy:
        if name in strategies:
            raise ValueError(f"strategy {name!r} is given twice")
        strategies[name] = paths
    if len(strategies) < 2:
        raise ValueError("give at least two strategies (--strategy NAME=PATH, --source-model NAME=MODEL_DIR)")
    result = compare_strategies(strategies, args.reference, out_dir, labels=args.labels, gt_dir=args.gt_dir,
                                hd95=args.hd95, empty_penalty=args.empty_penalty,
                                num_processes=args.num_processes, file_ending=args.file_ending, folds=args.folds,
                                postprocessing=dict(args.postprocessing))
    print(result["markdown"])
    print("written: " + ", ".join(result["files"].values()))
    return 0

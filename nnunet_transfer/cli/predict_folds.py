"""Predict each target fold's validation cases with a source-domain model (the baseline row).

    nnunet-transfer predict-folds \
        $nnUNet_results/Dataset231_GLI/nnUNetTrainer__nnUNetPlans__3d_fullres 232 -o baseline
    nnunet-transfer predict-folds MODEL_DIR Dataset232_SSA -f 0 1 --no-mirroring --model-folds all

Reads the folds from $nnUNet_preprocessed/<target>/splits_final.json and the images from
$nnUNet_raw/<target>/imagesTr, predicts with nnU-Net's nnUNetPredictor (tile step 0.5;
cuda if available, else cpu) and writes OUT/fold_k/validation/<case>.nii.gz plus an
evaluated summary.json per fold (Dice and HD95 per label and region), so that
`nnunet-transfer compare` pairs the baseline with the other strategies case by case.
Reruns skip cases already predicted.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source_model_dir", help="nnU-Net results folder of the source-domain model")
    parser.add_argument("target_dataset", help="target dataset id or name")
    parser.add_argument("-o", "--output", required=True, help="output folder (fold_k/validation below it)")
    parser.add_argument("-f", "--folds", nargs="+", type=int, default=None, help="target folds (default: all)")
    parser.add_argument("--model-folds", nargs="+", default=None,
                        help="source model folds to use (default: every trained fold, e.g. all)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    parser.add_argument("--no-mirroring", action="store_true", help="disable test-time mirroring (faster)")
    parser.add_argument("-device", "--device", default=None, help="cuda, cpu or mps (default: cuda if available)")
    parser.add_argument("--no-evaluate", action="store_true", help="only predict, write no summary.json")
    parser.add_argument("--hd95", choices=("medpy", "brats2023"), default="medpy", help="HD95 definition")
    parser.add_argument("--empty-penalty", type=float, default=374.0, help="HD95 when one mask is empty")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="evaluation worker processes")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.evaluation.cross_domain import predict_folds

    model_folds = None
    if args.model_folds:
        model_folds = [f if f == "all" else int(f) for f in args.model_folds]
    summaries = predict_folds(args.source_model_dir, args.target_dataset, args.folds, args.output,
                              use_mirroring=not args.no_mirroring, model_folds=model_folds,
                              checkpoint_name=args.checkpoint, device=args.device, evaluate=not args.no_evaluate,
                              hd95=args.hd95, empty_penalty=args.empty_penalty, num_processes=args.num_processes)
    for fold, summary in summaries.items():
        if summary:
            fg = summary["foreground_mean"]
            print(f"fold {fold}: {len(summary['metric_per_case'])} cases, mean Dice {fg['Dice']:.4f}, "
                  f"mean HD95 {fg['HD95']:.3f}")
        else:
            print(f"fold {fold}: predicted")
    return 0

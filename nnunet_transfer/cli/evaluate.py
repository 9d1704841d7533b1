"""Evaluate predictions against references: Dice and HD95 per BraTS label and region.

    nnunet-transfer evaluate $nnUNet_raw/Dataset232_SSA/labelsTr preds -o preds/summary.json
    nnunet-transfer evaluate GT_DIR PRED_DIR --hd95 brats2023 --lesion-wise -np 4

Writes a summary in the layout of nnU-Net's summary.json (metric_per_case, mean,
foreground_mean) with, per case and per label (NCR=1, ED=2, ET=3) and region (WT=1+2+3,
TC=1+3, ET-region=3): Dice, IoU, HD95 in mm, TP/FP/FN/TN, n_ref/n_pred and volumes.
HD95 "medpy" (default): 95th percentile of the pooled border distances of both directions
(MedPy's hd95, in mm); "brats2023": DeepMind surface-distance style, area weighted, the larger
directed 95th percentile (BraTS 2023 challenge). They agree within about a voxel unless false
positives or misses exceed about 5 % of a surface; then they can differ by tens of mm.
panoptica/brats-evaluation's HD95 is in voxels (spacing ignored), inf without overlap, 373/NaN
for one/two empty masks: not comparable with either. Both empty: Dice 1,
HD95 0; one empty: Dice 0, HD95 --empty-penalty (374 mm). The mean Dice/HD95 of each
structure is printed.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt_dir", help="folder of reference label maps")
    parser.add_argument("pred_dir", help="folder of predicted label maps (same file names)")
    parser.add_argument("-o", "--output", default=None,
                        help="summary file to write (default: PRED_DIR/summary.json)")
    regions = parser.add_mutually_exclusive_group()
    regions.add_argument("--regions", dest="regions", action="store_true", default=True,
                         help="also evaluate WT, TC and ET-region (default)")
    regions.add_argument("--no-regions", dest="regions", action="store_false", help="labels only")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--hd95", choices=("medpy", "brats2023"), default="medpy", help="HD95 definition")
    parser.add_argument("--lesion-wise", action="store_true", help="add BraTS 2023 lesion-wise Dice and HD95")
    parser.add_argument("--empty-penalty", type=float, default=374.0,
                        help="HD95 in mm when exactly one mask is empty (default 374)")
    parser.add_argument("--file-ending", default=".nii.gz", help="image file ending (default .nii.gz)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_transfer.evaluation.evaluate import evaluate_folder

    output = Path(args.output) if args.output else Path(args.pred_dir) / "summary.json"
    summary = evaluate_folder(args.gt_dir, args.pred_dir, output, regions=args.regions,
                              num_processes=args.num_processes, hd95=args.hd95, lesion_wise=args.lesion_wise,
                              file_ending=args.file_ending, empty_penalty=args.empty_penalty)
    print(f"{len(summary['metric_per_case'])} cases -> {output}")
    print(f"{'structure':<10} {'Dice':>8} {'HD95':>9}")
    for name, values in summary["mean"].items():
        print(f"{name:<10} {values['Dice']:>8.4f} {values['HD95']:>9.3f}")
    fg = summary["foreground_mean"]
    print(f"{'average':<10} {fg['Dice']:>8.4f} {fg['HD95']:>9.3f}")
    return 0

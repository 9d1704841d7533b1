"""Tune BraTS post-processing on a strategy's cross-validation predictions (nnU-Net style).

    nnunet-transfer tune-postprocessing \\
        $nnUNet_results/Dataset232_SSA/nnUNetTrainerFineTune__nnUNetPlans_from231__3d_fullres
    nnunet-transfer tune-postprocessing MODEL_DIR --folds 0 1 2 --metric dice -np 4
    nnunet-transfer tune-postprocessing --predictions runs/ensemble --labels GT_DIR -o rules.json

Rules (thresholds in mm^3; see docs/postprocessing.md): remove 26-connected components
smaller than a threshold per region WT, TC, ET (--structures adds the labels NCR, ED; a
removed component takes the label around it), then relabel all ET as NCR when the case's
ET volume or ET/TC ratio is below a threshold.

Tuning pools the validation predictions of all folds (MODEL_DIR/fold_k/validation/*.nii.gz,
fold_all skipped; a flat --predictions folder counts as one fold) and, like nnU-Net's
find_best_configuration, tries one rule at a time, in the order above, keeping the best
threshold only if it improves the metric: per case the mean over WT, TC, ET of the BraTS 2023
lesion-wise Dice (--metric lesion-dice, default) or of the Dice (--metric dice), averaged over
cases. References: $nnUNet_preprocessed/DatasetXXX/gt_segmentations, else
$nnUNet_raw/DatasetXXX/labelsTr (--labels overrides).

Writes MODEL_DIR/brats_postprocessing.json (or -o FILE; atomically): the rules, with the
score of every candidate and the metric before and after each rule. Apply the rules with
`nnunet-transfer apply-postprocessing`, or add a "+ post-processing" row to the comparison
with `nnunet-transfer compare --postprocessing NAME`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", nargs="?", default=None,
                        help="the strategy's results folder (Dataset.../Trainer__Plans__Config with fold_k/validation)")
    parser.add_argument("--predictions", default=None,
                        help="predictions to tune on instead of MODEL_DIR: fold-structured or a flat folder")
    parser.add_argument("--labels", default=None, help="reference label maps (default: the dataset's gt_segmentations)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to pool (default: every fold_k)")
    parser.add_argument("--metric", choices=("lesion-dice", "dice"), default="lesion-dice",
                        help="score to maximise, averaged over the regions (default: lesion-dice)")
    parser.add_argument("--regions", nargs="+", choices=("WT", "TC", "ET"), default=["WT", "TC", "ET"],
                        help="regions the score averages over (default: WT TC ET)")
    parser.add_argument("--structures", nargs="+", choices=("WT", "TC", "ET", "NCR", "ED"),
                        default=["WT", "TC", "ET"],
                        help="structures whose small components are tuned (default: WT TC ET)")
    parser.add_argument("--component-mm3", nargs="+", type=float, default=None, metavar="MM3",
                        help="candidate minimum component volumes (default: 10 25 50 75 100 150 200 300 500)")
    parser.add_argument("--et-volume-mm3", nargs="*", type=float, default=None, metavar="MM3",
                        help="candidate ET volumes for ET -> NCR (default: 25 ... 1000; none: skip the rule)")
    parser.add_argument("--et-tc-ratio", nargs="*", type=float, default=None, metavar="RATIO",
                        help="candidate ET/TC ratios for ET -> NCR (default: 0.01 ... 0.3; none: skip the rule)")
    parser.add_argument("-o", "--output", default=None,
                        help="rules file (default: MODEL_DIR/brats_postprocessing.json, or in --predictions)")
    parser.add_argument("--file-ending", default=None, help="prediction file ending (default: from dataset.json)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.postprocessing.tune import Candidates, tune_folder

    if (args.model_dir is None) == (args.predictions is None):
        raise ValueError("give either MODEL_DIR or --predictions DIR (with --labels DIR unless the references "
                         "can be found from the folder)")
    defaults = Candidates()
    candidates = Candidates(
        component_mm3=defaults.component_mm3 if args.component_mm3 is None else tuple(args.component_mm3),
        et_volume_mm3=defaults.et_volume_mm3 if args.et_volume_mm3 is None else tuple(args.et_volume_mm3),
        et_tc_ratio=defaults.et_tc_ratio if args.et_tc_ratio is None else tuple(args.et_tc_ratio),
        structures=tuple(args.structures))
    source = args.predictions or args.model_dir
    result = tune_folder(source, labels=args.labels, folds=args.folds, metric=args.metric, candidates=candidates,
                         regions=args.regions, output=args.output, num_processes=args.num_processes,
                         file_ending=args.file_ending)
    print(result.table())
    from pathlib import Path

    from nnunet_transfer.postprocessing.io import FILE_NAME
    from nnunet_transfer.postprocessing.sources import expand

    print(f"written: {args.output or Path(expand(source)) / FILE_NAME}")
    return 0

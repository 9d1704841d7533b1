"""Ensemble strategies fold by fold (nnU-Net's ensembling), for a comparison row.

    nnunet-transfer ensemble-folds -o runs/ensemble_dann_ft \\
        $nnUNet_results/Dataset233_GLISSA/nnUNetTrainerDANN__nnUNetPlans_from231__3d_fullres \\
        $nnUNet_results/Dataset232_SSA/nnUNetTrainerFineTune__nnUNetPlans_from231__3d_fullres

Averages the members' softmax probabilities of every fold's validation cases
(MEMBER/fold_k/validation/*.npz, saved by `nnUNetv2_train ... --npz`, or afterwards by
`nnUNetv2_train ... --val --npz`) with nnU-Net's merge_files (what nnUNetv2_ensemble
runs per case) and writes OUT/fold_k/validation/<case>.nii.gz plus dataset.json, plans.json and
ensemble.json. Members must validate the same cases per fold and share the label set; they
may come from different datasets. OUT is then a strategy for `nnunet-transfer compare -s
"DANN + FT=OUT"` and predictions for `nnunet-transfer tune-postprocessing --predictions OUT`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("members", nargs="+", help="nnU-Net results folders (Dataset.../Trainer__Plans__Config)")
    parser.add_argument("-o", "--output", required=True, help="output folder (fold_k/validation below it)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds (default: every fold_k of the first)")
    parser.add_argument("--overwrite", action="store_true", help="redo even if OUT already holds this ensemble")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.evaluation.ensemble import ensemble_folds

    out = ensemble_folds(args.members, args.output, folds=args.folds, num_processes=args.num_processes,
                         overwrite=args.overwrite)
    print(f"ensemble of {len(args.members)} models -> {out}")
    return 0

"""Export a trained model as one zip bundle (for a clinic, or another machine).

MODEL is an nnU-Net results folder ($nnUNet_results/DatasetXXX_Name/Trainer__Plans__Config).
The bundle holds plans.json, dataset.json, dataset_fingerprint.json, the chosen folds'
checkpoints, the post-processing files when present (brats_postprocessing.json, nnU-Net's
postprocessing.pkl) and a manifest (versions, trainer names, channels, checksums). Its paths
are relative to nnUNet_results, so nnU-Net installs it too:
`nnUNetv2_install_pretrained_model_from_zip bundle.zip`. `nnunet-transfer segment -m
bundle.zip` reads it directly.

Example:
  nnunet-transfer export \\
      $nnUNet_results/Dataset235_SSA/nnUNetTrainerBrainUNetFineTune__nnUNetPlans_BrainUNet__3d_fullres \\
      brainunet_ssa.zip --folds 0 1 2 3 4
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="nnU-Net results folder (Trainer__Plans__Config)")
    parser.add_argument("bundle", help="the zip file to write")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to include (default: every trained fold, else fold all)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference.bundle import bundle_summary, export_bundle

    path = export_bundle(args.model, args.bundle, folds=args.folds, checkpoint=args.checkpoint)
    info = bundle_summary(path)
    print(f"wrote {path} ({info['megabytes']:.1f} MB): {info['model']}, folds "
          f"{', '.join(map(str, info['folds']))}, trainer(s) {', '.join(info['trainers'] or ['?'])}, channels "
          f"{', '.join(info['channels'])}; post-processing: {', '.join(info['postprocessing']) or 'none'}")
    return 0

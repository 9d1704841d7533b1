"""Derive BrainUNet plans from a dataset's nnU-Net plans.

Reads $nnUNet_preprocessed/DatasetXXX_Name/<plans>.json (default nnUNetPlans, made by
nnUNetv2_plan_experiment) and writes <output>.json (default nnUNetPlans_BrainUNet) next to
it: the attention residual U-Net with fewer features, residual blocks fitted so that the
training checkpoint stays under the size budget, and percentile-clipping z-score
normalisation (installed into nnU-Net's normalisation folder, which is the only place
nnU-Net looks for schemes). Then preprocess with the new plans, train and predict:

  nnunet-transfer brainunet-plans 233
  nnUNetv2_preprocess -d 233 -plans_name nnUNetPlans_BrainUNet -c 3d_fullres
  nnUNetv2_train 233 3d_fullres 0 -tr nnUNetTrainerBrainUNet -p nnUNetPlans_BrainUNet
  nnUNetv2_predict -i imagesTs -o preds -d 233 -c 3d_fullres -f 0 -tr nnUNetTrainerBrainUNet -p nnUNetPlans_BrainUNet

Rerunning overwrites the derived plans with the same content.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset id (233) or name (Dataset233_BraTSSSA)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="source plans name (default: nnUNetPlans)")
    parser.add_argument("-o", "--output", default="nnUNetPlans_BrainUNet",
                        help="derived plans name (default: nnUNetPlans_BrainUNet)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to convert (default: all that define an architecture)")
    parser.add_argument("--max-checkpoint-mb", type=float, default=85.0,
                        help="size budget of the training checkpoint, weights + optimizer state (default: 85)")
    parser.add_argument("--width-divisor", type=int, default=2,
                        help="divide nnU-Net's features per stage by this (default: 2)")
    parser.add_argument("--max-features", type=int, default=None, help="cap the features of any stage")
    parser.add_argument("--keep-normalization", action="store_true",
                        help="keep nnU-Net's normalisation (and its preprocessed data) instead of percentile clipping")
    parser.add_argument("--no-install-scheme", action="store_true",
                        help="do not install the normalisation shim into nnU-Net's package")


def _dataset_folder(dataset: str):
    from nnunet_transfer import config

    root = config.nnunet_preprocessed()
    if dataset.isdigit():
        matches = sorted(root.glob(f"Dataset{int(dataset):03d}_*"))
        if not matches:
            raise FileNotFoundError(f"no preprocessed dataset with id {dataset} in {root}; run "
                                    f"nnUNetv2_plan_experiment -d {dataset} first")
        return matches[0]
    folder = root / dataset
    if not folder.is_dir():
        raise FileNotFoundError(f"no preprocessed dataset {dataset!r} in {root}")
    return folder


def run(args: argparse.Namespace) -> int:
    import json

    from nnunet_transfer.brainunet.normalization import install_scheme
    from nnunet_transfer.brainunet.plans import derive_brainunet_plans
    from nnunet_transfer.planning import write_plans

    folder = _dataset_folder(str(args.dataset))
    source = folder / f"{args.plans}.json"
    if not source.is_file():
        raise FileNotFoundError(f"plans file {source} not found; run nnUNetv2_plan_experiment -d {args.dataset} "
                                f"(or name existing plans with -p)")
    if args.output == args.plans:
        raise ValueError(f"the derived plans need another name than the source plans ({args.plans})")
    try:
        plans = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"plans file {source} is not valid JSON: {exc}") from exc
    dataset_json_file = folder / "dataset.json"
    dataset_json = json.loads(dataset_json_file.read_text()) if dataset_json_file.is_file() else None
    new = derive_brainunet_plans(plans, args.output, args.configurations, dataset_json,
                                 width_divisor=args.width_divisor, max_features=args.max_features,
                                 max_checkpoint_mb=args.max_checkpoint_mb,
                                 percentile_normalization=not args.keep_normalization)
    target = write_plans(folder, new)
    if not args.keep_normalization and not args.no_install_scheme:
        install_scheme()
    print(f"wrote {target}")
    for name, info in new["brainunet"]["configurations"].items():
        print(f"  {name}: {info['parameters'] / 1e6:.2f} M parameters, checkpoint ~{info['estimated_checkpoint_mb']:.1f} "
              f"MB, features {info['features_per_stage']}, residual blocks {info['n_blocks_per_stage']}, data "
              f"{new['configurations'][name].get('data_identifier', '(inherited)')}")
    return 0

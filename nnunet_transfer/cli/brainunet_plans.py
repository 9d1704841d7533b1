"""Derive BrainUNet plans from a dataset's nnU-Net plans.

Reads $nnUNet_preprocessed/DatasetXXX_Name/<plans>.json (default nnUNetPlans, made by
nnUNetv2_plan_experiment) and writes <output>.json (default nnUNetPlans_BrainUNet) next to
it: the attention residual U-Net with fewer features, residual blocks fitted so that the
training checkpoint stays under the size budget. nnU-Net's preprocessing is kept (its
z-score within the brain, use_mask_for_norm), in the plans' own data folder
(<output>_<configuration>); BrainUNet's percentile clipping happens at conversion
(nnunet-transfer convert --clip-percentiles 0.5 99.5), and a note says when the dataset
was converted without it. Nothing is written outside the dataset's preprocessed folder.

  nnunet-transfer convert /data/BraTS-SSA -d 233 -n BraTSSSA --clip-percentiles 0.5 99.5
  nnUNetv2_extract_fingerprint -d 233 && nnUNetv2_plan_experiment -d 233
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


def _dataset_json(folder):
    """The dataset.json nnU-Net copied into the preprocessed folder, else the raw dataset's, else None."""
    import json

    from nnunet_transfer import config

    raw = config.nnunet_raw(required=False)
    for candidate in (folder / "dataset.json", raw / folder.name / "dataset.json" if raw else None):
        if candidate is not None and candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def run(args: argparse.Namespace) -> int:
    import json

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
    dataset_json = _dataset_json(folder)
    new = derive_brainunet_plans(plans, args.output, args.configurations, dataset_json,
                                 width_divisor=args.width_divisor, max_features=args.max_features,
                                 max_checkpoint_mb=args.max_checkpoint_mb)
    target = write_plans(folder, new)
    print(f"wrote {target}")
    clipping = new["brainunet"]["intensity_clipping"]
    if clipping:
        print(f"  images clipped at conversion to percentiles {clipping['percentiles']} ({clipping['within']} voxels)")
    elif dataset_json is not None:
        print("  note: the dataset was converted without --clip-percentiles (BrainUNet uses 0.5 99.5)")
    for name, info in new["brainunet"]["configurations"].items():
        print(f"  {name}: {info['parameters'] / 1e6:.2f} M parameters, checkpoint ~{info['estimated_checkpoint_mb']:.1f} "
              f"MB, features {info['features_per_stage']}, residual blocks {info['n_blocks_per_stage']}, data "
              f"{new['configurations'][name].get('data_identifier', '(inherited)')}")
    return 0

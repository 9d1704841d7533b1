"""Write target-domain cross-validation splits (splits_final.json) into preprocessed datasets.

k folds over the target-domain cases only, identical in every dataset given; all other
cases always train. Files go to $nnUNet_preprocessed/DatasetXXX_Name/splits_final.json,
where nnUNetv2_train uses them (fold 0..k-1).

Example:
  nnunet-transfer splits 232 233 --target-domain SSA --folds 10 --seed 12345
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", help="ids (or DatasetXXX_Name) of the datasets")
    parser.add_argument("--target-domain", required=True, help="domain whose cases are validated, e.g. SSA")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=12345, help="random seed (default 12345, nnU-Net's)")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.dataset_conversion import write_target_splits

    ids = [int(d) if str(d).isdigit() else d for d in args.datasets]
    folds = write_target_splits(ids, args.target_domain, folds=args.folds, seed=args.seed)
    sizes = ", ".join(str(len(f["val"])) for f in folds)
    print(f"wrote {len(folds)} folds of {args.target_domain} cases (validation sizes {sizes}) for "
          f"{len(ids)} dataset(s)")
    return 0

"""Combine converted nnU-Net datasets into one multi-domain dataset (symlinks by default).

The inputs must share channels, labels and file ending, and their case ids must not
collide; the new dataset.json merges their "domains" maps. ``--target-domain`` records
which domain the plugin's trainers adapt to (dataset.json ``target_domain``); without it they
take the rarest domain of a fold's training cases.

Example:
  nnunet-transfer combine 231 232 -d 233 -n BraTS23GLI_SSA --target-domain SSA
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", help="ids (or DatasetXXX_Name) of the raw datasets to combine")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="id of the combined dataset")
    parser.add_argument("-n", "--name", required=True, help="name of the combined dataset")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of symlinking them")
    parser.add_argument("--target-domain", default=None,
                        help="the domain to adapt to, written to dataset.json as target_domain (default: none; the "
                             "trainers then take the rarest domain of each fold's training cases)")


def run(args: argparse.Namespace) -> int:
    import json

    from nnunet_transfer.dataset_conversion import combine_datasets

    ids = [int(d) if str(d).isdigit() else d for d in args.datasets]
    target = combine_datasets(ids, args.dataset_id, args.name, link=not args.copy, target_domain=args.target_domain)
    data = json.loads((target / "dataset.json").read_text())
    counts = {}
    for domain in data["domains"].values():
        counts[domain] = counts.get(domain, 0) + 1
    print(f"{target}: {data['numTraining']} training case(s); domains "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0

"""Combine converted nnU-Net datasets into one multi-domain dataset (symlinks by default).

The inputs must share channels, labels and file ending, and their case ids must not
collide; the new dataset.json merges their "domains" maps.

Example:
  nnunet-transfer combine 231 232 -d 233 -n BraTS23GLI_SSA
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", nargs="+", help="ids (or DatasetXXX_Name) of the raw datasets to combine")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="id of the combined dataset")
    parser.add_argument("-n", "--name", required=True, help="name of the combined dataset")
    parser.add_argument("--copy", action="store_true", help="copy the files instead of symlinking them")


def run(args: argparse.Namespace) -> int:
    import json

    from nnunet_transfer.dataset_conversion import combine_datasets

    ids = [int(d) if str(d).isdigit() else d for d in args.datasets]
    target = combine_datasets(ids, args.dataset_id, args.name, link=not args.copy)
    data = json.loads((target / "dataset.json").read_text())
    counts = {}
    for domain in data["domains"].values():
        counts[domain] = counts.get(domain, 0) + 1
    print(f"{target}: {data['numTraining']} training case(s); domains "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0

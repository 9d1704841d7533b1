"""Turn nnU-Net predictions back into BraTS label files for challenge submission.

Reads every .nii.gz/.nii in PRED_DIR (labels NCR=1, ED=2, ET=3) and writes uint8 files
of the same names to OUT_DIR: --style 2023 (also 2024) keeps the labels, --style 2021
writes enhancing tumour as 4.

Example:
  nnunet-transfer to-brats predictions/ submission/ --style 2021
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", help="folder of nnU-Net predictions")
    parser.add_argument("out_dir", help="folder to write the BraTS label files into (replaced)")
    parser.add_argument("--style", choices=["2021", "2023", "2024"], default="2023",
                        help="BraTS label convention (default 2023)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_transfer.dataset_conversion import to_brats

    written = to_brats(Path(args.pred_dir), Path(args.out_dir), style=args.style)
    print(f"wrote {len(written)} BraTS {args.style} label file(s) to {args.out_dir}")
    return 0

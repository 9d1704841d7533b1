"""Write synthetic BraTS 2023-format cases: GLI-like (3T) or SSA-like (1.5T) brains with gliomas.

    nnunet-transfer synth data/GLI --domain GLI -n 20
    nnunet-transfer synth data/SSA --domain SSA -n 10 --seed 1
    nnunet-transfer synth data/full --domain GLI -n 2 --shape 240 240 155   # BraTS size

Each case is a folder BraTS-<DOMAIN>-<index>-000 holding -t1n, -t1c, -t2w, -t2f and -seg
.nii.gz files (labels 0 background, 1 NCR, 2 ED, 3 ET) over the BraTS field of view
(240 x 240 x 155 mm, so the spacing is 240/shape). The SSA domain imitates 1.5T scans: thick
slices resampled back, blur, stronger noise, bias field, occasional ghosting, other
intensity scales and larger tumours. `--tumours GLI` keeps a domain's scanner and draws
the other population's tumours (an SSA scanner shift without SSA's later-stage tumours):

    nnunet-transfer synth data/SSA_scanner --domain SSA --tumours GLI -n 10

Case k is the same for a given seed whatever -n is; complete case folders already present
are kept, and the folder's synth.json records the settings, so adding cases of another
domain, tumour population, seed or shape to it is refused (--overwrite replaces them).
Convert them with `nnunet-transfer convert`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, help="folder to write the case folders into")
    parser.add_argument("--domain", default="GLI", type=str.upper, choices=["GLI", "SSA"],
                        help="scanner domain to imitate (default: GLI)")
    parser.add_argument("-n", "--num-cases", dest="n", type=int, default=4, help="number of cases (default: 4)")
    parser.add_argument("--tumours", default=None, type=str.upper, choices=["GLI", "SSA"],
                        help="draw the tumours of this domain's population (default: the --domain's own)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48], metavar=("X", "Y", "Z"),
                        help="image size in voxels (default: 64 64 48; BraTS size: 240 240 155)")
    parser.add_argument("--start-index", type=int, default=0, help="index of the first case (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite case folders that already exist")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.synth import write_brats_cases

    folders = write_brats_cases(args.out_dir, domain=args.domain, n=args.n, seed=args.seed,
                                shape=tuple(args.shape), start_index=args.start_index, overwrite=args.overwrite,
                                tumours=args.tumours)
    tumours = f" with {args.tumours} tumours" if args.tumours and args.tumours != args.domain else ""
    print(f"{len(folders)} {args.domain} cases{tumours} in {args.out_dir}")
    return 0

"""Convert a BraTS download into an nnU-Net raw dataset ($nnUNet_raw/DatasetXXX_Name).

Recognises BraTS 2023/2024 folders (BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz,
also SSA, PED, MEN, MET) and BraTS 2021 folders (BraTS2021_00000/..._t1ce.nii.gz).
Channels 0000=T1 (t1n), 0001=T1Gd (t1c), 0002=T2 (t2w), 0003=FLAIR (t2f); labels
NCR=1, ED=2, ET=3 (2021's 4 becomes 3). Cases without a segmentation go to imagesTs.

--unlabelled makes every case without a segmentation an unlabelled training case instead
(imagesTr, a label file of nnU-Net's ignore label only; dataset.json gets "ignore": 4 in its
labels and lists the cases under "unlabelled"); --unlabelled-list FILE does so for the case
ids in FILE only (one a line, '#' comments). Folds from `nnunet-transfer splits` never
validate unlabelled cases and train on them in every fold.
Every case is checked first; a defective case stops the conversion (nothing is written)
unless --skip-bad is given.

--clip-percentiles LOW HIGH clips every image channel of every case (training and test) to
that image's own LOW/HIGH percentiles inside the brain (its nonzero voxels) and writes it
as float32; dataset.json records it under "intensity_clipping". BrainUNet uses 0.5 99.5.
Convert the cases you will predict on later with the same flag. Not with --link.

Examples:
  nnunet-transfer convert /data/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData -d 231 -n BraTS23GLI -np 8
  nnunet-transfer convert /data/BraTS2023-SSA-TrainingData_V2 -d 232 -n BraTS23SSA --modalities t2f t1c t2w
  nnunet-transfer convert /data/BraTS2023-SSA-TrainingData_V2 -d 242 -n BraTS23SSAclip --clip-percentiles 0.5 99.5
  nnunet-transfer convert /data/hospital -d 250 -n HospitalUDA --unlabelled
  nnunet-transfer convert /data/hospital -d 251 -n HospitalSemi --unlabelled-list to_adapt_on.txt
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the BraTS folder holding the case folders")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    parser.add_argument("-n", "--name", required=True, help="dataset name, e.g. BraTS23GLI")
    parser.add_argument("--modalities", nargs="+", metavar="MOD",
                        help="channels to keep, in this order (t1n t1c t2w t2f; default: all four)")
    parser.add_argument("--regions", action="store_true",
                        help="region-based dataset.json (whole tumour, tumour core, enhancing tumour)")
    parser.add_argument("--domain", help="domain of every case (default: from the case prefix, e.g. GLI, SSA)")
    parser.add_argument("--link", action="store_true", help="symlink files that need no rewriting instead of copying")
    parser.add_argument("--clip-percentiles", nargs=2, type=float, metavar=("LOW", "HIGH"), default=None,
                        help="clip each image to its own LOW/HIGH percentiles inside the brain (nonzero voxels) and "
                             "write float32, e.g. 0.5 99.5 for BrainUNet (not with --link)")
    unlabelled = parser.add_mutually_exclusive_group()
    unlabelled.add_argument("--unlabelled", action="store_true",
                            help="every case without a segmentation becomes an unlabelled training case (label file "
                                 "of nnU-Net's ignore label only) instead of a test case")
    unlabelled.add_argument("--unlabelled-list", metavar="FILE", default=None,
                            help="only the case ids in FILE (one a line, '#' comments) become unlabelled training "
                                 "cases; each must be a case without a segmentation")
    parser.add_argument("--skip-bad", action="store_true", help="convert the good cases and list the defective ones")
    parser.add_argument("--full-check", action="store_true",
                        help="also decompress integer images to prove them readable (slower)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from nnunet_transfer.dataset_conversion import convert_brats

    target = convert_brats(Path(args.source), args.dataset_id, args.name, modalities=args.modalities,
                           regions=args.regions, domain=args.domain, link=args.link, skip_bad=args.skip_bad,
                           num_processes=args.num_processes, full_check=args.full_check,
                           clip_percentiles=tuple(args.clip_percentiles) if args.clip_percentiles else None,
                           unlabelled=args.unlabelled, unlabelled_list=args.unlabelled_list)
    data = json.loads((target / "dataset.json").read_text())
    counts = {}
    for domain in data["domains"].values():
        counts[domain] = counts.get(domain, 0) + 1
    total = len(data["domains"])
    unlabelled = len(data.get("unlabelled", []))
    print(f"{target}: {data['numTraining']} training" + (f" ({unlabelled} unlabelled)" if unlabelled else "")
          + f", {total - data['numTraining']} test case(s); domains "
          + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    clipping = data.get("intensity_clipping")
    if clipping:
        low, high = clipping["percentiles"]
        print(f"images clipped to their {low:g}th and {high:g}th percentiles within the {clipping['within']} voxels")
    skipped = data.get("conversion", {}).get("skipped", {})
    if skipped:
        print(f"skipped {len(skipped)} defective case(s):")
        for case_id, problems in skipped.items():
            print(f"  {case_id}: {'; '.join(problems)}")
    return 0

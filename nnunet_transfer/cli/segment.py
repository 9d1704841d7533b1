"""Segment new BraTS cases with a trained model or a model bundle (nnU-Net's own predictor, in-process).

CASE_DIR is a case folder in any layout `convert` reads (BraTS-GLI-00000-000/...-t1n.nii.gz,
BraTS2021_00000/..._t1ce.nii, ...) or a folder of case folders. MODEL is an nnU-Net results
folder ($nnUNet_results/DatasetXXX_Name/Trainer__Plans__Config) or a bundle written by
`nnunet-transfer export`. The images are taken in the model's channel order, checked and,
when the model was trained on percentile-clipped data, clipped as `convert` clipped it.
Writes OUT_DIR/<case_id>.nii.gz in the BraTS label convention (--style 2023: ET=3, 2021:
ET=4) with the input's geometry. Defective cases are refused (case, file and defect named)
and the others go on; the exit status is 1 when any case was refused.

Examples:
  nnunet-transfer segment /data/new_cases -m brainunet_ssa.zip -o labels -device cpu
  nnunet-transfer segment BraTS-SSA-00123-000 BraTS-SSA-00124-000 -o labels --folds 0 1 --style 2021 \\
      -m $nnUNet_results/Dataset232_BraTS23SSA/nnUNetTrainerFineTune__nnUNetPlans__3d_fullres
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="+", metavar="CASE_DIR", help="case folders, or folders of case folders")
    parser.add_argument("-m", "--model", required=True, help="nnU-Net results folder or model bundle (.zip)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the label files")
    parser.add_argument("-device", "--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where to predict (default auto: cuda when torch sees a GPU, else cpu)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="model folds to ensemble (default: every trained fold, else fold all)")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    parser.add_argument("--no-mirroring", "--disable-tta", dest="no_mirroring", action="store_true",
                        help="no test-time mirroring (up to 8x faster, slightly less accurate)")
    parser.add_argument("--not-on-device", action="store_true",
                        help="keep sliding-window results in CPU memory (large cases on small GPUs)")
    parser.add_argument("--step-size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    parser.add_argument("--engine", choices=["torch", "openvino", "onnxruntime"], default="torch",
                        help="what runs the network: torch (default, nnU-Net's own), or on the CPU openvino (about "
                             "3x faster) or onnxruntime; needs pip install \"nnunet-transfer[openvino]\" (or "
                             "[onnxruntime]). nnU-Net's predictor does the rest either way")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the network (default: the number of cores)")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="do not apply the model's post-processing (brats_postprocessing.json or nnU-Net's "
                             "postprocessing.pkl)")
    parser.add_argument("--style", choices=["2021", "2023", "2024"], default="2023",
                        help="BraTS label convention (default 2023: ET=3; 2021: ET=4)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>.npz (probabilities) and <case>.pkl, as nnUNetv2_predict does")


def run(args: argparse.Namespace) -> int:
    from nnunet_transfer.inference import SegmentOptions, segment

    options = SegmentOptions(device=args.device, folds=args.folds, checkpoint=args.checkpoint,
                             use_mirroring=not args.no_mirroring, perform_everything_on_device=not args.not_on_device,
                             step_size=args.step_size, postprocessing=not args.no_postprocessing, style=args.style,
                             save_probabilities=args.save_probabilities, engine=args.engine, threads=args.threads)
    report = segment(args.cases, args.model, args.output, options)
    print(report.summary())
    if report.refused:
        print(f"{len(report.refused)} case(s) refused: {', '.join(report.refused)}")
        return 1
    return 0

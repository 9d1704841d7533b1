"""Segment new BraTS cases with a trained model, and package models as bundles for clinics.

- ``segment(cases, model, out_dir, options)``: raw case folders (any layout ``convert``
  reads) -> BraTS label files, through nnU-Net's own predictor, in-process;
- ``SegmentOptions``: device, folds, checkpoint, mirroring, post-processing, label style, and the
  network's engine on the CPU (torch, openvino, onnxruntime: ``engines``) and threads;
- ``Segmenter``: one model and predictor for many cases (what ``segment`` uses);
- ``export_bundle(model, "bundle.zip")`` / ``opened_bundle("bundle.zip")``: a model folder as one
  zip that ``segment`` reads and ``nnUNetv2_install_pretrained_model_from_zip`` installs;
- ``load_model``: a checked model folder (channels, clipping, folds, post-processing files).

Example:
    >>> from nnunet_transfer.inference import SegmentOptions
    >>> SegmentOptions(device="cpu", use_mirroring=False).checkpoint
    'checkpoint_final.pth'
"""

from nnunet_transfer.inference.bundle import export_bundle, extract_bundle, is_bundle, opened_bundle, read_manifest
from nnunet_transfer.inference.cases import find_cases
from nnunet_transfer.inference.model import Model, load_model
from nnunet_transfer.inference.segmenter import SegmentOptions, SegmentReport, Segmenter, segment

__all__ = ["Model", "SegmentOptions", "SegmentReport", "Segmenter", "export_bundle", "extract_bundle", "find_cases",
           "is_bundle", "load_model", "opened_bundle", "read_manifest", "segment"]

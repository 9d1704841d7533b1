"""nnunet-transfer: transfer learning for brain-tumour segmentation on nnU-Net v2.

Heavy modules (torch, nnU-Net) are imported lazily: ``import nnunet_transfer`` is cheap and
``nnunet_transfer.convert_brats`` imports what it needs on first access.

Example:
    >>> import nnunet_transfer
    >>> nnunet_transfer.trainer_path().name
    'nnunet_ext'
"""

from __future__ import annotations

from importlib import metadata

from nnunet_transfer._lazy import lazy_api
from nnunet_transfer.config import trainer_path

__version__ = "0.1.0"
MIN_NNUNET = (2, 8, 1)


def _check_nnunet_version() -> None:
    try:
        installed = metadata.version("nnunetv2")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "nnunet-transfer needs nnunetv2 >= 2.8.1, which is not installed. Fix: pip install 'nnunetv2>=2.8.1'"
        ) from None
    parts = []
    for piece in installed.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < MIN_NNUNET:
        raise ImportError(
            f"nnunet-transfer needs nnunetv2 >= 2.8.1 but nnunetv2 {installed} is installed. "
            f"Fix: pip install --upgrade 'nnunetv2>=2.8.1'"
        )


_check_nnunet_version()

# public name -> module that defines it; resolved on first access
_API = {
    "GradientReversal": "nnunet_transfer.training.grl",
    "grad_reverse": "nnunet_transfer.training.grl",
    "ganin_lambda": "nnunet_transfer.training.grl",
    "DomainClassifier": "nnunet_transfer.training.domain_head",
    "DomainBalancedDataLoader": "nnunet_transfer.training.sampling",
    "freeze_parameters": "nnunet_transfer.training.freezing",
    "part_parameter_names": "nnunet_transfer.training.freezing",
    "PolyWarmupLR": "nnunet_transfer.training.lr_schedule",
    "shrink_plans": "nnunet_transfer.planning",
    "extract_fingerprint": "nnunet_transfer.planning",
    "domain_of": "nnunet_transfer.domains",
    "read_domains": "nnunet_transfer.domains",
    "convert_brats": "nnunet_transfer.dataset_conversion",
    "combine_datasets": "nnunet_transfer.dataset_conversion",
    "write_target_splits": "nnunet_transfer.dataset_conversion",
    "to_brats": "nnunet_transfer.dataset_conversion",
    "evaluate_folder": "nnunet_transfer.evaluation",
    "compare_strategies": "nnunet_transfer.evaluation",
    "predict_folds": "nnunet_transfer.evaluation",
    "write_brats_cases": "nnunet_transfer.synth",
    "load_plan": "nnunet_transfer.experiments",
    "segment": "nnunet_transfer.inference",
    "SegmentOptions": "nnunet_transfer.inference",
    "export_bundle": "nnunet_transfer.inference",
}


__getattr__, __dir__, _names = lazy_api(__name__, _API)
__all__ = ["__version__", "trainer_path", *_names]

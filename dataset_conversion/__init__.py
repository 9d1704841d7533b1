"""BraTS downloads to nnU-Net datasets and back.

- ``convert_brats``: a BraTS 2021/2023/2024 folder -> ``$nnUNet_raw/DatasetXXX_Name``;
- ``combine_datasets``: several converted datasets -> one multi-domain dataset;
- ``write_target_splits``: target-domain folds, identical across datasets;
- ``to_brats``: nnU-Net predictions -> BraTS label files;
- ``domain_of`` / ``read_domains``: which domain each case belongs to;
- ``clip_to_percentiles``: per-image percentile clipping within the brain (``--clip-percentiles``).

Example:
    >>> from nnunet_transfer.dataset_conversion import domain_of
    >>> domain_of("BraTS-SSA-00002-000")
    'SSA'
"""

from nnunet_transfer.dataset_conversion.checks import Defect, DefectiveCasesError
from nnunet_transfer.dataset_conversion.combine import combine_datasets
from nnunet_transfer.dataset_conversion.convert import (LABELS, REGION_LABELS, REGIONS_CLASS_ORDER,
                                                        convert_brats)
from nnunet_transfer.dataset_conversion.domains import domain_of, read_domains
from nnunet_transfer.dataset_conversion.intensity import clip_to_percentiles
from nnunet_transfer.dataset_conversion.layouts import CHANNEL_NAMES, MODALITIES
from nnunet_transfer.dataset_conversion.splits import target_folds, write_target_splits
from nnunet_transfer.dataset_conversion.to_brats import to_brats

__all__ = [
    "CHANNEL_NAMES", "Defect", "DefectiveCasesError", "LABELS", "MODALITIES", "REGIONS_CLASS_ORDER",
    "REGION_LABELS", "clip_to_percentiles", "combine_datasets", "convert_brats", "domain_of", "read_domains",
    "target_folds", "to_brats", "write_target_splits",
]

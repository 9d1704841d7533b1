"""Small helpers around nnU-Net's planning: fast fingerprints and shrunken plans.

nnU-Net samples 10^8 foreground voxels per dataset for its intensity statistics, whatever
the dataset's size; on a tiny CPU dataset that alone takes minutes. ``extract_fingerprint``
runs nnU-Net's own ``DatasetFingerprintExtractor`` with a smaller sample (a plain knob of
that class). ``shrink_plans`` derives small, CPU-friendly plans (fewer features, stages and
a smaller patch) that keep the preprocessed data of the original plans; it handles the
plain U-Net plans (``nnUNetPlans``: ``n_conv_per_stage``) and the residual-encoder presets
(``nnUNetResEncUNet{M,L,XL}Plans``: ``n_blocks_per_stage``) alike.

Example:
    >>> plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
    ...     "patch_size": [32, 40, 40], "batch_size": 2, "architecture": {"arch_kwargs": {
    ...     "n_stages": 4, "features_per_stage": [32, 64, 128, 256],
    ...     "kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 3,
    ...     "n_conv_per_stage": [2] * 4, "n_conv_per_stage_decoder": [2] * 3}}}}}
    >>> small = shrink_plans(plans, "nnUNetPlansTiny", max_features=16, n_stages=3, patch_size=(16, 16, 16))
    >>> small["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]
    [4, 8, 16]
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

logger = logging.getLogger(__name__)

#: ``arch_kwargs`` with one entry per encoder stage (``n_conv_per_stage``: PlainConvUNet,
#: ``n_blocks_per_stage``: ResidualEncoderUNet); ``n_conv_per_stage_decoder`` has one per decoder stage.
PER_STAGE_KEYS = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage")
PER_DECODER_STAGE_KEYS = ("n_conv_per_stage_decoder",)


def extract_fingerprint(dataset: Union[int, str], num_processes: int = 1,
                        foreground_voxels: Optional[float] = 1e6, overwrite: bool = False) -> dict:
    """Run nnU-Net's fingerprint extraction with ``foreground_voxels`` samples in total.

    ``foreground_voxels=None`` keeps nnU-Net's default (10^8). The fingerprint lands where
    ``nnUNetv2_extract_fingerprint`` puts it, so nnU-Net's later steps find it.
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    extractor = DatasetFingerprintExtractor(dataset, num_processes=num_processes)
    if foreground_voxels is not None:
        extractor.num_foreground_voxels_for_intensitystats = float(foreground_voxels)
    return extractor.run(overwrite_existing=overwrite)


def shrink_plans(plans: dict, new_plans_name: str, configuration: str = "3d_fullres",
                 max_features: Optional[int] = None, n_stages: Optional[int] = None,
                 patch_size: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                 width_divisor: Optional[int] = None) -> dict:
    """Return a copy of ``plans`` with a smaller network for ``configuration``.

    The data identifier is kept, so the shrunken plans train on the data already
    preprocessed for the original plans (spacing and normalisation are unchanged).
    Features per stage are divided by ``width_divisor`` (default: so that the deepest stage
    has ``max_features``), stages are cut to ``n_stages`` (the deepest ones go; every
    per-stage list, e.g. ResEnc's ``n_blocks_per_stage``, and the decoder's
    ``n_conv_per_stage_decoder`` are cut with them; more stages than planned are not added),
    and the patch size is rounded to a multiple of the network's total stride.

    Raises ``ValueError`` for ``n_stages < 2`` and for plans whose per-stage lists do not
    match their ``n_stages`` (the network could not be built from them).
    """
    new = copy.deepcopy(plans)
    new["plans_name"] = new_plans_name
    config = new["configurations"][configuration]
    kwargs = config["architecture"]["arch_kwargs"]
    _check_stage_lengths(kwargs, f"{plans.get('plans_name', 'plans')} {configuration}")
    if n_stages is not None and n_stages < 2:
        raise ValueError(f"n_stages={n_stages}: a U-Net needs at least 2 stages (one resolution change)")
    if n_stages is not None and n_stages < kwargs["n_stages"]:
        kwargs["n_stages"] = n_stages
        for key in PER_STAGE_KEYS:
            if key in kwargs:
                kwargs[key] = list(kwargs[key][:n_stages])
        for key in PER_DECODER_STAGE_KEYS:
            if key in kwargs:
                kwargs[key] = list(kwargs[key][: n_stages - 1])
    features = kwargs["features_per_stage"]
    if width_divisor is None and max_features is not None:
        width_divisor = max(1, math.ceil(features[-1] / max_features))
    if width_divisor:
        kwargs["features_per_stage"] = [max(2, f // width_divisor) for f in features]
    if patch_size is not None:
        total_stride = [math.prod(s[d] for s in kwargs["strides"]) for d in range(len(patch_size))]
        config["patch_size"] = [max(t, (p // t) * t) for p, t in zip(patch_size, total_stride)]
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    return new


def _check_stage_lengths(kwargs: dict, where: str) -> None:
    """Every per-stage list of ``arch_kwargs`` has ``n_stages`` entries (decoder lists one fewer)."""
    n = kwargs["n_stages"]
    expected = {**{k: n for k in PER_STAGE_KEYS}, **{k: n - 1 for k in PER_DECODER_STAGE_KEYS}}
    for key, length in expected.items():
        value = kwargs.get(key)
        if isinstance(value, (list, tuple)) and len(value) != length:
            raise ValueError(f"{where}: arch_kwargs.{key} has {len(value)} entries but n_stages={n} needs {length}; "
                             f"the plans are inconsistent (edited by hand?). Plan them again with "
                             f"nnUNetv2_plan_experiment.")


def write_plans(preprocessed_dataset_dir: Union[str, Path], plans: dict) -> Path:
    """Write ``plans`` as ``<plans_name>.json`` into a preprocessed dataset folder, atomically."""
    target = Path(preprocessed_dataset_dir) / f"{plans['plans_name']}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plans, indent=2))
    os.replace(tmp, target)
    logger.info("wrote plans %s", target)
    return target

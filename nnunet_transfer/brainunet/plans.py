"""Derive BrainUNet plans from a dataset's nnU-Net plans.

The derived plans keep nnU-Net's preprocessing (spacing, resampling, normalisation
schemes, ``use_mask_for_norm``), patch size, batch size and strides, and swap the network for
:class:`~nnunet_transfer.brainunet.network.AttentionResidualUNet` with fewer features
(residual blocks, attention-gated skips). The residual blocks per stage are reduced from
the deepest stage up until the estimated checkpoint (fp32 weights plus SGD momentum, as
nnU-Net saves it) fits the size budget.

As for nnU-Net's own plans (``nnUNetResEncUNetMPlans``, ...), the data identifier becomes
``<plans name>_<configuration>``: ``nnUNetv2_preprocess`` empties a configuration's data
folder before writing it, so two plans sharing one would race. Preprocess with
``nnUNetv2_preprocess -d ID -plans_name nnUNetPlans_BrainUNet -c 3d_fullres``.

BrainUNet's intensity preprocessing is percentile clipping at conversion
(``nnunet-transfer convert --clip-percentiles 0.5 99.5``), then nnU-Net's own
``ZScoreNormalization`` within the brain (``use_mask_for_norm``, which nnU-Net's planner
sets for skull-stripped data such as BraTS). Given the dataset.json, the plans record
the dataset's clipping under ``brainunet.intensity_clipping`` and a warning says when it
is missing.

Example:
    >>> plans = {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
    ...     "data_identifier": "nnUNetPlans_3d_fullres", "normalization_schemes": ["ZScoreNormalization"] * 4,
    ...     "use_mask_for_norm": [True] * 4,
    ...     "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    ...     "arch_kwargs": {"n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
    ...     "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 6,
    ...     "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
    ...     "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
    ...     "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    ...     "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
    ...     "nonlin_kwargs": {"inplace": True}},
    ...     "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    >>> new = derive_brainunet_plans(plans)
    >>> new["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"]
    [16, 32, 64, 128, 160, 160]
    >>> new["brainunet"]["configurations"]["3d_fullres"]["estimated_checkpoint_mb"] < 90
    True
    >>> new["configurations"]["3d_fullres"]["data_identifier"]
    'nnUNetPlans_BrainUNet_3d_fullres'
"""

from __future__ import annotations

import copy
import logging
from typing import Dict, Iterable, List, Optional, Sequence

logger = logging.getLogger(__name__)

NETWORK_CLASS = "nnunet_transfer.brainunet.network.AttentionResidualUNet"
DEFAULT_PLANS_NAME = "nnUNetPlans_BrainUNet"
CHECKPOINT_LIMIT_MB = 90.0
#: bytes saved per parameter in an nnU-Net checkpoint: fp32 weights + SGD momentum buffer
BYTES_PER_PARAMETER = 8
#: the rest of an nnU-Net checkpoint (logging, init args, ...), a generous allowance
CHECKPOINT_OVERHEAD_MB = 1.0
_COPIED_KWARGS = ("n_stages", "conv_op", "kernel_sizes", "strides", "conv_bias", "norm_op", "norm_op_kwargs",
                  "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")
_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def count_parameters(arch_kwargs: dict, num_input_channels: int, num_classes: int,
                     network_class: str = NETWORK_CLASS, requires_import: Sequence[str] = tuple(_REQUIRES_IMPORT)) -> int:
    """Number of parameters of the network the plans describe (built on the ``meta`` device)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with torch.device("meta"):
        network = get_network_from_plans(network_class, arch_kwargs, list(requires_import), num_input_channels,
                                         num_classes, allow_init=False, deep_supervision=True)
    return sum(p.numel() for p in network.parameters())


def estimate_checkpoint_mb(n_parameters: int) -> float:
    """Estimated size in MB (10^6 bytes) of nnU-Net's ``checkpoint_final.pth`` for a network."""
    return n_parameters * BYTES_PER_PARAMETER / 1e6 + CHECKPOINT_OVERHEAD_MB


def _num_classes(plans: dict, dataset_json: Optional[dict]) -> int:
    if dataset_json is None:
        return 4  # background + the three BraTS tumour labels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(plans).get_label_manager(dataset_json).num_segmentation_heads


def brainunet_arch_kwargs(arch_kwargs: dict, width_divisor: int = 2, max_features: Optional[int] = None,
                          n_blocks_per_stage: Optional[Sequence[int]] = None,
                          n_conv_per_stage_decoder: Optional[Sequence[int]] = None,
                          attention_reduction: int = 2) -> dict:
    """BrainUNet keyword arguments from an nnU-Net architecture's ``arch_kwargs`` (before the size budget)."""
    missing = [k for k in ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides") if k not in arch_kwargs]
    if missing:
        raise ValueError(f"the plans' arch_kwargs lack {missing}; expected nnU-Net's PlainConvUNet or "
                         f"ResidualEncoderUNet keyword arguments")
    n = int(arch_kwargs["n_stages"])
    features = [max(4, int(f) // max(1, width_divisor)) for f in arch_kwargs["features_per_stage"]]
    if max_features is not None:
        features = [min(f, int(max_features)) for f in features]
    new = {k: copy.deepcopy(arch_kwargs[k]) for k in _COPIED_KWARGS if k in arch_kwargs}
    new["features_per_stage"] = features
    new["n_blocks_per_stage"] = list(n_blocks_per_stage) if n_blocks_per_stage is not None else \
        [1] * min(2, n) + [2] * max(0, n - 2)
    new["n_conv_per_stage_decoder"] = list(n_conv_per_stage_decoder) if n_conv_per_stage_decoder is not None \
        else [1] * (n - 1)
    new["attention_gates"] = True
    new["attention_reduction"] = int(attention_reduction)
    if len(new["n_blocks_per_stage"]) != n or len(new["n_conv_per_stage_decoder"]) != n - 1:
        raise ValueError(f"n_blocks_per_stage needs {n} entries and n_conv_per_stage_decoder {n - 1} for "
                         f"{n} stages, got {new['n_blocks_per_stage']} and {new['n_conv_per_stage_decoder']}")
    return new


def fit_checkpoint_budget(arch_kwargs: dict, num_input_channels: int, num_classes: int,
                          max_checkpoint_mb: float) -> Dict[str, float]:
    """Shrink ``arch_kwargs`` in place until the checkpoint estimate is below ``max_checkpoint_mb``.

    First removes residual blocks from the deepest stage up (down to one per stage), then
    caps the widest stages' features by 10 % steps. Returns the parameter count and estimate.
    """
    while True:
        n_params = count_parameters(arch_kwargs, num_input_channels, num_classes)
        size = estimate_checkpoint_mb(n_params)
        if size <= max_checkpoint_mb:
            return {"parameters": n_params, "estimated_checkpoint_mb": round(size, 2)}
        blocks = arch_kwargs["n_blocks_per_stage"]
        deep = [i for i in range(len(blocks) - 1, -1, -1) if blocks[i] > 1]
        if deep:
            blocks[deep[0]] -= 1
            continue
        features = arch_kwargs["features_per_stage"]
        cap = int(max(features) * 0.9)
        if cap < 8:
            raise ValueError(f"cannot fit a BrainUNet under {max_checkpoint_mb} MB for these plans "
                             f"({n_params} parameters with {features} features)")
        arch_kwargs["features_per_stage"] = [min(f, cap) for f in features]


def derive_brainunet_plans(plans: dict, new_plans_name: str = DEFAULT_PLANS_NAME,
                           configurations: Optional[Iterable[str]] = None, dataset_json: Optional[dict] = None,
                           width_divisor: int = 2, max_features: Optional[int] = None,
                           n_blocks_per_stage: Optional[Sequence[int]] = None,
                           n_conv_per_stage_decoder: Optional[Sequence[int]] = None,
                           attention_reduction: int = 2, max_checkpoint_mb: float = 85.0) -> dict:
    """Return BrainUNet plans derived from nnU-Net ``plans`` (the input is not modified).

    Args:
        plans: nnU-Net plans (e.g. ``nnUNetPlans.json`` loaded).
        new_plans_name: the derived plans' name (and file name stem).
        configurations: configurations to convert; ``None`` converts every configuration
            that defines its own architecture (the others inherit it).
        dataset_json: the dataset's ``dataset.json``, for the number of output channels and
            its ``intensity_clipping`` (recorded; warned about when absent).
        width_divisor: features per stage are nnU-Net's divided by this.
        max_features: cap on the features of any stage.
        n_blocks_per_stage: residual blocks per encoder stage (default ``[1, 2, 2, ...]``,
            then reduced to fit the budget).
        n_conv_per_stage_decoder: residual blocks per decoder stage (default one).
        attention_reduction: attention gates use ``skip_channels // attention_reduction`` channels.
        max_checkpoint_mb: size budget of the training checkpoint (weights + optimizer state);
            the default 85 leaves headroom under the 90 MB goal.
    """
    new = copy.deepcopy(plans)
    new["plans_name"] = new_plans_name
    all_configs = new.get("configurations", {})
    if configurations is None:
        chosen = [name for name, cfg in all_configs.items() if "architecture" in cfg]
    else:
        chosen = list(configurations)
        unknown = [c for c in chosen if c not in all_configs]
        if unknown:
            raise ValueError(f"configurations {unknown} are not in plans {plans.get('plans_name')!r} "
                             f"(available: {sorted(all_configs)})")
    num_classes = _num_classes(plans, dataset_json)
    info: Dict[str, dict] = {}
    for name in chosen:
        resolved = _resolve(all_configs, name)
        if "architecture" not in resolved:
            raise ValueError(f"configuration {name!r} has no architecture entry (plans from nnU-Net < 2.3?); "
                             f"re-plan with nnUNetv2_plan_experiment")
        num_input_channels = len(resolved.get("normalization_schemes", [])) or 4
        kwargs = brainunet_arch_kwargs(resolved["architecture"]["arch_kwargs"], width_divisor, max_features,
                                       n_blocks_per_stage, n_conv_per_stage_decoder, attention_reduction)
        info[name] = fit_checkpoint_budget(kwargs, num_input_channels, num_classes, max_checkpoint_mb)
        config = all_configs[name]
        config["architecture"] = {"network_class_name": NETWORK_CLASS, "arch_kwargs": kwargs,
                                  "_kw_requires_import": [k for k in _REQUIRES_IMPORT if k in kwargs]}
        config["data_identifier"] = f"{new_plans_name}_{name}"
        _check_normalization(name, resolved)
        info[name].update({"features_per_stage": kwargs["features_per_stage"],
                           "n_blocks_per_stage": kwargs["n_blocks_per_stage"]})
        logger.info("BrainUNet %s: %d parameters, checkpoint ~%.1f MB, features %s, blocks %s", name,
                    info[name]["parameters"], info[name]["estimated_checkpoint_mb"], kwargs["features_per_stage"],
                    kwargs["n_blocks_per_stage"])
    for name, cfg in all_configs.items():  # inheriting configurations must not share the source plans' data
        if name not in chosen and "data_identifier" in cfg and _inherits_from_any(all_configs, name, chosen):
            cfg["data_identifier"] = f"{new_plans_name}_{name}"
    clipping = None if dataset_json is None else dataset_json.get("intensity_clipping")
    if dataset_json is not None and clipping is None:
        logger.warning("the dataset was converted without intensity clipping; BrainUNet clips each image to its "
                       "0.5th / 99.5th percentiles at conversion: `nnunet-transfer convert ... --clip-percentiles "
                       "0.5 99.5` (the plans work either way)")
    new["brainunet"] = {"source_plans": plans.get("plans_name"), "intensity_clipping": clipping,
                        "configurations": info}
    return new


def _resolve(configs: dict, name: str, seen: Optional[List[str]] = None) -> dict:
    seen = seen or []
    if name in seen:
        raise ValueError(f"circular inherits_from in the plans' configurations: {seen + [name]}")
    cfg = configs[name]
    if "inherits_from" not in cfg:
        return copy.deepcopy(cfg)
    base = _resolve(configs, cfg["inherits_from"], seen + [name])
    base.update(copy.deepcopy(cfg))
    return base


def _inherits_from_any(configs: dict, name: str, parents: Sequence[str]) -> bool:
    parent = configs[name].get("inherits_from")
    while parent is not None:
        if parent in parents:
            return True
        parent = configs[parent].get("inherits_from")
    return False


def _check_normalization(name: str, config: dict) -> None:
    """Warn when nnU-Net's plans do not z-score every channel within the brain (BrainUNet's recipe)."""
    schemes = config.get("normalization_schemes", [])
    masks = config.get("use_mask_for_norm", [])
    odd = [f"channel {i}: {scheme}{'' if i < len(masks) and masks[i] else ' without use_mask_for_norm'}"
           for i, scheme in enumerate(schemes)
           if scheme != "ZScoreNormalization" or not (i < len(masks) and masks[i])]
    if odd:
        logger.warning("configuration %s keeps nnU-Net's normalisation, which is not a z-score within the brain for "
                       "%s (nnU-Net sets use_mask_for_norm for skull-stripped data such as BraTS)", name,
                       "; ".join(odd))


"""Tiny models to segment with, built in seconds: converted datasets and nnU-Net model folders.

A model folder is what nnU-Net's training leaves (``plans.json``, ``dataset.json``,
``dataset_fingerprint.json``, ``fold_X/checkpoint_final.pth`` with nnU-Net's checkpoint keys),
its network built by the trainer class itself and initialised from a fixed seed instead of
trained: segmenting needs the plumbing, not a good model, and the tests compare against
nnU-Net's own predictor on the same checkpoint. The datasets are converted from BraTS-format
folders by ``convert_brats``, so dataset.json is exactly what training would have used.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest

from nnunet_transfer import config
from tests.conftest import nnunet_folders
from tests.dataset_conversion.conftest import SUFFIXES, write_image

PLANS = "nnUNetPlansTiny"
CONFIGURATION = "3d_fullres"
SHAPE = (14, 18, 16)  # numpy (z, y, x); the geometry of tests.dataset_conversion.conftest (anisotropic, flipped)
MODALITY_BASE = {"t1n": 600, "t1c": 900, "t2w": 1200, "t2f": 1500}


def make_case(root: Path, case_id: str, layout: str = "2023", ending: str = ".nii.gz", seed: int = 0,
              labeled: bool = True, skip: Sequence[str] = ()) -> Path:
    """A BraTS-format case: a 'head' (0 outside) with a tumour whose brightness differs per modality.

    int16 images with a few hot voxels (what percentile clipping removes), float64 labels
    (BraTS 2021: ET=4), the anisotropic, flipped geometry of the conversion tests.
    """
    sep = "-" if layout == "2023" else "_"
    folder = Path(root) / case_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE)
    head = ((z - 7) / 6.5) ** 2 + ((y - 9) / 8.5) ** 2 + ((x - 8) / 7.5) ** 2 < 1
    centre = np.array([7, 9, 8]) + rng.uniform(-2, 2, 3)
    r = np.sqrt(((np.stack([z, y, x]).T - centre).T ** 2).sum(0))
    seg = np.zeros(SHAPE, np.float64)
    seg[r < 4.5] = 2
    seg[r < 3.0] = 4 if layout == "2021" else 3
    seg[r < 1.5] = 1
    seg *= head
    for i, (modality, suffix) in enumerate(SUFFIXES[layout].items()):
        if modality in skip:
            continue
        image = MODALITY_BASE[modality] + 150 * (seg == 2) * (i - 1.5) + 200 * (seg >= 3) * (-1) ** i \
            - 250 * (seg == 1) + rng.normal(0, 40, SHAPE)
        image[rng.random(SHAPE) < 2e-3] = 9000
        write_image((image * head).astype(np.int16), folder / f"{case_id}{sep}{suffix}{ending}")
    if labeled:
        write_image(seg, folder / f"{case_id}{sep}seg{ending}")
    return folder


def tiny_plans(dataset_name: str, n_channels: int, spacing=(1.5, 1.5, 1.5)) -> dict:
    """3d_fullres plans as nnU-Net's planner writes them, with a 3-stage 4..16-feature U-Net and a 16^3 patch."""
    resample_data = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset_name, "plans_name": PLANS,
        "original_median_spacing_after_transp": list(spacing), "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 5000.0, "mean": 2000.0, "median": 2000.0, "min": 0.0, "percentile_00_5": 900.0,
                     "percentile_99_5": 4500.0, "std": 500.0} for c in range(n_channels)},
        "configurations": {CONFIGURATION: {
            "data_identifier": f"{PLANS}_{CONFIGURATION}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [16, 16, 16], "median_image_size_in_voxels": [14, 14, 11],
            "spacing": list(spacing), "normalization_schemes": ["ZScoreNormalization"] * n_channels,
            "use_mask_for_norm": [True] * n_channels,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": resample_data,
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}},
    }


def write_checkpoint(path: Path, trainer_name: str, plans: dict, dataset_json: dict, fold, seed: int) -> None:
    """A checkpoint with nnU-Net's keys whose network the trainer class builds, seeded instead of trained."""
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    configuration = manager.get_configuration(CONFIGURATION)
    with config.plugin_trainers_on_path():
        trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    torch.manual_seed(seed)
    network = trainer_class.build_network_architecture(
        manager, configuration, determine_num_input_channels(manager, configuration, dataset_json),
        manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    with torch.no_grad():  # no bias in the heads: the untrained labels then follow the image, not one class
        for name, tensor in network.state_dict().items():
            if "seg_layers" in name and name.endswith("bias"):
                tensor.zero_()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "optimizer_state": {}, "current_epoch": 1,
                "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold,
                              "dataset_json": dataset_json, "device": "cpu"},
                "trainer_name": trainer_name, "inference_allowed_mirroring_axes": (0, 1, 2)}, path)


@dataclass
class TinyModel:
    """A converted dataset and a model folder for it."""

    env: Dict[str, str]
    dataset_id: int
    raw: Path  # $nnUNet_raw/DatasetXXX_Name (imagesTs: the unlabeled source cases, converted)
    source: Path  # the BraTS-format download it was converted from
    folder: Path  # $nnUNet_results/DatasetXXX_Name/Trainer__Plans__3d_fullres
    trainer: str
    test_cases: List[str]


def build_model(root: Path, dataset_id: int, name: str, trainer: str, modalities: Optional[Sequence[str]] = None,
                clip=None, brainunet: bool = False, folds=(0, 1), layout: str = "2023",
                test_cases: Sequence[str] = ()) -> TinyModel:
    """Convert a small BraTS-format folder (two labeled cases + ``test_cases`` unlabeled) and write a model."""
    from nnunet_transfer.dataset_conversion import convert_brats

    env = nnunet_folders(root / "nnunet")
    source = root / "download"
    labeled = [f"BraTS-GLI-{i:05d}-000" for i in range(2)] if layout == "2023" else \
        [f"BraTS2021_{i:05d}" for i in range(2)]
    for i, case in enumerate(labeled):
        make_case(source, case, layout=layout, seed=i)
    for i, case in enumerate(test_cases):
        make_case(source, case, layout=layout, seed=10 + i, labeled=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.RAW, env[config.RAW])
        raw = convert_brats(source, dataset_id, name, modalities=modalities, clip_percentiles=clip)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    plans = tiny_plans(raw.name, len(dataset_json["channel_names"]))
    if brainunet:
        from nnunet_transfer.brainunet.plans import derive_brainunet_plans

        plans = derive_brainunet_plans(plans, PLANS, configurations=[CONFIGURATION], dataset_json=dataset_json,
                                       width_divisor=1, max_features=16)
    folder = Path(env[config.RESULTS]) / raw.name / f"{trainer}__{plans['plans_name']}__{CONFIGURATION}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(raw / "dataset.json", folder / "dataset.json")
    (folder / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [[1.5, 1.2, 1.0]] * 2}))
    for i, fold in enumerate(folds):
        write_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth", trainer, plans, dataset_json, fold, seed=i)
    return TinyModel(env, dataset_id, raw, source, folder, trainer, list(test_cases))


@pytest.fixture(scope="session")
def four_channel_model(tmp_path_factory) -> TinyModel:
    """Four channels (T1, T1Gd, T2, FLAIR), stock nnUNetTrainer, folds 0 and 1, no clipping."""
    return build_model(tmp_path_factory.mktemp("model4"), 941, "Tiny4ch", "nnUNetTrainer",
                       test_cases=["BraTS-SSA-00090-000"])


@pytest.fixture(scope="session")
def brainunet_model(tmp_path_factory) -> TinyModel:
    """BrainUNet's three channels (FLAIR, T1Gd, T2), percentile-clipped, the plugin's trainer, fold all."""
    return build_model(tmp_path_factory.mktemp("model3"), 942, "Tiny3chClip", "nnUNetTrainerBrainUNet",
                       modalities=["t2f", "t1c", "t2w"], clip=(0.5, 99.5), brainunet=True, folds=("all",),
                       test_cases=["BraTS-SSA-00091-000"])

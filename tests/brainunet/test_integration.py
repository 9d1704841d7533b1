"""BrainUNet end to end through nnU-Net's real commands, on a tiny 3-channel dataset (CPU).

``nnunet-transfer convert --clip-percentiles 0.5 99.5`` -> plan -> ``nnunet-transfer
brainunet-plans`` -> ``nnUNetv2_preprocess`` (nnU-Net's z-score within the brain) ->
``nnUNetv2_train -tr nnUNetTrainerBrainUNet`` -> fine-tuning with ``-pretrained_weights`` ->
stock ``nnUNetv2_predict`` on a test case converted with the same clipping. Nothing is
written into nnU-Net's package on the way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion import convert_brats
from tests.brainunet.test_plans_cli import nnunet_package_listing
from tests.conftest import cli, nnunet_folders, run_cmd

pytestmark = pytest.mark.integration

DATASET_ID = "951"
DATASET = f"Dataset{DATASET_ID}_BrainUNetTiny"
PLANS = "nnUNetPlans_BrainUNet"
CASES = [f"BraTS-SSA-{i:05d}-000" for i in range(5)]
TEST_CASE = "BraTS-SSA-00099-000"  # no segmentation: converted into imagesTs
SUFFIXES = ["t2f", "t1c", "t2w"]  # BrainUNet's three inputs, channels 0000-0002
SHORT = {"nnUNetTransfer_num_epochs": "1", "nnUNetTransfer_iterations_per_epoch": "2",
         "nnUNetTransfer_val_iterations_per_epoch": "1"}


def write_case(root: Path, case: str, rng: np.random.Generator, labeled: bool = True) -> None:
    """A BraTS-format 32^3 'head' (zero outside a sphere) with a nested tumour, FLAIR / T1Gd / T2 files."""
    folder = root / case
    folder.mkdir(parents=True)
    zz, yy, xx = np.ogrid[:32, :32, :32]
    head = np.sqrt((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2) < 13
    centre = rng.integers(12, 20, 3)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    seg = np.zeros((32, 32, 32), np.uint8)
    seg[r < 7] = 2
    seg[r < 4] = 3
    seg[r < 2] = 1
    for channel, suffix in enumerate(SUFFIXES):
        image = 300.0 + 80 * channel + 60 * seg.astype(np.float64) * (channel + 1) + rng.normal(0, 20, seg.shape)
        image[rng.random(seg.shape) < 1e-3] = 5000  # hot voxels the percentile clipping removes
        itk = sitk.GetImageFromArray((image * head).astype(np.float32))
        sitk.WriteImage(itk, str(folder / f"{case}-{suffix}.nii.gz"))
    if labeled:
        sitk.WriteImage(sitk.GetImageFromArray(seg * head.astype(np.uint8)), str(folder / f"{case}-seg.nii.gz"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    package_before = nnunet_package_listing()
    root = tmp_path_factory.mktemp("brainunet")
    env = nnunet_folders(root / "nnunet")  # nnUNet_extTrainer: the plugin's shim, BrainUNet trainers included
    source = root / "BraTS-SSA-download"
    rng = np.random.default_rng(0)
    for case in CASES:
        write_case(source, case, rng)
    write_case(source, TEST_CASE, rng, labeled=False)
    # in-process, what `nnunet-transfer convert SOURCE -d 951 -n BrainUNetTiny --modalities t2f t1c t2w
    # --clip-percentiles 0.5 99.5` does (saves a subprocess)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.RAW, env[config.RAW])
        convert_brats(source, int(DATASET_ID), DATASET.split("_", 1)[1], modalities=SUFFIXES,
                      clip_percentiles=(0.5, 99.5))
    run_cmd([sys.executable, "-c", "from nnunet_transfer.planning import extract_fingerprint; "
             f"extract_fingerprint({DATASET_ID}, foreground_voxels=1e5)"], env)
    run_cmd(["nnUNetv2_plan_experiment", "-d", DATASET_ID], env)
    proc = run_cmd(cli("brainunet-plans", DATASET_ID, "-c", "3d_fullres", "--max-features", "16"), env)
    run_cmd(["nnUNetv2_preprocess", "-d", DATASET_ID, "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"], env)
    return {"env": env, "raw": Path(env[config.RAW]) / DATASET, "source": source, "package_before": package_before,
            "pre": Path(env[config.PREPROCESSED]) / DATASET, "results": Path(env[config.RESULTS]) / DATASET,
            "plans_stdout": proc.stdout}


def train(tiny, trainer: str, *extra: str):
    return run_cmd(["nnUNetv2_train", DATASET_ID, "3d_fullres", "0", "-tr", trainer, "-p", PLANS, "-device", "cpu",
                    *extra], {**tiny["env"], **SHORT})


def fine_tune_network(tiny, plans: dict, checkpoint_file: Path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunet_transfer.brainunet.trainers import nnUNetTrainerBrainUNetFineTune

    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**tiny["env"], **SHORT}.items():
            patch.setenv(key, value)
        dataset_json = json.loads((tiny["pre"] / "dataset.json").read_text())
        trainer = nnUNetTrainerBrainUNetFineTune({**plans, "continue_training": False}, "3d_fullres", 0, dataset_json,
                                                 device=torch.device("cpu"))
        assert trainer.initial_lr == pytest.approx(1e-3) and trainer.effective_warmup_epochs() == 0
        trainer.pretrained_weights_file = str(checkpoint_file)
        trainer.initialize()
        load_pretrained_weights(trainer.network, str(checkpoint_file))  # nnU-Net's loader, as run_training calls it
        assert trainer.segmentation_head_from_pretrained
        return trainer.network


def test_plans_preprocessing_training_fine_tuning_and_prediction(tiny, tmp_path):
    plans = json.loads((tiny["pre"] / f"{PLANS}.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == "nnunet_transfer.brainunet.network.AttentionResidualUNet"
    # nnU-Net's z-score within the brain (nnU-Net's planner set use_mask_for_norm)
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"] * 3 and cfg["use_mask_for_norm"] == [True] * 3
    assert cfg["data_identifier"] == f"{PLANS}_3d_fullres"
    assert plans["brainunet"]["intensity_clipping"] == {"percentiles": [0.5, 99.5], "within": "nonzero"}
    assert "wrote" in tiny["plans_stdout"] and "M parameters" in tiny["plans_stdout"]
    # conversion clipped the hot voxels of training and test images
    for subset, case in (("imagesTr", CASES[0]), ("imagesTs", TEST_CASE)):
        converted = sitk.ReadImage(str(tiny["raw"] / subset / f"{case}_0000.nii.gz"))
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny["source"] / case / f"{case}-t2f.nii.gz")))
        assert converted.GetPixelID() == sitk.sitkFloat32
        assert original.max() == 5000 and sitk.GetArrayFromImage(converted).max() < 1000
    data_dir = tiny["pre"] / cfg["data_identifier"]
    assert data_dir.is_dir() and len(list(data_dir.glob("*.b2nd"))) >= len(CASES)
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    data, seg, _, _ = nnUNetDatasetBlosc2(str(data_dir)).load_case(CASES[0])
    data, seg = np.asarray(data), np.asarray(seg)
    assert np.abs(data[:, seg[0] >= 0]).max() < 6  # without clipping the hot voxels would be far above

    train(tiny, "nnUNetTrainerBrainUNet")
    folder = tiny["results"] / f"nnUNetTrainerBrainUNet__{PLANS}__3d_fullres" / "fold_0"
    checkpoint_file = folder / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerBrainUNet"
    assert any(".attention_gates." in k for k in checkpoint["network_weights"])
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "Tversky + CE loss (alpha 0.3, beta 0.7)" in log
    # the size estimate of the plans is an upper bound of the real checkpoint
    estimate = plans["brainunet"]["configurations"]["3d_fullres"]["estimated_checkpoint_mb"]
    assert checkpoint_file.stat().st_size / 1e6 < estimate

    # fine-tuning: what nnUNetv2_train -pretrained_weights does, in-process (a second CLI training is slow)
    fine_tuned = fine_tune_network(tiny, plans, checkpoint_file)
    weights = checkpoint["network_weights"]
    own = fine_tuned.state_dict()
    assert all(torch.equal(own[k], weights[k]) for k in own)  # encoder, gates, decoder and (same labels) head

    # a new case converted with the same --clip-percentiles, predicted with stock nnU-Net
    run_cmd(["nnUNetv2_predict", "-i", str(tiny["raw"] / "imagesTs"), "-o", str(tmp_path / "out"), "-d", DATASET_ID,
             "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerBrainUNet", "-p", PLANS, "-device", "cpu",
             "--disable_tta", "-npp", "0", "-nps", "0"], tiny["env"])  # 0 and 0: sequential, no worker start-up
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{TEST_CASE}.nii.gz")))
    assert prediction.shape == (32, 32, 32) and set(np.unique(prediction)) <= {0, 1, 2, 3}
    # `nnunet-transfer segment` on the raw download case (clipped and ordered by the model itself): the same labels
    from nnunet_transfer.inference import SegmentOptions, segment

    report = segment(tiny["source"] / TEST_CASE, folder.parent, tmp_path / "segment",
                     SegmentOptions(device="cpu", use_mirroring=False))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(report.written[TEST_CASE]))), prediction)
    # plans, preprocessing, training, fine-tuning and prediction wrote nothing into nnU-Net's package
    assert nnunet_package_listing() == tiny["package_before"]

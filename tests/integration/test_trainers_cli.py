"""The transfer trainers through nnU-Net's real console scripts, on a tiny two-domain dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.conftest import run_cmd, stock_spawn_env
from tests.integration.conftest import DATASET, PLANS, SSA, fold_dir, load, train

pytestmark = pytest.mark.integration

def test_dann_checkpoint_resume_and_stock_predict(tiny, tmp_path):
    train(tiny, "nnUNetTrainerDANN")
    final = fold_dir(tiny, "nnUNetTrainerDANN") / "checkpoint_final.pth"
    checkpoint = load(final)
    assert checkpoint["trainer_name"] == "nnUNetTrainerDANN"
    assert not any("domain" in k for k in checkpoint["network_weights"])  # head kept out of the network
    head = checkpoint["nnunet_transfer"]["domain_head"]
    assert head and checkpoint["nnunet_transfer"]["domain_index"] == {"GLI": 0, "SSA": 1}
    assert len(checkpoint["optimizer_state"]["param_groups"]) == 1  # the network; the classifier has its own Adam
    assert checkpoint["nnunet_transfer"]["domain_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert checkpoint["nnunet_transfer"]["run"]["dann"]["domain_index"] == {"GLI": 0, "SSA": 1}
    log = "".join(p.read_text() for p in final.parent.glob("training_log_*.txt"))
    assert "domain_loss" in log and "target domain SSA" in log

    # --c resumes with the classifier and its optimizer state, for one more epoch
    proc = train(tiny, "nnUNetTrainerDANN", "0", "--c", nnUNetTransfer_num_epochs="3")
    resumed = load(final)
    assert resumed["current_epoch"] == 3
    assert "restored the domain classifier" in proc.stdout
    assert any(not torch.equal(resumed["nnunet_transfer"]["domain_head"][k], head[k]) for k in head)

    # --val with nnU-Net's stock start-up of its spawned workers (the suite's other runs skip the
    # console script's re-import in them, tests/spawn_bootstrap) validates to the same predictions
    validation = final.parent / "validation"
    bootstrapped = {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in validation.glob("*.nii.gz")}
    summary = (validation / "summary.json").read_text()
    (validation / "summary.json").unlink()
    train(tiny, "nnUNetTrainerDANN", "0", "--val", nnUNetTransfer_num_epochs="3", **stock_spawn_env())
    stock = {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in validation.glob("*.nii.gz")}
    assert bootstrapped and sorted(stock) == sorted(bootstrapped)
    assert all(np.array_equal(stock[name], bootstrapped[name]) for name in stock)
    assert (validation / "summary.json").read_text() == summary

    # stock nnUNetv2_predict loads it strictly
    images = tmp_path / "in"
    images.mkdir()
    for f in (tiny["raw"] / "imagesTr").glob(f"{SSA[0]}_*.nii.gz"):
        (images / f.name).symlink_to(f)
    run_cmd(["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "out"), "-d", "901", "-c", "3d_fullres",
             "-f", "0", "-tr", "nnUNetTrainerDANN", "-p", PLANS, "-device", "cpu", "--disable_tta", "-npp", "0",
             "-nps", "0"], tiny["env"])
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{SSA[0]}.nii.gz")))
    assert prediction.shape == (32, 32, 32) and set(np.unique(prediction)) <= {0, 1, 2, 3}


def plain_nnunet_checkpoint(tiny, path: Path) -> Path:
    """A checkpoint written by stock ``nnUNetTrainer`` (untrained weights: only the format matters here)."""
    script = (
        "import torch; from batchgenerators.utilities.file_and_folder_operations import load_json; "
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer; "
        f"pre = {str(Path(tiny['env']['nnUNet_preprocessed']) / DATASET)!r}; "
        f"plans = load_json(pre + '/{PLANS}.json'); plans['continue_training'] = False; "
        "t = nnUNetTrainer(plans, '3d_fullres', 0, load_json(pre + '/dataset.json'), "
        "torch.device('cpu')); t.initialize(); "
        f"t.save_checkpoint({str(path)!r})")
    run_cmd([sys.executable, "-c", script], tiny["env"])
    return path


def test_fine_tune_from_plain_nnunet_checkpoint_with_frozen_decoder(tiny, tmp_path):
    pretrained = plain_nnunet_checkpoint(tiny, tmp_path / "plain.pth")
    assert load(pretrained)["trainer_name"] == "nnUNetTrainer"
    source = load(pretrained)["network_weights"]

    proc = train(tiny, "nnUNetTrainerFineTuneFrozenDecoder", "1", "-pretrained_weights", str(pretrained))
    assert "segmentation head (4 tensors) loaded because the label sets match" in proc.stdout
    assert "froze the decoder" in proc.stdout
    tuned = load(fold_dir(tiny, "nnUNetTrainerFineTuneFrozenDecoder", "1") / "checkpoint_final.pth")
    weights = tuned["network_weights"]
    decoder = [k for k in weights if k.startswith("decoder.") and not k.startswith("decoder.encoder.")
               and "num_batches" not in k]
    assert decoder and all(torch.equal(weights[k], source[k]) for k in decoder)
    assert any(not torch.equal(weights[k], source[k]) for k in weights if k.startswith("encoder."))
    assert tuned["optimizer_state"]["param_groups"][0]["lr"] <= 1e-3  # the fine-tuning learning rate


def test_fine_tune_all_layers_from_dann_and_frozen_encoder(tiny):
    dann = fold_dir(tiny, "nnUNetTrainerDANN") / "checkpoint_final.pth"
    if not dann.exists():
        train(tiny, "nnUNetTrainerDANN")
    source = load(dann)["network_weights"]
    train(tiny, "nnUNetTrainerFineTune", "2", "-pretrained_weights", str(dann))
    tuned = load(fold_dir(tiny, "nnUNetTrainerFineTune", "2") / "checkpoint_final.pth")["network_weights"]
    assert any(not torch.equal(tuned[k], source[k]) for k in tuned if k.startswith("decoder.seg_layers"))

    train(tiny, "nnUNetTrainerFineTuneFrozenEncoder", "2", "-pretrained_weights", str(dann))
    frozen = load(fold_dir(tiny, "nnUNetTrainerFineTuneFrozenEncoder", "2") / "checkpoint_final.pth")
    weights = frozen["network_weights"]
    assert all(torch.equal(weights[k], source[k]) for k in weights if k.startswith("encoder."))


@pytest.mark.parametrize("trainer", ["nnUNetTrainerMixedDomain", "nnUNetTrainerDANNNoGRL_PaperRecipe"])
def test_other_trainers_train(tiny, trainer):
    train(tiny, trainer, "1", nnUNetTransfer_num_epochs="1")
    checkpoint = load(fold_dir(tiny, trainer, "1") / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == trainer
    group = checkpoint["optimizer_state"]["param_groups"][0]
    if "PaperRecipe" in trainer:
        assert "betas" in group and group["base_lr"] == pytest.approx(6e-5)  # Adam at the paper's rate
        assert checkpoint["init_args"]["plans"]["configurations"]["3d_fullres"]["batch_size"] == 2
    else:
        assert "momentum" in group and group["base_lr"] == pytest.approx(1e-2)  # nnU-Net's SGD


def test_errors_are_clear_and_early(tiny):
    proc = train(tiny, "nnUNetTrainerSourceOnly", "7", check=False)
    assert proc.returncode != 0 and "holds 4 folds" in proc.stderr + proc.stdout
    proc = train(tiny, "nnUNetTrainerDANN", "3", check=False)
    output = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "at least 2 domains" in output and "Epoch 0" not in output
    proc = train(tiny, "nnUNetTrainerFineTune", "0", check=False)
    assert proc.returncode != 0 and "got no -pretrained_weights" in proc.stderr + proc.stdout

"""progress_domain.png and the per-epoch domain values in nnU-Net's logger, through real trainers in-process."""

from __future__ import annotations

import doctest
import math

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_transfer.training import progress
from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.progress import (DICE_PER_DOMAIN, FIGURE, PROGRESS_KEYS, chance_accuracy,
                                               dice_per_domain, local_history, pad_history, plot_domain_progress)
from tests.training.test_adversarial import batch, build, fresh_from
from tests.training.test_trainers_inprocess import KEYS, folders  # noqa: F401 (fixture)

VAL = KEYS  # the validation holds both domains


def run_epoch(trainer, seed: int = 0) -> None:
    """One epoch as nnU-Net's run_training runs it: two training steps, one validation step."""
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    outputs = [trainer.train_step(batch(trainer, KEYS, seed + i)) for i in range(2)]
    trainer.on_train_epoch_end(outputs)
    with torch.no_grad():
        trainer.on_validation_epoch_start()
        trainer.on_validation_epoch_end([trainer.validation_step(batch(trainer, VAL, seed + 7))])
    trainer.on_epoch_end()


def nan_equal(a, b) -> bool:
    return len(a) == len(b) and all((isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
                                    or x == y for x, y in zip(a, b))


def test_docstring_examples():
    result = doctest.testmod(progress)
    assert result.attempted > 0 and result.failed == 0


def test_pad_history_adds_missing_keys_up_to_nnunets_epochs():
    history = {"train_losses": [1.0, 0.9, 0.8], "val_losses": [1.0, 0.9, 0.8], "grl_lambdas": [0.1]}
    assert sorted(pad_history(history)) == sorted(PROGRESS_KEYS)
    assert all(len(history[k]) == 3 for k in PROGRESS_KEYS)
    assert history["grl_lambdas"][0] == 0.1 and math.isnan(history["grl_lambdas"][2])
    assert history[DICE_PER_DOMAIN] == [{}, {}, {}]
    assert pad_history(history) == []  # nothing more to pad


def test_dice_per_domain_matches_nnunets_pooled_dice():
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 50, (3, 3)).astype(float) for _ in range(6)]
    domains = ["GLI", "SSA", "GLI", None, "SSA", "SSA"]
    result = dice_per_domain(domains, cases)
    assert list(result) == ["GLI", "SSA"]  # the case without a domain is left out
    tp, fp, fn = cases[1] + cases[4] + cases[5]
    assert result["SSA"] == pytest.approx(np.mean(2 * tp / (2 * tp + fp + fn)))


def test_chance_level_of_the_domain_accuracy():
    assert chance_accuracy({"GLI": 9, "SSA": 1}, "SSA", 0.5, 2) == 0.5
    assert chance_accuracy({"GLI": 9, "SSA": 1}, "SSA", None) == 0.9
    assert chance_accuracy({"A": 1, "B": 1, "C": 2}, "A", 1 / 3, 3) == pytest.approx(4 / 9)


def test_per_domain_validation_keeps_nnunets_pseudo_dice_bitwise(folders):
    trainer = build(T.nnUNetTrainerDANN, val=VAL)
    trainer.network.eval()
    b = batch(trainer, VAL, seed=3)
    with torch.no_grad():
        ours = trainer.validation_step({**b, "target": [t.clone() for t in b["target"]]})
        theirs = nnUNetTrainer.validation_step(trainer, {**b, "target": [t.clone() for t in b["target"]]})
    for key in ("tp_hard", "fp_hard", "fn_hard", "loss"):
        assert np.array_equal(ours[key], theirs[key]), key
    assert ours["case_domain"] == ["GLI", "SSA"]
    per_case = np.stack(ours["case_confusion"])  # (cases, tp/fp/fn, foreground classes)
    assert per_case.shape == (2, 3, 3)
    assert np.array_equal(per_case.sum(0), np.stack([theirs["tp_hard"], theirs["fp_hard"], theirs["fn_hard"]]))


def test_dann_logs_draws_and_resumes_its_progress(folders, tmp_path):
    figures = plt.get_fignums()
    trainer = build(T.nnUNetTrainerDANN, val=VAL)
    trainer.save_every = 1  # nnU-Net writes checkpoint_latest.pth at the end of every epoch
    for epoch in range(2):
        run_epoch(trainer, seed=10 * epoch)
    out = trainer.output_folder
    history = local_history(trainer.logger)
    assert all(len(history[k]) == 2 for k in PROGRESS_KEYS)
    assert all(0.0 <= a <= 1.0 for a in history["train_domain_accs"])
    assert all(0.0 < g <= 1.0 for g in history["grl_lambdas"]) and np.all(np.isfinite(history["train_domain_losses"]))
    assert [sorted(d) for d in history[DICE_PER_DOMAIN]] == [["GLI", "SSA"]] * 2
    assert history["train_seg_losses"][0] < history["train_losses"][0]  # the total adds the domain term
    image = matplotlib.image.imread(f"{out}/{FIGURE}")
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # five panels, one above the other
    assert matplotlib.image.imread(f"{out}/progress.png").ndim == 3  # nnU-Net's figure is still drawn
    assert plt.get_fignums() == figures  # no figure left open
    with open(trainer.log_file) as fh:
        log = fh.read()
    assert "nnunet-transfer: seg_loss" in log and "domain_acc" in log and "pseudo Dice per domain GLI" in log

    resumed = fresh_from(f"{out}/checkpoint_latest.pth", T.nnUNetTrainerDANN)
    assert resumed.current_epoch == 2
    restored = local_history(resumed.logger)
    for key in PROGRESS_KEYS:
        assert nan_equal(restored[key], history[key]), key
    run_epoch(resumed, seed=30)
    assert all(len(restored[k]) == 3 for k in PROGRESS_KEYS) and len(restored["train_losses"]) == 3


def test_a_checkpoint_without_the_keys_resumes_with_padded_history(folders, tmp_path):
    trainer = build(T.nnUNetTrainerDANN, val=VAL)
    trainer.save_every = 1
    run_epoch(trainer)
    checkpoint = torch.load(f"{trainer.output_folder}/checkpoint_latest.pth", weights_only=False)
    for key in PROGRESS_KEYS:
        del checkpoint["logging"][key]  # as an older version wrote it
    old = tmp_path / "checkpoint_old.pth"
    torch.save(checkpoint, old)
    resumed = fresh_from(old, T.nnUNetTrainerDANN)
    history = local_history(resumed.logger)
    assert all(len(history[k]) == 1 for k in PROGRESS_KEYS)
    assert math.isnan(history["train_domain_losses"][0]) and history[DICE_PER_DOMAIN] == [{}]
    run_epoch(resumed, seed=5)
    assert all(len(history[k]) == 2 for k in PROGRESS_KEYS) and np.isfinite(history["train_domain_losses"][1])
    assert matplotlib.image.imread(f"{resumed.output_folder}/{FIGURE}").ndim == 3
    assert min(len(v) for v in history.values()) == 2  # nnU-Net's progress.png counts both epochs


def test_mixed_domain_logs_the_per_domain_dice_and_nan_for_the_classifier(folders):
    trainer = build(T.nnUNetTrainerMixedDomain, val=VAL)
    run_epoch(trainer)
    history = local_history(trainer.logger)
    assert sorted(history[DICE_PER_DOMAIN][0]) == ["GLI", "SSA"]
    assert all(math.isnan(history[k][0]) for k in ("train_domain_losses", "train_domain_accs", "grl_lambdas"))
    assert history["train_seg_losses"] == pytest.approx(history["train_losses"])
    assert matplotlib.image.imread(f"{trainer.output_folder}/{FIGURE}").ndim == 3


def test_plot_leaves_out_empty_panels_and_survives_nan(tmp_path):
    history = {"train_losses": [1.0, 0.8], "val_losses": [1.1, 0.9], "mean_fg_dice": [0.2, 0.3]}
    pad_history(history)
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    plot_domain_progress(history, str(small))
    history["train_domain_accs"] = [0.5, math.nan]
    history[DICE_PER_DOMAIN] = [{"A": 0.1, "B": 0.3}, {"A": 0.2}]
    plot_domain_progress(history, str(large), chance=0.5)
    assert matplotlib.image.imread(str(large)).shape[0] > matplotlib.image.imread(str(small)).shape[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.png", "small.png"]  # no temporary file left

"""Recipe notes of a comparison, from nnU-Net's debug.json of each row's folds."""

from __future__ import annotations

import json
from pathlib import Path

from nnunet_transfer.evaluation.recipes import describe, recipe_notes, row_recipe

SGD = {"optimizer": "SGD (\nParameter Group 0\n    dampening: 0\n)", "initial_lr": 0.01, "num_epochs": 4,
       "num_iterations_per_epoch": 50, "batch_size": 2, "poly_exponent": 0.9, "training_seed": 0}


def results_folder(root: Path, name: str, per_fold: dict) -> Path:
    folder = root / name
    for fold, debug in per_fold.items():
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "debug.json").write_text(json.dumps(debug))
    return folder


def test_describe_plugin_and_stock_trainings():
    assert describe(SGD) == "SGD, initial lr 0.01, poly 0.9, 4 epochs x 50 iterations, batch size 2, seed 0"
    stock = {k: v for k, v in SGD.items() if k not in ("poly_exponent", "training_seed")}
    assert describe(stock) == "SGD, initial lr 0.01, 4 epochs x 50 iterations, batch size 2"
    assert describe({**SGD, "training_seed": None}).endswith("batch size 2, unseeded")
    assert describe({"optimizer": "Adam (\n...", "initial_lr": 6e-05}) == "Adam, initial lr 6e-05"
    # the label-hiding trainers' per-domain batches (nnU-Net's debug.json holds str(value))
    assert describe({**SGD, "batch_per_domain": "True"}).endswith("batch size 2 per domain, seed 0")
    assert describe({**SGD, "batch_per_domain": "False"}) == describe(SGD)


def test_rows_grouped_by_recipe_folds_that_differ_named(tmp_path):
    fine = results_folder(tmp_path, "FT", {"0": SGD, "1": SGD, "all": {**SGD, "initial_lr": 1.0}})
    dann = results_folder(tmp_path, "DANN", {"0": SGD, "1": SGD})
    mixed = results_folder(tmp_path, "Mixed", {"0": SGD, "1": {**SGD, "initial_lr": 0.001}})
    predictions = tmp_path / "predictions"  # a row of predictions only: no training to describe
    (predictions / "fold_0").mkdir(parents=True)
    notes = recipe_notes({"Baseline": predictions, "Fine-Tuning": [fine], "DANN": dann, "Mixed": mixed})
    line = describe(SGD)
    assert notes[0] == f"Trained with {line} (nnU-Net's debug.json): Fine-Tuning, DANN."
    assert notes[1].startswith("Trained with fold 0: SGD, initial lr 0.01") and "fold 1: SGD, initial lr 0.001" in notes[1]
    assert len(notes) == 2
    assert row_recipe(mixed, folds=["1"]).startswith("SGD, initial lr 0.001")
    assert row_recipe(predictions) is None
    ten = results_folder(tmp_path, "Ten", {str(k): {**SGD, "initial_lr": 0.001 * (k + 1)} for k in range(11)})
    assert [part.split(":")[0] for part in row_recipe(ten).split("; ")] == [f"fold {k}" for k in range(11)]

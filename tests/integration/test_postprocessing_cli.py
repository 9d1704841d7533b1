"""nnU-Net's own model selection, ensembling and post-processing on this plugin's results folders,
over the plans' 10 target folds.

The module builds a dataset of its own (2 GLI and 10 SSA cases of 32^3 voxels, the tiny
plans) and gives it 10 SSA-only folds with ``nnunet-transfer splits --folds 10``: each fold
validates one SSA case and trains on the other nine and both GLI cases. Two plugin trainers
(DANN and the uniform mixed-domain "Combined" row) train fold 0 for real with ``--npz`` (one
short epoch). **Folds 1-9 share that fold-0 checkpoint** (``checkpoint_final.pth`` copied into
``fold_k``): the commands under test only read the folds' validation outputs, and training ten
folds per trainer would take minutes. Every fold's validation (``.nii.gz``, ``.npz``, ``.pkl``,
``summary.json``) is still written by nnU-Net's own validation: ``run_training(...,
only_run_validation=True, export_validation_probabilities=True)``, which is what
``nnUNetv2_train ... k --val --npz`` runs, with all of one trainer's folds in one process to spare
18 start-ups. Then, through the real console scripts:

* ``nnUNetv2_find_best_configuration -f 0 1 ... 9`` pools each model's 10 folds, selects among
  the two models and their ensemble, and writes its ``postprocessing.pkl``;
* ``nnUNetv2_ensemble`` on the members' pooled fold probabilities equals nnU-Net's ensemble and
  ``nnunet-transfer ensemble-folds`` (the fold-structured ensemble row), case by case;
* ``nnUNetv2_apply_postprocessing`` applies nnU-Net's rules to the ensemble;
* ``nnunet-transfer tune-postprocessing``, ``apply-postprocessing`` and ``compare
  --postprocessing`` add "+ post-processing" rows for a model and for the ensemble, pooling all
  10 folds in numeric order.
"""

from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import cli, nnunet_folders, run_cmd
from tests.integration.conftest import PLANS, SHORT, build_two_domain_dataset

pytestmark = pytest.mark.integration

DATASET_ID = "902"
DATASET = "Dataset902_TenTargetFolds"
GLI = [f"BraTS-GLI-{i:05d}-000" for i in range(2)]
SSA = [f"BraTS-SSA-{i:05d}-000" for i in range(10)]
FOLDS = [str(k) for k in range(10)]
TRAINERS = ["nnUNetTrainerDANN", "nnUNetTrainerMixedDomainUniform"]
SCHEDULE = {**SHORT, "nnUNetTransfer_num_epochs": "1", "nnUNetTransfer_test_time_mirroring": "0"}

# nnU-Net's validation of every given fold of one trainer, as `nnUNetv2_train D 3d_fullres k -tr T -p P
# --val --npz -device cpu` runs it, in one process. Passed with `python -c`: nnU-Net's spawned export
# workers then have no main module to re-import.
VALIDATE = """
import sys
import torch
from nnunetv2.run.run_training import run_training
dataset, trainer, plans, *folds = sys.argv[1:]
for fold in folds:
    run_training(dataset, "3d_fullres", fold, trainer, plans, export_validation_probabilities=True,
                 only_run_validation=True, device=torch.device("cpu"))
"""


def model(env: dict, trainer: str) -> Path:
    return Path(env["nnUNet_results"]) / DATASET / f"{trainer}__{PLANS}__3d_fullres"


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both trainers' validations of all 10 target folds, with probabilities (see the module docstring)."""
    env = nnunet_folders(tmp_path_factory.mktemp("ten_folds"))
    # the minority domain (GLI here) would be the target otherwise
    pre = build_two_domain_dataset(env, int(DATASET_ID), DATASET, GLI, SSA, seed=2, target_domain="SSA")
    run_cmd(cli("splits", DATASET_ID, "--target-domain", "SSA", "--folds", "10"), env)
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 10 and sorted(c for s in splits for c in s["val"]) == SSA
    assert all(len(s["val"]) == 1 and set(s["train"]) == set(GLI + SSA) - set(s["val"]) for s in splits)

    def fold_zero(trainer: str) -> None:
        run_cmd(["nnUNetv2_train", DATASET_ID, "3d_fullres", "0", "-tr", trainer, "-p", PLANS, "-device", "cpu",
                 "--npz"], {**env, **SCHEDULE})
        for fold in FOLDS[1:]:
            (model(env, trainer) / f"fold_{fold}").mkdir()
            shutil.copy(model(env, trainer) / "fold_0" / "checkpoint_final.pth",
                        model(env, trainer) / f"fold_{fold}" / "checkpoint_final.pth")
        run_cmd([sys.executable, "-c", VALIDATE, DATASET_ID, trainer, PLANS, *FOLDS[1:]], {**env, **SCHEDULE})

    with ThreadPoolExecutor(len(TRAINERS)) as pool:  # one trainer per core
        for future in [pool.submit(fold_zero, trainer) for trainer in TRAINERS]:
            future.result()
    val_case = {str(k): split["val"][0] for k, split in enumerate(splits)}
    for trainer in TRAINERS:
        for fold in FOLDS:
            validation = model(env, trainer) / f"fold_{fold}" / "validation"
            case = val_case[fold]
            assert sorted(p.name for p in validation.iterdir()) == sorted(
                [f"{case}.nii.gz", f"{case}.npz", f"{case}.pkl", "summary.json"])
    return {"env": env, "tmp": tmp_path_factory.mktemp("pp_work"), "val_case": val_case}


def test_nnunet_selection_ensembling_and_postprocessing_on_10_folds(trained):
    env, tmp, val_case = trained["env"], trained["tmp"], trained["val_case"]
    run_cmd(["nnUNetv2_find_best_configuration", DATASET_ID, "-c", "3d_fullres", "-p", PLANS, "-tr", *TRAINERS,
             "-f", *FOLDS, "-np", "1"], env)
    results = Path(env["nnUNet_results"]) / DATASET
    info = json.loads((results / "inference_information.json").read_text())
    identifiers = [f"{t}__{PLANS}__3d_fullres" for t in TRAINERS]
    ensemble_name = f"ensemble___{identifiers[0]}___{identifiers[1]}___{'_'.join(FOLDS)}"
    assert set(info["all_results"]) == {*identifiers, ensemble_name}
    assert info["best_model_or_ensemble"]["selected_model_or_models"]
    pp_pkl = Path(info["best_model_or_ensemble"]["postprocessing_file"])
    assert pp_pkl.is_file()
    for identifier in identifiers:  # each model's 10 folds pooled by nnU-Net
        crossval = results / identifier / f"crossval_results_folds_{'_'.join(FOLDS)}"
        assert sorted(p.name for p in crossval.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in SSA]
    nnunet_ensemble = results / "ensembles" / ensemble_name
    assert sorted(p.name for p in nnunet_ensemble.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in SSA]
    assert len(json.loads((nnunet_ensemble / "summary.json").read_text())["metric_per_case"]) == len(SSA)

    # nnUNetv2_ensemble on each member's pooled fold probabilities (with its dataset.json and plans.json)
    pooled = []
    for trainer in TRAINERS:
        folder = tmp / f"cv_{trainer}"
        folder.mkdir()
        for name in ("dataset.json", "plans.json"):
            shutil.copy(model(env, trainer) / name, folder / name)
        for fold in FOLDS:
            for f in (model(env, trainer) / f"fold_{fold}" / "validation").glob("*.[np][pk][zl]"):
                shutil.copy(f, folder / f.name)
        assert len(list(folder.glob("*.npz"))) == len(SSA)
        pooled.append(str(folder))
    run_cmd(["nnUNetv2_ensemble", "-i", *pooled, "-o", str(tmp / "ensemble"), "-np", "1"], env)
    assert sorted(p.name for p in (tmp / "ensemble").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in SSA]
    run_cmd(cli("ensemble-folds", *(str(model(env, t)) for t in TRAINERS), "-o", str(tmp / "ensemble_folds"),
                "-f", *FOLDS), env)
    assert json.loads((tmp / "ensemble_folds" / "ensemble.json").read_text())["folds"] == FOLDS
    for fold in FOLDS:
        case = val_case[fold]
        validation = tmp / "ensemble_folds" / f"fold_{fold}" / "validation"
        assert sorted(p.name for p in validation.glob("*.nii.gz")) == [f"{case}.nii.gz"]
        ours = labels(validation / f"{case}.nii.gz")
        assert np.array_equal(ours, labels(tmp / "ensemble" / f"{case}.nii.gz"))
        assert np.array_equal(ours, labels(nnunet_ensemble / f"{case}.nii.gz"))

    # nnUNetv2_apply_postprocessing with nnU-Net's own rules, on the ensemble
    run_cmd(["nnUNetv2_apply_postprocessing", "-i", str(tmp / "ensemble"), "-o", str(tmp / "ensemble_pp"),
             "-pp_pkl_file", str(pp_pkl), "-np", "1", "-plans_json", pooled[0] + "/plans.json"], env)
    assert sorted(p.name for p in (tmp / "ensemble_pp").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in SSA]
    for case in SSA:
        pp = sitk.ReadImage(str(tmp / "ensemble_pp" / f"{case}.nii.gz"))
        assert pp.GetSize() == (32, 32, 32) and set(np.unique(sitk.GetArrayFromImage(pp))) <= {0, 1, 2, 3}

    # this plugin's BraTS post-processing: tuned per model and for the ensemble, then rows of the table
    dann = model(env, TRAINERS[0])
    out = run_cmd(cli("tune-postprocessing", str(dann), "-f", *FOLDS), env).stdout
    assert "min_component_mm3.WT" in out and (dann / "brats_postprocessing.json").is_file()
    tuning = json.loads((dann / "brats_postprocessing.json").read_text())["tuning"]
    assert tuning["folds"] == FOLDS and tuning["n_cases"] == len(SSA)
    assert tuning["sources"]["labels"].endswith(f"{DATASET}/gt_segmentations")
    run_cmd(cli("tune-postprocessing", "--predictions", str(tmp / "ensemble_folds")), env)  # every fold_k
    ensemble_tuning = json.loads((tmp / "ensemble_folds" / "brats_postprocessing.json").read_text())["tuning"]
    assert ensemble_tuning["folds"] == FOLDS and ensemble_tuning["n_cases"] == len(SSA)
    run_cmd(cli("apply-postprocessing", str(tmp / "ensemble_pp"), str(tmp / "ensemble_pp_brats"), "--rules",
                str(tmp / "ensemble_folds" / "brats_postprocessing.json")), env)
    assert len(list((tmp / "ensemble_pp_brats").glob("*.nii.gz"))) == len(SSA)
    run_cmd(cli("compare", "-s", f"DANN={dann}", "-s", f"DANN + Combined={tmp / 'ensemble_folds'}", "-r", "DANN",
                "-o", str(tmp / "comparison"), "--postprocessing", "DANN", "--postprocessing", "DANN + Combined"),
            env)  # every fold_k of each strategy
    table = json.loads((tmp / "comparison" / "comparison.json").read_text())
    assert table["strategies"] == ["DANN", "DANN + post-processing", "DANN + Combined",
                                   "DANN + Combined + post-processing"]
    assert table["folds"] == FOLDS and table["case_ids"] == [val_case[f] for f in FOLDS]

"""nnU-Net's own model selection, ensembling and post-processing on this plugin's results folders.

Two plugin trainers (DANN and the uniform mixed-domain "Combined" row) train on the tiny
dataset's disjoint target folds with ``--npz``; then, through the real console scripts:

* ``nnUNetv2_find_best_configuration`` selects among them and their ensemble and writes its
  ``postprocessing.pkl``;
* ``nnUNetv2_ensemble`` on the members' pooled fold probabilities equals nnU-Net's ensemble and
  ``nnunet-transfer ensemble-folds`` (the fold-structured ensemble row);
* ``nnUNetv2_apply_postprocessing`` applies nnU-Net's rules to the ensemble;
* ``nnunet-transfer tune-postprocessing``, ``apply-postprocessing`` and ``compare
  --postprocessing`` add "+ post-processing" rows for a model and for the ensemble.

The fixture's folds 0-2 each validate one SSA case (fold 3 validates all of them again, so it
cannot be pooled with the others); two of them keep the four trainings within one round of
concurrent jobs on a 2-core machine. Nothing here depends on the number of folds: the same
commands serve the plans' 10 target folds (``-f 0 1 ... 9``).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import cli, run_cmd
from tests.integration.conftest import DATASET, PLANS, SSA, train

pytestmark = pytest.mark.integration

FOLDS = ["0", "1"]
TRAINERS = ["nnUNetTrainerDANN", "nnUNetTrainerMixedDomainUniform"]
SCHEDULE = {"nnUNetTransfer_num_epochs": "1", "nnUNetTransfer_test_time_mirroring": "0"}


def model(env: dict, trainer: str) -> Path:
    return Path(env["nnUNet_results"]) / DATASET / f"{trainer}__{PLANS}__3d_fullres"


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """Both trainers on every fold, with probabilities, in a results folder of their own."""
    env = {**tiny["env"], "nnUNet_results": str(tmp_path_factory.mktemp("pp_results"))}
    jobs = [(trainer, fold) for trainer in TRAINERS for fold in FOLDS]
    with ThreadPoolExecutor(len(jobs)) as pool:  # trainings mostly wait on worker start-up
        for future in [pool.submit(train, {**tiny, "env": env}, t, f, "--npz", **SCHEDULE) for t, f in jobs]:
            future.result()
    for trainer, fold in jobs:
        validation = model(env, trainer) / f"fold_{fold}" / "validation"
        assert sorted(p.name for p in validation.glob("*.npz")) == [f"{SSA[int(fold)]}.npz"]
    return {"env": env, "tmp": tmp_path_factory.mktemp("pp_work")}


def test_nnunet_selection_ensembling_and_postprocessing(trained):
    env, tmp = trained["env"], trained["tmp"]
    run_cmd(["nnUNetv2_find_best_configuration", "901", "-c", "3d_fullres", "-p", PLANS, "-tr", *TRAINERS,
             "-f", *FOLDS, "-np", "1"], env)
    results = Path(env["nnUNet_results"]) / DATASET
    info = json.loads((results / "inference_information.json").read_text())
    identifiers = [f"{t}__{PLANS}__3d_fullres" for t in TRAINERS]
    ensemble_name = f"ensemble___{identifiers[0]}___{identifiers[1]}___{'_'.join(FOLDS)}"
    assert set(info["all_results"]) == {*identifiers, ensemble_name}
    pp_pkl = Path(info["best_model_or_ensemble"]["postprocessing_file"])
    assert pp_pkl.is_file()
    nnunet_ensemble = results / "ensembles" / ensemble_name
    cases = [SSA[int(f)] for f in FOLDS]
    assert sorted(p.name for p in nnunet_ensemble.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in cases]

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
        pooled.append(str(folder))
    run_cmd(["nnUNetv2_ensemble", "-i", *pooled, "-o", str(tmp / "ensemble"), "-np", "1"], env)
    run_cmd(cli("ensemble-folds", *(str(model(env, t)) for t in TRAINERS), "-o", str(tmp / "ensemble_folds"),
                "-f", *FOLDS), env)
    for fold in FOLDS:
        case = SSA[int(fold)]
        ours = labels(tmp / "ensemble_folds" / f"fold_{fold}" / "validation" / f"{case}.nii.gz")
        assert np.array_equal(ours, labels(tmp / "ensemble" / f"{case}.nii.gz"))
        assert np.array_equal(ours, labels(nnunet_ensemble / f"{case}.nii.gz"))

    # nnUNetv2_apply_postprocessing with nnU-Net's own rules, on the ensemble
    run_cmd(["nnUNetv2_apply_postprocessing", "-i", str(tmp / "ensemble"), "-o", str(tmp / "ensemble_pp"),
             "-pp_pkl_file", str(pp_pkl), "-np", "1", "-plans_json", pooled[0] + "/plans.json"], env)
    for case in cases:
        pp = sitk.ReadImage(str(tmp / "ensemble_pp" / f"{case}.nii.gz"))
        assert pp.GetSize() == (32, 32, 32) and set(np.unique(sitk.GetArrayFromImage(pp))) <= {0, 1, 2, 3}

    # this plugin's BraTS post-processing: tuned per model and for the ensemble, then rows of the table
    dann = model(env, TRAINERS[0])
    out = run_cmd(cli("tune-postprocessing", str(dann), "-f", *FOLDS), env).stdout
    assert "min_component_mm3.WT" in out and (dann / "brats_postprocessing.json").is_file()
    tuning = json.loads((dann / "brats_postprocessing.json").read_text())["tuning"]
    assert tuning["folds"] == FOLDS and tuning["n_cases"] == len(FOLDS)
    assert tuning["sources"]["labels"].endswith(f"{DATASET}/gt_segmentations")
    run_cmd(cli("tune-postprocessing", "--predictions", str(tmp / "ensemble_folds")), env)
    run_cmd(cli("apply-postprocessing", str(tmp / "ensemble_pp"), str(tmp / "ensemble_pp_brats"), "--rules",
                str(tmp / "ensemble_folds" / "brats_postprocessing.json")), env)
    assert len(list((tmp / "ensemble_pp_brats").glob("*.nii.gz"))) == len(cases)
    run_cmd(cli("compare", "-s", f"DANN={dann}", "-s", f"DANN + Combined={tmp / 'ensemble_folds'}", "-r", "DANN",
                "-o", str(tmp / "comparison"), "--folds", *FOLDS, "--postprocessing", "DANN",
                "--postprocessing", "DANN + Combined"), env)
    table = json.loads((tmp / "comparison" / "comparison.json").read_text())
    assert table["strategies"] == ["DANN", "DANN + post-processing", "DANN + Combined",
                                   "DANN + Combined + post-processing"]
    assert table["folds"] == FOLDS and table["case_ids"] == cases

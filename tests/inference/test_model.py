"""Reading a model folder: channels in training order, clipping, folds, post-processing files."""

from __future__ import annotations

import json

import pytest

from nnunet_transfer.inference.model import clipping_of, find_model_folder, load_model, modalities_of, parse_folds

CONVERTED = {"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
             "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3}, "file_ending": ".nii.gz"}


def fake_model(root, folds=("0", "1"), dataset_json=CONVERTED, name="nnUNetTrainer__nnUNetPlans__3d_fullres"):
    folder = root / "Dataset950_X" / name
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"x")
    return folder


def test_channels_follow_the_training_order_whatever_the_names():
    assert modalities_of(CONVERTED) == ["t1n", "t1c", "t2w", "t2f"]
    names = {"channel_names": {"1": "t1ce", "0": "flair", "2": "T2"}}  # modality aliases, keys out of order
    assert modalities_of(names) == ["t2f", "t1c", "t2w"]
    with pytest.raises(ValueError, match="input channel 1 is named 'ADC', which is no BraTS modality"):
        modalities_of({"channel_names": {"0": "T1", "1": "ADC"}})
    with pytest.raises(ValueError, match="twice"):
        modalities_of({"channel_names": {"0": "T1", "1": "t1n"}})


def test_clipping_recorded_by_convert():
    assert clipping_of(CONVERTED) is None
    assert clipping_of({"intensity_clipping": {"percentiles": [0.5, 99.5], "within": "nonzero"}}) == (0.5, 99.5)
    with pytest.raises(ValueError, match="within 'mask'"):
        clipping_of({"intensity_clipping": {"percentiles": [1, 99], "within": "mask"}})


def test_folds_default_to_every_trained_fold_then_all(tmp_path):
    folder = fake_model(tmp_path, folds=("0", "2", "all"))
    (folder / "fold_1").mkdir()  # no checkpoint: not a trained fold
    assert load_model(folder).folds == [0, 2]
    assert load_model(folder, folds=["all"]).folds == ["all"]
    only_all = fake_model(tmp_path / "b", folds=("all",))
    model = load_model(only_all)
    assert model.folds == ["all"] and model.trainer == "nnUNetTrainer" and model.configuration == "3d_fullres"
    with pytest.raises(FileNotFoundError, match=r"fold\(s\) 3 have no checkpoint_final.pth \(folds with it: 0, 2\)"):
        load_model(folder, folds=[0, 3])
    assert parse_folds(["1", "all"]) == [1, "all"]
    with pytest.raises(ValueError, match="neither a number nor 'all'"):
        parse_folds(["x"])


def test_dataset_folder_with_one_model_and_clear_errors(tmp_path):
    folder = fake_model(tmp_path)
    assert find_model_folder(folder.parent) == folder
    fake_model(tmp_path, name="nnUNetTrainer__nnUNetPlans__2d")
    with pytest.raises(ValueError, match="several models"):
        find_model_folder(folder.parent)
    (folder / "plans.json").unlink()
    with pytest.raises(FileNotFoundError, match="plans.json is missing"):
        load_model(folder)
    with pytest.raises(FileNotFoundError, match="is not an nnU-Net model folder"):
        find_model_folder(tmp_path)


def test_postprocessing_files_next_to_the_model(tmp_path):
    folder = fake_model(tmp_path)
    model = load_model(folder)
    assert model.brats_rules_file() is None and model.nnunet_postprocessing_file() is None
    crossval = folder / "crossval_results_folds_0_1"
    crossval.mkdir()
    (crossval / "postprocessing.pkl").write_bytes(b"x")
    (crossval / "brats_postprocessing.json").write_text("{}")
    assert model.nnunet_postprocessing_file() == crossval / "postprocessing.pkl"
    assert model.brats_rules_file() == crossval / "brats_postprocessing.json"
    (folder / "brats_postprocessing.json").write_text("{}")
    assert model.brats_rules_file() == folder / "brats_postprocessing.json"
    assert load_model(folder, folds=[0]).nnunet_postprocessing_file() is None  # determined for other folds

"""segment: raw cases of every layout -> BraTS label files, equal to nnU-Net's own prediction."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_transfer.inference import SegmentOptions, Segmenter, export_bundle, find_cases, segment
from tests.conftest import run_cmd
from tests.inference.conftest import PLANS, make_case

CPU = dict(device="cpu", use_mirroring=False)


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def geometry(path: Path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def nnunet_prediction(model, files, out: Path, folds, use_mirroring=True) -> Path:
    """nnU-Net's own file-based prediction (what nnUNetv2_predict runs), in-process."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=use_mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model.folder), folds, "checkpoint_final.pth")
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(f) for f in files]], [str(out / "case")])
    return out / "case.nii.gz"


def test_every_layout_with_defective_cases_among_good_ones(four_channel_model, tmp_path):
    batch = tmp_path / "batch"
    make_case(batch, "BraTS-SSA-00001-000", labeled=False)
    truncated = make_case(batch, "BraTS-SSA-00002-000") / "BraTS-SSA-00002-000-t2w.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:-200])
    make_case(batch, "BraTS-SSA-00003-000", skip=["t1c"])
    old = make_case(tmp_path / "brats2021", "BraTS2021_00042", layout="2021", ending=".nii")
    out = tmp_path / "labels"
    report = segment([batch, old], four_channel_model.folder, out, SegmentOptions(**CPU))

    assert sorted(report.written) == ["BraTS-SSA-00001-000", "BraTS2021_00042"]
    assert report.refused == {
        "BraTS-SSA-00002-000": ["BraTS-SSA-00002-000-t2w.nii.gz: truncated or corrupt (gzip stream ends early)"],
        "BraTS-SSA-00003-000": ["BraTS-SSA-00003-000-t1c.nii.gz: missing"]}
    assert "refused BraTS-SSA-00003-000: BraTS-SSA-00003-000-t1c.nii.gz: missing" in report.summary()
    assert sorted(p.name for p in out.iterdir()) == ["BraTS-SSA-00001-000.nii.gz", "BraTS2021_00042.nii.gz"]
    for case_id, source in (("BraTS-SSA-00001-000", batch / "BraTS-SSA-00001-000" / "BraTS-SSA-00001-000-t1n.nii.gz"),
                            ("BraTS2021_00042", old / "BraTS2021_00042_t1.nii")):
        written = report.written[case_id]
        assert geometry(written) == geometry(source)  # the input's grid, exactly
        assert sitk.ReadImage(str(written)).GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(labels(written))) <= {0, 1, 2, 3}
    assert report.seconds_per_case > 0 and report.device == "cpu"


def test_labels_equal_nnunets_prediction_of_the_converted_case(four_channel_model, tmp_path):
    case_id = four_channel_model.test_cases[0]
    converted = sorted((four_channel_model.raw / "imagesTs").glob(f"{case_id}_*.nii.gz"))
    reference = nnunet_prediction(four_channel_model, converted, tmp_path / "nnunet", [0, 1])
    options = SegmentOptions(device="cpu", style="2021", save_probabilities=True)  # mirroring, as nnU-Net
    report = segment(four_channel_model.source / case_id, four_channel_model.folder, tmp_path / "out", options)
    expected = labels(reference)
    assert len(np.unique(expected)) > 1
    got = labels(report.written[case_id])
    np.testing.assert_array_equal(got, np.where(expected == 3, 4, expected))  # --style 2021: ET=4
    assert geometry(report.written[case_id]) == geometry(reference)
    probabilities = np.load(tmp_path / "out" / f"{case_id}.npz")["probabilities"]
    assert probabilities.shape == (4, *expected.shape)
    np.testing.assert_array_equal(probabilities.argmax(0), expected)
    properties = pickle.loads((tmp_path / "out" / f"{case_id}.pkl").read_bytes())
    assert properties["sitk_stuff"]["origin"] == sitk.ReadImage(str(reference)).GetOrigin()


def test_three_channel_clipped_model_reads_cases_as_convert_wrote_them(brainunet_model, tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    case_id = brainunet_model.test_cases[0]
    with Segmenter(brainunet_model.folder, SegmentOptions(**CPU)) as segmenter:
        assert segmenter.model.modalities == ["t2f", "t1c", "t2w"] and segmenter.model.clipping == (0.5, 99.5)
        case, = find_cases(brainunet_model.source / case_id, segmenter.model.modalities)
        image, properties = segmenter.read_case(case, tmp_path)
    converted = sorted((brainunet_model.raw / "imagesTs").glob(f"{case_id}_*.nii.gz"))
    expected, expected_properties = SimpleITKIO().read_images([str(f) for f in converted])
    np.testing.assert_array_equal(image, expected)  # FLAIR, T1Gd, T2, clipped exactly as convert clipped them
    assert image.max() < 9000 and properties == expected_properties


def test_a_bundle_segments_like_its_model_folder(brainunet_model, tmp_path):
    bundle = export_bundle(brainunet_model.folder, tmp_path / "bundle.zip")
    print(f"bundle of the tiny BrainUNet model: {bundle.stat().st_size / 1e3:.0f} kB")
    cases = brainunet_model.source  # two labeled and one unlabeled case: label files are ignored
    from_folder = segment(cases, brainunet_model.folder, tmp_path / "a", SegmentOptions(**CPU))
    from_bundle = segment(cases, bundle, tmp_path / "b", SegmentOptions(**CPU))
    assert sorted(from_bundle.written) == sorted(from_folder.written) and len(from_folder.written) == 3
    for case_id, path in from_folder.written.items():
        np.testing.assert_array_equal(labels(from_bundle.written[case_id]), labels(path))


def test_postprocessing_files_are_applied_unless_turned_off(four_channel_model, tmp_path):
    from nnunetv2.postprocessing.remove_connected_components import (apply_postprocessing,
                                                                     remove_all_but_largest_component_from_segmentation)

    folder = tmp_path / "results" / four_channel_model.folder.parent.name / four_channel_model.folder.name
    shutil.copytree(four_channel_model.folder, folder)
    steps = ([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": [1, 2, 3]}])
    (folder / "crossval_results_folds_0_1").mkdir()
    (folder / "crossval_results_folds_0_1" / "postprocessing.pkl").write_bytes(pickle.dumps(steps))
    case = four_channel_model.source / four_channel_model.test_cases[0]
    plain = segment(case, folder, tmp_path / "plain", SegmentOptions(postprocessing=False, **CPU))
    processed = segment(case, folder, tmp_path / "pp", SegmentOptions(**CPU))
    assert plain.postprocessing == []
    assert processed.postprocessing == ["nnU-Net crossval_results_folds_0_1/postprocessing.pkl"]
    (case_id, path), = plain.written.items()
    np.testing.assert_array_equal(labels(processed.written[case_id]), apply_postprocessing(labels(path), *steps))

    # the plugin's BraTS rules (tune-postprocessing's brats_postprocessing.json) replace nnU-Net's
    from nnunet_transfer.postprocessing import Rules, apply, write_rules

    rules = Rules(min_component_mm3={"NCR": 1000.0}, et_to_ncr_volume_mm3=50.0)
    write_rules(folder / "brats_postprocessing.json", rules)
    ruled = segment(case, folder, tmp_path / "rules", SegmentOptions(**CPU))
    assert ruled.postprocessing == [f"BraTS rules brats_postprocessing.json ({rules.describe()})"]
    spacing = (1.5, 1.2000000476837158, 1.0)  # nnU-Net's, in the array's axis order (z, y, x)
    np.testing.assert_array_equal(labels(ruled.written[case_id]), apply(labels(path), spacing, rules))
    assert (labels(ruled.written[case_id]) != labels(path)).any()  # small NCR components went
    (folder / "brats_postprocessing.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a post-processing rules file"):
        segment(case, folder, tmp_path / "bad", SegmentOptions(**CPU))


@pytest.mark.integration
def test_agrees_with_nnUNetv2_predict(brainunet_model, tmp_path):
    """Stock nnUNetv2_predict on the converted (clipped, three-channel) case vs segment on the raw case."""
    run_cmd(["nnUNetv2_predict", "-i", str(brainunet_model.raw / "imagesTs"), "-o", str(tmp_path / "nnunet"),
             "-d", str(brainunet_model.dataset_id), "-c", "3d_fullres", "-f", "all", "-tr", brainunet_model.trainer,
             "-p", PLANS, "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar"], brainunet_model.env)
    case_id = brainunet_model.test_cases[0]
    report = segment(brainunet_model.source / case_id, brainunet_model.folder, tmp_path / "out",
                     SegmentOptions(device="cpu"))
    expected = labels(tmp_path / "nnunet" / f"{case_id}.nii.gz")
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels(report.written[case_id]), expected)
    assert geometry(report.written[case_id]) == geometry(tmp_path / "nnunet" / f"{case_id}.nii.gz")


def test_models_trained_with_the_ignore_label_write_brats_labels():
    from types import SimpleNamespace

    from nnunet_transfer.inference.segmenter import _check_labels

    for labels in ({"background": 0, "NCR": 1, "ED": 2, "ET": 3, "ignore": 4},
                   {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3],
                    "ignore": 4}):
        _check_labels(SimpleNamespace(dataset_json={"labels": labels}))  # unlabelled target cases: still BraTS
    with pytest.raises(ValueError, match="are not BraTS's NCR=1, ED=2, ET=3"):
        _check_labels(SimpleNamespace(dataset_json={"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 3, "X": 4}}))

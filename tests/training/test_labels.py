"""Which target training labels a run may use: the draw, the run state, the masked loss, the dataset wrapper."""

from __future__ import annotations

import doctest
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion.labels import with_ignore_label
from nnunet_transfer.training import labels as labels_module
from nnunet_transfer.training import trainers as T
from nnunet_transfer.training.labels import (LabelHidingDataset, check_labelled_setting, draw_labelled_cases,
                                             labelled_count)
from tests.training.test_trainers_inprocess import folders, tiny_plans  # noqa: F401 (fixture)

GLI = ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
SSA = [f"BraTS-SSA-{i:05d}-000" for i in range(4)]
TRAIN, VAL = GLI + SSA[1:], SSA[:1]
LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
DATASET_JSON = {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": LABELS, "numTraining": 6,
                "file_ending": ".nii.gz", "target_domain": "SSA"}
REGION_JSON = {**DATASET_JSON, "labels": REGIONS, "regions_class_order": [1, 2, 3]}


@pytest.fixture(autouse=True)
def no_setting_from_the_environment(monkeypatch):
    monkeypatch.delenv(config.LABELLED_TARGET_CASES, raising=False)


def make(cls, dataset_json=DATASET_JSON, train=TRAIN, val=VAL, initialize=True, resumed=None):
    trainer = cls({**tiny_plans(), "continue_training": False}, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.resumed_run = resumed
    trainer._split = (list(train), list(val))
    trainer.check_training_cases(list(train), list(val))
    if initialize:
        trainer.initialize()
        trainer.network.train()
    return trainer


# ---- the draw ------------------------------------------------------------------------------------------------------
def test_docstring_examples():
    result = doctest.testmod(labels_module)
    assert result.attempted > 0 and result.failed == 0


def test_the_draw_is_deterministic_and_sorted():
    cases = [f"t{i}" for i in range(10)]
    labelled, hidden = draw_labelled_cases(reversed(cases), 3, seed=7)
    assert (labelled, hidden) == draw_labelled_cases(cases, 3, seed=7)  # input order does not matter
    assert len(labelled) == 3 and sorted(labelled + hidden) == cases and labelled == sorted(labelled)
    order = np.random.default_rng(7).permutation(10)
    assert labelled == sorted(cases[i] for i in order[:3])
    assert {tuple(draw_labelled_cases(cases, 3, seed=s)[0]) for s in range(20)} != {tuple(labelled)}


def test_fraction_zero_none_and_unlabelled_cases():
    cases = [f"t{i}" for i in range(6)]
    assert len(draw_labelled_cases(cases, 0.5)[0]) == 3
    assert len(draw_labelled_cases(cases, 0.25)[0]) == 2  # 1.5 rounds half up
    assert draw_labelled_cases(cases, 0) == ([], cases)
    assert draw_labelled_cases(cases, None) == (cases, [])
    labelled, hidden = draw_labelled_cases(cases, None, unlabelled=["t0", "t5", "other"])
    assert labelled == cases[1:5] and hidden == []  # unlabelled cases never count as labelled
    labelled, hidden = draw_labelled_cases(cases, 0.5, unlabelled=["t0", "t5"])
    assert len(labelled) == 2 and not {"t0", "t5"} & set(labelled + hidden)


@pytest.mark.parametrize("value, match", [(7, "only 6 target training case"), (0.05, "rounds to none"),
                                          (-1, "integer >= 0"), (1.0, "fraction in"), (True, "integer >= 0"),
                                          ("3", "integer >= 0")])
def test_impossible_settings_are_refused(value, match):
    with pytest.raises(ValueError, match=match):
        labelled_count(value, 6)


def test_the_environment_overrides_the_class_attribute(monkeypatch):
    assert T.nnUNetTrainerDANNSemiSupervised.labelled_setting() == 10
    for text, value in (("3", 3), ("0", 0), ("0.25", 0.25), (" 2 ", 2)):
        monkeypatch.setenv(config.LABELLED_TARGET_CASES, text)
        assert T.nnUNetTrainerDANNSemiSupervised.labelled_setting() == value
    for bad in ("ten", "-2", "1.5", "nan"):
        monkeypatch.setenv(config.LABELLED_TARGET_CASES, bad)
        with pytest.raises(ValueError, match=f"{config.LABELLED_TARGET_CASES}='{bad}' must be"):
            config.labelled_target_cases()
    assert check_labelled_setting(None) is None


# ---- the trainer's decision and its run state ----------------------------------------------------------------------
def test_decision_is_logged_and_saved_and_restored_on_resume(folders, monkeypatch):
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "1")
    first = make(T.nnUNetTrainerDANNSemiSupervised, initialize=False)
    decision = first.run_state()["target_labels"]
    assert decision["setting"] == 1 and len(decision["labelled"]) == 1 and len(decision["hidden"]) == 2
    assert sorted(decision["labelled"] + decision["hidden"]) == SSA[1:]
    log = Path(first.log_file).read_text()
    assert f"fold 0: 1 of 3 target training cases keep their labels (labelled_target_cases = 1, seed 12345): " \
           f"{decision['labelled']}; 2 hidden" in log

    class OtherSeed(T.nnUNetTrainerDANNSemiSupervised):
        label_seed = 1

    monkeypatch.delenv(config.LABELLED_TARGET_CASES)
    resumed = make(OtherSeed, initialize=False, resumed={"target_labels": decision})
    assert resumed.run_state()["target_labels"] == decision  # the checkpoint's, not the class's 10 and seed 1
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "2")
    with pytest.raises(RuntimeError, match=rf"=2 but the checkpoint's run decided labelled_target_cases = 1 "
                                           rf"\(seed 12345\): 1 labelled target training cases "
                                           rf"\['{decision['labelled'][0]}'\]"):
        make(T.nnUNetTrainerDANNSemiSupervised, initialize=False, resumed={"target_labels": decision})
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "1")  # the same value is fine
    make(T.nnUNetTrainerDANNSemiSupervised, initialize=False, resumed={"target_labels": decision})
    with pytest.raises(RuntimeError, match="does not record which target training cases"):
        make(T.nnUNetTrainerDANNSemiSupervised, initialize=False, resumed={})


def test_unlabelled_cases_of_dataset_json_are_never_labelled_nor_validated(folders):
    dataset_json = {**DATASET_JSON, "labels": with_ignore_label(LABELS), "unlabelled": [SSA[3]]}
    class Two(T.nnUNetTrainerDANNSemiSupervised):
        labelled_target_cases = 2

    trainer = make(Two, dataset_json, initialize=False)
    assert trainer.target_labels["labelled"] == SSA[1:3] and trainer.target_labels["unlabelled"] == [SSA[3]]
    assert trainer.label_free_cases == {SSA[3]}
    with pytest.raises(RuntimeError, match=rf"validates 1 case\(s\) that dataset.json lists as unlabelled: "
                                           rf"\['{SSA[3]}'\].*nnunet-transfer splits"):
        make(T.nnUNetTrainerSourceOnly, dataset_json, train=TRAIN[:-1], val=[SSA[3]], initialize=False)


def test_the_ignore_label_is_added_before_nnunet_builds_the_label_manager(folders):
    trainer = make(T.nnUNetTrainerDANNUnsupervised)
    assert trainer.dataset_json["labels"] == {**LABELS, "ignore": 4} and DATASET_JSON["labels"] == LABELS
    assert trainer.label_manager.ignore_label == 4 and trainer.label_manager.num_segmentation_heads == 4
    assert trainer.my_init_kwargs["dataset_json"]["labels"]["ignore"] == 4  # what checkpoints record
    assert trainer.network.decoder.seg_layers[-1].out_channels == 4  # no output channel for ignore
    regions = make(T.nnUNetTrainerDANNUnsupervised, REGION_JSON)
    assert regions.label_manager.has_regions and regions.label_manager.ignore_label == 4
    assert regions.network.decoder.seg_layers[-1].out_channels == 3
    dropped = T.nnUNetTrainerFineTuneLabelledSubset({**tiny_plans(), "continue_training": False}, "3d_fullres", 0,
                                                    DATASET_JSON, torch.device("cpu"))  # drop: nothing to mask
    assert dropped.dataset_json["labels"] == LABELS and dropped.label_manager.ignore_label is None


def test_drop_trains_on_the_labelled_subset_only(folders, monkeypatch):
    base = Path(os.environ["nnUNet_preprocessed"]) / "Dataset998_InProcess"
    (base / "splits_final.json").write_text(json.dumps([{"train": SSA[1:], "val": SSA[:1]}]))
    ssa_only = {**DATASET_JSON, "target_domain": None}
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "2")
    trainer = T.nnUNetTrainerFineTuneLabelledSubset({**tiny_plans(), "continue_training": False}, "3d_fullres", 0,
                                                    ssa_only, torch.device("cpu"))
    train, val = trainer.do_split()
    assert train == trainer.target_labels["labelled"] and len(train) == 2 and val == SSA[:1]
    assert trainer.do_split()[0] == train  # idempotent
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "0")
    trainer = T.nnUNetTrainerFineTuneLabelledSubset({**tiny_plans(), "continue_training": False}, "3d_fullres", 0,
                                                    ssa_only, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="fold 0 has no labelled training case left after dropping 3"):
        trainer.do_split()


def test_no_checkpoint_best_without_target_labels(folders):
    trainer = make(T.nnUNetTrainerDANNUnsupervised)
    out = Path(trainer.output_folder)
    trainer.save_checkpoint(str(out / "checkpoint_best.pth"))
    trainer.save_checkpoint(str(out / "checkpoint_best.pth"))
    trainer.save_checkpoint(str(out / "checkpoint_latest.pth"))
    assert not (out / "checkpoint_best.pth").exists() and (out / "checkpoint_latest.pth").exists()
    assert Path(trainer.log_file).read_text().count("no checkpoint_best.pth: no target training label is used") == 1


# ---- the masked segmentation loss ----------------------------------------------------------------------------------
def targets(trainer, seg: torch.Tensor):
    """What nnU-Net's transforms make of ``seg`` (b, 1, x, y, z): region channels (+ ignore) and deep supervision."""
    lm = trainer.label_manager
    if lm.has_regions:
        channels = [torch.isin(seg.long(), torch.tensor(r if isinstance(r, (list, tuple)) else [r]))
                    for r in lm.all_regions]
        seg = torch.cat(channels + [seg == lm.ignore_label], 1).to(torch.int16)
    scales = trainer._get_deep_supervision_scales()
    return [torch.nn.functional.interpolate(seg.float(), scale_factor=tuple(s), mode="nearest-exact") for s in scales]


@pytest.mark.parametrize("dataset_json", [DATASET_JSON, REGION_JSON], ids=["labels", "regions"])
@pytest.mark.parametrize("cls", [T.nnUNetTrainerDANNUnsupervised, T.nnUNetTrainerDANNNoGRLUnsupervised])
def test_a_hidden_case_gets_no_gradient_from_the_segmentation_loss_but_from_the_domain_loss(folders, cls,
                                                                                             dataset_json):
    torch.manual_seed(0)
    trainer = make(cls, dataset_json)
    trainer.current_epoch = trainer.num_epochs // 2  # the reversal strength is 0 at the very start
    trainer._step_in_epoch = 0
    keys = [GLI[0], SSA[1]]
    assert SSA[1] in trainer.target_labels["hidden"]
    seg = torch.randint(0, 4, (2, 1, 16, 16, 16)).float()
    seg[1] = trainer.label_manager.ignore_label  # what LabelHidingDataset gives a hidden case
    target = targets(trainer, seg)
    data = torch.randn(2, 2, 16, 16, 16, requires_grad=True)
    output = trainer.network(data)
    seg_loss = trainer.loss(output, target)  # the real nnU-Net loss the trainer built (DC_and_CE / DC_and_BCE)
    grad_seg = torch.autograd.grad(seg_loss, data, retain_graph=True)[0]
    assert torch.count_nonzero(grad_seg[0]) > 0
    assert torch.count_nonzero(grad_seg[1]) == 0  # exactly zero
    batch = {"keys": keys}
    trainer.prepare_batch(batch)
    total, extras = trainer.compute_loss(output, target, batch)
    grad_total = torch.autograd.grad(total, data)[0]
    assert torch.count_nonzero(grad_total[1]) > 0 and float(extras["domain_loss"]) > 0


@pytest.mark.parametrize("dataset_json", [DATASET_JSON, REGION_JSON], ids=["labels", "regions"])
def test_a_hidden_case_leaves_the_labelled_cases_loss_as_if_they_trained_alone(folders, dataset_json):
    """Per-sample Dice (batch_dice False): a hidden case, padding included, no longer counts in the average."""
    from nnunet_transfer.training.losses import LabelledSamplesDice

    torch.manual_seed(0)
    trainer = make(T.nnUNetTrainerMixedDomainUnsupervised, dataset_json)
    assert not trainer.configuration_manager.batch_dice
    assert isinstance(getattr(trainer.loss, "loss", trainer.loss).dc, LabelledSamplesDice)
    keys = [GLI[0], GLI[1], SSA[1]]
    assert SSA[1] in trainer.label_free_cases
    seg = torch.randint(0, 4, (3, 1, 16, 16, 16)).float()
    seg[2] = trainer.label_manager.ignore_label
    seg[2, :, :4] = 0  # nnU-Net pads past the image with -1, which its transforms make background
    target = targets(trainer, seg)
    data = torch.randn(3, 2, 16, 16, 16, requires_grad=True)
    output = trainer.network(data)  # instance norm: each sample's output depends on that sample only
    first = (lambda x: [t[:2] for t in x]) if isinstance(output, (list, tuple)) else (lambda x: x[:2])
    with_hidden, _ = trainer.compute_loss(output, target, {"keys": keys})
    alone = trainer.loss(first(output), first(target) if isinstance(output, (list, tuple)) else target[0][:2])
    assert torch.isclose(with_hidden, alone, rtol=1e-5, atol=1e-6)
    grad_with = torch.autograd.grad(with_hidden, data, retain_graph=True)[0]
    grad_alone = torch.autograd.grad(alone, data)[0]
    assert torch.allclose(grad_with[:2], grad_alone[:2], rtol=1e-4, atol=1e-9)
    assert torch.count_nonzero(grad_with[2]) == 0


@pytest.mark.parametrize("dataset_json", [DATASET_JSON, REGION_JSON], ids=["labels", "regions"])
def test_unlabelled_scans_are_ignored_whole_by_every_plugin_trainer(folders, dataset_json):
    """A plain (supervised) trainer on a dataset with unlabelled scans: their padded voxels train nothing either."""
    unlabelled = {**dataset_json, "labels": {**dataset_json["labels"], "ignore": 4}, "unlabelled": [SSA[1]]}
    torch.manual_seed(0)
    trainer = make(T.nnUNetTrainerMixedDomain, unlabelled)
    assert trainer.label_free_cases == {SSA[1]}
    seg = torch.randint(0, 4, (2, 1, 16, 16, 16)).float()
    seg[1] = 4
    seg[1, :, :4] = 0  # padding, made background by nnU-Net's transforms
    data = torch.randn(2, 2, 16, 16, 16, requires_grad=True)
    loss, _ = trainer.compute_loss(trainer.network(data), targets(trainer, seg), {"keys": [GLI[0], SSA[1]]})
    grad = torch.autograd.grad(loss, data)[0]
    assert torch.count_nonzero(grad[0]) > 0 and torch.count_nonzero(grad[1]) == 0


@pytest.mark.parametrize("dataset_json", [DATASET_JSON, REGION_JSON], ids=["labels", "regions"])
def test_with_nothing_hidden_the_masked_loss_is_the_plain_loss(folders, dataset_json):
    """The ignore label changes nothing until a voxel is ignored (nnU-Net's own region loss would triple its BCE)."""
    torch.manual_seed(0)
    hiding, plain = make(T.nnUNetTrainerDANNUnsupervised, dataset_json), make(T.nnUNetTrainerDANN, dataset_json)
    assert hiding.label_manager.has_ignore_label and not plain.label_manager.has_ignore_label
    seg = torch.randint(0, 4, (2, 1, 16, 16, 16)).float()
    output = hiding.network(torch.randn(2, 2, 16, 16, 16))
    masked = hiding.loss(output, targets(hiding, seg))
    reference = plain.loss(output, [t[:, :-1] if plain.label_manager.has_regions else t for t in targets(hiding, seg)])
    assert torch.allclose(masked, reference, rtol=1e-5, atol=1e-6), (float(masked), float(reference))


@pytest.mark.parametrize("cls", [T.nnUNetTrainerDANNUnsupervised, T.nnUNetTrainerDANNSemiSupervised,
                                 T.nnUNetTrainerMixedDomainUnsupervised, T.nnUNetTrainerDANNNoGRLUnsupervised_PaperRecipe])
def test_one_training_step_with_a_hidden_case(folders, monkeypatch, cls):
    monkeypatch.setenv(config.LABELLED_TARGET_CASES, "1")
    if "Unsupervised" in cls.__name__:
        monkeypatch.delenv(config.LABELLED_TARGET_CASES)
    trainer = make(cls)
    trainer._step_in_epoch = 0
    hidden = trainer.target_labels["hidden"][0]
    seg = torch.randint(0, 4, (2, 1, 16, 16, 16)).float()
    seg[1] = 4
    before = {n: p.detach().clone() for n, p in trainer.network.named_parameters()}
    out = trainer.train_step({"data": torch.randn(2, 2, 16, 16, 16), "target": targets(trainer, seg),
                              "keys": [GLI[0], hidden]})
    assert np.isfinite(out["loss"])
    assert any(not torch.equal(p, before[n]) for n, p in trainer.network.named_parameters())


# ---- the dataset wrapper -------------------------------------------------------------------------------------------
@pytest.fixture
def preprocessed(tmp_path):
    """Three preprocessed cases in nnU-Net's blosc2 format; their original segmentations."""
    folder = tmp_path / "nnUNetPlans_3d_fullres"
    folder.mkdir()
    rng = np.random.default_rng(0)
    segs = {}
    for case in ("L1", "H1", "H2"):
        data = rng.normal(size=(2, 20, 20, 20)).astype(np.float32)
        seg = np.zeros((1, 20, 20, 20), np.int16)
        seg[0, 6:14, 6:14, 6:14] = 2
        seg[0, 9:11, 9:11, 9:11] = 3
        locations = DefaultPreprocessor._sample_foreground_locations(seg, [1, 2, 3])
        blocks, chunks = comp_blosc2_params(data.shape, (16, 16, 16), data.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, {"class_locations": locations, "spacing": [1, 1, 1]},
                                      str(folder / case), chunks=chunks, blocks=blocks)
        segs[case] = seg
    (folder / "H1_seg.b2nd").write_bytes(b"garbage: must never be opened")  # poisoned
    (folder / "H2_seg.b2nd").unlink()  # deleted
    return folder, segs


def test_hidden_cases_seg_files_are_never_opened_and_their_class_locations_are_empty(preprocessed):
    folder, segs = preprocessed
    lm = LabelManager(with_ignore_label(LABELS), None)
    key = (-1, 0, 1, 2, 3)
    dataset = LabelHidingDataset(nnUNetDatasetBlosc2(str(folder)), ["H1", "H2", "not-here"], 4, key)
    assert dataset.identifiers == ["H1", "H2", "L1"] and dataset.hidden == {"H1", "H2"}
    for case in ("H1", "H2"):
        data, seg, seg_prev, properties = dataset.load_case(case)
        assert data.shape == (2, 20, 20, 20) and seg_prev is None
        assert seg.shape == (1, 20, 20, 20) and seg.dtype == np.int16 and np.all(seg == 4)
        assert set(properties["class_locations"]) == {1, 2, 3, key}
        assert all(len(v) == 0 for v in properties["class_locations"].values())
    data, seg, _, properties = dataset.load_case("L1")
    assert np.array_equal(seg[:], segs["L1"])  # labelled cases keep their labels ...
    assert len(properties["class_locations"][2]) > 0 and len(properties["class_locations"][key]) == 0  # ... + the key
    with pytest.raises(Exception):
        nnUNetDatasetBlosc2(str(folder)).load_case("H1")  # nnU-Net itself would open the poisoned file

    for oversample in (1.0, 0.0):  # foreground-forced crops and random (annotated-key) crops
        loader = nnUNetDataLoader(dataset, 3, (16, 16, 16), (16, 16, 16), lm, oversample_foreground_percent=oversample)
        loader.get_indices = lambda: ["H1", "L1", "H2"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            batch = loader.generate_train_batch()
        assert not [w for w in caught if "No annotated pixels" in str(w.message)]  # random crops by design
        assert torch.all(batch["target"][0] == 4) and torch.all(batch["target"][2] == 4)
        assert set(torch.unique(batch["target"][1]).tolist()) <= {-1, 0, 2, 3}


def test_hiding_needs_an_ignore_label(preprocessed):
    with pytest.raises(ValueError, match="without an ignore label"):
        LabelHidingDataset(nnUNetDatasetBlosc2(str(preprocessed[0])), ["H1"], None)


def test_batch_per_domain_gives_each_domain_the_batch_size(folders, monkeypatch):
    """Unsupervised runs keep source-only training's labelled cases per step: B source + B target."""
    from nnunet_transfer.training.mixed_domain import DomainAwareMixin
    from nnunet_transfer.training.sampling import batch_domain_counts

    seen = []
    monkeypatch.setattr(DomainAwareMixin, "get_dataloaders", lambda self: seen.append(self.batch_size) or ("tr", "val"))
    unsupervised = make(T.nnUNetTrainerDANNUnsupervised)
    per_domain = unsupervised.batch_size
    assert unsupervised.get_dataloaders() == ("tr", "val") and seen == [2 * per_domain]
    assert unsupervised.batch_size == per_domain  # only the loaders see the doubled batch
    assert batch_domain_counts(2 * per_domain, unsupervised.target_share) == per_domain
    assert "batches of %d cases: %d source + %d target" % (2 * per_domain, per_domain, per_domain) in \
        Path(unsupervised.log_file).read_text()
    make(T.nnUNetTrainerDANN).get_dataloaders()  # the paper's DANN keeps its batch
    assert seen == [2 * per_domain, per_domain]
    assert T.nnUNetTrainerMixedDomainUnsupervised.batch_per_domain and T.nnUNetTrainerDANNSemiSupervised.batch_per_domain
    assert not T.nnUNetTrainerFineTuneLabelledSubset.batch_per_domain


def test_per_domain_foreground_oversampling_is_run_state(folders):
    """batch_per_domain runs oversample per domain; a run saved before the choice existed resumes without it."""
    unsupervised = make(T.nnUNetTrainerDANNUnsupervised)
    assert unsupervised.foreground_oversampling == "per_domain"
    state = unsupervised.run_state()
    saved = state["domains"]
    assert saved["foreground_oversampling"] == "per_domain"
    assert "foreground oversampled per domain" in Path(unsupervised.log_file).read_text()
    assert make(T.nnUNetTrainerDANN, initialize=False).foreground_oversampling == "batch"
    older = {k: v for k, v in saved.items() if k != "foreground_oversampling"}
    resumed = make(T.nnUNetTrainerDANNUnsupervised, initialize=False, resumed={**state, "domains": older})
    assert resumed.foreground_oversampling == "batch"
    again = make(T.nnUNetTrainerDANNUnsupervised, initialize=False, resumed=state)
    assert again.foreground_oversampling == "per_domain"

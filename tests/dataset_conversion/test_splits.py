"""write_target_splits: target-only folds, identical across datasets, deterministic."""

import json

import pytest

from nnunet_transfer.dataset_conversion import combine_datasets, convert_brats, write_target_splits
from nnunet_transfer.dataset_conversion.splits import target_folds
from tests.dataset_conversion.conftest import gli_ids, make_brats, make_case, ssa_ids


@pytest.fixture
def datasets(tmp_path, nnunet_env):
    convert_brats(make_brats(tmp_path / "gli", gli_ids(3)), 231, "GLI", link=True)
    convert_brats(make_brats(tmp_path / "ssa", ssa_ids(10)), 232, "SSA", link=True)
    combine_datasets([231, 232], 233, "GLI_SSA")
    return nnunet_env


def load(env, name):
    with open(f"{env['nnUNet_preprocessed']}/{name}/splits_final.json") as fh:
        return json.load(fh)


@pytest.mark.parametrize("k", [5, 10])
def test_target_folds_identical_across_datasets(datasets, k):
    folds = write_target_splits([232, 233], "SSA", folds=k)
    assert len(folds) == k
    ssa_only, combined = load(datasets, "Dataset232_SSA"), load(datasets, "Dataset233_GLI_SSA")
    vals = [sorted(f["val"]) for f in ssa_only]
    assert vals == [sorted(f["val"]) for f in combined] == [sorted(f["val"]) for f in folds]
    assert sorted(c for v in vals for c in v) == ssa_ids(10)  # every target case validated exactly once
    for fold_ssa, fold_both in zip(ssa_only, combined):
        assert set(fold_ssa["train"]) == set(ssa_ids(10)) - set(fold_ssa["val"])
        assert set(fold_both["train"]) == set(fold_ssa["train"]) | set(gli_ids(3))  # source always trains
        assert not set(fold_both["val"]) & set(gli_ids(3))


def test_splits_are_deterministic_and_match_nnunet_default(datasets):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    first = write_target_splits([232], "SSA", seed=7)
    again = write_target_splits(["Dataset232_SSA"], "SSA", seed=7)
    assert first == again == load(datasets, "Dataset232_SSA")
    assert write_target_splits([232], "SSA", seed=8) != first
    nnunet = generate_crossval_split(ssa_ids(10), seed=12345, n_splits=5)
    assert [list(f["val"]) for f in nnunet] == [f["val"] for f in write_target_splits([232], "SSA")]


def test_splits_refusals(datasets):
    with pytest.raises(ValueError, match="cannot make 11 folds from 10 target case"):
        write_target_splits([232, 233], "SSA", folds=11)
    with pytest.raises(ValueError, match="at least 2"):
        write_target_splits([232], "SSA", folds=1)
    with pytest.raises(ValueError, match="no training case of domain 'SSA'"):
        write_target_splits([231], "SSA")
    assert not list((tmp_path_of(datasets)).glob("*/splits_final.json"))  # nothing written on refusal
    assert [len(f["val"]) for f in target_folds(ssa_ids(3), folds=3)] == [1, 1, 1]


def tmp_path_of(env):
    from pathlib import Path

    return Path(env["nnUNet_preprocessed"])


def test_different_target_sets_are_refused(tmp_path, datasets):
    convert_brats(make_brats(tmp_path / "ssa_small", ssa_ids(6)), 240, "SSAsmall", link=True)
    with pytest.raises(ValueError, match="hold different SSA cases"):
        write_target_splits([232, 240], "SSA")


SSA_UNLABELLED = ssa_ids(3, start=60)


@pytest.fixture
def semi(tmp_path, datasets):
    """The same 10 labelled SSA cases plus 3 unlabelled ones (Dataset242), and combined with GLI (Dataset243)."""
    source = make_brats(tmp_path / "ssa_semi", ssa_ids(10))
    for i, case in enumerate(SSA_UNLABELLED):
        make_case(source, case, labeled=False, seed=60 + i)
    convert_brats(source, 242, "SSAsemi", link=True, unlabelled=True)
    combine_datasets([231, 242], 243, "GLI_SSAsemi")
    return datasets


def test_unlabelled_cases_always_train_and_are_never_validated(semi):
    folds = write_target_splits([232, 242, 243], "SSA")
    assert folds == target_folds(ssa_ids(10))  # drawn over the labelled cases only
    assert load(semi, "Dataset232_SSA") == folds  # the all-labelled dataset gets exactly today's splits
    for name, others in (("Dataset242_SSAsemi", []), ("Dataset243_GLI_SSAsemi", gli_ids(3))):
        written = load(semi, name)
        assert [f["val"] for f in written] == [f["val"] for f in folds]
        assert [f["train"] for f in written] == [f["train"] + others + SSA_UNLABELLED for f in folds]
        assert not {c for f in written for c in f["val"]} & set(SSA_UNLABELLED)


def test_target_cases_that_are_all_unlabelled_cannot_be_cross_validated(tmp_path, datasets):
    source = tmp_path / "hospital"
    for i, case in enumerate(SSA_UNLABELLED):
        make_case(source, case, labeled=False, seed=i)
    convert_brats(source, 244, "Hospital", unlabelled=True)
    combine_datasets([231, 244], 245, "GLI_Hospital")
    with pytest.raises(ValueError, match=r"Dataset245_GLI_Hospital: all 3 SSA training case\(s\) are unlabelled.*"
                                         r"cannot be cross-validated. Fix: label some.*validate on another dataset"):
        write_target_splits([245], "SSA")
    assert not (tmp_path_of(datasets) / "Dataset245_GLI_Hospital" / "splits_final.json").exists()


def test_labelled_target_cases_must_agree_and_folds_count_labelled_cases(tmp_path, semi):
    source = make_brats(tmp_path / "ssa_other", ssa_ids(10))
    (source / "BraTS-SSA-00009-000" / "BraTS-SSA-00009-000-seg.nii.gz").unlink()
    convert_brats(source, 246, "SSAother", link=True, unlabelled=True)
    with pytest.raises(ValueError) as info:
        write_target_splits([232, 246], "SSA")
    text = str(info.value)
    assert "Dataset246_SSAother and Dataset232_SSA hold different labelled SSA cases (9 vs 10" in text
    assert "labelled in Dataset232_SSA but unlabelled in Dataset246_SSAother: ['BraTS-SSA-00009-000']" in text
    with pytest.raises(ValueError, match=r"cannot make 11 folds from 10 target case\(s\).*unlabelled ones do not count"):
        write_target_splits([242], "SSA", folds=11)
    assert not list(tmp_path_of(semi).glob("*/splits_final.json"))

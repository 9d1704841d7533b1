"""labels: nnU-Net's ignore label and the dataset.json list of unlabelled cases."""

import doctest

import pytest

from nnunet_transfer.dataset_conversion import LABELS, REGION_LABELS, REGIONS_CLASS_ORDER, convert, labels
from nnunet_transfer.dataset_conversion.labels import (IGNORE_KEY, ignore_value, unlabelled_cases, with_ignore_label,
                                                       without_ignore)


def test_ignore_is_the_highest_label_plus_one_and_nnunet_accepts_it():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    assert IGNORE_KEY == "ignore"
    for base, order in ((LABELS, None), (REGION_LABELS, REGIONS_CLASS_ORDER)):
        extended = with_ignore_label(base)
        assert extended == {**base, "ignore": 4} and list(extended)[-1] == "ignore"
        assert base == without_ignore(extended) and "ignore" not in base  # the input is not modified
        manager = LabelManager(extended, regions_class_order=order)  # asserts ignore == max label + 1
        assert manager.has_ignore_label and manager.ignore_label == 4
        assert manager.num_segmentation_heads == LabelManager(base, regions_class_order=order).num_segmentation_heads
    assert with_ignore_label({"background": 0, "a": 1, "ignore": 9}) == {"background": 0, "a": 1, "ignore": 2}
    assert ignore_value(with_ignore_label(LABELS)) == 4 and ignore_value(LABELS) is None
    with pytest.raises(ValueError, match="no label value"):
        with_ignore_label({})


def test_unlabelled_cases_are_sorted_and_checked():
    assert unlabelled_cases({"unlabelled": ["c", "a", "c"]}) == ["a", "c"]
    assert unlabelled_cases({"labels": dict(LABELS)}) == []
    with pytest.raises(ValueError, match='dataset.json of X: "unlabelled" must be a list of case ids'):
        unlabelled_cases({"name": "X", "unlabelled": "a"})


@pytest.mark.parametrize("module", [labels, convert])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

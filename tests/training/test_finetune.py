"""``FineTuneMixin``: whether the pretrained segmentation head is kept (label sets compared without ignore)."""

from __future__ import annotations

import pytest
import torch

from nnunet_transfer.training.finetune import FineTuneMixin

LABELS = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}


class _Reader(FineTuneMixin):
    """Just enough of a trainer for ``_read_pretrained``."""

    def __init__(self, weights: str, labels: dict):
        self.pretrained_weights_file = weights
        self.dataset_json = {"labels": labels}


@pytest.mark.parametrize("source, here, kept", [
    (LABELS, LABELS, True),
    (LABELS, {**LABELS, "ignore": 4}, True),  # target with unlabelled cases: the same output channels
    ({**LABELS, "ignore": 4}, LABELS, True),
    (REGIONS, {**REGIONS, "ignore": 4}, True),
    (LABELS, REGIONS, False),
    (LABELS, {**REGIONS, "ignore": 4}, False),
])
def test_segmentation_head_is_kept_when_labels_match_apart_from_ignore(tmp_path, source, here, kept):
    weights = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "init_args": {"dataset_json": {"labels": source}}}, weights)
    reader = _Reader(str(weights), here)
    reader._read_pretrained()
    assert reader.segmentation_head_from_pretrained is kept
    assert reader._head_reason == ("label sets match" if kept else
                                   f"label sets differ (pretrained {source}, here {here})")
    assert reader._pretrained["init_args"]["dataset_json"]["labels"] == source


def test_checkpoint_without_labels_does_not_keep_the_head(tmp_path):
    weights = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}}, weights)
    reader = _Reader(str(weights), LABELS)
    reader._read_pretrained()
    assert reader.segmentation_head_from_pretrained is False

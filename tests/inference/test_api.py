"""The package surface of segmenting: the flat API, doctests, a light CLI front."""

from __future__ import annotations

import doctest
import importlib

import pytest

import nnunet_transfer

MODULES = ["nnunet_transfer.inference", "nnunet_transfer.inference.model", "nnunet_transfer.inference.segmenter",
           "nnunet_transfer.dataset_conversion.layouts"]


def test_flat_api_exports_segment_and_bundles():
    from nnunet_transfer import inference

    assert nnunet_transfer.segment is inference.segment
    assert nnunet_transfer.SegmentOptions is inference.SegmentOptions
    assert nnunet_transfer.export_bundle is inference.export_bundle


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0

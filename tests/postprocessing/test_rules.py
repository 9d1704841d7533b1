"""The rules on hand-made label maps: components per region and label, ET -> NCR, spacing, errors."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_transfer.postprocessing.rules import STRUCTURES, Rules, apply, relabel_et_as_ncr, remove_small_components
from tests.postprocessing.conftest import speck, tumour


def test_zero_thresholds_change_nothing_and_input_is_left_alone():
    seg = tumour()
    speck(seg, (20, 20, 20), 1, label=3)
    before = seg.copy()
    for rules in (Rules(), Rules({s: 0 for s in STRUCTURES}, 0, 0)):
        assert rules.is_identity
        out = apply(seg, (1, 1, 1), rules)
        assert np.array_equal(out, before) and out is not seg
    out = apply(seg, (1, 1, 1), Rules({"WT": 1000}, 1e6, 0.9))
    assert np.array_equal(seg, before)  # not modified in place
    assert out.dtype == seg.dtype


def test_small_wt_components_become_background_large_ones_stay():
    seg = tumour()
    speck(seg, (20, 20, 20), 2)              # 8 mm³, ED
    speck(seg, (20, 2, 20), 3, label=3)      # 27 mm³, ET
    out = apply(seg, (1, 1, 1), Rules({"WT": 10}))
    assert not out[20:22, 20:22, 20:22].any() and np.all(out[20:23, 2:5, 20:23] == 3)
    out = apply(seg, (1, 1, 1), Rules({"WT": 28}))
    assert not out[20:23, 2:5, 20:23].any()
    assert np.array_equal(out[:16, :16, :16], seg[:16, :16, :16])  # the 1000 mm³ tumour is kept


def test_components_are_26_connected():
    seg = np.zeros((8, 8, 8), np.uint8)
    seg[2, 2, 2] = seg[3, 3, 3] = 2          # touch at a corner: one component of 2 voxels
    assert np.array_equal(apply(seg, None, Rules({"WT": 2})), seg)
    assert not apply(seg, None, Rules({"WT": 3})).any()


def test_removed_et_takes_the_label_around_it():
    seg = tumour(et=False)                   # ED around an NCR core, no ET
    seg[10, 10, 10] = 3                      # ET island inside the NCR core
    seg[10, 6, 10] = 3                       # ET island inside the oedema
    out = apply(seg, (1, 1, 1), Rules({"ET": 2}))
    assert out[10, 10, 10] == 1 and out[10, 6, 10] == 2
    assert not (out == 3).any()


def test_tc_and_label_rules_fill_from_the_surroundings():
    seg = np.zeros((16, 16, 16), np.uint8)
    seg[2:14, 2:14, 2:14] = 2
    seg[4:6, 4:6, 4:6] = 1                   # 8 mm³ TC island (NCR) in ED
    seg[9:12, 9:12, 9:12] = 3                # 27 mm³ TC island (ET) in ED
    out = apply(seg, (1, 1, 1), Rules({"TC": 10}))
    assert np.all(out[4:6, 4:6, 4:6] == 2) and np.all(out[9:12, 9:12, 9:12] == 3)
    out = apply(seg, (1, 1, 1), Rules({"NCR": 10}))
    assert np.all(out[4:6, 4:6, 4:6] == 2)
    isolated = np.zeros((10, 10, 10), np.uint8)
    isolated[1:3, 1:3, 1:3] = 2
    assert not apply(isolated, None, Rules({"ED": 9})).any()


def test_rules_apply_in_order_wt_before_et_relabel():
    seg = tumour()
    speck(seg, (20, 20, 20), 2, label=3)     # an 8 mm³ ET speck far away
    # the ET -> NCR volume rule sees the ET left after the components (216 - 8 = 208 mm³)
    out = apply(seg, (1, 1, 1), Rules({"WT": 10}, et_to_ncr_volume_mm3=210))
    assert not out[20:22, 20:22, 20:22].any() and not (out == 3).any()


def test_spacing_is_respected_per_axis():
    seg = np.zeros((10, 10, 10), np.uint8)
    speck(seg, (3, 3, 3), 2)                 # 8 voxels
    rules = Rules({"WT": 50})
    assert not apply(seg, (1, 1, 1), rules).any()              # 8 mm³ < 50
    assert apply(seg, (2, 2, 2), rules).sum() == 16            # 64 mm³ kept
    assert not apply(seg, (1.0, 1.0, 6.0), rules).any()        # 48 mm³ < 50
    assert apply(seg, (1.0, 1.0, 6.5), rules).sum() == 16      # 52 mm³ kept
    assert not apply(seg, 1.5, rules).any()                    # scalar spacing: 27 mm³


def test_et_relabelled_as_ncr_below_volume_or_ratio():
    seg = tumour()                            # ET 216 - 8 = 208 mm³, TC 216 mm³
    out = apply(seg, (1, 1, 1), Rules(et_to_ncr_volume_mm3=209))
    assert not (out == 3).any() and np.array_equal(np.isin(out, (1, 3)), np.isin(seg, (1, 3)))
    assert np.array_equal(apply(seg, (1, 1, 1), Rules(et_to_ncr_volume_mm3=208)), seg)  # not below
    assert np.array_equal(apply(seg, (1, 1, 1), Rules(et_to_ncr_volume_mm3=100)), seg)
    assert np.array_equal(apply(seg, (0.5, 1, 1), Rules(et_to_ncr_volume_mm3=105)), np.where(seg == 3, 1, seg))
    assert not (apply(seg, None, Rules(et_to_ncr_ratio=0.97)) == 3).any()   # 208/216 = 0.963
    assert np.array_equal(apply(seg, None, Rules(et_to_ncr_ratio=0.96)), seg)
    no_et = tumour(et=False)
    assert not relabel_et_as_ncr(no_et, (1, 1, 1), 1e9, 1.0)


def test_remove_small_components_counts_and_handles_empty_maps():
    empty = np.zeros((5, 5, 5), np.uint8)
    assert remove_small_components(empty, (1, 2, 3), 10, (1, 1, 1)) == 0
    full = np.full((3, 3, 3), 2, np.uint8)     # fills the image: no shell, becomes background
    assert remove_small_components(full, (2,), 100, (1, 1, 1)) == 1 and not full.any()


def test_rules_round_trip_and_normalise():
    rules = Rules({"ET": 50, "WT": 10.5, "TC": 0}, 200, 0.1)
    assert list(rules.min_component_mm3) == ["WT", "ET"]
    data = rules.to_dict()
    assert data["min_component_mm3"] == {"WT": 10.5, "TC": 0.0, "ET": 50.0, "NCR": 0.0, "ED": 0.0}
    assert data["et_to_ncr"] == {"volume_mm3": 200.0, "et_tc_ratio": 0.1}
    assert Rules.from_dict(data) == rules and Rules.from_dict({}) == Rules()
    assert rules.with_component("ET", 0) == Rules({"WT": 10.5}, 200, 0.1)
    assert "WT < 10.5 mm³" in rules.describe() and Rules().describe() == "no post-processing"


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_component_mm3={"XX": 5}), "unknown structure"),
    (dict(min_component_mm3={"WT": -1}), r"min_component_mm3\['WT'\] must be a finite number >= 0"),
    (dict(et_to_ncr_volume_mm3=float("nan")), "et_to_ncr_volume_mm3 must be a finite number"),
    (dict(et_to_ncr_ratio="x"), "et_to_ncr_ratio must be a number"),
])
def test_bad_rules_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rules(**kwargs)


def test_bad_rule_dicts_are_clear_errors():
    with pytest.raises(ValueError, match="unknown rule entry min_volume"):
        Rules.from_dict({"min_volume": {}})
    with pytest.raises(ValueError, match="unknown et_to_ncr entry ratio"):
        Rules.from_dict({"et_to_ncr": {"ratio": 0.1}})
    with pytest.raises(ValueError, match="JSON object"):
        Rules.from_dict([1, 2])


@pytest.mark.parametrize("seg, spacing, message", [
    (np.full((4, 4, 4), 4, np.uint8), None, r"label\(s\) \[4\]"),
    (np.zeros((4, 4), np.uint8), None, "3-D label map"),
    (np.zeros((4, 4, 4), np.float32), None, "integer labels"),
    (np.zeros((4, 4, 4), np.uint8), (1, 1), "3 positive numbers"),
    (np.zeros((4, 4, 4), np.uint8), (1, 0, 1), "3 positive numbers"),
])
def test_bad_label_maps_are_clear_errors(seg, spacing, message):
    with pytest.raises(ValueError, match=message):
        apply(seg, spacing, Rules({"WT": 1}))


def test_brats_sized_map_is_fast():
    import time

    rng = np.random.default_rng(0)
    seg = np.zeros((155, 240, 240), np.uint8)
    seg[60:100, 80:140, 80:140] = 2
    seg[70:90, 95:125, 95:125] = 3
    seg[75:85, 105:115, 105:115] = 1
    noise = rng.random(seg.shape) < 2e-4       # ~1800 single-voxel false positives, away from the tumour
    noise[50:110, 70:150, 70:150] = False
    seg[noise] = 2
    start = time.perf_counter()
    out = apply(seg, (1, 1, 1), Rules({"WT": 50, "TC": 50, "ET": 50}, 100, 0.05))
    elapsed = time.perf_counter() - start
    assert int((out == 2).sum()) == 40 * 60 * 60 - 20 * 30 * 30 and elapsed < 20

"""The versioned rules file: round trip, atomic write, clear errors naming the file."""

from __future__ import annotations

import json

import pytest

from nnunet_transfer.postprocessing.io import FORMAT, SCHEMA_VERSION, read_rules, read_rules_file, write_rules
from nnunet_transfer.postprocessing.rules import Rules


def test_round_trip_with_tuning_record(tmp_path):
    rules = Rules({"WT": 30, "ET": 10}, 200, 0.05)
    path = write_rules(tmp_path / "sub" / "brats_postprocessing.json", rules,
                       {"metric": "lesion-dice", "before": 0.5, "after": float("nan")})
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT and document["schema_version"] == SCHEMA_VERSION
    assert document["tuning"]["after"] is None  # NaN written as null: strict JSON
    assert read_rules(path) == rules
    assert read_rules_file(path)["tuning"]["metric"] == "lesion-dice"
    assert [p.name for p in path.parent.iterdir()] == ["brats_postprocessing.json"]  # no temporary left


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"rules": {}}), "is not a post-processing rules file"),
    (json.dumps({"format": FORMAT, "schema_version": "1", "rules": {}}), "schema_version must be an integer"),
    (json.dumps({"format": FORMAT, "schema_version": 99, "rules": {}}), "newer than this nnunet-transfer reads"),
    (json.dumps({"format": FORMAT, "schema_version": 1, "rules": {"min_component_mm3": {"XT": 1}}}),
     "unknown structure"),
    (json.dumps({"format": FORMAT, "schema_version": 1, "rules": {"et_to_ncr": {"volume_mm3": -5}}}),
     "must be a finite number >= 0"),
])
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "rules.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_rules(path)
    assert str(path) in str(info.value)


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="tune-postprocessing"):
        read_rules(tmp_path / "none.json")

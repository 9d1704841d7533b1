"""domain_of and read_domains."""

import pytest

from nnunet_transfer.dataset_conversion import domain_of, read_domains


@pytest.mark.parametrize("case_id, domain", [
    ("BraTS-GLI-00000-000", "GLI"), ("BraTS-SSA-00126-000", "SSA"), ("BraTS-PED-00001-000", "PED"),
    ("BraTS-MEN-01234-001", "MEN"), ("BraTS-MET-00002-000", "MET"), ("BraTS2021_00000", "GLI"),
    ("case_001", None), ("BraTS-", None),
])
def test_domain_of(case_id, domain):
    assert domain_of(case_id) == domain


def test_read_domains_prefers_the_map_and_falls_back_to_the_prefix():
    data = {"domains": {"BraTS-GLI-00001-000": "SSA", "x": "LOW"}}
    assert read_domains(data) == data["domains"] and read_domains(data) is not data["domains"]
    assert read_domains({}) == {}
    assert read_domains(data, ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "y"]) == {
        "BraTS-GLI-00001-000": "SSA", "BraTS-GLI-00002-000": "GLI", "y": None}

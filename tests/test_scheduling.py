"""The suite's order: costliest test files first, each file's tests together (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import DEFAULT_INTEGRATION_COST, module_costs, pytest_collection_modifyitems


def fake_item(nodeid: str, cost=None, integration: bool = False):
    marks = {}
    if cost is not None:
        marks["cost"] = pytest.mark.cost(cost).mark
    if integration or cost is not None:
        marks["integration"] = pytest.mark.integration.mark
    return SimpleNamespace(nodeid=nodeid, get_closest_marker=marks.get)


def test_costliest_files_first_and_each_file_kept_together_in_order():
    items = [fake_item("tests/a.py::t1"), fake_item("tests/a.py::t2", integration=True),
             fake_item("tests/b.py::t1"), fake_item("tests/b.py::t2"),
             fake_item("tests/c.py::t1", cost=300), fake_item("tests/c.py::t2", cost=300),
             fake_item("tests/d.py::K::t1", cost=90)]
    assert module_costs(items) == {"tests/a.py": DEFAULT_INTEGRATION_COST, "tests/b.py": 0,
                                   "tests/c.py": 300, "tests/d.py": 90}
    pytest_collection_modifyitems(None, None, items)
    assert [i.nodeid for i in items] == ["tests/c.py::t1", "tests/c.py::t2", "tests/d.py::K::t1",
                                         "tests/a.py::t1", "tests/a.py::t2", "tests/b.py::t1", "tests/b.py::t2"]


def test_every_integration_module_declares_its_cost():
    """A module of tests/integration without a cost mark would start late, among the short ones."""
    for path in sorted((Path(__file__).parent / "integration").glob("test_*.py")):
        assert "pytest.mark.cost(" in path.read_text(), f"{path.name} has no cost mark"

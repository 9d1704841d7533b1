"""Domains (scanner populations) of BraTS cases: the case-id prefix rule and dataset.json maps.

Converted datasets carry ``"domains": {case_id: "GLI" | "SSA" | ...}`` in dataset.json;
when a case is missing there, its BraTS prefix decides.

Example:
    >>> domain_of("BraTS-SSA-00012-000")
    'SSA'
    >>> domain_of("BraTS2021_00000")
    'GLI'
    >>> read_domains({"domains": {"a": "X"}}, ["a", "BraTS-PED-00001-000"])
    {'a': 'X', 'BraTS-PED-00001-000': 'PED'}
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Mapping, Optional

_BRATS_PREFIX = re.compile(r"^BraTS-([A-Za-z]+)-\d+")
_BRATS_2021 = re.compile(r"^BraTS20(19|20|21)_\d+")


def domain_of(case_id: str) -> Optional[str]:
    """The domain a BraTS case id names (``BraTS-GLI-00000-000`` -> ``"GLI"``), else None.

    BraTS 2019-2021 ids (``BraTS2021_00000``) are adult glioma, hence ``"GLI"``.
    """
    match = _BRATS_PREFIX.match(case_id)
    if match:
        return match.group(1).upper()
    if _BRATS_2021.match(case_id):
        return "GLI"
    return None


def read_domains(dataset_json: Mapping, case_ids: Optional[Iterable[str]] = None) -> Dict[str, Optional[str]]:
    """Domain per case from a dataset.json dict.

    Without ``case_ids``: a copy of the ``"domains"`` map (empty when absent). With
    ``case_ids``: exactly those cases, each from the map or else from its BraTS prefix
    (None when neither says).
    """
    declared = dict(dataset_json.get("domains") or {})
    if case_ids is None:
        return declared
    return {case: declared.get(case) or domain_of(case) for case in case_ids}

"""Which domain (scanner population) each case belongs to.

A dataset.json may carry ``"domains": {case_id: name}`` (written by ``nnunet-transfer
convert`` and ``combine``); otherwise the BraTS case prefix decides.

Example:
    >>> domain_of("BraTS-SSA-00012-000")
    'SSA'
    >>> domain_of("BraTS2021_00000")
    'GLI'
    >>> read_domains({"domains": {"a": "X"}}, ["a", "BraTS-GLI-00001-000", "b"])
    {'a': 'X', 'BraTS-GLI-00001-000': 'GLI', 'b': None}
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, Mapping, Optional

_BRATS_PREFIX = re.compile(r"^BraTS-([A-Za-z]+)-\d+")
_BRATS_2021 = re.compile(r"^BraTS20(19|20|21)_\d+")


def domain_of(case_id: str) -> Optional[str]:
    """The domain a BraTS case id names, or None when the id follows no BraTS pattern."""
    match = _BRATS_PREFIX.match(case_id)
    if match:
        return match.group(1).upper()
    if _BRATS_2021.match(case_id):
        return "GLI"  # the 2019-2021 adult glioma challenges became BraTS-GLI
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


def target_domain_of(dataset_json: Mapping, domains: Mapping[str, Optional[str]]) -> str:
    """The target (scarce) domain: dataset.json's ``target_domain``, else the rarest domain.

    >>> target_domain_of({}, {"a": "GLI", "b": "GLI", "c": "SSA"})
    'SSA'
    """
    declared = dataset_json.get("target_domain")
    if declared:
        return str(declared)
    counts = Counter(d for d in domains.values() if d is not None)
    if not counts:
        raise ValueError("no case has a domain; add a \"domains\" map to dataset.json")
    return min(sorted(counts), key=lambda name: counts[name])

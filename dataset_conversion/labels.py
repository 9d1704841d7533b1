"""nnU-Net's ignore label and the unlabelled training cases of a dataset.

Unlabelled (target) cases enter nnU-Net through its own mechanism: dataset.json's
``labels`` gets ``"ignore": <highest label + 1>`` (nnU-Net requires the ignore label to
be the highest integer) and each unlabelled case has a label file holding only that
value, so nnU-Net's losses skip every voxel of it. dataset.json lists these cases under
``"unlabelled"``; cross-validation folds never validate them.

Example:
    >>> with_ignore_label({"background": 0, "NCR": 1, "ED": 2, "ET": 3})
    {'background': 0, 'NCR': 1, 'ED': 2, 'ET': 3, 'ignore': 4}
    >>> with_ignore_label({"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3]})["ignore"]
    4
    >>> without_ignore({"background": 0, "NCR": 1, "ignore": 2})
    {'background': 0, 'NCR': 1}
    >>> unlabelled_cases({"unlabelled": ["b", "a"]}), unlabelled_cases({"labels": {}})
    (['a', 'b'], [])
"""

from __future__ import annotations

from typing import Collection, Iterator, List, Mapping, Optional

#: The key of nnU-Net's ignore label in dataset.json ``labels``.
IGNORE_KEY = "ignore"
#: The dataset.json key listing the unlabelled training cases (added by ``convert --unlabelled``).
UNLABELLED_KEY = "unlabelled"


def _values(labels: Mapping) -> Iterator[int]:
    for key, value in labels.items():
        if key == IGNORE_KEY:
            continue
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            yield int(item)


def without_ignore(labels: Mapping) -> dict:
    """``labels`` without the ignore entry (for comparing label sets)."""
    return {key: value for key, value in labels.items() if key != IGNORE_KEY}


def with_ignore_label(labels: Mapping) -> dict:
    """``labels`` plus ``"ignore": <highest label + 1>`` (an ignore entry already there is replaced).

    Works for label-based and region-based (lists of labels) dicts alike.
    """
    values = list(_values(labels))
    if not values:
        raise ValueError(f"labels {dict(labels)} hold no label value; nnU-Net needs at least background = 0")
    return {**without_ignore(labels), IGNORE_KEY: max(values) + 1}


def ignore_value(labels: Mapping) -> Optional[int]:
    """The ignore label's value, or None when ``labels`` has none.

    >>> ignore_value({"background": 0, "ignore": 2}), ignore_value({"background": 0})
    (2, None)
    """
    value = labels.get(IGNORE_KEY)
    return None if value is None else int(value)


def unlabelled_cases(dataset_json: Mapping) -> List[str]:
    """The sorted ids of the dataset's unlabelled training cases (dataset.json ``"unlabelled"``, else none)."""
    cases = dataset_json.get(UNLABELLED_KEY, [])
    if not isinstance(cases, (list, tuple)) or not all(isinstance(c, str) for c in cases):
        name = dataset_json.get("name", "the dataset")
        raise ValueError(f"dataset.json of {name}: \"{UNLABELLED_KEY}\" must be a list of case ids, got {cases!r}; "
                         f"fix or remove that entry")
    return sorted(set(cases))


def checked_unlabelled_cases(dataset_name: str, dataset_json: Mapping, training_cases: Collection[str]) -> List[str]:
    """:func:`unlabelled_cases`, each of which must be one of ``training_cases`` (imagesTr).

    >>> checked_unlabelled_cases("Dataset1_X", {"unlabelled": ["b"]}, ["a", "b"])
    ['b']
    """
    listed = unlabelled_cases(dataset_json)
    stray = [c for c in listed if c not in training_cases]
    if stray:
        raise ValueError(f"{dataset_name}: dataset.json lists unlabelled case(s) that are not training cases in "
                         f"imagesTr: {', '.join(stray[:10])}; fix its \"{UNLABELLED_KEY}\" list or convert it again")
    return listed

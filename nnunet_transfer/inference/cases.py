"""Find the raw BraTS cases to segment: case folders, or folders of case folders, in any layout.

A path is a case when its name is a BraTS case id (``BraTS-GLI-00000-000``: BraTS
2023/2024, ``BraTS2021_00000``: BraTS 2021); otherwise it must hold case folders, directly or
one level below, as ``nnunet-transfer convert`` reads them. Only the files of the model's
modalities are looked up; a label file in the folder is ignored.

Example:
    >>> cases = [Path("/data/new/BraTS-SSA-00123-000"), Path("/data/batch")]
    >>> find_cases(cases, ["t2f", "t1c", "t2w"])  # doctest: +SKIP
    [SourceCase(case_id='BraTS-SSA-00123-000', ...), ...]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Union

from nnunet_transfer.dataset_conversion.layouts import SourceCase, discover, layout_of, read_case

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def find_cases(paths: Union[PathLike, Sequence[PathLike]], modalities: Sequence[str]) -> List[SourceCase]:
    """The cases in ``paths`` (case folders or folders of them), in the given order, each once.

    Raises FileNotFoundError for a path that does not exist, ValueError for a folder that
    holds no BraTS case folder or for two case folders with the same case id (their
    outputs would collide).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    cases: List[SourceCase] = []
    seen: Dict[str, Path] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(f"case folder {path} does not exist or is not a folder")
        layout = layout_of(path.name)
        if layout is not None:
            found = [read_case(path, layout, modalities)]
        else:
            try:
                _, found = discover(path, modalities)
            except ValueError as exc:
                raise ValueError(f"{path} is neither a BraTS case folder nor a folder of case folders: {exc}") from None
        for case in found:
            if case.case_id in seen:
                if seen[case.case_id].resolve() == case.folder.resolve():
                    continue  # the same folder given twice (directly and through its parent)
                raise ValueError(f"case {case.case_id} is given twice ({seen[case.case_id]} and {case.folder}); "
                                 f"their label files would have the same name")
            seen[case.case_id] = case.folder
            cases.append(case)
    if not cases:
        raise ValueError("no case to segment")
    logger.info("%d case(s) to segment", len(cases))
    return cases

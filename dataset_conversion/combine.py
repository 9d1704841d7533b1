"""Combine converted datasets (e.g. GLI and SSA) into one two-domain nnU-Net dataset.

The new dataset links (or copies) every training and test case of the inputs and merges
their ``domains`` maps. Inputs must agree on channels, labels (and region order) and file
ending, and intensity clipping at conversion (``intensity_clipping``: a model must see the same
preprocessing for every domain), and no case id may appear twice.

Labels are compared without nnU-Net's ignore entry: the combined dataset has the ignore
label when any input has one (unlabelled training cases, see ``convert --unlabelled``), and
lists the union of the inputs' ``"unlabelled"`` cases. Their ignore-only label files are
linked or copied like every other label file.

Example:
    >>> combine_datasets([231, 232], 233, "BraTS23GLI_SSA")  # doctest: +SKIP
    PosixPath('/data/nnUNet_raw/Dataset233_BraTS23GLI_SSA')
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion import folders
from nnunet_transfer.dataset_conversion.domains import read_domains
from nnunet_transfer.dataset_conversion.labels import (IGNORE_KEY, UNLABELLED_KEY, checked_unlabelled_cases,
                                                       ignore_value, without_ignore)

logger = logging.getLogger(__name__)

_MUST_AGREE = ("channel_names", "labels", "regions_class_order", "file_ending", "intensity_clipping")


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        os.symlink(os.path.realpath(source), target)
    else:
        shutil.copyfile(source, target)


def combine_datasets(dataset_ids: Sequence[int], dataset_id: int, name: str, link: bool = True,
                     target_domain: Optional[str] = None) -> Path:
    """Build ``$nnUNet_raw/DatasetXXX_Name`` from the raw datasets ``dataset_ids``; return its folder.

    ``link`` symlinks the files (to their real paths); otherwise they are copied.
    ``target_domain`` (one of the inputs' domains) is written to dataset.json as
    ``target_domain``, the domain the plugin's trainers adapt to.
    """
    if len(dataset_ids) < 2:
        raise ValueError("give at least two datasets to combine")
    raw = config.nnunet_raw()
    folder_name = folders.dataset_folder_name(dataset_id, name)
    sources = [folders.require_raw_dataset(raw, d) for d in dataset_ids]
    if len({s.name for s in sources}) != len(sources):
        raise ValueError(f"a dataset is given twice: {', '.join(s.name for s in sources)}")
    if folder_name in {s.name for s in sources} or any(s.name.startswith(f"Dataset{dataset_id:03d}_") for s in sources):
        raise ValueError(f"the combined dataset id {dataset_id} is one of the inputs")
    folders.check_free(raw, dataset_id, folder_name)
    jsons = [folders.load_dataset_json(s) for s in sources]
    first = jsons[0]
    for source, data in zip(sources[1:], jsons[1:]):
        for key in _MUST_AGREE:
            mine, theirs = first.get(key), data.get(key)
            if key == "labels" and isinstance(mine, dict) and isinstance(theirs, dict):
                mine, theirs = without_ignore(mine), without_ignore(theirs)
            if mine != theirs:
                hint = " (--clip-percentiles)" if key == "intensity_clipping" else ""
                raise ValueError(f"cannot combine {sources[0].name} and {source.name}: their {key} differ "
                                 f"({first.get(key)!r} vs {data.get(key)!r}); convert them with the same "
                                 f"options{hint}")
    file_ending = first["file_ending"]
    ignores = {s.name: ignore_value(d.get("labels") or {}) for s, d in zip(sources, jsons)}
    ignores = {k: v for k, v in ignores.items() if v is not None}
    if len(set(ignores.values())) > 1:
        raise ValueError(f"cannot combine datasets whose ignore labels differ "
                         f"({', '.join(f'{k}: {v}' for k, v in ignores.items())}); convert them with the same options")
    unlabelled: List[str] = []
    for source, data in zip(sources, jsons):
        listed = checked_unlabelled_cases(source.name, data, folders.list_cases(source / "imagesTr", file_ending))
        if listed and source.name not in ignores:
            raise ValueError(f"{source.name}: dataset.json lists unlabelled cases but its labels have no "
                             f"\"{IGNORE_KEY}\" entry; convert it again with --unlabelled")
        unlabelled.extend(listed)

    owner: Dict[str, str] = {}
    collisions: List[str] = []
    plan: List[Tuple[Path, str, str, List[Path], Path]] = []  # source, subset, case, images, label
    domains: Dict[str, str] = {}
    for source, data in zip(sources, jsons):
        for subset in ("imagesTr", "imagesTs"):
            cases = folders.list_cases(source / subset, file_ending)
            for case_id, images in cases.items():
                if case_id in owner:
                    collisions.append(f"{case_id} ({owner[case_id]} and {source.name})")
                    continue
                owner[case_id] = source.name
                label = source / "labelsTr" / f"{case_id}{file_ending}"
                if subset == "imagesTr" and not label.exists():
                    raise FileNotFoundError(f"{source.name}: training case {case_id} has no label file {label}")
                plan.append((source, subset, case_id, images, label))
            domains.update({k: v for k, v in read_domains(data, cases).items() if v is not None})
    if collisions:
        shown = ", ".join(collisions[:10]) + (f" and {len(collisions) - 10} more" if len(collisions) > 10 else "")
        raise ValueError(f"case ids collide between the datasets: {shown}")
    if target_domain is not None and target_domain not in set(domains.values()):
        raise ValueError(f"target domain {target_domain!r} is not a domain of {', '.join(s.name for s in sources)} "
                         f"(their domains: {', '.join(sorted(set(domains.values())))}; names are case-sensitive)")

    target = raw / folder_name
    tmp = folders.temp_sibling(target)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for source, subset, case_id, images, label in tqdm(plan, desc=f"combining {folder_name}", unit="case",
                                                           disable=None, leave=False):
            for image in images:
                _place(image, tmp / subset / image.name, link)
            if subset == "imagesTr":
                _place(label, tmp / "labelsTr" / label.name, link)
        num_training = sum(1 for p in plan if p[1] == "imagesTr")
        if num_training == len(plan):
            (tmp / "imagesTs").rmdir()
        data = {key: first[key] for key in _MUST_AGREE if key in first}
        if ignores:
            data["labels"] = {**without_ignore(first["labels"]), IGNORE_KEY: next(iter(ignores.values()))}
        data.update({"numTraining": num_training, "name": name,
                     "description": f"combination of {', '.join(s.name for s in sources)} by nnunet-transfer combine",
                     "domains": dict(sorted(domains.items())),
                     "combined_from": [s.name for s in sources], "linked": bool(link)})
        if unlabelled:
            data[UNLABELLED_KEY] = sorted(unlabelled)
        if target_domain is not None:
            data["target_domain"] = target_domain
        folders.write_json(tmp / "dataset.json", data)
        folders.publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s: %d training and %d test case(s) from %s", target, num_training, len(plan) - num_training,
                ", ".join(s.name for s in sources))
    return target

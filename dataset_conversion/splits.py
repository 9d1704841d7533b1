"""Target-domain cross-validation splits, identical across datasets.

k folds are drawn over the target-domain training cases only (nnU-Net's own
``generate_crossval_split``: sorted ids, scikit-learn ``KFold`` with the seed); every
source-domain case is added to every fold's training list. Giving the SSA-only and the
GLI+SSA datasets together therefore validates all strategies on exactly the same SSA cases.
``splits_final.json`` lands in each dataset's ``$nnUNet_preprocessed`` folder, where
``nnUNetv2_train`` picks it up.

Example:
    >>> folds = write_target_splits([232, 233], "SSA", folds=5)  # doctest: +SKIP
    >>> len(folds), sorted(folds[0])  # doctest: +SKIP
    (5, ['train', 'val'])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Union

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion import folders
from nnunet_transfer.dataset_conversion.domains import read_domains

logger = logging.getLogger(__name__)


def target_folds(target_cases: Sequence[str], folds: int = 5, seed: int = 12345) -> List[Dict[str, List[str]]]:
    """k folds over ``target_cases``, exactly as nnU-Net draws its default 5-fold split.

    >>> [f["val"] for f in target_folds(["c", "a", "b"], folds=3, seed=0)]
    [['c'], ['b'], ['a']]
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"the number of folds must be an integer of at least 2, got {folds!r}")
    cases = sorted(set(target_cases))
    if folds > len(cases):
        raise ValueError(f"cannot make {folds} folds from {len(cases)} target case(s); use at most {len(cases)} folds")
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(cases, seed=seed, n_splits=folds)]


def training_domains(raw_folder: Path) -> Dict[str, str]:
    """Domain per training case of a raw dataset (dataset.json ``domains``, else the BraTS prefix)."""
    data = folders.load_dataset_json(raw_folder)
    cases = folders.list_cases(Path(raw_folder) / "imagesTr", data["file_ending"])
    domains = read_domains(data, cases)
    unknown = [c for c, d in domains.items() if d is None]
    if unknown:
        raise ValueError(f"{Path(raw_folder).name}: no domain for {len(unknown)} case(s) (e.g. {unknown[0]}); add a "
                         f"\"domains\" map to its dataset.json")
    return domains


def write_target_splits(dataset_ids: Sequence[Union[int, str]], target_domain: str, folds: int = 5,
                        seed: int = 12345) -> List[Dict[str, List[str]]]:
    """Write ``splits_final.json`` into each dataset's preprocessed folder; return the target folds.

    The returned list holds, per fold, the target-domain ``train`` and ``val`` cases shared
    by every dataset; each written file also has the dataset's other-domain cases in
    every ``train`` list. All datasets must hold the same target-domain cases.
    """
    if not dataset_ids:
        raise ValueError("give at least one dataset")
    raw = config.nnunet_raw()
    preprocessed = config.nnunet_preprocessed()
    per_dataset = []
    for dataset in dataset_ids:
        folder = folders.require_raw_dataset(raw, dataset)
        domains = training_domains(folder)
        target = sorted(c for c, d in domains.items() if d == target_domain)
        if not target:
            found = ", ".join(sorted(set(domains.values())))
            raise ValueError(f"{folder.name} has no training case of domain {target_domain!r} (domains: {found})")
        per_dataset.append((folder, target, sorted(c for c, d in domains.items() if d != target_domain)))
    reference_folder, reference_target, _ = per_dataset[0]
    for folder, target, _ in per_dataset[1:]:
        if target != reference_target:
            only_here = sorted(set(target) - set(reference_target))
            only_there = sorted(set(reference_target) - set(target))
            raise ValueError(f"{folder.name} and {reference_folder.name} hold different {target_domain} cases "
                             f"({len(target)} vs {len(reference_target)}; e.g. only in {folder.name}: "
                             f"{only_here[:3]}, only in {reference_folder.name}: {only_there[:3]}); the folds "
                             f"could not be identical")
    shared = target_folds(reference_target, folds, seed)
    for folder, _, others in per_dataset:
        splits = [{"train": fold["train"] + others, "val": list(fold["val"])} for fold in shared]
        out_dir = preprocessed / folder.name
        out_dir.mkdir(parents=True, exist_ok=True)
        folders.write_json(out_dir / "splits_final.json", splits)
        logger.info("wrote %s: %d folds over %d %s case(s), %d other case(s) always in train",
                    out_dir / "splits_final.json", folds, len(reference_target), target_domain, len(others))
    return shared

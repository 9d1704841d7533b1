"""Target-domain cross-validation splits, identical across datasets.

k folds are drawn over the target-domain training cases only (nnU-Net's own
``generate_crossval_split``: sorted ids, scikit-learn ``KFold`` with the seed); every
source-domain case is added to every fold's training list. Giving the SSA-only and the
GLI+SSA datasets together therefore validates all strategies on exactly the same SSA cases.
Unlabelled training cases (dataset.json ``"unlabelled"``, see ``convert --unlabelled``) are
never validated: the folds are drawn over the *labelled* target cases and every unlabelled
case is appended to every fold's training list (with every case labelled, nothing changes).
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
from nnunet_transfer.dataset_conversion.labels import UNLABELLED_KEY, checked_unlabelled_cases

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

    The returned list holds, per fold, the labelled target-domain ``train`` and ``val`` cases
    shared by every dataset; each written file also has the dataset's other-domain cases and
    then its unlabelled target cases in every ``train`` list. All datasets must hold the same
    labelled target-domain cases, and at least one.
    """
    if not dataset_ids:
        raise ValueError("give at least one dataset")
    raw = config.nnunet_raw()
    preprocessed = config.nnunet_preprocessed()
    per_dataset = []
    for dataset in dataset_ids:
        folder = folders.require_raw_dataset(raw, dataset)
        domains = training_domains(folder)
        unlabelled = set(checked_unlabelled_cases(folder.name, folders.load_dataset_json(folder), domains))
        target = sorted(c for c, d in domains.items() if d == target_domain)
        if not target:
            found = ", ".join(sorted(set(domains.values())))
            raise ValueError(f"{folder.name} has no training case of domain {target_domain!r} (domains: {found})")
        labelled = [c for c in target if c not in unlabelled]
        if not labelled:
            raise ValueError(f"{folder.name}: all {len(target)} {target_domain} training case(s) are unlabelled "
                             f"(dataset.json \"{UNLABELLED_KEY}\"), so they cannot be cross-validated. Fix: label "
                             f"some of them (convert again with --unlabelled-list naming only the cases to leave "
                             f"unlabelled), or validate on another dataset holding labelled {target_domain} cases")
        per_dataset.append((folder, labelled, sorted(c for c, d in domains.items() if d != target_domain),
                            [c for c in target if c in unlabelled]))
    any_unlabelled = any(extra for *_, extra in per_dataset)
    kind = f"labelled {target_domain}" if any_unlabelled else target_domain
    reference_folder, reference_target, _, reference_unlabelled = per_dataset[0]
    for folder, target, _, target_unlabelled in per_dataset[1:]:
        if target != reference_target:
            only_here = sorted(set(target) - set(reference_target))
            only_there = sorted(set(reference_target) - set(target))
            unlabelled_there = sorted(set(only_here) & set(reference_unlabelled))
            unlabelled_here = sorted(set(only_there) & set(target_unlabelled))
            detail = "".join(f"; labelled in {a} but unlabelled in {b}: {cases[:3]}" for a, b, cases in (
                (folder.name, reference_folder.name, unlabelled_there),
                (reference_folder.name, folder.name, unlabelled_here)) if cases)
            raise ValueError(f"{folder.name} and {reference_folder.name} hold different {kind} cases "
                             f"({len(target)} vs {len(reference_target)}; e.g. only in {folder.name}: "
                             f"{only_here[:3]}, only in {reference_folder.name}: {only_there[:3]}{detail}); the folds "
                             f"could not be identical")
    try:
        shared = target_folds(reference_target, folds, seed)
    except ValueError as exc:
        if not any_unlabelled:
            raise
        raise ValueError(f"{exc} (only labelled {target_domain} cases are validated; unlabelled ones do not "
                         f"count)") from None
    for folder, _, others, target_unlabelled in per_dataset:
        splits = [{"train": fold["train"] + others + target_unlabelled, "val": list(fold["val"])} for fold in shared]
        out_dir = preprocessed / folder.name
        out_dir.mkdir(parents=True, exist_ok=True)
        folders.write_json(out_dir / "splits_final.json", splits)
        logger.info("wrote %s: %d folds over %d %s case(s), %d other case(s) and %d unlabelled %s case(s) always in "
                    "train", out_dir / "splits_final.json", folds, len(reference_target), kind, len(others),
                    len(target_unlabelled), target_domain)
    return shared

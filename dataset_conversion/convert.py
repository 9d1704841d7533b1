"""Convert a BraTS download into an nnU-Net raw dataset.

One convention for every BraTS release, so that domains can be combined: channels
0000=T1 (t1n), 0001=T1Gd (t1c), 0002=T2 (t2w), 0003=FLAIR (t2f) (or the ``modalities``
subset in the given order); labels NCR=1, ED=2, ET=3 written as uint8 with the first
image's geometry (BraTS 2021's 4 becomes 3). Cases without a ``seg`` file go to imagesTs,
or, with ``unlabelled=True`` (or the ids of ``unlabelled_list``), become unlabelled training
cases: imagesTr, a label file holding only nnU-Net's ignore label, dataset.json ``labels``
with ``"ignore"`` and ``"unlabelled"`` listing them (see :mod:`~nnunet_transfer.dataset_conversion.labels`).
With ``clip_percentiles`` every image (training and test) is clipped to its own percentiles
inside the brain and written as float32 (see :mod:`~nnunet_transfer.dataset_conversion.intensity`).

Every case is checked (files present and readable, same grid within a small tolerance,
known label values, no NaN/inf, no blank image whose voxels all hold one value) before it is
written; the dataset is built in a hidden
sibling folder and moved into place only when complete.

Example:
    >>> convert_brats(Path("/data/ASNR-MICCAI-BraTS2023-SSA-Challenge-TrainingData_V2"),
    ...               232, "BraTS23SSA", num_processes=8)  # doctest: +SKIP
    PosixPath('/data/nnUNet_raw/Dataset232_BraTS23SSA')
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion import folders
from nnunet_transfer.dataset_conversion._parallel import imap, workers
from nnunet_transfer.dataset_conversion.checks import (Defect, DefectiveCasesError, Header, blank_problem,
                                                        convert_labels, finite_problem, geometry_problem,
                                                        may_be_blank, read_header, read_voxels)
from nnunet_transfer.dataset_conversion.domains import domain_of
from nnunet_transfer.dataset_conversion.intensity import check_percentiles, clip_to_percentiles, clipping_record
from nnunet_transfer.dataset_conversion.labels import IGNORE_KEY, UNLABELLED_KEY, with_ignore_label
from nnunet_transfer.dataset_conversion.layouts import (CHANNEL_NAMES, ENDINGS, Layout, SourceCase,
                                                         canonical_modalities, discover)

logger = logging.getLogger(__name__)

#: Label-based dataset.json labels (the paper's NCR/ED/ET).
LABELS: Dict[str, object] = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
#: Region-based labels and the order regions are turned back into labels, as in nnU-Net's BraTS example.
REGION_LABELS: Dict[str, object] = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3],
                                    "enhancing tumor": [3]}
REGIONS_CLASS_ORDER: List[int] = [2, 1, 3]
#: gzip level for rewritten files (label maps compress well already at level 1, and much faster).
COMPRESSION_LEVEL = 1

_SKIP_HINT = "Fix or remove these cases, or rerun with skip_bad=True (--skip-bad) to convert the others"


def _ending(path: Path) -> str:
    return next(e for e in ENDINGS if path.name.endswith(e))


@dataclass
class _Checked:
    case: SourceCase
    headers: Dict[str, Header]
    seg_header: Optional[Header]
    defects: List[Defect]


@dataclass
class _WriteJob:
    checked: _Checked
    modalities: List[str]
    label_map: Dict[int, int]
    images_dir: Path
    labels_dir: Path
    file_ending: str
    link: bool
    full_check: bool
    clip: Optional[Tuple[float, float]] = None
    ignore_value: Optional[int] = None  # set for an unlabelled training case: its label file holds only this


def _check_headers(args: Tuple[SourceCase, List[str]]) -> _Checked:
    """Presence, readability, completeness and geometry of every file of one case."""
    case, modalities = args
    defects = [Defect(case.case_id, name, "missing") for name in case.missing]
    headers: Dict[str, Header] = {}
    for modality in modalities:
        path = case.images[modality]
        if path is None:
            continue
        header, problem = read_header(path)
        if problem:
            defects.append(Defect(case.case_id, path.name, problem))
        else:
            headers[modality] = header
    seg_header = None
    if case.seg is not None:
        seg_header, problem = read_header(case.seg)
        if problem:
            defects.append(Defect(case.case_id, case.seg.name, problem))
    present = [m for m in modalities if m in headers]
    if present:
        ref_name = case.images[present[0]].name
        reference = headers[present[0]]
        others = [(case.images[m], headers[m]) for m in present[1:]]
        if seg_header is not None:
            others.append((case.seg, seg_header))
        for path, header in others:
            problem = geometry_problem(reference, header, ref_name)
            if problem:
                defects.append(Defect(case.case_id, path.name, problem))
    return _Checked(case, headers, seg_header, defects)


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _last_line(exc: Exception) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


def _place(source: Path, target: Path, link: bool) -> None:
    if link:
        os.symlink(source.resolve(), target)
    else:
        shutil.copyfile(source, target)


def _write(image: sitk.Image, target: Path, file_ending: str) -> None:
    sitk.WriteImage(image, str(target), useCompression=file_ending == ".nii.gz", compressionLevel=COMPRESSION_LEVEL)


def _write_case(job: _WriteJob) -> Tuple[str, List[Defect]]:
    """Read what must be read, check it, then write the case's files (all or none)."""
    case = job.checked.case
    headers = job.checked.headers
    reference = headers[job.modalities[0]]
    defects: List[Defect] = []
    loaded: Dict[str, sitk.Image] = {}
    rewrite: Dict[str, bool] = {}
    for modality in job.modalities:
        path, header = case.images[modality], headers[modality]
        if job.clip is not None:  # every image is read, checked, clipped and rewritten as float32
            rewrite[modality] = True
            try:
                array = read_voxels(path)
                problem = finite_problem(array) or blank_problem(array)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                array, problem = None, f"unreadable ({exc})"
            if problem:
                defects.append(Defect(case.case_id, path.name, problem))
            else:
                clipped = clip_to_percentiles(array, None, *job.clip)
                loaded[modality] = reference.apply_to(sitk.GetImageFromArray(clipped))
            continue
        rewrite[modality] = _ending(path) != job.file_ending or not header.same_geometry(reference)
        if header.is_float or job.full_check or may_be_blank(path):
            try:
                array = read_voxels(path)
                problem = finite_problem(array) or blank_problem(array)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                problem = f"unreadable ({exc})"
            if problem:
                defects.append(Defect(case.case_id, path.name, problem))
                continue
        if rewrite[modality]:
            try:
                loaded[modality] = _read(path)
            except RuntimeError as exc:
                defects.append(Defect(case.case_id, path.name, f"unreadable ({_last_line(exc)})"))
    labels = None
    copy_seg = False
    if case.seg is not None:
        try:
            array = read_voxels(case.seg)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            defects.append(Defect(case.case_id, case.seg.name, f"unreadable ({exc})"))
        else:
            labels, problem = convert_labels(array, job.label_map)
            if problem:
                defects.append(Defect(case.case_id, case.seg.name, problem))
            copy_seg = (array.dtype == np.uint8 and all(s == t for s, t in job.label_map.items())
                        and _ending(case.seg) == job.file_ending and job.checked.seg_header.same_geometry(reference))
    if defects:
        return case.case_id, defects
    for channel, modality in enumerate(job.modalities):
        target = job.images_dir / f"{case.case_id}_{channel:04d}{job.file_ending}"
        if rewrite[modality]:
            image = loaded[modality]
            if not headers[modality].same_geometry(reference):
                reference.apply_to(image)
            _write(image, target, job.file_ending)
        else:
            _place(case.images[modality], target, job.link)
    if case.seg is not None:
        target = job.labels_dir / f"{case.case_id}{job.file_ending}"
        if copy_seg:
            _place(case.seg, target, job.link)
        else:
            _write(reference.apply_to(sitk.GetImageFromArray(labels)), target, job.file_ending)
    elif job.ignore_value is not None:
        ignore = np.full(reference.size[::-1], job.ignore_value, dtype=np.uint8)
        _write(reference.apply_to(sitk.GetImageFromArray(ignore)), job.labels_dir / f"{case.case_id}{job.file_ending}",
               job.file_ending)
    return case.case_id, []


def convert_case_images(case: SourceCase, modalities: Sequence[str], images_dir: Path,
                        clip: Optional[Tuple[float, float]] = None, link: bool = False,
                        file_ending: Optional[str] = None) -> Tuple[List[Path], List[Defect]]:
    """Check one case and write its images as nnU-Net channel files, exactly as ``convert_brats`` does.

    Runs the same per-case checks (present, readable, complete, same grid, finite, not
    blank) and writes ``<case_id>_0000<ending>``, ... in ``modalities`` order into
    ``images_dir``, with the first image's geometry and, given ``clip``, percentile
    clipping. The case's label file is ignored (new cases to segment need none).
    ``file_ending`` defaults to the images' own (``.nii.gz`` when they mix).
    Returns ``(files, [])``, or ``([], defects)`` with nothing written.
    """
    chosen = list(modalities)
    case = SourceCase(case.case_id, case.folder, dict(case.images), None, list(case.missing))
    checked = _check_headers((case, chosen))
    if checked.defects:
        return [], checked.defects
    if file_ending is None:
        endings = {_ending(case.images[m]) for m in chosen}
        file_ending = endings.pop() if len(endings) == 1 else ".nii.gz"
    images_dir = Path(images_dir)
    job = _WriteJob(checked, chosen, {0: 0}, images_dir, images_dir, file_ending, link, False, clip)
    _, defects = _write_case(job)
    if defects:
        return [], defects
    return [images_dir / f"{case.case_id}_{c:04d}{file_ending}" for c in range(len(chosen))], []


def dataset_json(modalities: Sequence[str], regions: bool, num_training: int, file_ending: str,
                 domains: Dict[str, str], name: str, unlabelled: Sequence[str] = (), **extra) -> dict:
    """The dataset.json of a converted BraTS dataset (label- or region-based).

    With ``unlabelled`` case ids, ``labels`` gets nnU-Net's ignore label and ``"unlabelled"``
    lists them (sorted); ``num_training`` counts them as well.

    >>> data = dataset_json(["t1n"], False, 3, ".nii.gz", {}, "X", unlabelled=["b", "a"])
    >>> data["labels"]["ignore"], data["unlabelled"]
    (4, ['a', 'b'])
    >>> "unlabelled" in dataset_json(["t1n"], True, 3, ".nii.gz", {}, "X")
    False
    """
    labels = dict(REGION_LABELS if regions else LABELS)
    data = {
        "channel_names": {str(i): CHANNEL_NAMES[m] for i, m in enumerate(modalities)},
        "labels": with_ignore_label(labels) if unlabelled else labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        "name": name,
        "description": "BraTS converted by nnunet-transfer: labels NCR=1, ED=2, ET=3",
        "reference": "https://www.synapse.org/brats",
        "licence": "see the BraTS data use agreement",
        "domains": dict(sorted(domains.items())),
    }
    if unlabelled:
        data[UNLABELLED_KEY] = sorted(unlabelled)
    if regions:
        data["regions_class_order"] = list(REGIONS_CLASS_ORDER)
    data.update(extra)
    return data


def _convert(source: Path, cases: List[SourceCase], layout: Layout, chosen: List[str], regions: bool,
             domain: Optional[str], link: bool, skip_bad: bool, full_check: bool, name: str, target: Path,
             pool, clip: Optional[Tuple[float, float]] = None,
             unlabelled: AbstractSet[str] = frozenset()) -> Tuple[int, List[str], Dict[str, List[str]]]:
    """Check every case, write the good ones into a temporary folder, publish it; see ``convert_brats``.

    ``unlabelled``: ids of cases without a segmentation that become unlabelled training cases.
    """
    defects: List[Defect] = []
    checked: List[_Checked] = []
    for result in imap(_check_headers, [(c, chosen) for c in cases], pool, desc="checking"):
        if result.defects:
            defects.extend(result.defects)
        else:
            checked.append(result)
    if defects and not skip_bad:
        raise DefectiveCasesError(defects, _SKIP_HINT)

    endings = {_ending(c.case.images[m]) for c in checked for m in chosen}
    file_ending = endings.pop() if len(endings) == 1 else ".nii.gz"
    tmp = folders.temp_sibling(target)
    try:
        dirs = {"imagesTr": tmp / "imagesTr", "labelsTr": tmp / "labelsTr", "imagesTs": tmp / "imagesTs"}
        for path in dirs.values():
            path.mkdir()
        ignore = with_ignore_label(REGION_LABELS if regions else LABELS)[IGNORE_KEY]
        training = {c.case.case_id for c in checked if c.case.labeled} | set(unlabelled)
        jobs = [_WriteJob(c, chosen, layout.label_map, dirs["imagesTr" if c.case.case_id in training else "imagesTs"],
                          dirs["labelsTr"], file_ending, link, full_check, clip,
                          ignore if c.case.case_id in unlabelled else None) for c in checked]
        written: List[str] = []
        for case_id, case_defects in imap(_write_case, jobs, pool, desc=f"converting {target.name}"):
            if case_defects:
                defects.extend(case_defects)
                if not skip_bad:
                    raise DefectiveCasesError(case_defects, _SKIP_HINT)
            else:
                written.append(case_id)
        if not written:
            if defects:
                raise DefectiveCasesError(defects, "No case was left to convert")
            raise ValueError(f"no case of {source} could be converted")
        labeled = {c.case.case_id for c in checked if c.case.labeled}
        unlabelled_written = sorted(set(unlabelled).intersection(written))
        num_training = len(training.intersection(written))
        if num_training == 0:
            raise ValueError(f"{source} has no case with a segmentation ({layout.file_stem('<case>', layout.seg_suffix)}"
                             f".nii.gz); nnU-Net needs training cases (--unlabelled makes the cases without one "
                             f"unlabelled training cases)")
        if unlabelled_written:
            logger.info("%d case(s) without a segmentation became unlabelled training cases (label files of ignore "
                        "label %d only)", len(unlabelled_written), ignore)
            if not labeled.intersection(written):
                logger.warning("%s: every training case is unlabelled; combine this dataset with a labelled one to "
                               "train on it", target.name)
        if len(written) > num_training:
            logger.info("%d case(s) without a segmentation went to imagesTs", len(written) - num_training)
        else:
            dirs["imagesTs"].rmdir()
        domains = {case_id: domain or domain_of(case_id) or "unknown" for case_id in written}
        skipped: Dict[str, List[str]] = {}
        for defect in defects:
            skipped.setdefault(defect.case_id, []).append(f"{defect.file}: {defect.problem}")
        for case_id, problems in sorted(skipped.items()):
            logger.warning("skipped %s: %s", case_id, "; ".join(problems))
        conversion = {"tool": "nnunet-transfer convert", "source": str(source.resolve()), "layout": layout.name,
                      "modalities": chosen, "linked": bool(link), "skipped": dict(sorted(skipped.items()))}
        extra = {"conversion": conversion}
        if clip is not None:
            extra["intensity_clipping"] = clipping_record(clip)
        folders.write_json(tmp / "dataset.json", dataset_json(chosen, regions, num_training, file_ending, domains,
                                                              name, unlabelled=unlabelled_written, **extra))
        folders.publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return num_training, written, skipped


def convert_brats(source: Path, dataset_id: int, name: str, modalities: Optional[Sequence[str]] = None,
                  regions: bool = False, domain: Optional[str] = None, link: bool = False, skip_bad: bool = False,
                  num_processes: int = 1, full_check: bool = False,
                  clip_percentiles: Optional[Tuple[float, float]] = None, unlabelled: bool = False,
                  unlabelled_list: Optional[Union[str, Path]] = None) -> Path:
    """Convert the BraTS folder ``source`` into ``$nnUNet_raw/DatasetXXX_Name`` and return that folder.

    ``modalities`` picks and orders channels (t1n, t1c, t2w, t2f; BraTS 2021 names work
    too); ``regions`` writes the region-based dataset.json; ``domain`` overrides the
    domain taken from the case prefix; ``link`` symlinks files that need no rewriting;
    ``skip_bad`` converts the good cases and records the others in dataset.json under
    ``conversion.skipped``; ``full_check`` decompresses integer images too (float images
    are always read, for the NaN/inf check).

    ``clip_percentiles=(0.5, 99.5)`` clips every image channel of every case (imagesTr and
    imagesTs) to that image's own percentiles computed over its nonzero (brain) voxels and
    writes it as float32 with the same geometry; dataset.json records it under
    ``intensity_clipping``. Clipped images are new files, so ``link`` cannot be combined
    with it (ValueError).

    ``unlabelled=True`` makes every case without a segmentation an unlabelled *training*
    case (imagesTr, a uint8 label file holding only nnU-Net's ignore label with the first
    image's geometry, dataset.json ``labels`` with ``"ignore": 4`` and ``"unlabelled"``
    listing them; ``numTraining`` counts them). ``unlabelled_list`` (a file of case ids, one
    a line, ``#`` comments) does so for the listed cases only; the others without a
    segmentation still go to imagesTs. A listed id that is not a case of ``source`` or that
    has a segmentation is a ValueError naming it and the file.

    Raises DefectiveCasesError (a ValueError) naming each bad case, file and defect.
    """
    source = Path(source)
    clip = check_percentiles(clip_percentiles) if clip_percentiles is not None else None
    if clip is not None and link:
        raise ValueError("link=True (--link) cannot be combined with clip_percentiles (--clip-percentiles): clipped "
                         "images are new float32 files, not the download's; drop one of the two options")
    chosen = canonical_modalities(modalities)
    folder_name = folders.dataset_folder_name(dataset_id, name)
    raw = config.nnunet_raw()
    target = raw / folder_name
    folders.check_free(raw, dataset_id, folder_name)
    if unlabelled and unlabelled_list is not None:
        raise ValueError("give unlabelled=True (--unlabelled: every case without a segmentation) or unlabelled_list "
                         "(--unlabelled-list FILE: the listed cases only), not both")
    listed = read_case_list(unlabelled_list) if unlabelled_list is not None else None
    layout, cases = discover(source, chosen)
    chosen_unlabelled = select_unlabelled(source, layout, cases, unlabelled, listed, unlabelled_list)

    with workers(num_processes, len(cases)) as pool:
        num_training, written, skipped = _convert(
            source, cases, layout, chosen, regions, domain, link, skip_bad, full_check, name, target, pool, clip,
            chosen_unlabelled)
    logger.info("wrote %s: %d training (%d unlabelled) and %d test case(s), %d skipped", target, num_training,
                len(chosen_unlabelled.intersection(written)), len(written) - num_training, len(skipped))
    return target


def read_case_list(path: Union[str, Path]) -> List[str]:
    """The case ids of a list file: one a line, ``#`` starts a comment, blank lines are skipped.

    Raises FileNotFoundError for a missing file and ValueError for a line with several
    words or a file without any id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"case list {path} does not exist (--unlabelled-list takes a file of case ids, "
                                f"one a line)")
    ids: List[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if len(words) > 1:
            raise ValueError(f"{path}, line {number}: {line.strip()!r} holds {len(words)} words; give one case id "
                             f"a line ('#' starts a comment)")
        if words and words[0] not in ids:
            ids.append(words[0])
    if not ids:
        raise ValueError(f"{path} lists no case id; give one case id a line ('#' starts a comment)")
    return ids


def select_unlabelled(source: Path, layout: Layout, cases: Sequence[SourceCase], every: bool,
                      listed: Optional[Sequence[str]], list_file: Optional[Union[str, Path]] = None) -> Set[str]:
    """The ids of the cases to convert as unlabelled training cases.

    ``every``: all cases without a segmentation; ``listed``: those ids, each of which must
    be a case of ``source`` without a segmentation (ValueError naming the bad ones and
    ``list_file`` otherwise).
    """
    if every:
        return {c.case_id for c in cases if not c.labeled}
    if listed is None:
        return set()
    by_id = {c.case_id: c for c in cases}
    unknown = [c for c in listed if c not in by_id]
    labelled = [c for c in listed if c in by_id and by_id[c].labeled]
    problems = []
    if unknown:
        problems.append(f"not a case of {source}: {', '.join(unknown)}")
    if labelled:
        problems.append("has a segmentation: " + ", ".join(f"{c} ({by_id[c].seg.name})" for c in labelled))
    if problems:
        raise ValueError(f"--unlabelled-list {list_file}: " + "; ".join(problems) + ". List only case folders of "
                         f"{source} without a {layout.file_stem('<case>', layout.seg_suffix)} file")
    return set(listed)


if __name__ == "__main__":  # python dataset_conversion/convert.py SOURCE -d ID -n NAME (same as `nnunet-transfer convert`)
    import sys

    from nnunet_transfer.cli import main

    sys.exit(main(["convert", *sys.argv[1:]]))

"""nnU-Net dataset folders: names, lookup by id, case listing, and all-or-nothing publishing.

Outputs are built in a hidden temporary sibling folder and moved into place with
``os.replace`` at the end, so a dataset folder only ever appears complete.

Example:
    >>> dataset_folder_name(231, "BraTS23GLI")
    'Dataset231_BraTS23GLI'
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Union

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` after checking the id (1-999) and the name (letters, digits, _ and -)."""
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer from 1 to 999, got {dataset_id!r}")
    if not _NAME.match(name or ""):
        raise ValueError(f"dataset name {name!r} may hold only letters, digits, '_' and '-'")
    return f"Dataset{dataset_id:03d}_{name}"


def find_dataset(root: Path, dataset: Union[int, str]) -> Optional[Path]:
    """The ``DatasetXXX_*`` folder for an id (or a full ``DatasetXXX_Name``) below ``root``.

    Raises ValueError when several folders share the id.
    """
    root = Path(root)
    if isinstance(dataset, str) and dataset.startswith("Dataset"):
        path = root / dataset
        return path if path.is_dir() else None
    try:
        number = int(dataset)
    except (TypeError, ValueError):
        raise ValueError(f"{dataset!r} is neither a dataset id nor a DatasetXXX_Name folder name") from None
    matches = sorted(p for p in root.glob(f"Dataset{number:03d}_*") if p.is_dir())
    if len(matches) > 1:
        raise ValueError(f"several folders in {root} use dataset id {number}: {', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def require_raw_dataset(raw: Path, dataset: Union[int, str]) -> Path:
    """The raw dataset folder, or FileNotFoundError naming what was looked for."""
    folder = find_dataset(raw, dataset)
    if folder is None or not (folder / "dataset.json").is_file():
        raise FileNotFoundError(f"no nnU-Net raw dataset {dataset} with a dataset.json in {raw}")
    return folder


def check_free(root: Path, dataset_id: int, folder_name: str) -> None:
    """Refuse to write ``folder_name`` when another name already uses its id."""
    others = [p.name for p in Path(root).glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p.name != folder_name]
    if others:
        raise FileExistsError(f"dataset id {dataset_id} is already used by {', '.join(sorted(others))} in {root}; "
                              f"choose another id or delete that folder")


def list_cases(images_dir: Path, file_ending: str) -> Dict[str, List[Path]]:
    """Case id -> channel files (sorted) of an ``imagesTr``/``imagesTs`` folder."""
    cases: Dict[str, List[Path]] = {}
    if not Path(images_dir).is_dir():
        return cases
    for path in sorted(Path(images_dir).iterdir()):
        name = path.name
        if not name.endswith(file_ending):
            continue
        stem = name[: -len(file_ending)]
        if len(stem) < 6 or stem[-5] != "_" or not stem[-4:].isdigit():
            continue
        cases.setdefault(stem[:-5], []).append(path)
    return cases


def load_dataset_json(folder: Path) -> dict:
    return json.loads((Path(folder) / "dataset.json").read_text())


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temporary file, then ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def temp_sibling(target: Path) -> Path:
    """A fresh hidden build folder next to ``target``; stale ones of dead processes are removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            logger.info("removing %s left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(tmp: Path, target: Path) -> Path:
    """Move the finished ``tmp`` folder to ``target``, replacing an older ``target``."""
    tmp, target = Path(tmp), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    return target

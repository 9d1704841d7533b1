"""Model bundles: one zip with everything a clinic needs to segment with a trained model.

``export_bundle`` packs a model folder's ``plans.json``, ``dataset.json``,
``dataset_fingerprint.json``, the chosen folds' checkpoints, the post-processing files when
present (the plugin's ``brats_postprocessing.json``, nnU-Net's
``crossval_results_folds_*/postprocessing.pkl`` and ``postprocessing.json``) and a manifest
(``nnunet_transfer_bundle.json``: plugin, nnU-Net and torch versions, trainer names, folds,
channels, clipping, labels and a SHA-256 per file). Paths inside the zip are relative to
``nnUNet_results`` (``Dataset942_X/Trainer__Plans__3d_fullres/fold_0/checkpoint_final.pth``),
so nnU-Net's own ``nnUNetv2_install_pretrained_model_from_zip bundle.zip`` installs it too.

``opened_bundle`` extracts a bundle into a temporary folder, checks every file against the
manifest and yields the model folder; zips exported by nnU-Net itself (no manifest) work
when they hold one model.

Example:
    >>> model = "$nnUNet_results/Dataset235_SSA/nnUNetTrainerBrainUNet__nnUNetPlans_BrainUNet__3d_fullres"
    >>> export_bundle(model, "brainunet_ssa.zip", folds=[0, 1, 2])  # doctest: +SKIP
    PosixPath('brainunet_ssa.zip')
    >>> with opened_bundle("brainunet_ssa.zip") as folder:  # doctest: +SKIP
    ...     sorted(p.name for p in folder.iterdir())
    ['dataset.json', 'dataset_fingerprint.json', 'fold_0', 'fold_1', 'fold_2', 'nnunet_transfer_bundle.json',
     'plans.json']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from nnunet_transfer.inference.model import (BRATS_RULES_FILE, DEFAULT_CHECKPOINT, NNUNET_POSTPROCESSING_FILE, Fold,
                                             Model, folds_string, load_model)
from nnunet_transfer.postprocessing.sources import expand

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
MANIFEST = "nnunet_transfer_bundle.json"
FORMAT = "nnunet-transfer model bundle"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _checkpoint_facts(path: Path) -> dict:
    """What the checkpoint says about its training (nnU-Net's keys), without its weights."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    init_args = checkpoint.get("init_args") or {}
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return {"trainer_name": checkpoint.get("trainer_name"), "configuration": init_args.get("configuration"),
            "epoch": checkpoint.get("current_epoch"),
            "inference_allowed_mirroring_axes": list(axes) if axes is not None else None}


def _plugin_trainer(name: Optional[str]) -> bool:
    """Whether the trainer class ``name`` is one of this plugin's (found through ``nnUNet_extTrainer``)."""
    import importlib

    for module in ("nnunet_transfer.training.trainers", "nnunet_transfer.brainunet.trainers"):
        if name and hasattr(importlib.import_module(module), name):
            return True
    return False


def bundle_files(model: Model) -> List[Tuple[Path, str]]:
    """``(file, path in the zip)`` for everything a bundle of ``model`` holds, manifest excepted."""
    prefix = PurePosixPath(model.dataset) / model.folder.name
    names = ["plans.json", "dataset.json", "dataset_fingerprint.json", BRATS_RULES_FILE]
    names += [f"fold_{fold}/{model.checkpoint}" for fold in model.folds]
    crossval = f"crossval_results_folds_{folds_string(model.folds)}"
    names += [f"{crossval}/{name}" for name in (NNUNET_POSTPROCESSING_FILE, "postprocessing.json", BRATS_RULES_FILE)]
    files = []
    for name in names:
        path = model.folder / name
        if path.is_file():
            files.append((path, str(prefix / name)))
        elif name == "dataset_fingerprint.json":
            logger.warning("%s has no dataset_fingerprint.json; the bundle will lack it", model.folder)
    return files


def export_bundle(model: PathLike, out_file: PathLike, folds: Optional[Sequence[Fold]] = None,
                  checkpoint: str = DEFAULT_CHECKPOINT) -> Path:
    """Write the bundle of the model folder ``model`` (``folds``: default every trained fold) to ``out_file``.

    The zip is written next to ``out_file`` under a temporary name and moved into place when
    complete. Raises FileNotFoundError / ValueError naming the missing file or problem.
    """
    model_ = load_model(expand(model), folds, checkpoint)
    if not model_.dataset.startswith("Dataset") or not model_.dataset[7:10].isdigit():
        raise ValueError(f"{model_.folder} must sit in a DatasetXXX_Name folder, as nnU-Net writes it: the bundle's "
                         f"paths are relative to nnUNet_results")
    if len(model_.folder.name.split("__")) != 3:
        raise ValueError(f"{model_.folder.name} is not named Trainer__Plans__Configuration, as nnU-Net names models")
    out_file = Path(out_file)
    if out_file.suffix.lower() != ".zip":
        raise ValueError(f"the bundle must be a .zip file, got {out_file}")
    files = bundle_files(model_)
    folds_facts = {f"fold_{fold}": _checkpoint_facts(path)
                   for fold, path in zip(model_.folds, model_.checkpoint_files())}
    trainer_names = sorted({facts["trainer_name"] for facts in folds_facts.values() if facts["trainer_name"]})
    for name in trainer_names:
        if name != model_.trainer:
            logger.warning("a checkpoint of %s was written by trainer %s", model_.folder.name, name)
    from nnunet_transfer import __version__

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"nnunet_transfer": __version__, "nnunetv2": _version("nnunetv2"), "torch": _version("torch")},
        "model_folder": f"{model_.dataset}/{model_.folder.name}",
        "dataset": model_.dataset, "trainer": model_.trainer, "plans": model_.plans_name,
        "configuration": model_.configuration, "folds": list(model_.folds), "checkpoint": model_.checkpoint,
        "trainer_names": trainer_names,
        "plugin_trainers": [name for name in trainer_names if _plugin_trainer(name)],
        "checkpoints": folds_facts,
        "channels": list(model_.modalities),
        "channel_names": model_.dataset_json.get("channel_names"),
        "intensity_clipping": model_.dataset_json.get("intensity_clipping"),
        "labels": model_.dataset_json.get("labels"),
        "regions_class_order": model_.dataset_json.get("regions_class_order"),
        "postprocessing": [arc.split("/", 2)[2] for path, arc in files
                           if path.name in (BRATS_RULES_FILE, NNUNET_POSTPROCESSING_FILE)],
        "files": {},
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path, arcname in files:
                manifest["files"][arcname.split("/", 2)[2]] = {"sha256": sha256(path), "bytes": path.stat().st_size}
                zf.write(path, arcname)
            zf.writestr(f"{manifest['model_folder']}/{MANIFEST}", json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %s (%.1f MB): %s", out_file, out_file.stat().st_size / 1e6, model_.describe())
    return out_file


def is_bundle(path: PathLike) -> bool:
    """Whether ``path`` is a zip file (a bundle, or a zip nnU-Net exported)."""
    path = Path(path)
    return path.is_file() and zipfile.is_zipfile(path)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"model bundle {path} does not exist")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"model bundle {path} is not a readable zip file ({exc}; a truncated copy?)") from None


def _model_folders(names: Sequence[str]) -> List[str]:
    """``DatasetXXX/Trainer__Plans__Config`` folders of a zip's file names (those holding plans.json)."""
    return sorted({name.rsplit("/", 1)[0] for name in names
                   if name.endswith("/plans.json") and len(PurePosixPath(name).parts) == 3})


def read_manifest(path: PathLike) -> Optional[dict]:
    """The bundle's manifest, or None for a zip without one (exported by nnU-Net)."""
    with _open_zip(Path(path)) as zf:
        manifests = [n for n in zf.namelist() if n.endswith("/" + MANIFEST) and len(PurePosixPath(n).parts) == 3]
        if not manifests:
            return None
        if len(manifests) > 1:
            raise ValueError(f"model bundle {path} holds several manifests: {', '.join(manifests)}")
        try:
            return json.loads(zf.read(manifests[0]))
        except (json.JSONDecodeError, zipfile.BadZipFile) as exc:
            raise ValueError(f"model bundle {path}: unreadable {manifests[0]} ({exc})") from None


def _check_member(path: Path, name: str) -> None:
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ValueError(f"model bundle {path}: refusing the unsafe path {name!r}")


def extract_bundle(path: PathLike, target: PathLike) -> Path:
    """Extract the bundle ``path`` below ``target`` (as into nnUNet_results), check it, return the model folder."""
    path, target = Path(path), Path(target)
    manifest = read_manifest(path)
    with _open_zip(path) as zf:
        names = zf.namelist()
        for name in names:
            _check_member(path, name)
        if manifest is not None:
            folder = manifest.get("model_folder", "")
            if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
                raise ValueError(f"model bundle {path}: format {manifest.get('format')!r} version "
                                 f"{manifest.get('format_version')} is not one this nnunet-transfer reads "
                                 f"({FORMAT!r} version {FORMAT_VERSION}); upgrade nnunet-transfer")
            _check_member(path, folder)
        else:
            folders = _model_folders(names)
            if len(folders) != 1:
                found = ", ".join(folders) if folders else "none"
                raise ValueError(f"model bundle {path} must hold exactly one DatasetXXX/Trainer__Plans__Config model "
                                 f"folder with a plans.json; found {found}")
            folder = folders[0]
        try:
            zf.extractall(target)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"model bundle {path} is corrupt ({exc}); copy it again") from None
    model_folder = target / folder
    if manifest is not None:
        for name, facts in manifest.get("files", {}).items():
            file = model_folder / name
            if not file.is_file():
                raise ValueError(f"model bundle {path} is incomplete: {folder}/{name} is missing")
            if sha256(file) != facts.get("sha256"):
                raise ValueError(f"model bundle {path}: {folder}/{name} does not match its checksum in the manifest "
                                 f"(corrupt copy?); copy the bundle again")
    return model_folder


@contextlib.contextmanager
def opened_bundle(path: PathLike, temp_root: Optional[PathLike] = None) -> Iterator[Path]:
    """Extract the bundle ``path`` into a temporary folder (removed on exit) and yield its model folder."""
    workdir = Path(tempfile.mkdtemp(prefix="nnunet-transfer-bundle-", dir=temp_root))
    try:
        folder = extract_bundle(path, workdir)
        logger.info("extracted model bundle %s to %s", path, workdir)
        yield folder
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bundle_summary(path: PathLike) -> Dict[str, object]:
    """Name, size and (from the manifest) model, folds and versions of a bundle, for printing."""
    path = Path(path)
    manifest = read_manifest(path) or {}
    return {"file": str(path), "megabytes": round(path.stat().st_size / 1e6, 2),
            "model": manifest.get("model_folder"), "folds": manifest.get("folds"),
            "trainers": manifest.get("trainer_names"), "channels": manifest.get("channels"),
            "versions": manifest.get("versions"), "postprocessing": manifest.get("postprocessing")}

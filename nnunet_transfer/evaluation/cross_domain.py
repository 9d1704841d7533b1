"""Cross-domain predictions per target fold: the baseline row of Table 2.

A model trained on the source dataset only (e.g. GLI, nnU-Net fold ``all``) predicts the
validation cases of each fold of the target dataset (read from
``$nnUNet_preprocessed/<target>/splits_final.json``; images from
``$nnUNet_raw/<target>/imagesTr``) through nnU-Net's own ``nnUNetPredictor`` (tile step
0.5, Gaussian weighting, mirroring configurable). Predictions land in
``<out_dir>/fold_k/validation/<case>.nii.gz`` (the layout of an nnU-Net results folder) and
each fold gets an evaluated ``summary.json`` (see :mod:`.evaluate`), so the baseline is
evaluated on exactly the cases and folds of the other strategies.

Reruns skip cases whose prediction exists; each case is written to a temporary folder and
moved into place when finished.

Example:
    >>> predict_folds("$nnUNet_results/Dataset231_GLI/nnUNetTrainer__nnUNetPlans__3d_fullres",
    ...               "Dataset232_SSA", folds=[0, 1], out_dir="baseline")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from tqdm import tqdm

from nnunet_transfer import config
from nnunet_transfer.evaluation.metrics import EMPTY_PENALTY
from nnunet_transfer.postprocessing.sources import expand

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


def _load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    return json.loads(path.read_text())


def target_dataset_name(target_dataset: Union[int, str]) -> str:
    """nnU-Net's dataset name (``DatasetXXX_Name``) for an id or name."""
    if isinstance(target_dataset, str) and target_dataset.startswith("Dataset"):
        return target_dataset
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    config.nnunet_raw()  # clear error when unset
    return maybe_convert_to_dataset_name(int(target_dataset))


def _make_predictor(source_model_dir: Path, model_folds, checkpoint_name: str, use_mirroring: bool, device):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(source_model_dir), use_folds=model_folds,
                                                   checkpoint_name=checkpoint_name)
    return predictor


def _check_model(source_model_dir: Path, checkpoint_name: str, model_folds) -> dict:
    for name in ("plans.json", "dataset.json"):
        if not (source_model_dir / name).is_file():
            raise FileNotFoundError(f"{source_model_dir} is not an nnU-Net results folder: {name} is missing.")
    folds = model_folds if model_folds is not None else \
        [p.name[len("fold_"):] for p in source_model_dir.glob("fold_*") if (p / checkpoint_name).is_file()]
    if not folds:
        raise FileNotFoundError(f"{source_model_dir} has no fold_*/{checkpoint_name}; train the source model first.")
    for fold in folds:
        if not (source_model_dir / f"fold_{fold}" / checkpoint_name).is_file():
            raise FileNotFoundError(f"{source_model_dir / f'fold_{fold}' / checkpoint_name} does not exist.")
    return json.loads((source_model_dir / "dataset.json").read_text())


def predict_folds(source_model_dir: PathLike, target_dataset: Union[int, str],
                  folds: Optional[Sequence[int]] = None, out_dir: PathLike = "predict_folds",
                  use_mirroring: bool = True, model_folds: Optional[Sequence[Union[int, str]]] = None,
                  checkpoint_name: str = "checkpoint_final.pth", device: Optional[str] = None,
                  evaluate: bool = True, hd95: str = "medpy", empty_penalty: float = EMPTY_PENALTY,
                  num_processes: int = 1, sequential: bool = True) -> Dict[str, dict]:
    """Predict each target fold's validation cases with a source-domain model and evaluate them.

    Args:
        source_model_dir: nnU-Net results folder (``Trainer__Plans__Config`` with
            ``plans.json``, ``dataset.json`` and ``fold_X/checkpoint_final.pth``).
        target_dataset: target dataset id or name (``splits_final.json`` must exist).
        folds: target folds to predict (default: all folds of the splits file).
        out_dir: output folder (``fold_k/validation`` below it).
        use_mirroring: test-time mirroring (nnU-Net's default, 8x slower on the CPU).
        model_folds: folds of the source model to ensemble (default: every trained fold,
            e.g. ``all``).
        checkpoint_name, device: passed to nnU-Net (device default: cuda if available, else cpu).
        evaluate: write an evaluated ``summary.json`` per fold.
        hd95, empty_penalty, num_processes: evaluation options (see ``evaluate_folder``).
        sequential: use nnU-Net's single-process prediction (robust on CPUs and in sandboxes).

    Returns:
        ``{fold: summary}`` (empty summaries when ``evaluate`` is false).
    """
    source_model_dir = expand(source_model_dir)
    out_dir = Path(out_dir)
    name = target_dataset_name(target_dataset)
    raw = config.nnunet_raw() / name
    preprocessed = config.nnunet_preprocessed() / name
    splits = _load_json(preprocessed / "splits_final.json", "The target splits file")
    target_json = _load_json(raw / "dataset.json", "The target dataset.json")
    model_json = _check_model(source_model_dir, checkpoint_name, model_folds)
    n_model, n_target = len(model_json.get("channel_names", {})), len(target_json.get("channel_names", {}))
    if n_model != n_target:
        raise ValueError(f"The source model {source_model_dir} expects {n_model} input channels but {name} has "
                         f"{n_target}.")
    from nnunet_transfer.dataset_conversion.labels import without_ignore

    if without_ignore(model_json.get("labels") or {}) != without_ignore(target_json.get("labels") or {}):
        logger.warning("source labels %s differ from target labels %s", model_json.get("labels"),
                       target_json.get("labels"))
    ending = target_json.get("file_ending", ".nii.gz")
    folds = list(range(len(splits))) if folds is None else [int(f) for f in folds]
    for fold in folds:
        if not 0 <= fold < len(splits):
            raise ValueError(f"Fold {fold} does not exist: {preprocessed / 'splits_final.json'} has {len(splits)} folds.")
    gt_dir = preprocessed / "gt_segmentations"
    if not gt_dir.is_dir():
        gt_dir = raw / "labelsTr"

    predictor = None
    summaries: Dict[str, dict] = {}
    for fold in folds:
        cases: List[str] = list(splits[fold]["val"])
        validation = out_dir / f"fold_{fold}" / "validation"
        validation.mkdir(parents=True, exist_ok=True)
        todo = [c for c in cases if not (validation / f"{c}{ending}").is_file()]
        logger.info("fold %d: %d validation cases, %d to predict", fold, len(cases), len(todo))
        for case in tqdm(todo, desc=f"predict fold {fold}", disable=None):
            channels = [raw / "imagesTr" / f"{case}_{i:04d}{ending}" for i in range(n_target)]
            missing = [str(p) for p in channels if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"Case {case}: missing input image(s) {', '.join(missing)}")
            if predictor is None:
                predictor = _make_predictor(source_model_dir, model_folds, checkpoint_name, use_mirroring, device)
            staging = Path(tempfile.mkdtemp(prefix=".predict.", dir=validation))
            try:
                predict = predictor.predict_from_files_sequential if sequential else predictor.predict_from_files
                kwargs = {} if sequential else {"num_processes_preprocessing": 1,
                                                "num_processes_segmentation_export": 1}
                predict([[str(p) for p in channels]], [str(staging / case)], save_probabilities=False,
                        overwrite=True, **kwargs)
                produced = staging / f"{case}{ending}"
                if not produced.is_file():
                    raise RuntimeError(f"Case {case}: nnU-Net wrote no prediction {produced.name}")
                os.replace(produced, validation / produced.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if evaluate:
            from nnunet_transfer.evaluation.evaluate import evaluate_folder

            summary_file = validation / "summary.json"
            existing = json.loads(summary_file.read_text()) if summary_file.is_file() else None
            if (existing and not todo and existing.get("case_ids") == cases
                    and (existing.get("config") or {}).get("hd95") == hd95):
                summaries[str(fold)] = existing
            else:
                summaries[str(fold)] = evaluate_folder(gt_dir, validation, summary_file, regions=True,
                                                       num_processes=num_processes, hd95=hd95,
                                                       file_ending=ending, case_ids=cases,
                                                       empty_penalty=empty_penalty)
        else:
            summaries[str(fold)] = {}
    from nnunet_transfer.evaluation.evaluate import write_json_atomic

    write_json_atomic({**target_json, "source_model": str(source_model_dir)}, out_dir / "dataset.json")
    return summaries

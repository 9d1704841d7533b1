"""Segment raw BraTS cases with a trained nnU-Net model or a model bundle, in-process.

``segment(cases, model, out_dir, options)`` finds the cases (any layout ``convert`` reads),
checks each one as ``convert`` does, feeds its images in the model's channel order (with the
model's percentile clipping, as ``convert --clip-percentiles`` applied it to the training
data) to one nnU-Net ``nnUNetPredictor`` initialised once from the model folder, applies the
model's post-processing, and writes ``OUT_DIR/<case_id>.nii.gz`` in the BraTS label
convention with the input's geometry. A defective case is refused (its case, file and
defect reported) and the others go on.

Each case is converted exactly as ``nnunet-transfer convert`` would convert it (the same
code), read with the model's nnU-Net image reader and predicted with
``nnUNetPredictor.predict_single_npy_array``: the labels equal those of ``nnUNetv2_predict``
on the converted case followed by ``nnunet-transfer to-brats``.

Example:
    >>> report = segment(["/data/clinic/BraTS-SSA-00123-000"], "brainunet_ssa.zip", "labels",
    ...                  SegmentOptions(device="cpu", style="2023"))  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    segmented 1 case(s), refused 0, 41.2 s per case -> labels
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from nnunet_transfer import config
from nnunet_transfer.dataset_conversion.checks import DefectiveCasesError, convert_labels
from nnunet_transfer.dataset_conversion.convert import convert_case_images
from nnunet_transfer.dataset_conversion.labels import without_ignore
from nnunet_transfer.dataset_conversion.layouts import SourceCase
from nnunet_transfer.dataset_conversion.to_brats import STYLES
from nnunet_transfer.inference.bundle import is_bundle, opened_bundle
from nnunet_transfer.inference.cases import find_cases
from nnunet_transfer.inference.model import DEFAULT_CHECKPOINT, Fold, Model, load_model
from nnunet_transfer.postprocessing.sources import expand

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Label values a BraTS model's segmentation may hold (nnU-Net's NCR=1, ED=2, ET=3).
BRATS_LABELS = {0, 1, 2, 3}


@dataclass
class SegmentOptions:
    """How ``segment`` predicts and what it writes.

    Attributes:
        device: ``"cpu"``, ``"cuda"`` (``"mps"``), or ``"auto"``: cuda when torch sees a GPU.
        folds: model folds to ensemble (default: every trained ``fold_N``, else ``fold_all``).
        checkpoint: checkpoint file in each fold folder.
        use_mirroring: nnU-Net's test-time mirroring (its default; up to 8x slower in 3D).
        perform_everything_on_device: keep the sliding-window results on the GPU (cuda only).
        step_size: sliding-window tile step, as a fraction of the patch (nnU-Net's 0.5).
        postprocessing: apply the model's post-processing files when present.
        style: BraTS label convention, ``"2023"`` (also ``"2024"``: ET=3) or ``"2021"`` (ET=4).
        save_probabilities: also write ``<case>.npz`` (``probabilities``, nnU-Net's class
            order) and ``<case>.pkl``, as ``nnUNetv2_predict --save_probabilities`` does.
        engine: what runs the network: ``"torch"`` (nnU-Net's own), or on the CPU ``"openvino"``
            or ``"onnxruntime"`` (optional packages; see :mod:`nnunet_transfer.inference.engines`).
            nnU-Net's predictor does the rest (sliding window, mirroring, folds) either way.
        threads: CPU threads for the network (torch's ``set_num_threads``, process-wide, and the
            engine's); default: torch's default, the number of cores.

    >>> SegmentOptions(device="cpu", folds=[0, 1], style="2021").style
    '2021'
    """

    device: str = "auto"
    folds: Optional[Sequence[Fold]] = None
    checkpoint: str = DEFAULT_CHECKPOINT
    use_mirroring: bool = True
    perform_everything_on_device: bool = True
    step_size: float = 0.5
    postprocessing: bool = True
    style: str = "2023"
    save_probabilities: bool = False
    engine: str = "torch"
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        self.style = str(self.style)
        if self.style not in STYLES:
            raise ValueError(f"unknown BraTS style {self.style!r}; use one of {', '.join(sorted(STYLES))}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; use one of {', '.join(DEVICES)}")
        if not 0 < float(self.step_size) <= 1:
            raise ValueError(f"step_size must be in (0, 1], got {self.step_size}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.engine != "torch":  # unknown engine: ValueError; its packages missing: EngineMissingError
            from nnunet_transfer.inference.engines import check_engine

            check_engine(self.engine)
            if self.device not in ("auto", "cpu"):
                raise ValueError(f"engine {self.engine} runs the network on the CPU; use device cpu (or engine torch "
                                 f"for {self.device})")


@dataclass
class SegmentReport:
    """What ``segment`` did: files written, cases refused (with their defects), seconds per case."""

    out_dir: Path
    model: str = ""
    device: str = ""
    written: Dict[str, Path] = field(default_factory=dict)
    refused: Dict[str, List[str]] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    postprocessing: List[str] = field(default_factory=list)
    setup_seconds: float = 0.0
    engine: str = "torch"
    export_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused

    @property
    def seconds_per_case(self) -> Optional[float]:
        return sum(self.seconds.values()) / len(self.seconds) if self.seconds else None

    def summary(self) -> str:
        """A few lines for people: cases done and refused (each with its problems), time per case."""
        per_case = f", {self.seconds_per_case:.1f} s per case" if self.seconds else ""
        lines = [f"segmented {len(self.written)} case(s), refused {len(self.refused)}{per_case} -> {self.out_dir}"]
        if self.model:
            engine = "" if self.engine == "torch" else f" with {self.engine}"
            export = f" (network export {self.export_seconds:.1f} s)" if self.export_seconds else ""
            lines.append(f"model {self.model} on {self.device}{engine}, loaded in {self.setup_seconds:.1f} s{export}; "
                         f"post-processing: {', '.join(self.postprocessing) or 'none'}")
        for case_id, problems in self.refused.items():
            lines.append(f"refused {case_id}: " + "; ".join(problems))
        return "\n".join(lines)


@contextlib.contextmanager
def _nnunet_output() -> Iterator[None]:
    """nnU-Net prints; send its chatter to this module's debug log instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            logger.debug("nnU-Net: %s", text)


def _torch_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but torch sees no CUDA GPU; use -device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps was asked for but torch sees no Apple GPU; use -device cpu")
    return torch.device(name)


def _check_labels(model: Model) -> None:
    """Refuse models whose segmentations are not BraTS labels 0-3 (the styles map those)."""
    data = model.dataset_json
    labels = without_ignore(data.get("labels") or {})  # nnU-Net's ignore label is never predicted
    values = set()
    for value in labels.values():
        values.update(value if isinstance(value, (list, tuple)) else [value])
    values.update(data.get("regions_class_order") or [])
    if not values or not values <= BRATS_LABELS:
        raise ValueError(f"the model's labels {labels} are not BraTS's NCR=1, ED=2, ET=3; segment writes BraTS label "
                         f"files and needs a model trained on data converted by `nnunet-transfer convert`")


PostprocessStep = Tuple[str, Callable[[np.ndarray, Sequence[float]], np.ndarray]]


def _postprocessing_steps(model: Model) -> List[PostprocessStep]:
    """The model's post-processing, as ``(description, fn(segmentation, spacing))``.

    The plugin's BraTS rules (``brats_postprocessing.json``, read and applied by
    :mod:`nnunet_transfer.postprocessing`) when present, else nnU-Net's ``postprocessing.pkl``
    of these folds' cross-validation. ``spacing`` is nnU-Net's, in the array's axis order.
    """
    rules_file = model.brats_rules_file()
    if rules_file is not None:  # tuned on the raw fold predictions: it replaces nnU-Net's post-processing
        from nnunet_transfer.postprocessing import apply, read_rules

        rules = read_rules(rules_file)

        def apply_rules(segmentation: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
            return apply(segmentation, spacing, rules)

        return [(f"BraTS rules {rules_file.name} ({rules.describe()})", apply_rules)]
    pkl = model.nnunet_postprocessing_file()
    if pkl is not None:
        from batchgenerators.utilities.file_and_folder_operations import load_pickle
        from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

        functions, kwargs = load_pickle(str(pkl))

        def apply_nnunet(segmentation: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
            return apply_postprocessing(segmentation, functions, kwargs)

        return [(f"nnU-Net {pkl.parent.name}/{pkl.name}", apply_nnunet)]
    return []


class Segmenter:
    """One model and one nnU-Net predictor, initialised once, for many cases.

    ``model`` is a results folder (``DatasetXXX/Trainer__Plans__Config``), a dataset
    folder holding one such model, or a bundle zip (extracted into a temporary folder that
    ``close`` removes). The predictor is built on first use (or by :meth:`load`).

    >>> with Segmenter("bundle.zip", SegmentOptions(device="cpu")) as segmenter:  # doctest: +SKIP
    ...     files = segmenter.segment_case(case, Path("labels"))
    """

    def __init__(self, model: PathLike, options: Optional[SegmentOptions] = None):
        self.options = options or SegmentOptions()
        self.source = expand(model)
        self._stack = contextlib.ExitStack()
        self._predictor = None
        self.setup_seconds = 0.0
        self.export_seconds = 0.0
        try:
            folder = self.source
            if is_bundle(folder):
                folder = self._stack.enter_context(opened_bundle(folder))
            self.model = load_model(folder, self.options.folds, self.options.checkpoint)
            _check_labels(self.model)
            self.steps = _postprocessing_steps(self.model) if self.options.postprocessing else []
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Drop the predictor and remove an extracted bundle."""
        self._predictor = None
        self._stack.close()

    @property
    def postprocessing(self) -> List[str]:
        return [name for name, _ in self.steps]

    def load(self):
        """nnU-Net's predictor for the model (built once): checkpoints read, network on the device."""
        if self._predictor is None:
            start = time.perf_counter()
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            engine = self.options.engine
            device = _torch_device("cpu" if engine != "torch" else self.options.device)
            if self.options.threads:
                import torch

                torch.set_num_threads(int(self.options.threads))
            with _nnunet_output():
                predictor = nnUNetPredictor(
                    tile_step_size=float(self.options.step_size), use_gaussian=True,
                    use_mirroring=self.options.use_mirroring,
                    perform_everything_on_device=self.options.perform_everything_on_device and device.type == "cuda",
                    device=device, verbose=False, verbose_preprocessing=False, allow_tqdm=False)
                with config.plugin_trainers_on_path():  # the plugin's trainer classes, for the checkpoints
                    predictor.initialize_from_trained_model_folder(str(self.model.folder), use_folds=self.model.folds,
                                                                   checkpoint_name=self.model.checkpoint)
            previous = predictor.configuration_manager.previous_stage_name
            if previous is not None:
                raise ValueError(f"{self.model.folder.name} is a cascade stage that needs the segmentations of "
                                 f"{previous}; segment supports single-stage models (e.g. 3d_fullres)")
            if engine == "torch":  # any trainer's network (the plugin's build it so already): batch-1 tiles via oneDNN
                from nnunet_transfer.training.onednn import single_sample_onednn

                single_sample_onednn(predictor.network)
            else:  # nnU-Net's predictor as it is, its network run by the engine (each fold exported now)
                from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

                from nnunet_transfer.inference.engines import ExportedNetwork

                channels = determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                                        predictor.dataset_json)
                network = ExportedNetwork(predictor.network, engine, self.options.threads)
                network.prepare(predictor.list_of_parameters,
                                (1, channels, *predictor.configuration_manager.patch_size))
                predictor.network = network
                self.export_seconds = network.export_seconds
            self._predictor = predictor
            self.setup_seconds = time.perf_counter() - start
            logger.info("loaded %s on %s (engine %s) in %.1f s", self.model.describe(), device, engine,
                        self.setup_seconds)
        return self._predictor

    @property
    def device(self) -> str:
        return str(self.load().device)

    def read_case(self, case: SourceCase, staging: Path) -> Tuple[np.ndarray, dict]:
        """Check ``case`` and read its images as nnU-Net reads the converted case; DefectiveCasesError if bad.

        The images are converted into ``staging`` (unchanged files are linked) by ``convert``'s
        own code, with the model's clipping, then read with the model's image reader.
        """
        clip = self.model.clipping
        files, defects = convert_case_images(case, self.model.modalities, staging, clip=clip, link=True,
                                             file_ending=".nii" if clip else None)
        if defects:
            raise DefectiveCasesError(defects)
        reader = self.load().plans_manager.image_reader_writer_class()
        with _nnunet_output():
            return reader.read_images([str(f) for f in files])

    def predict(self, image: np.ndarray, properties: dict) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """nnU-Net's segmentation (labels 0-3, post-processed) and, when asked for, its probabilities."""
        predictor = self.load()
        with _nnunet_output():
            result = predictor.predict_single_npy_array(image, properties, None, None,
                                                        self.options.save_probabilities)
        segmentation, probabilities = result if self.options.save_probabilities else (result, None)
        for name, step in self.steps:
            logger.debug("applying %s", name)
            segmentation = step(segmentation, properties["spacing"])
        return segmentation, probabilities

    def segment_case(self, case: SourceCase, out_dir: PathLike) -> List[Path]:
        """Segment one case into ``out_dir`` (``<case_id>.nii.gz``, optionally ``.npz``/``.pkl``); return the files.

        Raises DefectiveCasesError when the case fails its checks (nothing written).
        """
        out_dir = Path(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{case.case_id}.", dir=out_dir))
        try:
            image, properties = self.read_case(case, staging)
            segmentation, probabilities = self.predict(image, properties)
            labels, problem = convert_labels(segmentation, STYLES[self.options.style])
            if problem:
                raise RuntimeError(f"{case.case_id}: the model's segmentation holds {problem}")
            label_file = out_dir / f"{case.case_id}.nii.gz"
            writer = self.load().plans_manager.image_reader_writer_class()
            with _nnunet_output():
                writer.write_seg(labels, str(label_file), properties)
            files = [label_file]
            if probabilities is not None:
                from batchgenerators.utilities.file_and_folder_operations import save_pickle

                np.savez_compressed(out_dir / f"{case.case_id}.npz", probabilities=probabilities)
                save_pickle(properties, str(out_dir / f"{case.case_id}.pkl"))
                files += [out_dir / f"{case.case_id}.npz", out_dir / f"{case.case_id}.pkl"]
            return files
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def segment(cases: Union[PathLike, Sequence[PathLike]], model: PathLike, out_dir: PathLike,
            options: Optional[SegmentOptions] = None) -> SegmentReport:
    """Segment every case of ``cases`` with ``model`` into ``out_dir``; return the report.

    Args:
        cases: case folders (BraTS 2023/2024 or 2021 names, ``.nii`` or ``.nii.gz``) or
            folders of case folders.
        model: an nnU-Net results folder or a model bundle (``nnunet-transfer export``).
        out_dir: where ``<case_id>.nii.gz`` go (created; other files in it are kept, a case's
            earlier files replaced). Each case is written to a hidden temporary folder in
            ``out_dir`` and moved into place when complete.
        options: :class:`SegmentOptions` (defaults: auto device, every fold, mirroring,
            post-processing, BraTS 2023 labels).

    Defective cases are refused and listed in ``report.refused`` (case -> problems), the
    others still go through. Raises for problems with the model or the case paths.
    """
    options = options or SegmentOptions()
    out_dir = Path(out_dir)
    report = SegmentReport(out_dir=out_dir)
    with Segmenter(model, options) as segmenter:
        found = find_cases(cases, segmenter.model.modalities)
        segmenter.load()
        report.model, report.device = segmenter.model.describe(), segmenter.device
        report.setup_seconds, report.postprocessing = segmenter.setup_seconds, segmenter.postprocessing
        report.engine, report.export_seconds = options.engine, segmenter.export_seconds
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".segment-tmp-", dir=out_dir))
        try:
            bar = tqdm(found, desc="segment", unit="case", disable=None)
            for case in bar:
                bar.set_postfix_str(case.case_id)
                start = time.perf_counter()
                try:
                    files = segmenter.segment_case(case, work)
                except DefectiveCasesError as exc:
                    report.refused[case.case_id] = [f"{d.file}: {d.problem}" for d in exc.defects]
                    logger.error("refused %s", exc)
                    continue
                except (RuntimeError, ValueError, OSError) as exc:  # one case failing must not stop the others
                    logger.debug("segmenting %s failed", case.case_id, exc_info=True)
                    report.refused[case.case_id] = [f"segmentation failed: {exc}"]
                    logger.error("%s: segmentation failed: %s", case.case_id, exc)
                    continue
                for file in files:
                    os.replace(file, out_dir / file.name)
                report.written[case.case_id] = out_dir / files[0].name
                report.seconds[case.case_id] = time.perf_counter() - start
                logger.info("%s: %.1f s", case.case_id, report.seconds[case.case_id])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("segmented %d case(s), refused %d", len(report.written), len(report.refused))
    return report


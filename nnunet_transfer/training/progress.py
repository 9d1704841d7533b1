"""``DomainProgressMixin``: what a domain-adaptation run is watched by, per epoch, in ``progress_domain.png``.

nnU-Net draws ``progress.png`` from its logger; this mixin adds its own per-epoch values to
that logger (so checkpoints save them and ``--c`` restores them) and draws
``progress_domain.png`` next to it every epoch:

- the segmentation loss of the training batches (``train_seg_losses``; for DANN the loss
  without the domain term), with nnU-Net's total training and validation losses;
- the domain classifier's loss and accuracy on the training batches (``train_domain_losses``,
  ``train_domain_accs``), with the chance level (the share of the most frequent class in
  the batches) drawn;
- the gradient reversal's strength (``grl_lambdas``), when reversing;
- the pseudo-Dice of the validation batches per domain (``val_dice_per_domain``: a
  ``{domain: mean foreground Dice}`` per epoch), when the validation holds several domains,
  with nnU-Net's pseudo-Dice over all of them.

A value a trainer does not produce is logged as NaN (an empty dict for the Dice), so every
key has one entry per epoch, as nnU-Net's ``progress.png`` needs of every key; panels
without values are left out. A checkpoint written without these keys (an older version)
resumes with their history padded (NaN) up to its epoch.

Per-domain pseudo-Dice: ``validation_step`` runs nnU-Net's own (its pseudo-Dice is unchanged)
while :func:`per_case_confusion` makes nnU-Net's ``get_tp_fp_fn_tn`` sum per case and hand
back the sum over the batch (integer counts, so the sums are bitwise nnU-Net's).

Example:
    >>> history = {"train_losses": [1.0, 0.9], "train_seg_losses": [1.0]}
    >>> sorted(pad_history(history, 2))
    ['grl_lambdas', 'train_domain_accs', 'train_domain_losses', 'train_seg_losses', 'val_dice_per_domain']
    >>> history["train_seg_losses"], history["val_dice_per_domain"]
    ([1.0, nan], [{}, {}])
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from batchgenerators.utilities.file_and_folder_operations import join
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.style import context as style_context

from nnunet_transfer.training.sampling import batch_domain_counts

FIGURE = "progress_domain.png"
DICE_PER_DOMAIN = "val_dice_per_domain"
#: training-step value -> the logger key of its epoch mean
TRAIN_KEYS = {"seg_loss": "train_seg_losses", "domain_loss": "train_domain_losses", "domain_acc": "train_domain_accs",
              "grl_lambda": "grl_lambdas"}
PROGRESS_KEYS = (*TRAIN_KEYS.values(), DICE_PER_DOMAIN)


def _placeholder(key: str) -> Any:
    return {} if key == DICE_PER_DOMAIN else math.nan


def local_history(logger) -> Dict[str, list]:
    """The per-epoch lists of nnU-Net's logger (``MetaLogger.local_logger`` since 2.7, else ``nnUNetLogger``)."""
    return getattr(logger, "local_logger", logger).my_fantastic_logging


def pad_history(history: Dict[str, list], n_epochs: Optional[int] = None) -> List[str]:
    """Add the keys of :data:`PROGRESS_KEYS` that ``history`` lacks and pad them to ``n_epochs`` entries.

    ``n_epochs`` defaults to the epochs nnU-Net's own keys hold (the fewest, as its
    ``progress.png`` counts them). Returns the keys that were missing or short (their padded
    epochs hold NaN, or ``{}``).
    """
    if n_epochs is None:
        n_epochs = min((len(v) for k, v in history.items() if k not in PROGRESS_KEYS), default=0)
    padded = []
    for key in PROGRESS_KEYS:
        values = history.setdefault(key, [])
        if len(values) < n_epochs:
            values.extend(_placeholder(key) for _ in range(n_epochs - len(values)))
            padded.append(key)
    return padded


def dice_per_domain(domains: Sequence[Optional[str]], confusion: Sequence[np.ndarray]) -> Dict[str, float]:
    """Mean foreground pseudo-Dice per domain, nnU-Net's way (tp, fp, fn summed over a domain's cases).

    ``confusion[i]`` is case ``i``'s ``(3, classes)`` array of tp, fp, fn (foreground classes or
    regions only); cases without a domain (None) are left out.

    >>> tp_fp_fn = [np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])]
    >>> dice_per_domain(["GLI", "SSA"], tp_fp_fn)
    {'GLI': 0.8333333333333333, 'SSA': 0.5}
    """
    sums: Dict[str, np.ndarray] = {}
    for domain, counts in zip(domains, confusion):
        if domain is not None:
            sums[domain] = sums.get(domain, 0) + np.asarray(counts, dtype=np.float64)
    return {d: dice_from_counts(sums[d]) for d in sorted(sums)}


def dice_from_counts(counts: np.ndarray) -> float:
    """``nanmean`` over classes of ``2 tp / (2 tp + fp + fn)`` (NaN for a class never present nor predicted)."""
    tp, fp, fn = counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(2 * tp / (2 * tp + fp + fn))) if np.any(2 * tp + fp + fn) else math.nan


def chance_accuracy(counts: Mapping[str, int], target: str, share: Optional[float], batch_size: int = 1) -> float:
    """Accuracy of always guessing the most frequent domain of the training batches.

    ``share`` of every batch is the target (rounded per batch as the sampler does), the rest
    drawn from the other domains' cases; ``share=None`` draws cases uniformly.

    >>> counts = {"GLI": 5, "SSA": 2}
    >>> chance_accuracy(counts, "SSA", 0.5, 2), round(chance_accuracy(counts, "SSA", None), 4)
    (0.5, 0.7143)
    >>> chance_accuracy({"A": 4, "B": 4, "C": 2}, "C", 0.2)
    0.4
    """
    total = sum(counts.values())
    if share is None:
        return max(counts.values()) / total
    t = batch_domain_counts(batch_size, share) / batch_size if batch_size >= 2 else float(share)
    others = {d: c for d, c in counts.items() if d != target}
    n_others = sum(others.values())
    shares = [t] + [(1.0 - t) * c / n_others for c in others.values()] if n_others else [1.0]
    return max(shares)


@contextlib.contextmanager
def per_case_confusion(record: List[torch.Tensor]) -> Iterator[None]:
    """Within the block, nnU-Net's trainer computes its tp/fp/fn per case first.

    Each call of ``get_tp_fp_fn_tn`` that sums over the batch axis appends a ``(3, batch,
    classes)`` tensor of tp, fp, fn per case to ``record`` and returns the batch sums, as before.
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    original = trainer_module.get_tp_fp_fn_tn

    def per_case(net_output, gt, axes=None, mask=None, square=False):
        if axes is None or 0 not in axes:
            return original(net_output, gt, axes=axes, mask=mask, square=square)
        tp, fp, fn, tn = original(net_output, gt, axes=[a for a in axes if a != 0], mask=mask, square=square)
        record.append(torch.stack([tp, fp, fn]).detach())
        return tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0)

    trainer_module.get_tp_fp_fn_tn = per_case
    try:
        yield
    finally:
        trainer_module.get_tp_fp_fn_tn = original


def _series(history: Mapping[str, list], key: str, n: int) -> np.ndarray:
    values = [float(v) if v is not None else math.nan for v in list(history.get(key, []))[:n]]
    return np.array(values + [math.nan] * (n - len(values)), dtype=float)


def plot_domain_progress(history: Mapping[str, list], filename: str, chance: Optional[float] = None) -> None:
    """Draw ``filename`` (PNG) from the logger's ``history``; panels without values are left out.

    Drawn without pyplot (no figure stays registered), with matplotlib's default style (nnU-Net's
    seaborn settings stay out), to a temporary file that replaces ``filename``.
    """
    n = len(history.get("train_losses", []))
    x = np.arange(n)
    seg, total, val = (_series(history, k, n) for k in ("train_seg_losses", "train_losses", "val_losses"))
    domain_loss, domain_acc, lambdas = (_series(history, TRAIN_KEYS[k], n)
                                        for k in ("domain_loss", "domain_acc", "grl_lambda"))
    per_domain = [dict(d) if isinstance(d, Mapping) else {} for d in list(history.get(DICE_PER_DOMAIN, []))[:n]]
    names = sorted({name for d in per_domain for name in d})
    panels = ["loss"]
    panels += ["domain loss"] if np.isfinite(domain_loss).any() else []
    panels += ["domain accuracy"] if np.isfinite(domain_acc).any() else []
    panels += ["lambda"] if np.isfinite(lambdas).any() else []
    panels += ["dice"] if any(len(d) > 1 for d in per_domain) else []
    style = dict(marker="o" if n <= 60 else None, markersize=3, linewidth=1.5)  # one epoch shows as a dot
    with style_context("default"):
        width, height = 8.0, 2.4 * len(panels)
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        # fixed margins (in inches) instead of tight_layout: a five-panel draw 0.67 s instead of 0.78 s
        fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, top=1 - 0.15 / height,
                            bottom=0.5 / height, hspace=0.15)
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, panel in zip(axes, panels):
            if panel == "loss":
                ax.plot(x, seg, label="segmentation loss (train)", color="tab:blue", **style)
                if not np.allclose(seg, total, equal_nan=True):
                    ax.plot(x, total, label="total loss (train)", color="tab:blue", ls=":", **style)
                ax.plot(x, val, label="loss (validation)", color="tab:red", **style)
                ax.set_ylabel("loss")
            elif panel == "domain loss":
                ax.plot(x, domain_loss, label="domain loss (train)", color="tab:purple", **style)
                ax.set_ylabel("domain loss")
            elif panel == "domain accuracy":
                ax.plot(x, domain_acc, label="domain accuracy (train)", color="tab:purple", **style)
                if chance is not None:
                    ax.axhline(chance, color="gray", ls="--", label=f"chance ({chance:.2f})")
                ax.set_ylim(0, 1.02)
                ax.set_ylabel("accuracy")
            elif panel == "lambda":
                ax.plot(x, lambdas, label="gradient reversal lambda", color="tab:orange", **style)
                ax.set_ylabel("lambda")
            else:
                for name in names:
                    ax.plot(x, [d.get(name, math.nan) for d in per_domain], label=f"{name}", **style)
                ax.plot(x, _series(history, "mean_fg_dice", n), label="all (nnU-Net)", color="gray", ls=":", **style)
                ax.set_ylabel("pseudo Dice (val)")
            ax.legend(loc="best", fontsize="small")
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("epoch")
        tmp = f"{filename}.tmp{os.getpid()}.png"
        try:
            fig.savefig(tmp, dpi=80, format="png")
            os.replace(tmp, filename)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
            fig.clear()


class DomainProgressMixin:
    """Per-epoch domain-adaptation values in nnU-Net's logger and ``progress_domain.png`` (module docstring).

    Needs the trainer's ``case_domains`` (``DomainAwareMixin``) for the per-domain pseudo-Dice;
    reads ``seg_loss``, ``domain_loss``, ``domain_acc`` and ``grl_lambda`` from the training
    steps' outputs where present (``seg_loss`` defaults to the step's loss).
    """

    def initialize(self):
        super().initialize()
        pad_history(local_history(self.logger))

    def on_checkpoint_loaded(self) -> None:
        super().on_checkpoint_loaded()
        padded = pad_history(local_history(self.logger))
        if padded:
            self.print_to_log_file(f"nnunet-transfer: the checkpoint's training log lacks {', '.join(padded)} for "
                                   f"some of its epochs (written by an older version?); they stay empty in {FIGURE}")

    def _gather(self, value: Any) -> List[Any]:
        """``value`` of every rank (this one's alone without DDP)."""
        if not (self.is_ddp and dist.is_initialized()):
            return [value]
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        produced = [name for name in TRAIN_KEYS if name in train_outputs[0]]
        steps = {name: [float(o[name]) for o in train_outputs] for name in produced}
        if "seg_loss" not in steps:
            steps["seg_loss"] = [float(o["loss"]) for o in train_outputs]
        everywhere: Dict[str, List[float]] = {}
        for rank_steps in self._gather(steps):
            for name, values in rank_steps.items():
                everywhere.setdefault(name, []).extend(values)
        means = {name: float(np.mean(values)) for name, values in everywhere.items()}
        for name, key in TRAIN_KEYS.items():
            self.logger.log(key, means.get(name, math.nan), self.current_epoch)
        if produced:
            self.print_to_log_file("nnunet-transfer: " + ", ".join(f"{k} {means[k]:.4f}" for k in produced))

    def validation_step(self, batch: dict) -> dict:
        record: List[torch.Tensor] = []
        with per_case_confusion(record):
            out = super().validation_step(batch)
        if len(record) != 1 or "keys" not in batch:
            raise RuntimeError(f"{self.__class__.__name__}: nnU-Net's validation_step computed tp/fp/fn "
                               f"{len(record)} times for a batch (expected once, from a batch with 'keys'); the "
                               f"per-domain pseudo-Dice needs nnU-Net 2.x's validation_step")
        counts = record[0].cpu().numpy()
        if not self.label_manager.has_regions:
            counts = counts[:, :, 1:]  # no background, as nnU-Net's pseudo-Dice
        domains = getattr(self, "case_domains", {})
        out["case_domain"] = [domains.get(str(k)) for k in batch["keys"]]
        out["case_confusion"] = [counts[:, i] for i in range(counts.shape[1])]
        return out

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        domains = [d for o in val_outputs for d in o.get("case_domain", [])]
        confusion = [c for o in val_outputs for c in o.get("case_confusion", [])]
        pairs = [pair for rank in self._gather(list(zip(domains, confusion))) for pair in rank]
        per_domain = dice_per_domain([d for d, _ in pairs], [c for _, c in pairs])
        self.logger.log(DICE_PER_DOMAIN, per_domain, self.current_epoch)
        if len(per_domain) > 1:
            self.print_to_log_file("nnunet-transfer: pseudo Dice per domain " + ", ".join(
                f"{name} {value:.4f}" for name, value in per_domain.items()))

    def domain_chance_accuracy(self) -> Optional[float]:
        """Chance level of the domain accuracy: the most frequent domain's share of the training batches."""
        counts = getattr(self, "training_domain_counts", None)
        if not counts or len(counts) < 2:
            return None
        return chance_accuracy(counts, self.active_target_domain, self.target_share, int(self.batch_size))

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            plot_domain_progress(local_history(self.logger), join(self.output_folder, FIGURE),
                                 self.domain_chance_accuracy())

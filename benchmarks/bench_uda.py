"""Few or no target labels on the demo's synthetic data: source-only vs unsupervised, semi-supervised, supervised DANN.

Goals (issue 12), in mean target-domain (SSA) Dice over the target folds, per seed: the
unsupervised DANN (no SSA label reaches training) above the source-only model, and the
semi-supervised DANN (2 of the 6 SSA training cases of a fold labelled) between the
unsupervised and the supervised DANN (every SSA training case labelled). Fine-tuning the
source model on the same labelled cases is printed beside them, as the natural competitor, and
so is the unsupervised DANN's control (``nnUNetTrainerMixedDomainUnsupervised``: the same
balanced batches, SSA labels hidden, no domain loss), whose difference to the unsupervised DANN
is what the adversarial loss itself adds (the source-only model trains on other batches).
Runs the shipped ``demo_uda`` plan from scratch with the synthetic cases, the split and the
trainings seeded by each seed (as ``bench_demo.py`` does for the main demo); every number printed is from
this run, read from the comparison's ``comparison.json``.

    python benchmarks/bench_uda.py                             # seed 0, temporary work dir
    python benchmarks/bench_uda.py --seeds 0 1 2 --workdir /tmp/uda_bench --keep
    python benchmarks/bench_uda.py --seeds 0 1 2 3 --target-tumours GLI --workdir /tmp/uda_scanner --keep

``--target-tumours GLI`` draws the SSA cases' tumours from GLI's population: the target then
differs from the source by its scanner alone (the shift feature alignment addresses), not
also by its later-stage tumours (other label statistics, which aligning the features'
marginal distributions cannot correct and can make worse).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_demo import run_seeds  # noqa: E402  (the same seeded runs of a shipped demo plan)

ROWS = {"source": "baseline", "unsupervised": "dann_unsupervised", "control": "mixed_unsupervised",
        "semi": "dann_semi", "supervised": "dann", "finetune": "finetune_labelled"}
TRAINERS = ("nnUNetTrainerDANN", "nnUNetTrainerDANNSemiSupervised", "nnUNetTrainerDANNUnsupervised")


def labels_of_plan() -> dict:
    """Row key -> label of the shipped demo_uda plan (comparison.json is keyed by label)."""
    from nnunet_transfer.experiments.plan import load_plan

    plan = load_plan("demo_uda")
    return {key: plan.strategies[name].label for key, name in ROWS.items()}


def report(run: dict, labels: dict) -> bool:
    dice = {key: run["dice"][label] for key, label in labels.items()}
    print(f"\nseed {run['seed']}: wall time {run['seconds'] / 60:.1f} min")
    for key, label in labels.items():
        print(f"  {label:34s} {dice[key]:.3f}  ({dice[key] - dice['source']:+.3f} vs source only)")
    above = dice["unsupervised"] > dice["source"]
    between = dice["unsupervised"] < dice["semi"] < dice["supervised"]
    print(f"  unsupervised above source-only: {'met' if above else 'MISSED'}; semi-supervised between "
          f"unsupervised and supervised: {'met' if between else 'MISSED'}")
    print(f"  the adversarial loss alone (unsupervised DANN - its control, the same batches without domain loss): "
          f"{dice['unsupervised'] - dice['control']:+.3f}")
    for line in run["accuracy"]:
        print(line)
    return above and between


DIFFERENCES = (("unsupervised", "source"), ("unsupervised", "control"), ("semi", "unsupervised"),
               ("supervised", "semi"))


def summary(runs: list, labels: dict) -> list:
    """Lines with each row's mean and SD over the seeds run, and the paired differences the goals compare.

    >>> runs = [{"seed": 0, "dice": {"a": 0.5, "b": 0.4}}, {"seed": 1, "dice": {"a": 0.7, "b": 0.4}}]
    >>> lines = summary(runs, {"unsupervised": "a", "source": "b"})
    >>> lines[1]
    '  a                                  mean 0.600  SD 0.141'
    >>> lines[-1]
    '  unsupervised - source: mean +0.200, per seed +0.100 +0.300; SD 0.141, 95% CI [-1.071, +1.471] (t, 1 df)'
    """
    import numpy as np
    from scipy import stats

    def values(key: str) -> np.ndarray:
        return np.array([run["dice"][labels[key]] for run in runs])

    lines = [f"\nover {len(runs)} seed(s) ({', '.join(str(run['seed']) for run in runs)}), mean target "
             f"Dice (SD over seeds):"]
    for key, label in labels.items():
        v = values(key)
        spread = f"  SD {v.std(ddof=1):.3f}" if len(v) > 1 else ""
        lines.append(f"  {label:34s} mean {v.mean():.3f}{spread}")
    for a, b in DIFFERENCES:
        if a in labels and b in labels:
            d = values(a) - values(b)
            line = f"  {a} - {b}: mean {d.mean():+.3f}, per seed {' '.join(f'{x:+.3f}' for x in d)}"
            if len(d) > 1:  # seeds as independent replicates: how large a difference these seeds can resolve
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                line += (f"; SD {d.std(ddof=1):.3f}, 95% CI [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] "
                         f"(t, {len(d) - 1} df)")
            lines.append(line)
    return lines


def main() -> int:
    labels = labels_of_plan()
    runs = run_seeds(__doc__, "demo_uda", TRAINERS)
    met = [report(run, labels) for run in runs]
    for line in summary(runs, labels):
        print(line)
    print(f"\ngoals met in {sum(met)} of {len(met)} seed(s): unsupervised DANN above source-only, semi-supervised "
          f"between unsupervised and supervised")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the built-in demo from scratch, for one or several data seeds, and check its goals.

Goals (issue 14): in each of three seeds (``--seeds 0 1 2``) every transfer strategy beats
the source-only baseline in mean target-domain (SSA) Dice, fine-tuning by at least 0.05, and
the whole demo finishes within 10 minutes on a 2-core CPU machine. A seed changes the
synthetic cases of both domains, the target-domain split and the trainings (the plan's
``seed``, ``split_seed`` and ``nnUNetTransfer_seed``); everything else is the shipped ``demo``
plan, so a rerun of one seed repeats its table. Prints, per seed, the wall time
with its ratio to the budget and each strategy's mean Dice with its margin over the baseline,
all from this run; then the domain classifier's training accuracy of both DANN rows (issue 11:
high without gradient reversal, near chance with it).

    python benchmarks/bench_demo.py                            # seed 0, temporary work dir
    python benchmarks/bench_demo.py --seeds 0 1 2 --workdir /tmp/demo_bench --keep
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 10 * 60
FINE_TUNE_MARGIN = 0.05
FINE_TUNING = ("Fine-Tuning",)  # rows (labels) that must beat the baseline by FINE_TUNE_MARGIN

ACCURACY = re.compile(r"nnunet-transfer: seg_loss [-0-9.]+, domain_loss ([0-9.]+), domain_acc ([0-9.]+)")


def seeded_plan(seed: int, out: Path, plan: str = "demo", target_tumours: str | None = None) -> Path:
    """The shipped demo plan ``plan`` with the synthetic cases, the split and the trainings seeded by ``seed``.

    ``target_tumours`` (GLI or SSA) gives the target dataset that population's tumours (its
    ``tumours`` key: the target scanner without its own tumour statistics).
    """
    from nnunet_transfer.experiments.plan import shipped_plan

    text = Path(shipped_plan(plan)).read_text()
    if target_tumours:
        text, k = re.subn(r"(?m)^\[datasets\.target\]$", f'[datasets.target]\ntumours = "{target_tumours}"', text)
        if k != 1:
            raise RuntimeError(f"the {plan} plan changed shape: expected one [datasets.target] table, found {k}")
    text, n = re.subn(r"(?m)^seed = \d+$", f"seed = {seed}", text)
    text, m = re.subn(r"(?m)^split_seed = (\d+)$", lambda g: f"split_seed = {int(g.group(1)) + seed}", text)
    text, t = re.subn(r"(?m)^nnUNetTransfer_seed = \d+$", f"nnUNetTransfer_seed = {seed}", text)
    if (n, m, t) != (2, 1, 1):
        raise RuntimeError(f"the demo plan changed shape: expected 2 dataset seeds, 1 split_seed and 1 "
                           f"nnUNetTransfer_seed, found {n}, {m} and {t}")
    out.write_text(text)
    return out


def domain_accuracy(workdir: Path, trainers=("nnUNetTrainerDANNNoGRL", "nnUNetTrainerDANN")) -> list:
    """Lines with the domain classifier's training accuracy per epoch (per fold) of the DANN rows."""
    lines = []
    for trainer in trainers:
        for fold_dir in sorted(workdir.glob(f"**/{trainer}__*/fold_*")):
            epochs = [float(m.group(2)) for log in sorted(fold_dir.glob("training_log_*.txt"))
                      for m in ACCURACY.finditer(log.read_text())]
            if epochs:
                lines.append(f"  {trainer:24s} {fold_dir.name}: domain accuracy per epoch "
                             f"{' '.join(f'{a:.2f}' for a in epochs)} (last {epochs[-1]:.2f})")
    return lines


DANN_TRAINERS = ("nnUNetTrainerDANNNoGRL", "nnUNetTrainerDANN", "nnUNetTrainerDANNUnsupervised")


def run_seed(seed: int, workdir: Path, extra: list, plan_name: str = "demo", trainers=DANN_TRAINERS,
             target_tumours: str | None = None) -> dict:
    """Run the seeded demo plan ``plan_name`` in ``workdir``; its wall time, mean Dice per row, DANN accuracies."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan = seeded_plan(seed, workdir / f"{plan_name}_seed{seed}.toml", plan_name, target_tumours)
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nnunet_transfer.cli", "demo", "--plan", str(plan), "--workdir",
                    str(workdir), *extra], env=env, check=True)
    seconds = time.perf_counter() - start
    result = json.loads((workdir / "comparison" / "comparison.json").read_text())
    table, reference = result["table"], result["reference"]
    dice = {name: metrics["Dice"]["Average"]["mean"] for name, metrics in table.items()}
    return {"seed": seed, "seconds": seconds, "dice": dice, "reference": reference,
            "accuracy": domain_accuracy(workdir, trainers)}


def report(run: dict) -> bool:
    seconds, dice, reference = run["seconds"], run["dice"], run["reference"]
    base = dice[reference]
    print(f"\nseed {run['seed']}: demo wall time {seconds / 60:.1f} min = {seconds / BUDGET_S:.2f}x the "
          f"10-minute budget ({'met' if seconds <= BUDGET_S else 'MISSED'})")
    print(f"  {'strategy':32s} {'mean Dice':>9s} {'- baseline':>10s}")
    met = seconds <= BUDGET_S
    for name, value in dice.items():
        margin = value - base
        needed = FINE_TUNE_MARGIN if name in FINE_TUNING else 0.0
        ok = name == reference or margin > needed
        met &= ok
        print(f"  {name:32s} {value:9.3f} {margin:+10.3f}{'' if ok else '  below goal (> %+.2f)' % needed}")
    for line in run["accuracy"]:
        print(line)
    return met


def run_seeds(description: str, plan_name: str = "demo", trainers=DANN_TRAINERS) -> list:
    """Parse the shared options (``--workdir --seeds --keep --jobs --target-tumours``), run the seeded plan per seed."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder (one sub-folder per seed)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--keep", action="store_true", help="keep the work dirs")
    parser.add_argument("--jobs", type=int, default=None, help="passed to the demo (default: the demo's own)")
    parser.add_argument("--target-tumours", choices=["GLI", "SSA"], type=str.upper, default=None,
                        help="draw the target (SSA) cases' tumours from this population: GLI leaves the scanner "
                             "shift alone, without SSA's later-stage tumours (default: SSA's own)")
    args = parser.parse_args()
    parent = args.workdir or Path(tempfile.mkdtemp(prefix=f"bench_{plan_name}_"))
    extra = ["--quiet"] if args.jobs is None else ["--quiet", "--jobs", str(args.jobs)]
    if args.target_tumours:
        print(f"target cases with {args.target_tumours} tumours (datasets.target.tumours)")
    try:
        return [run_seed(seed, parent / f"seed{seed}", extra, plan_name, trainers, args.target_tumours)
                for seed in args.seeds]
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(parent, ignore_errors=True)


def main() -> int:
    met = [report(run) for run in run_seeds(__doc__)]
    print(f"\ngoals met in {sum(met)} of {len(met)} seed(s): every strategy above the baseline, fine-tuning "
          f"by > {FINE_TUNE_MARGIN}, under {BUDGET_S // 60} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

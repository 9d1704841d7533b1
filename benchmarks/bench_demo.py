"""Run the built-in demo from scratch and check its goals (issue 4).

Goals: the whole demo finishes within 15 minutes on a 2-core CPU machine, and on the
target-domain (SSA) folds every transfer strategy beats the source-only baseline in mean
Dice, as in the paper. Prints the wall time, its ratio to the 15-minute budget, and each
strategy's mean Dice with its ratio to the baseline's, all from this run.

    python benchmarks/bench_demo.py                   # fresh temporary work dir
    python benchmarks/bench_demo.py --workdir demo_work --keep
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

BUDGET_S = 15 * 60


ACCURACY = re.compile(r"nnunet-transfer: seg_loss [-0-9.]+, domain_loss ([0-9.]+), domain_acc ([0-9.]+)")


def print_domain_accuracy(workdir: Path) -> None:
    """The domain classifier's training accuracy (first and last epoch, per fold) of both DANN rows.

    Goal (issue 11): without reversal the classifier reaches high accuracy on the demo data;
    with reversal it is held near chance (balanced batches: chance is 0.5).
    """
    for trainer in ("nnUNetTrainerDANNNoGRL", "nnUNetTrainerDANN"):
        for fold_dir in sorted(workdir.glob(f"**/{trainer}__*/fold_*")):
            epochs = [float(m.group(2)) for log in sorted(fold_dir.glob("training_log_*.txt"))
                      for m in ACCURACY.finditer(log.read_text())]
            if epochs:
                print(f"{trainer:24s} {fold_dir.name}: domain accuracy per epoch "
                      f"{' '.join(f'{a:.2f}' for a in epochs)} (last {epochs[-1]:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nnunet_transfer.cli", "demo", "--workdir", str(workdir), "--quiet"],
                   env=env, check=True)
    seconds = time.perf_counter() - start
    result = json.loads((workdir / "comparison" / "comparison.json").read_text())
    table, reference = result["table"], result["reference"]
    base = table[reference]["Dice"]["Average"]["mean"]
    print(f"demo wall time {seconds / 60:.1f} min = {seconds / BUDGET_S:.2f}x the 15-minute budget "
          f"({'met' if seconds <= BUDGET_S else 'MISSED'})")
    print(f"{'strategy':32s} {'mean Dice':>9s} {'vs baseline':>11s}")
    beaten = []
    for name, metrics in table.items():
        dice = metrics["Dice"]["Average"]["mean"]
        print(f"{name:32s} {dice:9.3f} {dice / base if base else float('inf'):10.2f}x")
        if name != reference:
            beaten.append(dice > base)
    print(f"transfer strategies beating the baseline: {sum(beaten)}/{len(beaten)}")
    print_domain_accuracy(workdir)
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

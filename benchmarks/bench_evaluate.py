"""Benchmark: evaluation of one BraTS-sized case, nnunet-transfer vs MedPy, in one run.

    python benchmarks/bench_evaluate.py [--repeats 3] [--seed 0]

Builds a 240 x 240 x 155 label map (1 mm) with nested, irregular tumour structures (ED
shell around a tumour core with an enhancing rim and a necrotic centre) and a perturbed
prediction (shifted, boundary noise, a false-positive blob). Evaluates the three labels
(NCR, ED, ET) and three regions (WT, TC, ET) with MedPy's ``dc`` and ``hd95`` and with
``label_map_metrics``, checks that the values agree to 1e-6 and prints the speed ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

STRUCTURES = {"NCR": (1,), "ED": (2,), "ET": (3,), "WT": (1, 2, 3), "TC": (1, 3), "ET-region": (3,)}


def blob(shape, centre, radii, rng, roughness=0.25):
    """An ellipsoid with a smoothly perturbed radius."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6)
    noise /= np.abs(noise).max() + 1e-9
    return dist <= (1 + roughness * noise) ** 2


def synthetic_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (155, 240, 240)  # z, y, x
    centre = np.array([80, 110, 130])
    wt = blob(shape, centre, (28, 38, 34), rng)
    tc = blob(shape, centre + [2, -3, 4], (16, 22, 20), rng) & wt
    ncr = blob(shape, centre + [2, -3, 4], (9, 13, 12), rng) & tc
    ref = np.zeros(shape, np.uint8)
    ref[wt] = 2
    ref[tc] = 3
    ref[ncr] = 1
    pred = np.roll(ref, (1, -2, 1), axis=(0, 1, 2))
    edge = ndimage.binary_dilation(pred > 0) ^ ndimage.binary_erosion(pred > 0)
    flip = edge & (rng.random(shape) < 0.3)
    pred[flip] = np.where(pred[flip] > 0, 0, 2)
    pred[40:46, 170:178, 60:66] = 3  # a false-positive ET blob
    return ref, pred, (1.0, 1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from medpy.metric.binary import dc, hd95

    from nnunet_transfer.evaluation.metrics import label_map_metrics

    ref, pred, spacing = synthetic_case(args.seed)
    print("voxels per structure (ref / pred):",
          {k: (int(np.isin(ref, v).sum()), int(np.isin(pred, v).sum())) for k, v in STRUCTURES.items()})

    def medpy_all():
        out = {}
        for name, values in STRUCTURES.items():
            r, p = np.isin(ref, values), np.isin(pred, values)
            out[name] = (dc(p, r), hd95(p, r, voxelspacing=spacing))
        return out

    def ours_all():
        m = label_map_metrics(ref, pred, spacing, regions=True)
        return {name: (m[name]["Dice"], m[name]["HD95"]) for name in STRUCTURES}

    timings = {}
    results = {}
    for label, fn in (("medpy", medpy_all), ("nnunet_transfer", ours_all)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[label] = fn()
            best = min(best, time.perf_counter() - start)
        timings[label] = best
    for name in STRUCTURES:
        a, b = results["medpy"][name], results["nnunet_transfer"][name]
        assert abs(a[0] - b[0]) < 1e-6 and abs(a[1] - b[1]) < 1e-6, (name, a, b)
        print(f"{name:<10} Dice {b[0]:.6f}  HD95 {b[1]:.6f}  (MedPy: {a[0]:.6f}, {a[1]:.6f})")
    print(f"MedPy dc+hd95, 6 structures: {timings['medpy']:.3f} s (best of {args.repeats})")
    print(f"nnunet-transfer label_map_metrics: {timings['nnunet_transfer']:.3f} s (best of {args.repeats})")
    print(f"values identical to 1e-6; speed ratio: {timings['medpy'] / timings['nnunet_transfer']:.1f}x")


if __name__ == "__main__":
    main()

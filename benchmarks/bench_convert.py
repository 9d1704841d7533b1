"""Benchmark: ``convert_brats`` against a plain copy of the same files (the I/O floor).

Writes N synthetic BraTS 2023 cases the way real downloads come (int16 images with a
zero background, float64 label files, gzip), then times

- ``shutil.copyfile`` of every case file (the I/O floor of any conversion),
- that copy plus one decompression of every label file (the floor of a conversion that
  proves every label value; ``convert_brats`` must read the labels to check them), with
  the stdlib's zlib and with the engine ``convert_brats`` uses (ISA-L when ``isal`` is
  installed, a dependency of the package),
- ``convert_brats`` with 1 worker, and with each count of ``--workers`` (default 2),

each the best of ``--repeats`` runs, and prints the ratio conversion / copy and the
speed-up from more workers.

Example:
    python benchmarks/bench_convert.py --cases 8 --shape 155 240 240 --workers 2
    python benchmarks/bench_convert.py --cases 64 --workers 4 8 16      # scaling on a bigger machine

Worker pools start by spawning Python processes (about a second each, in parallel), so
speed-ups need several cases per worker to show.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_case(root: Path, index: int, shape) -> None:
    case = f"BraTS-GLI-{index:05d}-000"
    folder = root / case
    folder.mkdir(parents=True)
    rng = np.random.default_rng(index)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    c = np.array(shape) / 2
    r = ((z - c[0]) / (0.42 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2 + ((x - c[2]) / (0.33 * shape[2])) ** 2
    brain = r < 1
    smooth = (np.sin(z / 7.0) + np.cos(y / 9.0) + np.sin(x / 11.0)) * 100
    for k, modality in enumerate(("t1n", "t1c", "t2w", "t2f")):
        data = np.where(brain, 400 + 150 * k + smooth + rng.normal(0, 20, shape), 0).astype(np.int16)
        image = sitk.GetImageFromArray(data)
        image.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(image, str(folder / f"{case}-{modality}.nii.gz"), useCompression=True)
    t = ((z - c[0] - 5) / 20.0) ** 2 + ((y - c[1]) / 25.0) ** 2 + ((x - c[2] + 10) / 22.0) ** 2
    seg = np.zeros(shape, np.float64)
    seg[t < 1] = 2
    seg[t < 0.45] = 3
    seg[t < 0.2] = 1
    label = sitk.GetImageFromArray(seg)
    label.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(label, str(folder / f"{case}-seg.nii.gz"), useCompression=True)


def copy_all(source: Path, dest: Path) -> None:
    for folder in sorted(source.iterdir()):
        for path in sorted(folder.iterdir()):
            shutil.copyfile(path, dest / path.name)


def zlib_inflate(data: bytes) -> bytes:
    return zlib.decompress(data, zlib.MAX_WBITS | 16)


def copy_and_inflate_labels(source: Path, dest: Path, inflate) -> None:
    for folder in sorted(source.iterdir()):
        for path in sorted(folder.iterdir()):
            shutil.copyfile(path, dest / path.name)
            if path.name.endswith("-seg.nii.gz"):
                inflate(path.read_bytes())


def best_of(repeats: int, func, setup=None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()  # untimed
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=[155, 240, 240], help="z y x (default: BraTS size)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.workdir))
    try:
        os.environ["nnUNet_raw"] = str(work / "raw")
        from nnunet_transfer.dataset_conversion import _gzip, convert_brats

        source = work / "BraTS2023-GLI"
        start = time.perf_counter()
        for i in range(args.cases):
            write_case(source, i, tuple(args.shape))
        size = sum(p.stat().st_size for p in source.rglob("*.nii.gz")) / 2 ** 20
        print(f"{args.cases} cases of {'x'.join(map(str, args.shape))} voxels, {size:.1f} MiB gzip "
              f"(written in {time.perf_counter() - start:.1f} s)")

        def copy():
            dest = work / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            copy_all(source, dest)

        def copy_inflate(inflate):
            dest = work / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            copy_and_inflate_labels(source, dest, inflate)

        copy()  # warm the page cache for every contender alike
        t_copy = best_of(args.repeats, copy)
        t_floor_zlib = best_of(args.repeats, lambda: copy_inflate(zlib_inflate))
        t_floor = best_of(args.repeats, lambda: copy_inflate(_gzip.inflate))

        def fresh():  # a first conversion: no earlier dataset to replace (and delete) on publishing
            shutil.rmtree(work / "raw", ignore_errors=True)

        t_one = best_of(args.repeats, lambda: convert_brats(source, 901, "Bench"), fresh)
        t_many = {n: best_of(args.repeats, lambda: convert_brats(source, 901, "Bench", num_processes=n), fresh)
                  for n in args.workers}
        print(f"plain copy            : {t_copy:7.3f} s")
        print(f"copy + inflate labels : {t_floor_zlib:7.3f} s (zlib)   {t_floor:7.3f} s ({_gzip.ENGINE}, as convert)")
        print(f"convert, 1 worker     : {t_one:7.3f} s   ratio to copy {t_one / t_copy:5.2f}x (goal <= 1.3x), "
              f"to copy + inflate labels {t_one / t_floor:4.2f}x ({_gzip.ENGINE}), {t_one / t_floor_zlib:4.2f}x (zlib)")
        for n, t in t_many.items():
            print(f"convert, {n:2d} workers   : {t:7.3f} s   speed-up over 1 worker {t_one / t:4.2f}x "
                  f"(ideal {min(n, args.cases, os.cpu_count())}x; CPUs here: {os.cpu_count()})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

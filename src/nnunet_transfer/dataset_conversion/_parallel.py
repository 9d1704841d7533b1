"""Run a function over items in worker processes (or in-process for one worker), with a progress bar."""

from __future__ import annotations

import multiprocessing
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def imap(func: Callable[[T], R], items: Sequence[T], num_processes: int = 1, desc: str = "") -> Iterator[R]:
    """Yield ``func(item)`` for every item, in completion order, showing a tqdm bar.

    Workers are started with ``spawn`` (safe with SimpleITK's threads); the pool is
    terminated when the caller stops iterating early.
    """
    if num_processes < 1:
        raise ValueError(f"the number of processes must be at least 1, got {num_processes}")
    bar = tqdm(total=len(items), desc=desc, unit="case", disable=None, leave=False)
    try:
        if num_processes == 1 or len(items) < 2:
            for item in items:
                yield func(item)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(num_processes, len(items))) as pool:
            for result in pool.imap_unordered(func, items, chunksize=1):
                yield result
                bar.update()
    finally:
        bar.close()

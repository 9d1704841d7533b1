"""Run a function over items in worker processes (or in-process for one worker), with a progress bar."""

from __future__ import annotations

import multiprocessing
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def workers(num_processes: int, num_items: int):
    """A ``spawn`` pool of up to ``num_processes`` workers (None for one), terminated on exit.

    ``spawn`` keeps the workers clear of SimpleITK's threads in the parent.
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"the number of processes must be an integer of at least 1, got {num_processes!r}")
    if num_processes == 1 or num_items < 2:
        yield None
        return
    with multiprocessing.get_context("spawn").Pool(min(num_processes, num_items)) as pool:
        yield pool


def imap(func: Callable[[T], R], items: Sequence[T], pool: Optional[multiprocessing.pool.Pool] = None,
         desc: str = "") -> Iterator[R]:
    """Yield ``func(item)`` for every item, in completion order, showing a tqdm bar."""
    bar = tqdm(total=len(items), desc=desc, unit="case", disable=None, leave=False)
    try:
        results = map(func, items) if pool is None else pool.imap_unordered(func, items, chunksize=1)
        for result in results:
            yield result
            bar.update()
    finally:
        bar.close()

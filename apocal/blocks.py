"""Working through an image a block of rows at a time, on two threads.

numpy's array arithmetic and bottleneck's reductions release the GIL, so
two threads working on different blocks of rows use both cores of a
laptop; blocks small enough to stay in the processor's cache also make
every pass over them cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["WORKERS", "for_each_block", "map_in_threads"]

#: Threads used for blocks of rows.
WORKERS = min(2, os.cpu_count() or 1)


def for_each_block(n_rows: int, rows_per_block: int, work: Callable[[slice], None]) -> None:
    """Call ``work(rows)`` for consecutive slices of ``rows_per_block`` rows.

    The calls run on `WORKERS` threads; each must write only its own rows.
    An exception in any call is raised here.
    """
    blocks = [slice(start, min(start + rows_per_block, n_rows))
              for start in range(0, n_rows, max(1, rows_per_block))]
    map_in_threads(work, blocks)


def map_in_threads(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(item) for item in items]``, on `WORKERS` threads.

    An exception in any call is raised here.
    """
    items = list(items)
    if WORKERS > 1 and len(items) > 1:
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]

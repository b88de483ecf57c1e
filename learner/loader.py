"""Radar batches loaded ahead of the training step, so a GPU never waits for files.

With cached image keys a training step needs only the radar maps of its batch (one 128 KB .npy each). Read
one after another on the training thread, that is ~1-3k maps/s per core, below what one modern GPU trains
VGG-16 at (docs/deploy.md "GPU box"), so worker threads read the next `depth` batches while the current
one trains (numpy's file reads and array maths release the GIL), into pinned (page-locked) memory on CUDA
so the host-to-device copy is asynchronous. Batches come out in the order asked: the data order, and
therefore a run, is the same with or without prefetching.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np
import torch


class Prefetcher:
    """Iterate `load(item)` for each item of `items`, computed `depth` items ahead on `workers` threads.
    `load` returns a numpy array (or tensor); each result is a CPU tensor, pinned when `pin`."""

    def __init__(self, load: Callable, items: Iterable, *, depth: int = 4, workers: int = 2, pin: bool = False):
        self.load, self.items, self.pin = load, iter(items), pin
        self.depth = max(1, depth)
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="radar-prefetch")
        self.pending: deque = deque()
        self._fill()

    def _job(self, item) -> torch.Tensor:
        x = self.load(item)
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t.pin_memory() if self.pin else t

    def _fill(self) -> None:
        while len(self.pending) < self.depth:
            try:
                item = next(self.items)
            except StopIteration:
                return
            self.pending.append(self.pool.submit(self._job, item))

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if not self.pending:
            self.close()
            raise StopIteration
        out = self.pending.popleft().result()   # a reader's exception (missing file) surfaces here
        self._fill()
        return out

    def close(self) -> None:
        for f in self.pending:
            f.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def prefetch_workers(device: str) -> int:
    """Reader threads: one on a CPU run (the cores train), up to 8 where a GPU trains."""
    import os
    return min(8, os.cpu_count() or 1) if str(device).startswith("cuda") else 1

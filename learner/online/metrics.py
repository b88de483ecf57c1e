"""What the online learner reports while it runs: JSON lines, TensorBoard, the status line, and the
process's own memory (docs/online.md, Metrics and Memory)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("radvis.learn.online")


def status_fields(row: dict) -> dict:
    keys = ("step", "pairs_in", "pairs_in_per_s", "dropped", "duplicates_skipped", "buffer_fill", "steps_per_s",
            "updates_per_pair", "lag_s", "loss", "mi_bound", "masked_frac", "linear_acc", "rss_mb")
    return {k: row[k] for k in keys if k in row}


def tb_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; tolerate its absence rather than losing the run
        log.warning("tensorboard not importable; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim) after the big temporaries of a checkpoint or
    a probe. Without it RSS climbed ~10-20 MB at each of them in a 10-minute rig run after the buffer was
    full: memory that was free but never returned, which made a bounded learner look like it leaked."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass

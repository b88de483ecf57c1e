"""Checkpoint files, written so that a kill at any instant (power cut included) leaves either the previous
file or the new one, never a torn one: write a temp file in the same directory, fsync it, rename it over
the target (atomic on POSIX), fsync the directory so the rename itself is durable. Used by the offline and
the online learner for checkpoints, exports and split.json.

Checkpoints hold tensors and primitives only, so they load with `torch.load(weights_only=True)` (no
pickle of arbitrary objects from a file).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

TMP_MARK = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a temp file beside `path`, fsync, rename over `path`, fsync the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_save(obj, path: str | Path) -> None:
    """torch.save, atomically and durably."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_stale_temps(directory: str | Path) -> int:
    """Delete temp files a writer killed mid-write left in `directory`; returns how many."""
    n = 0
    for p in Path(directory).glob(f".*{TMP_MARK}*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def rng_state(np_rng: np.random.Generator | None = None) -> dict:
    """Every RNG a run draws from (python, torch CPU, CUDA when present, and a numpy Generator)."""
    st = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    if np_rng is not None:
        st["numpy"] = np_rng.bit_generator.state
    return st


def set_rng_state(st: dict, np_rng: np.random.Generator | None = None) -> None:
    random.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
    if np_rng is not None and "numpy" in st:
        np_rng.bit_generator.state = st["numpy"]

"""The `radar.ra_chirps` buffer: the range-azimuth maps of several chirps of one frame, in one home.

Layout: float32 (128, 128, 2C), the (re, im) channels of each chirp in turn, in the order of the chirp ids
that the radar frame's meta carries as `ra_chirps` (docs/wire-format.md). The dca1000 driver builds it
(`stack`), the online learner takes the chirps it trains on from it (`select`), `radvis export` writes each
chirp as its own CRUW file (`split`).
"""
from __future__ import annotations

import numpy as np

MAP_SHAPE = (128, 128, 2)


class ChirpStackError(ValueError):
    pass


def stack(maps) -> np.ndarray:
    """(128, 128, 2) maps, one per chirp in the order of the ids -> the (128, 128, 2C) float32 buffer."""
    return np.ascontiguousarray(np.concatenate(list(maps), axis=2), np.float32)


def check(buf, ids) -> list[int]:
    """The chirp ids of a well-formed buffer (float32 (128, 128, 2 * len(ids)), ids distinct ints >= 0);
    ChirpStackError saying what is wrong otherwise."""
    if not isinstance(ids, list) or not ids or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                       for c in ids) or len(set(ids)) != len(ids):
        raise ChirpStackError(f"ra_chirps must list distinct chirp ids >= 0, got {ids!r}")
    want = (*MAP_SHAPE[:2], 2 * len(ids))
    if not isinstance(buf, np.ndarray) or buf.dtype != np.float32 or buf.shape != want:
        got = f"{buf.dtype} {buf.shape}" if isinstance(buf, np.ndarray) else type(buf).__name__
        raise ChirpStackError(f"radar.ra_chirps must be float32 {want} for chirps {ids}, got {got}")
    return ids


def select(buf: np.ndarray, ids: list[int], chirps) -> np.ndarray:
    """(128, 128, 2 * len(chirps)) of the wanted `chirps`, in that order, from a checked buffer with `ids`;
    KeyError naming the missing chirps."""
    missing = [c for c in chirps if c not in ids]
    if missing:
        raise KeyError(missing)
    idx = [k for c in chirps for k in (2 * ids.index(c), 2 * ids.index(c) + 1)]
    return buf if idx == list(range(buf.shape[2])) else buf[..., idx]


def split(buf: np.ndarray, ids: list[int]) -> list[tuple[int, np.ndarray]]:
    """(chirp id, (128, 128, 2) map) of each chirp of a checked buffer."""
    return [(c, np.ascontiguousarray(buf[..., 2 * k:2 * k + 2])) for k, c in enumerate(ids)]

"""The `radar.ra_chirps` buffer: the range-azimuth maps of several chirps of one frame, in one home.

Layout: float32 (128, 128, 2C), the (re, im) channels of each chirp in turn, in the order of the chirp ids
that the radar frame's meta carries as `ra_chirps` (docs/wire-format.md). The dca1000 driver builds it
(`stack`), the online learner takes the chirps it trains on from it (`select`), `radvis export` writes each
chirp as its own CRUW file (`split`). The rules between the keys that send and read them (`online_chirps`,
`uart_error`, `learner_error`) live here too, so the radar, the rig and `radvis config check` share them.
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


# ---- which chirps a config sends and reads (the rules between radar.* and learner.* keys) ----------------

def online_chirps(lc) -> tuple[int, ...]:
    """The chirps the online learner reads from the radar's radar.ra_chirps: `learner.online_chirps`, else
    `learner.chirps`; () = the frame's one map (radar.ra). The config has checked them (distinct, >= 0)."""
    return tuple(int(c) for c in (lc.online_chirps or lc.chirps))


def uart_error(r, where: str = "") -> str | None:
    """Per-chirp maps need the raw ADC: radar.ra_chirps only in dca1000 mode. Checked by the radar driver at
    start and by `radvis config check`."""
    if r.mode == "uart" and r.ra_chirps:
        return (f"radar.ra_chirps{where} = {r.ra_chirps}: per-chirp maps need the raw ADC, which only radar.mode = "
                f"\"dca1000\" has; set radar.ra_chirps = [] in uart mode (and learner.online_chirps = [], as "
                f"configs/iwr1843-uart-realsense.toml does)")
    return None


def learner_error(cfg, stages) -> str | None:
    """A rig that runs both the radar and the learner must send every chirp the learner reads. Checked by
    `radvis rig` at start and by `radvis config check`."""
    reads = online_chirps(cfg.learner)
    missing = sorted(set(reads) - set(cfg.radar.ra_chirps))
    if "learner" not in stages or "radar" not in stages or not missing:
        return None
    key = "learner.online_chirps" if cfg.learner.online_chirps else "learner.chirps"
    return (f"{cfg.source}: {key} = {list(reads)} reads chirps {missing} that the radar does not send: expected "
            f"radar.ra_chirps to hold them (now {cfg.radar.ra_chirps})")

"""Several CRUW-layout roots as one frame set, so one run pretrains on many `radvis export`ed sessions and a
CRUW tree together: `radvis learn offline --data ROOT [ROOT ...]`.

Each root keeps its own frame rate (an exported rig session runs at the radar's 10 Hz, ROD2021 at 30 fps), so
timestamps stay right for the queue's same-sequence exclusion; sequences keep their per-sequence clutter and
background; cache keys name the root, so two roots with a sequence of the same name never share a cached key.
A single root is just a CRUWFrames (keys and caches exactly as before).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from learner.data import CRUWFrames, DataError


def _roots(data) -> list[Path]:
    items = [data] if isinstance(data, (str, Path)) else list(data)
    roots = [Path(d) for d in items]
    if not roots:
        raise DataError("no data root given (--data DIR [DIR ...])")
    seen = set()
    for r in roots:
        key = r.resolve()
        if key in seen:
            raise DataError(f"{r}: given twice in --data")
        seen.add(key)
    return roots


def open_frames(data, splits=("train",), chirp: int = 0, clutter_removal: bool = False):
    """A CRUWFrames for one root, a MultiRootFrames for several (same interface)."""
    roots = _roots(data)
    parts = [CRUWFrames(r, splits, chirp=chirp, clutter_removal=clutter_removal) for r in roots]
    return parts[0] if len(parts) == 1 else MultiRootFrames(parts)


def describe(data) -> list[str]:
    """Resolved roots as strings (what split.json records as the run's data)."""
    return [str(r.resolve()) for r in _roots(data)]


class MultiRootFrames:
    """The CRUWFrames interface over several roots: flat arrays `seq`, `frame`, `t_ns`, `label`, `sequences`,
    and per-frame readers that dispatch to the root holding the frame."""

    def __init__(self, parts: list[CRUWFrames]):
        self.parts = parts
        self.root = parts[0].root
        self.sequences = [s for p in parts for s in p.sequences]
        offs = np.cumsum([0] + [len(p.sequences) for p in parts])
        self.seq = np.concatenate([p.seq + offs[k] for k, p in enumerate(parts)])
        self.frame = np.concatenate([p.frame for p in parts])
        self.t_ns = np.concatenate([p.t_ns for p in parts])
        self.label = np.concatenate([p.label for p in parts])
        self.part = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(parts)])
        starts = np.cumsum([0] + [len(p) for p in parts])
        self.local = np.arange(len(self.frame)) - starts[self.part]
        self._seq_part = np.concatenate([np.full(len(p.sequences), k, np.int64) for k, p in enumerate(parts)])
        self._seq_off = offs
        self._tags = [str(p.root.resolve()) for p in parts]

    def __len__(self) -> int:
        return len(self.frame)

    def _at(self, i: int) -> tuple[CRUWFrames, int]:
        return self.parts[int(self.part[i])], int(self.local[i])

    def key(self, i: int) -> str:
        p, j = self._at(i)
        return f"{self._tags[int(self.part[i])]}::{p.key(j)}"

    def radar(self, i: int) -> np.ndarray:
        p, j = self._at(i)
        return p.radar(j)

    def radar_batch(self, idx) -> np.ndarray:
        return np.stack([self.radar(int(i)) for i in idx])

    def static_clutter(self, si: int) -> np.ndarray:
        k = int(self._seq_part[si])
        return self.parts[k].static_clutter(si - int(self._seq_off[k]))

    def image(self, i: int, min_side: int = 0) -> np.ndarray:
        p, j = self._at(i)
        return p.image(j, min_side)

    def images(self, idx, min_side: int = 0) -> np.ndarray:
        return _same_size([self.image(int(i), min_side) for i in idx])

    def background(self, si: int, min_side: int = 0, max_frames: int = 64) -> np.ndarray:
        k = int(self._seq_part[si])
        return self.parts[k].background(si - int(self._seq_off[k]), min_side, max_frames)

    def backgrounds(self, idx, min_side: int = 0) -> np.ndarray:
        return _same_size([self.background(int(self.seq[i]), min_side) for i in idx])


def _same_size(ims: list[np.ndarray]) -> np.ndarray:
    """Stack frames of several roots: cameras differ in size (ROD2021 1440x864, the rig's 128x96), so frames
    are resized (not cropped) to the smallest; the teacher resizes the whole frame to its square input anyway."""
    h, w = min(im.shape[0] for im in ims), min(im.shape[1] for im in ims)
    if all(im.shape[:2] == (h, w) for im in ims):
        return np.stack(ims)
    import cv2
    return np.stack([im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
                     for im in ims])

"""Frozen-teacher cache: the vision encoder never changes, so each frame's image key is computed once and
stored as a float16 memmap keyed by frame ("split/SEQ/frame_id"). Pretraining then never decodes a JPEG
or runs the vision network again (Radical does the same with precomputed CLIP features).

On disk (one folder per teacher):  keys.f16  (rows of `dim` float16, L2-normalised, uncentred)
                                    index.json  {"teacher", "dim", "frames": [key, ...]}  (row order)
A teacher that subtracts the static scene (`fg-descriptor`) gets each frame's sequence background (the
per-sequence median image) with it. Rows are appended, then the index is replaced atomically, so an interrupted build loses nothing it
finished and never leaves an index pointing at rows that are not on disk.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from radvis.log import progress as tqdm  # a bar on a terminal, plain lines in logs

from learner.teachers import takes_background


def cache_dir_for(base: str | Path, teacher) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", teacher.name)
    return Path(base) / f"{slug}-{teacher.dim}"


class KeyCache:
    def __init__(self, directory: str | Path, teacher_name: str, dim: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.teacher_name, self.dim = teacher_name, dim
        self.index_path, self.keys_path = self.dir / "index.json", self.dir / "keys.f16"
        self.frames: list[str] = []
        with self._locked():
            self._reload()

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive lock on the cache directory: two processes building keys for one data set (a teacher
        probe and a pretraining run) must not interleave rows, or a row would sit under another frame's name."""
        with open(self.dir / "lock", "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    def _reload(self) -> None:
        """Index from disk (another process may have appended); rows beyond it (an interrupted append)
        are dropped. Call with the lock held."""
        if self.index_path.exists():
            meta = json.loads(self.index_path.read_text())
            if meta.get("teacher") != self.teacher_name or int(meta.get("dim", -1)) != self.dim:
                raise ValueError(f"{self.index_path}: cache belongs to teacher {meta.get('teacher')!r} "
                                 f"(dim {meta.get('dim')}), not {self.teacher_name!r} (dim {self.dim}); use another cache dir")
            self.frames = list(meta["frames"])
        nbytes = len(self.frames) * self.dim * 2
        if self.keys_path.exists() and self.keys_path.stat().st_size != nbytes:
            with open(self.keys_path, "r+b") as f:
                f.truncate(nbytes)
        self.row = {k: i for i, k in enumerate(self.frames)}

    def missing(self, keys: list[str]) -> list[int]:
        return [i for i, k in enumerate(keys) if k not in self.row]

    def append(self, keys: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float16).reshape(len(keys), self.dim)
        with self._locked():
            self._reload()                       # rows another process appended since we last looked
            new = [i for i, k in enumerate(keys) if k not in self.row]
            if not new:
                return
            with open(self.keys_path, "ab") as f:
                f.write(vectors[new].tobytes())
                f.flush()
                os.fsync(f.fileno())
            for i in new:
                self.row[keys[i]] = len(self.frames)
                self.frames.append(keys[i])
            tmp = self.index_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"teacher": self.teacher_name, "dim": self.dim, "frames": self.frames}))
            os.replace(tmp, self.index_path)

    def memmap(self) -> np.ndarray:
        if not self.frames:
            return np.zeros((0, self.dim), np.float16)
        return np.memmap(self.keys_path, dtype=np.float16, mode="r", shape=(len(self.frames), self.dim))

    def lookup(self, keys: list[str]) -> np.ndarray:
        """(len(keys), dim) float16 for keys already cached (KeyError names the first absent one)."""
        rows = [self.row[k] for k in keys]
        return np.asarray(self.memmap()[rows])


def teacher_inputs(frames, idx, teacher) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded images of frames[idx] and, for a teacher that subtracts the static scene, each frame's
    sequence background (the per-sequence median image, `CRUWFrames.background`), cropped alike."""
    images = frames.images(idx, min_side=teacher.input_size)
    if not takes_background(teacher):
        return images, None
    bg = frames.backgrounds(idx, min_side=teacher.input_size)
    h, w = min(images.shape[1], bg.shape[1]), min(images.shape[2], bg.shape[2])
    return images[:, :h, :w], bg[:, :h, :w]


@torch.no_grad()
def embed_frames(frames, idx, teacher) -> torch.Tensor:
    """Uncentred keys of frames[idx] (the one place offline code runs a teacher on dataset frames)."""
    images, bg = teacher_inputs(frames, idx, teacher)
    return teacher.embed_uncentered(images, bg) if bg is not None else teacher.embed_uncentered(images)


@torch.no_grad()
def build_key_cache(frames, indices, teacher, directory: str | Path, batch: int = 32, progress: bool = True) -> np.ndarray:
    """Keys (float16, uncentred) for frames[indices], computing only those not cached yet."""
    cache = KeyCache(directory, teacher.name, teacher.dim)
    keys = [frames.key(int(i)) for i in indices]
    todo = cache.missing(keys)
    bar = tqdm(total=len(todo), desc=f"teacher cache ({teacher.name})", unit="img", disable=not progress or not todo)
    for s in range(0, len(todo), batch):
        chunk = [int(indices[j]) for j in todo[s:s + batch]]
        k = embed_frames(frames, chunk, teacher)
        cache.append([frames.key(i) for i in chunk], k.cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    return cache.lookup(keys)

"""Offline pairs mixed into the online learner's batches (`learner.online_offline_data`,
`online_offline_mix`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("radvis.learn.online")


class OfflineMix:
    """Frames of an offline CRUW-layout dataset mixed into each batch (e.g. to keep what offline
    pretraining learnt while adapting to the rig). Image keys come from the offline learner's frozen-teacher
    cache (computed once, float16 memmap), finished with this run's key centre."""

    def __init__(self, path: str, teacher, out: Path, lc):
        from learner import data as ldata
        from learner.cache import build_key_cache, cache_dir_for
        self.frames = ldata.CRUWFrames(path, chirp=ldata.learner_chirps(lc), clutter_removal=lc.clutter_removal)
        self.idx = ldata.split_frames(self.frames, lc.split, lc.test_fraction, lc.seed)["train"]
        self.keys = build_key_cache(self.frames, self.idx, teacher, cache_dir_for(out / "key_cache", teacher))
        self.teacher = teacher
        log.info("mixing %d offline frames from %s", len(self.idx), path)

    def sample(self, m: int, rng: np.random.Generator) -> dict:
        j = rng.integers(0, len(self.idx), size=m)
        fi = self.idx[j]
        keys = self.teacher.finish(torch.from_numpy(np.asarray(self.keys[j], np.float32))).cpu()
        # offline sequences get negative ids so they never collide with a live stream's sequence ids
        return {"radar": torch.from_numpy(self.frames.radar_batch(fi)), "keys": keys,
                "t_ns": torch.from_numpy(self.frames.t_ns[fi]), "seq": torch.from_numpy(-1 - self.frames.seq[fi])}

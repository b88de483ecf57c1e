"""Replay buffer for the online learner: a fixed-size store of (radar map, frozen image key, time,
sequence) that batches are sampled from, so training never sees only the last few seconds of a
temporally correlated stream (Purushwalkam et al., ECCV 2022: FIFO fails, MinRed/reservoir work).

Everything is preallocated at `capacity`, so memory is fixed from the first pair on. Eviction policies:
- `reservoir`: Vitter's algorithm R; every admitted pair has the same chance capacity/n of being in the
  buffer; the incoming pair itself is what gets discarded most of the time once the buffer is full.
- `redundancy`: MinRed-style; evict the entry whose nearest neighbour (cosine of the *frozen* image keys,
  so the measure never drifts as the radar encoder learns) is most similar; prefer entries already
  trained on; ties go to the oldest.
- `fifo`: evict the oldest (the naive baseline only).

Radar maps are stored as float16 scaled by their own max |value| (one float32 scale per entry), which
keeps 11-bit relative precision whatever the units of the map, at half the memory of float32.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

POLICIES = ("reservoir", "redundancy", "fifo")
_I64 = (-(2**63), 2**63 - 1)


class ReplayBuffer:
    def __init__(self, capacity: int, key_dim: int, radar_shape=(2, 128, 128), *, policy: str = "reservoir",
                 sim_dim: int = 256, seed: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r} (expected one of {', '.join(POLICIES)})")
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.key_dim, self.policy = capacity, key_dim, policy
        self.radar_shape = tuple(radar_shape)
        self.radar = np.zeros((capacity, *self.radar_shape), np.float16)
        self.scale = np.zeros(capacity, np.float32)
        self.keys = np.zeros((capacity, key_dim), np.float16)
        self.t_ns = np.zeros(capacity, np.int64)
        self.seq = np.zeros(capacity, np.int64)
        self.label = np.full(capacity, -1, np.int64)
        self.seen = np.zeros(capacity, np.int32)  # times sampled into a batch
        self.order = np.zeros(capacity, np.int64)  # admission number: age for FIFO and tie-breaks
        self.size = 0
        self.offered = 0  # pairs offered to add() (reservoir's n)
        self.counts: Counter = Counter()  # "evicted", "discarded" (reservoir rejected the incoming pair)
        self.rng = np.random.default_rng(seed)
        # Redundancy bookkeeping on a fixed random projection of the keys (Johnson-Lindenstrauss keeps
        # cosines to ~1/sqrt(sim_dim)); nearest-neighbour similarity kept incrementally, O(N*sim_dim) per add.
        d = min(sim_dim, key_dim)
        self.proj = None
        if key_dim > sim_dim:
            g = np.random.default_rng(12345)  # fixed: the projection is part of the buffer's meaning
            self.proj = (g.standard_normal((key_dim, d)) / np.sqrt(d)).astype(np.float32)
        self.sim_keys = np.zeros((capacity, d), np.float32) if policy == "redundancy" else None
        self.nn_sim = np.full(capacity, -np.inf, np.float32)
        self.nn_idx = np.full(capacity, -1, np.int64)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        arrays = [self.radar, self.scale, self.keys, self.t_ns, self.seq, self.label, self.seen, self.order,
                  self.nn_sim, self.nn_idx] + [a for a in (self.sim_keys, self.proj) if a is not None]
        return sum(a.nbytes for a in arrays)

    # ------------------------------------------------------------------ insertion and eviction

    def _sim_key(self, key: np.ndarray) -> np.ndarray:
        k = key.astype(np.float32)
        if self.proj is not None:
            k = k @ self.proj
        return k / max(float(np.linalg.norm(k)), 1e-12)

    def add(self, radar: np.ndarray, key: np.ndarray, t_ns: int, seq_id: int, label: int = -1) -> int:
        """Offer one pair. Returns the slot it went into, or -1 if the policy discarded it (counted).
        ValueError, before anything changes, for a pair the buffer cannot hold exactly (wrong shape, a
        time or sequence id outside int64): a bad pair never leaves a half-written slot behind."""
        self._check(radar, key, t_ns, seq_id, label)
        self.offered += 1
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
            sk = self._sim_key(key) if self.sim_keys is not None else None
        elif self.policy == "fifo":
            slot = int(np.argmin(self.order))
            self.counts["evicted"] += 1
            sk = None
        elif self.policy == "reservoir":
            j = int(self.rng.integers(0, self.offered))
            if j >= self.capacity:
                self.counts["discarded"] += 1
                return -1
            slot = j
            self.counts["evicted"] += 1
            sk = None
        else:
            sk = self._sim_key(key)
            slot = self._most_redundant(sk)
            self.counts["evicted"] += 1
        self._write(slot, radar, key, t_ns, seq_id, label)
        if self.sim_keys is not None:
            self._update_neighbours(slot, sk)
        return slot

    def _most_redundant(self, sk: np.ndarray) -> int:
        """Slot to evict for a new item with projected key `sk`: highest nearest-neighbour cosine, with the
        new item counted as a neighbour; only entries trained on at least once if there are any."""
        s = self.sim_keys[: self.size] @ sk
        score = np.maximum(self.nn_sim[: self.size], s)
        seen = self.seen[: self.size] > 0
        if seen.any():
            score = np.where(seen, score, -np.inf)
        best = score.max()
        tied = np.flatnonzero(score >= best - 1e-6)
        return int(tied[np.argmin(self.order[tied])])

    def _check(self, radar, key, t_ns, seq_id, label) -> None:
        if np.shape(radar) != self.radar_shape:
            raise ValueError(f"radar shape {np.shape(radar)} != buffer's {self.radar_shape}")
        if np.shape(key) != (self.key_dim,):
            raise ValueError(f"key shape {np.shape(key)} != ({self.key_dim},)")
        for name, v in (("t_ns", t_ns), ("seq_id", seq_id), ("label", label)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not _I64[0] <= int(v) <= _I64[1]:
                raise ValueError(f"{name} must be an int64 integer, got {v!r:.40}")

    def _write(self, slot, radar, key, t_ns, seq_id, label) -> None:
        r = np.asarray(radar, np.float32)
        m = float(np.abs(r).max()) if r.size else 0.0
        m = m if np.isfinite(m) and m > 0 else 1.0
        self.radar[slot] = r / m
        self.scale[slot] = m
        self.keys[slot] = key
        self.t_ns[slot], self.seq[slot], self.label[slot] = t_ns, seq_id, label
        self.seen[slot] = 0
        self.order[slot] = self.offered

    def _update_neighbours(self, slot: int, sk: np.ndarray) -> None:
        n = self.size
        self.sim_keys[slot] = sk
        s = self.sim_keys[:n] @ sk
        s[slot] = -np.inf
        # entries whose nearest neighbour was the evicted one must look again (usually few)
        stale = np.flatnonzero(self.nn_idx[:n] == slot)
        stale = stale[stale != slot]
        if len(stale):
            S = self.sim_keys[stale] @ self.sim_keys[:n].T
            S[np.arange(len(stale)), stale] = -np.inf
            self.nn_idx[stale] = S.argmax(1)
            self.nn_sim[stale] = S.max(1)
        better = s > self.nn_sim[:n]
        self.nn_sim[:n][better] = s[better]
        self.nn_idx[:n][better] = slot
        if n > 1:
            self.nn_idx[slot] = int(s.argmax())
            self.nn_sim[slot] = s[self.nn_idx[slot]]
        else:
            self.nn_idx[slot], self.nn_sim[slot] = -1, -np.inf

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, min_sep_ns: int, gen: np.random.Generator) -> np.ndarray:
        """Up to batch_size slots drawn uniformly without replacement, skipping any slot within
        min_sep_ns of an already chosen slot of the same sequence (near-identical frames in one batch
        are each other's false negatives and waste the batch). May return fewer when the buffer spans
        too little time; never more."""
        chosen: list[int] = []
        ct = np.empty(batch_size, np.int64)
        cs = np.empty(batch_size, np.int64)
        for i in gen.permutation(self.size):
            k = len(chosen)
            if min_sep_ns > 0 and k:
                near = (cs[:k] == self.seq[i]) & (np.abs(ct[:k] - self.t_ns[i]) < min_sep_ns)
                if near.any():
                    continue
            chosen.append(int(i))
            ct[k], cs[k] = self.t_ns[i], self.seq[i]
            if len(chosen) == batch_size:
                break
        idx = np.array(chosen, np.int64)
        self.seen[idx] += 1
        return idx

    def batch(self, idx: np.ndarray) -> dict:
        """Tensors for a training step: radar float32 (B, 2, 128, 128), keys float32 (B, D), t_ns, seq."""
        # one float32 pass (astype, then a scaled copy, was two: a 4-chirp batch is 33 MB)
        radar = torch.from_numpy(np.multiply(self.radar[idx], self.scale[idx, None, None, None], dtype=np.float32))
        return {"radar": radar, "keys": torch.from_numpy(self.keys[idx].astype(np.float32)),
                "t_ns": torch.from_numpy(self.t_ns[idx]), "seq": torch.from_numpy(self.seq[idx]),
                "label": torch.from_numpy(self.label[idx])}

    # ------------------------------------------------------------------ diagnostics

    def stats(self) -> dict:
        n = self.size
        out = {"fill": n, "capacity": self.capacity, "fill_frac": n / self.capacity, "offered": self.offered,
               "evicted": self.counts["evicted"], "discarded": self.counts["discarded"]}
        if n:
            out["seen_mean"] = float(self.seen[:n].mean())
            out["span_s"] = float(self.t_ns[:n].max() - self.t_ns[:n].min()) / 1e9
            if self.sim_keys is not None and n > 1:
                out["nn_sim_mean"] = float(self.nn_sim[:n].mean())
        return out

    # ------------------------------------------------------------------ checkpointing (tensors only)

    def state_dict(self) -> dict:
        n = self.size
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:n]).copy())  # noqa: E731
        sd = {"capacity": self.capacity, "key_dim": self.key_dim, "policy": self.policy, "size": n,
              "offered": self.offered, "counts": dict(self.counts),
              "rng": self.rng.bit_generator.state,
              "radar": t(self.radar), "scale": t(self.scale), "keys": t(self.keys), "t_ns": t(self.t_ns),
              "seq": t(self.seq), "label": t(self.label), "seen": t(self.seen), "order": t(self.order),
              "nn_sim": t(self.nn_sim), "nn_idx": t(self.nn_idx)}
        if self.sim_keys is not None:
            sd["sim_keys"] = t(self.sim_keys)
        return sd

    def load_state_dict(self, sd: dict) -> None:
        n = int(sd["size"])
        if sd["key_dim"] != self.key_dim:
            raise ValueError(f"checkpoint buffer has key_dim {sd['key_dim']}, this run {self.key_dim}")
        if n > self.capacity:  # a smaller buffer than the run that saved it: keep the newest entries
            keep = np.argsort(sd["order"].numpy())[-self.capacity:]
        else:
            keep = np.arange(n)
        m = len(keep)
        for name in ("radar", "scale", "keys", "t_ns", "seq", "label", "seen", "order"):
            getattr(self, name)[:m] = sd[name].numpy()[keep]
        self.size, self.offered = m, int(sd["offered"])
        self.counts = Counter(sd.get("counts", {}))
        self.rng.bit_generator.state = sd["rng"]
        if self.sim_keys is not None:
            if "sim_keys" in sd and m == n and sd["policy"] == self.policy:
                self.sim_keys[:m] = sd["sim_keys"].numpy()
                self.nn_sim[:m], self.nn_idx[:m] = sd["nn_sim"].numpy(), sd["nn_idx"].numpy()
            else:  # policy changed or buffer shrank: rebuild the neighbour table from the keys
                self.sim_keys[:m] = np.stack([self._sim_key(k) for k in self.keys[:m]]) if m else 0
                self._rebuild_neighbours()

    def _rebuild_neighbours(self) -> None:
        n = self.size
        if n < 2:
            self.nn_sim[:n], self.nn_idx[:n] = -np.inf, -1
            return
        S = self.sim_keys[:n] @ self.sim_keys[:n].T
        np.fill_diagonal(S, -np.inf)
        self.nn_idx[:n], self.nn_sim[:n] = S.argmax(1), S.max(1)

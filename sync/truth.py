"""Pairing error against the truth: how far apart a published pair's two frames were really captured.

Emulated devices publish a `truth` message per frame on `endpoints.truth` (contract in docs/sync.md):
meta {"stream": "radar"|"camera", "frame_number": int, "t_capture_ns": int, ...}, `source` = the capture
stream's source id. `TruthJoin` joins them to published pairs by (source, frame_number), whichever comes
first; both maps are bounded. For each pair whose two truths are known it records

- the true offset  = radar t_capture - camera t_capture (what the pair really spans), and
- the skew error   = the sync's own estimate (t_camera - t_radar, from the clock models) + true offset
                     (0 when the clock models are right),

and reports their p50/p99/max next to the sync's skew estimate. With real devices no truth arrives and the
stats say so ("truth": "none"); nothing else changes. The pairs themselves never depend on the truth.
"""
from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

from radvis.wire import Message


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class TruthJoin:
    def __init__(self, max_truth: int = 20000, max_pending: int = 2000, keep: int = 20000):
        self.truth: OrderedDict[tuple[str, int], int] = OrderedDict()  # (source, frame_number) -> t_capture_ns
        self.pending: OrderedDict[tuple, tuple] = OrderedDict()  # (radar key, camera key) -> (est skew, order)
        self.max_truth, self.max_pending = max_truth, max_pending
        self.offsets = deque(maxlen=keep)  # ms, radar - camera true capture offset, in publication order
        self.skew_err = deque(maxlen=keep)  # ms, estimated skew + true offset
        self.counts = {"truth_in": 0, "truth_bad": 0, "pairs_joined": 0, "pairs_without_truth": 0}

    @staticmethod
    def key_of(header: dict) -> tuple[str, int] | None:
        """(source, frame_number) of a radar/camera message header (as carried in a pair's meta)."""
        fn = _int((header.get("meta") or {}).get("frame_number"))
        src = header.get("source")
        return (src, fn) if isinstance(src, str) and fn is not None else None

    def add_truth(self, msg: Message) -> None:
        m = msg.meta if isinstance(msg.meta, dict) else {}
        fn, t = _int(m.get("frame_number")), _int(m.get("t_capture_ns"))
        if m.get("stream") not in ("radar", "camera") or fn is None or t is None or not isinstance(msg.source, str):
            self.counts["truth_bad"] += 1
            return
        self.counts["truth_in"] += 1
        key = (msg.source, fn)
        self.truth[key] = t
        self.truth.move_to_end(key)
        while len(self.truth) > self.max_truth:
            self.truth.popitem(last=False)
        for pk in [pk for pk in self.pending if key in pk]:
            self._try(pk, *self.pending[pk])

    def add_pair(self, radar_key, camera_key, est_skew_ns: int) -> None:
        """A published pair: its frames' keys (`key_of`) and the sync's skew estimate (t_camera - t_radar)."""
        if radar_key is None or camera_key is None:
            self.counts["pairs_without_truth"] += 1
            return
        pk = (radar_key, camera_key)
        if not self._try(pk, est_skew_ns):
            self.pending[pk] = (est_skew_ns,)
            while len(self.pending) > self.max_pending:
                self.pending.popitem(last=False)
                self.counts["pairs_without_truth"] += 1

    def _try(self, pk, est_skew_ns) -> bool:
        tr, tc = self.truth.get(pk[0]), self.truth.get(pk[1])
        if tr is None or tc is None:
            return False
        self.pending.pop(pk, None)
        off = tr - tc
        self.offsets.append(off / 1e6)
        self.skew_err.append((est_skew_ns + off) / 1e6)
        self.counts["pairs_joined"] += 1
        return True

    def stats(self) -> dict:
        """{"truth": "none"} without truth; else the true offset |radar - camera| and the skew error, ms."""
        if not self.counts["truth_in"]:
            return {"truth": "none", **({"truth_bad": self.counts["truth_bad"]} if self.counts["truth_bad"] else {})}
        out = dict(self.counts, pending=len(self.pending))
        if self.offsets:
            off = np.abs(np.fromiter(self.offsets, float))
            err = np.abs(np.fromiter(self.skew_err, float))
            out["true_offset_ms"] = {"p50": round(float(np.percentile(off, 50)), 3),
                                     "p99": round(float(np.percentile(off, 99)), 3), "max": round(float(off.max()), 3)}
            out["skew_error_ms"] = {"p50": round(float(np.percentile(err, 50)), 3),
                                    "p99": round(float(np.percentile(err, 99)), 3), "max": round(float(err.max()), 3)}
        return out

"""Pairing error against the truth: how far apart a published pair's two frames were really captured.

Emulated devices publish a `truth` message per frame on `endpoints.truth` (contract in docs/sync.md):
meta {"stream": "radar"|"camera", "frame_number": int, "t_capture_ns": int, ...}, `source` = the capture
stream's source id. `PairingError` joins them to published pairs by (source, frame_number), whichever comes
first; both maps are bounded, and a truth is taken for a frame only if the frame arrived after it and within
10 s (a restarted device numbers its frames from the start again). For each pair whose two truths are known
it records

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


class PairingError:
    def __init__(self, max_truth: int = 20000, max_pending: int = 2000, keep: int = 20000, max_lag_s: float = 10.0):
        self.max_lag_ns = int(max_lag_s * 1e9)
        self.truth: OrderedDict[tuple[str, int], int] = OrderedDict()  # (source, frame_number) -> t_capture_ns
        self.pending: OrderedDict[tuple, tuple] = OrderedDict()  # (radar key, camera key) -> (est skew, order)
        self.max_truth, self.max_pending = max_truth, max_pending
        self.offsets = deque(maxlen=keep)  # ms, radar - camera true capture offset, in publication order
        self.skew_err = deque(maxlen=keep)  # ms, estimated skew + true offset
        self.counts = {"truth_in": 0, "truth_bad": 0, "pairs_joined": 0, "pairs_without_truth": 0}

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

    def add_pair(self, radar_key, camera_key, est_skew_ns: int, arrivals: tuple[int, int] = (None, None)) -> None:
        """A published pair: its frames' keys (source, frame_number), the sync's skew estimate (t_camera -
        t_radar) and the frames' host arrival stamps (t.mono_ns; None: not checked)."""
        if radar_key is None or camera_key is None or radar_key[1] is None or camera_key[1] is None:
            self.counts["pairs_without_truth"] += 1
            return
        pk = (radar_key, camera_key)
        if not self._try(pk, est_skew_ns, arrivals):
            self.pending[pk] = (est_skew_ns, arrivals)
            while len(self.pending) > self.max_pending:
                self.pending.popitem(last=False)
                self.counts["pairs_without_truth"] += 1

    def _try(self, pk, est_skew_ns, arrivals) -> bool:
        tr, tc = self.truth.get(pk[0]), self.truth.get(pk[1])
        if tr is None or tc is None:
            return False
        for t, a in zip((tr, tc), arrivals):
            if a is not None and not 0 <= a - t <= self.max_lag_ns:
                return False  # that truth belongs to an earlier run of the device (same frame number)
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

"""Scene ground truth on its own topic (emulated devices only; real devices have none).

An emulated device publishes one `truth` message per frame it captures (kind and topic "truth", no buffers):

    source  the capture stream's source id (radar.source "radar0", camera.source "camera0")
    meta    {"stream": "radar" | "camera",
             "frame_number": int,   # exactly the number the driver puts in that frame's meta["frame_number"]
             "t_capture_ns": int,   # host CLOCK_MONOTONIC ns at which the scene was sampled for this frame
             "label": str, "scene_id": int, "objects": [...], ...}   # the scene's truth (sim/scene.py)

It travels apart from the frames because a driver must not know whether its device is emulated. Consumers
join it to frames by (source, frame_number) with `TruthJoin`, which works whether the truth arrives before or
after the frame, keeps a bounded map, and rejects an entry whose capture time does not fit the frame (frame
numbers start again when a device or a capture stage restarts).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from radvis.wire import Message

STREAMS = ("radar", "camera")


def plain(v):
    """JSON-safe copy (numpy scalars and tuples from the simulator become Python numbers and lists)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def truth_message(stream: str, source: str, frame_number: int, t_capture_ns: int, truth: dict) -> Message:
    if stream not in STREAMS:
        raise ValueError(f"truth stream must be one of {STREAMS}, got {stream!r}")
    meta = {k: v for k, v in plain(truth or {}).items() if k not in ("stream", "frame_number", "t_capture_ns")}
    meta.update(stream=stream, frame_number=int(frame_number), t_capture_ns=int(t_capture_ns))
    return Message(kind="truth", source=source, meta=meta)


class TruthJoin:
    """(source, frame_number) -> truth meta, the newest `capacity` entries.

    `get(source, frame_number, t_arrival_ns)` returns the entry only if the frame arrived after the scene was
    sampled and within `max_lag_s` of it: a stale entry of an earlier run with the same frame number (a
    restarted device numbers from 1 again) is not taken for the new frame's truth."""

    def __init__(self, capacity: int = 4096, max_lag_s: float = 10.0):
        self.capacity, self.max_lag_ns = capacity, int(max_lag_s * 1e9)
        self.map: OrderedDict = OrderedDict()
        self.seen: set = set()          # sources that ever sent truth (an emulated rig's streams)
        self.added = self.malformed = 0

    def add(self, msg: Message) -> bool:
        """Store a truth message; False (counted) when it is not a usable truth message."""
        m = msg.meta if isinstance(msg.meta, dict) else {}
        fn, t = m.get("frame_number"), m.get("t_capture_ns")
        if msg.kind != "truth" or not _is_int(fn) or not _is_int(t):
            self.malformed += 1
            return False
        key = (msg.source, fn)
        self.seen.add(msg.source)
        self.map[key] = m
        self.map.move_to_end(key)
        while len(self.map) > self.capacity:
            self.map.popitem(last=False)
        self.added += 1
        return True

    def get(self, source: str, frame_number, t_arrival_ns: int | None = None) -> dict | None:
        if not _is_int(frame_number):
            return None
        m = self.map.get((source, frame_number))
        if m is None or t_arrival_ns is None:
            return m
        lag = int(t_arrival_ns) - int(m["t_capture_ns"])
        return m if 0 <= lag <= self.max_lag_ns else None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

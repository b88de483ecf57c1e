"""What every camera driver yields, and the reconnect backoff they share.

Stamps (capture_sync.md §0): `t_mono_ns` is host CLOCK_MONOTONIC at arrival (the canonical clock),
`t_wall_ns` the wall clock at the same instant (labels only), `t_device_ns` the camera's own clock
(RealSense SENSOR_TIMESTAMP, mid-exposure) when the camera has one, else None. Everything else the
device reports (timestamp domain, metadata, counters) goes in `meta` so it is recorded raw.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


class CameraError(RuntimeError):
    """The camera cannot be opened (missing device, bad URL/file) — the message says which and why."""


class CameraDisconnected(CameraError):
    """The camera stopped delivering frames and did not come back within the reconnect window."""


@dataclass
class CameraFrame:
    image: np.ndarray                 # uint8 (H, W, 3) RGB
    frame_number: int
    t_device_ns: int | None
    t_mono_ns: int
    t_wall_ns: int
    meta: dict = field(default_factory=dict)
    depth: np.ndarray | None = None   # uint16 (H, W) depth aligned to colour, RealSense with camera.depth


class CameraSource:
    """Iterable of CameraFrame; `close()` releases the device (also on `with` exit). Subclasses implement
    `_frames()`."""

    def __iter__(self):
        return self._frames()

    def _frames(self):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Backoff:
    """Doubling delay between reopen attempts (first `base_s`, capped at `max_s`); `wait()` returns False
    once `give_up_s` (0 = never) has passed since the first failure, or when `stop` is set."""

    def __init__(self, base_s: float, max_s: float, give_up_s: float = 0.0, stop: threading.Event | None = None):
        self.base_s, self.max_s, self.give_up_s = base_s, max(max_s, base_s), give_up_s
        self.stop = stop or threading.Event()
        self.delay = base_s
        self.t_first: float | None = None

    def wait(self, now: float) -> bool:
        if self.t_first is None:
            self.t_first = now
        if self.give_up_s and now - self.t_first >= self.give_up_s:
            return False
        if self.stop.wait(self.delay):
            return False
        self.delay = min(self.max_s, self.delay * 2 if self.delay > 0 else 0.01)
        return True

    def reset(self) -> None:
        self.delay, self.t_first = self.base_s, None

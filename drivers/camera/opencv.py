"""Any OpenCV camera: a device index ("0"), a video file, or an RTSP/HTTP URL, read with cv2.VideoCapture.

OpenCV cameras have no trustworthy device clock, so frames are stamped at host arrival (after `grab()`
returns) minus the configured `latency_ms`; the raw arrival and CAP_PROP_POS_MSEC (the V4L2 buffer
timestamp for devices, the media time for files; capture_sync.md §2.1) are kept in meta. A live source that
stops delivering is released and reopened with a doubling backoff (until `reconnect_s`); a file ends
the iteration at its end (or loops with `loop=True`), paced at its own frame rate when `realtime`.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import cv2
import numpy as np

from drivers.camera.base import Backoff, CameraDisconnected, CameraError, CameraFrame, CameraSource

log = logging.getLogger("radvis.camera.opencv")


def _target(device: str):
    d = device.strip()
    if d.lstrip("-").isdigit():
        return int(d), "device"
    if "://" in d:
        return d, "url"
    return d, "file"


class OpenCVCamera(CameraSource):
    def __init__(self, device: str = "0", *, width: int = 0, height: int = 0, fps: int = 0, latency_ms: float = 0.0,
                 realtime: bool = False, loop: bool = False, reconnect_backoff_s: float = 0.5,
                 reconnect_max_s: float = 10.0, reconnect_s: float = 30.0, max_failures: int = 5):
        self.device = str(device)
        self.target, self.kind = _target(self.device)
        self.width, self.height, self.fps = width, height, fps
        self.latency_ns = int(latency_ms * 1e6)
        self.realtime, self.loop = realtime, loop
        self.backoff = (reconnect_backoff_s, reconnect_max_s, reconnect_s)
        self.max_failures = max_failures
        self.stop = threading.Event()
        self.cap = None
        self.stats = {"frames": 0, "read_failures": 0, "reconnects": 0, "last_error": ""}
        self._open()

    def _open(self) -> None:
        if self.kind == "file" and not os.path.isfile(self.target):
            raise CameraError(f"OpenCV camera: no such video file {self.target!r}")
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            what = {"device": f"camera device index {self.target} (no /dev/video{self.target}?)",
                    "url": f"stream URL {self.target!r}", "file": f"video file {self.target!r} (unsupported codec?)"}
            raise CameraError(f"OpenCV camera: cannot open {what[self.kind]}")
        if self.kind == "device":   # ask; the driver may pick the nearest mode it supports
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self.cap = cap
        self.src_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._t_start = time.monotonic()
        self._n = 0

    def _release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def close(self) -> None:
        self.stop.set()
        self._release()

    def _reconnect(self, why: str) -> bool:
        self.stats["last_error"] = why
        log.warning("OpenCV camera %s: %s; reconnecting", self.device, why)
        self._release()
        bo = Backoff(*self.backoff, stop=self.stop)
        while bo.wait(time.monotonic()):
            try:
                self._open()
                self.stats["reconnects"] += 1
                return True
            except CameraError as e:
                self.stats["last_error"] = str(e)
        if self.stop.is_set():
            return False
        raise CameraDisconnected(f"OpenCV camera {self.device}: {why}; not back after {self.backoff[2]} s "
                                 f"({self.stats['last_error']})")

    def _frames(self):
        failures = 0
        frame_number = 0
        while not self.stop.is_set():
            if self.cap is None and not self._reconnect("not open"):
                return
            if self.realtime and self.kind == "file" and self.src_fps > 0:
                due = self._t_start + self._n / self.src_fps
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
            ok = self.cap.grab()
            t_mono, t_wall = time.monotonic_ns(), time.time_ns()
            ok = ok and self._retrieve()
            if not ok:
                if self.kind == "file":
                    if self.loop and self.stats["frames"]:
                        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        self._t_start, self._n = time.monotonic(), 0
                        continue
                    return   # end of file
                failures += 1
                self.stats["read_failures"] += 1
                if failures >= self.max_failures:
                    failures = 0
                    if not self._reconnect(f"{self.max_failures} failed reads"):
                        return
                continue
            failures = 0
            self._n += 1
            self.stats["frames"] += 1
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            meta = {"driver": "opencv", "device": self.device, "kind": self.kind, "pos_msec": pos,
                    "arrival_mono_ns": t_mono, "latency_ms": self.latency_ns / 1e6,
                    "timestamp_domain": "host_arrival", "reconnects": self.stats["reconnects"]}
            if self.src_fps:
                meta["source_fps"] = self.src_fps
            yield CameraFrame(self._img, frame_number, None, t_mono - self.latency_ns, t_wall - self.latency_ns, meta)
            frame_number += 1

    def _retrieve(self) -> bool:
        ok, bgr = self.cap.retrieve()
        if not ok or bgr is None:
            return False
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        self._img = np.ascontiguousarray(bgr[..., ::-1])   # OpenCV gives BGR; radvis frames are RGB
        return True

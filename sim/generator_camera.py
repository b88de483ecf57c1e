"""The plain generator source: the scene renderer's frames, no pyrealsense2 involved.

Frame k is rendered at host monotonic time t_0 + k / fps (the instant the rig's emulated radar also uses
as scene time), paced in real time unless `realtime=False` (then as fast as possible, scene time still
advancing by 1 / fps per frame). It has no device clock: `t_device_ns` is None.
"""
from __future__ import annotations

import threading
import time

from drivers.camera.base import CameraFrame, CameraSource
from sim import render_camera
from sim.scene import Scene


class GeneratorCamera(CameraSource):
    def __init__(self, scene: Scene, *, width: int = 128, height: int = 96, fps: int = 30, hfov_deg: float = 80.0,
                 noise: float = 1.0, realtime: bool = True, t0: float | None = None, max_frames: int = 0):
        self.scene, self.fps, self.noise, self.realtime, self.max_frames = scene, fps, noise, realtime, max_frames
        self.cam = render_camera.PinholeCamera(width, height, hfov_deg)
        self.t0 = time.monotonic() if t0 is None else t0
        self.stop = threading.Event()

    def close(self) -> None:
        self.stop.set()

    def _frames(self):
        k = 0
        while not self.stop.is_set() and not (self.max_frames and k >= self.max_frames):
            t = self.t0 + k / self.fps
            if self.realtime and self.stop.wait(max(0.0, t - time.monotonic())):
                return
            state = self.scene.state(max(0.0, t))
            img = render_camera.render(state, self.cam, rng=render_camera.frame_rng(self.scene.seed, k),
                                       noise=self.noise)
            truth = state.truth(self.scene.seed)
            truth["t_s"] = t
            meta = {"driver": "generator", "timestamp_domain": "scene_time", "scene_t_s": t,
                    "intrinsics": self.cam.intrinsics(), "truth": truth}
            t_mono = int(t * 1e9) if not self.realtime else time.monotonic_ns()
            yield CameraFrame(img, k, None, t_mono, time.time_ns(), meta)
            k += 1

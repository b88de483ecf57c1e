"""The emulated camera: the scene as a camera sees it, frame by frame, with its own clock.

Frame k is exposed around t_k = t_0 + k / fps on the host monotonic clock (mid-exposure); the scene is
rendered at that instant (the emulated radar renders the same Scene at its own frame times, in its own
process, so both see the same objects). The camera has a hardware clock like a real one: microseconds since
it "booted" (a few seconds to minutes before it was opened), running `drift_ppm` fast. A frame is ready for
the host at t_k + exposure / 2 + latency; when the host machine is too slow to keep up, frames are skipped
(counted), as a real sensor overwrites its buffer.

How the frames leave the camera is the transport's business: an HTTP MJPEG stream (sim/mjpeg_server.py, the
`emulate-camera` stage) or a pyrealsense2 software_device (sim/realsense_device.py, for the RealSense tests).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from sim import render_camera
from sim.scene import Scene


class CameraClock:
    """Microseconds since the camera booted, `drift_ppm` fast, as a function of host monotonic time."""

    def __init__(self, boot_mono_s: float, drift_ppm: float = 30.0):
        self.boot, self.drift = boot_mono_s, drift_ppm * 1e-6

    def us(self, t_mono_s: float) -> int:
        return int((t_mono_s - self.boot) * 1e6 * (1 + self.drift))


@dataclass
class Shot:
    """One exposed frame: its number, host mono capture instant (mid-exposure), RGB image, device clock
    stamps (µs, mid-exposure and readout), and the scene's ground truth at the capture instant."""
    k: int
    t_cap: float
    image: np.ndarray
    sensor_us: int
    frame_us: int
    truth: dict


class EmulatedCamera:
    def __init__(self, scene: Scene, *, width: int = 128, height: int = 96, fps: int = 30, hfov_deg: float = 80.0,
                 noise: float = 1.0, exposure_us: int = 8000, latency_ms: float = 4.0, drift_ppm: float = 30.0,
                 boot_s: float | None = None):
        self.scene, self.fps, self.noise = scene, fps, noise
        self.cam = render_camera.PinholeCamera(width, height, hfov_deg)
        self.exposure_us, self.latency_s = exposure_us, latency_ms / 1000
        rng = np.random.default_rng([scene.seed & 0xFFFFFFFF, 0xB007])
        boot = time.monotonic() - (boot_s if boot_s is not None else float(rng.uniform(5, 120)))
        self.clock = CameraClock(boot, drift_ppm)
        self.stats = {"frames": 0, "skipped": 0}

    def shot(self, k: int, t_cap: float) -> Shot:
        """Render frame k exposed at host monotonic time t_cap."""
        state = self.scene.state(t_cap)
        img = render_camera.render(state, self.cam, rng=render_camera.frame_rng(self.scene.seed, k), noise=self.noise)
        return Shot(k, t_cap, np.ascontiguousarray(img), self.clock.us(t_cap),
                    self.clock.us(t_cap + self.exposure_us * 0.5e-6),
                    # the lens is part of the truth: an MJPEG stream carries no intrinsics, and the camera
                    # view's truth overlay (capture/foxglove.py) projects the objects with them
                    {**state.truth(self.scene.seed), "intrinsics": self.cam.intrinsics()})

    def frames(self, stop: threading.Event):
        """Shots in real time until `stop` is set: each is yielded when it would reach the host."""
        period = 1.0 / self.fps
        t0 = time.monotonic() + period
        k = 0
        while not stop.is_set():
            t_cap = t0 + k * period
            t_ready = t_cap + self.exposure_us * 0.5e-6 + self.latency_s
            delay = t_ready - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            late = time.monotonic() - t_ready
            if late > period:                       # fell behind (slow host): those frames are lost
                missed = int(late / period)
                self.stats["skipped"] += missed
                k += missed
                continue
            shot = self.shot(k, t_cap)
            self.stats["frames"] += 1
            yield shot
            k += 1

"""Emulated RealSense: the scene renderer's frames pushed through pyrealsense2's `software_device`, so the
real driver (drivers/camera/realsense.py) runs unchanged against it (capture_sync.md §3).

The emulated camera has its own hardware clock, like a real one: microseconds since it "booted" (a few
seconds to minutes before it was opened), running `drift_ppm` fast. Frame k is exposed around
t_k = t_0 + k / fps on the host monotonic clock; the scene is rendered at that instant (the emulated radar
renders the same Scene at its own frame times, so both see the same objects). Each frame carries:
  get_timestamp()       FRAME_TIMESTAMP / 1000 in the hardware_clock domain (what UVC metadata gives)
  SENSOR_TIMESTAMP      device µs at mid-exposure
  FRAME_TIMESTAMP       device µs at readout (mid-exposure + exposure / 2)
  TIME_OF_ARRIVAL       host system clock ms when the frame reaches the host (after `latency_ms`)
  FRAME_COUNTER, ACTUAL_EXPOSURE
Faults: `unplug()` stops frames and hides the device from `find()` until `replug()`.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import numpy as np

from drivers.camera.base import CameraError
from drivers.camera.realsense import _rs
from sim import render_camera
from sim.scene import Scene

log = logging.getLogger("radvis.camera.emulated")


class EmulatedRealSense:
    def __init__(self, scene: Scene, *, width: int = 128, height: int = 96, fps: int = 30, serial: str = "EMU-RS-0001",
                 noise: float = 1.0, hfov_deg: float = 80.0, exposure_us: int = 8000, latency_ms: float = 4.0,
                 drift_ppm: float = 30.0, boot_s: float | None = None):
        rs = self.rs = _rs()
        self.scene, self.fps, self.serial, self.noise = scene, fps, serial, noise
        self.cam = render_camera.PinholeCamera(width, height, hfov_deg)
        self.exposure_us, self.latency_s, self.drift = exposure_us, latency_ms / 1000, drift_ppm * 1e-6
        rng = np.random.default_rng([scene.seed & 0xFFFFFFFF, 0xB007])
        self.boot = time.monotonic() - (boot_s if boot_s is not None else float(rng.uniform(5, 120)))
        sd = self.device = rs.software_device()
        sd.register_info(rs.camera_info.name, "radvis emulated RealSense (software_device)")
        sd.register_info(rs.camera_info.serial_number, serial)
        sd.register_info(rs.camera_info.firmware_version, "0.0.0.0")
        self.sensor = sd.add_sensor("RGB Camera")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = rs.stream.color, 0, 0
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = width, height, fps, 3, rs.format.rgb8
        intr = rs.intrinsics()
        intr.width, intr.height = width, height
        intr.fx, intr.fy, intr.ppx, intr.ppy = self.cam.fx, self.cam.fy, self.cam.cx, self.cam.cy
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        vs.intrinsics = intr
        self.profile = self.sensor.add_video_stream(vs).as_video_stream_profile()
        self.sensor.add_option(rs.option.global_time_enabled, rs.option_range(0, 1, 1, 0), True)
        self.plugged = threading.Event()
        self.plugged.set()
        self.truths: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._keep = collections.deque(maxlen=16)   # pixel buffers stay alive while librealsense holds frames
        self.stats = {"pushed": 0, "skipped": 0, "unplugged_frames": 0}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"emulated-realsense-{serial}", daemon=True)
        self._thread.start()

    # ---- what the driver sees --------------------------------------------------------------
    def find(self, serial: str):
        """finder for RealSenseCamera: the software device while plugged in and the serial matches."""
        if self.plugged.is_set() and serial in ("", self.serial):
            return self.device
        return None

    def truth(self, frame_number: int) -> dict | None:
        with self._lock:
            return self.truths.get(frame_number)

    def device_us(self, t_mono_s: float) -> int:
        """The emulated hardware clock (µs since boot, drifting) at host monotonic time t_mono_s."""
        return int((t_mono_s - self.boot) * 1e6 * (1 + self.drift))

    # ---- faults ----------------------------------------------------------------------------
    def unplug(self) -> None:
        self.plugged.clear()

    def replug(self) -> None:
        self.plugged.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    # ---- the sensor ------------------------------------------------------------------------
    def _run(self) -> None:
        rs = self.rs
        period = 1.0 / self.fps
        t0 = time.monotonic() + period
        k = 0
        while not self._stop.is_set():
            t_cap = t0 + k * period                                  # mid-exposure
            t_ready = t_cap + self.exposure_us * 0.5e-6 + self.latency_s
            delay = t_ready - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if time.monotonic() - t_ready > period:                  # fell behind (slow host): drop frames
                missed = int((time.monotonic() - t_ready) / period)
                self.stats["skipped"] += missed
                k += missed
                continue
            if not self.plugged.is_set():
                self.stats["unplugged_frames"] += 1
                k += 1
                continue
            try:
                self._push(rs, k, t_cap)
            except Exception as e:   # never let the emulated sensor thread die silently
                log.error("emulated RealSense frame %d failed: %r", k, e)
            k += 1

    def _push(self, rs, k: int, t_cap: float) -> None:
        state = self.scene.state(t_cap)
        img = np.ascontiguousarray(render_camera.render(state, self.cam, rng=render_camera.frame_rng(self.scene.seed, k),
                                                        noise=self.noise))
        self._keep.append(img)
        sensor_us = self.device_us(t_cap)
        frame_us = self.device_us(t_cap + self.exposure_us * 0.5e-6)
        truth = state.truth(self.scene.seed)
        truth["t_s"] = t_cap
        with self._lock:
            self.truths[k] = truth
            while len(self.truths) > 512:
                self.truths.popitem(last=False)
        s = self.sensor
        s.set_metadata(rs.frame_metadata_value.sensor_timestamp, sensor_us)
        s.set_metadata(rs.frame_metadata_value.frame_timestamp, frame_us)
        s.set_metadata(rs.frame_metadata_value.frame_counter, k)
        s.set_metadata(rs.frame_metadata_value.actual_exposure, self.exposure_us)
        s.set_metadata(rs.frame_metadata_value.time_of_arrival, time.time_ns() // 1_000_000)
        f = rs.software_video_frame()
        f.pixels, f.stride, f.bpp = img, img.shape[1] * 3, 3
        f.timestamp, f.domain = frame_us / 1000.0, rs.timestamp_domain.hardware_clock
        f.frame_number, f.profile = k, self.profile
        s.on_video_frame(f)
        self.stats["pushed"] += 1


def open_emulated(cfg, **kw):
    """RealSenseCamera driving an EmulatedRealSense built from cfg.camera / cfg.scene / cfg.capture."""
    from drivers.camera.realsense import RealSenseCamera
    c = cfg.camera
    if c.depth:
        log.warning("emulated RealSense has no depth stream: camera.depth ignored")
    emu = EmulatedRealSense(Scene.from_config(cfg.scene), width=c.width, height=c.height, fps=c.fps,
                            serial=c.serial or "EMU-RS-0001", noise=cfg.scene.noise, hfov_deg=c.hfov_deg, **kw)
    try:
        cam = RealSenseCamera(serial=emu.serial, width=c.width, height=c.height, fps=c.fps, finder=emu.find,
                              timeout_ms=c.timeout_ms, reconnect_backoff_s=cfg.capture.reconnect_backoff_s,
                              reconnect_max_s=cfg.capture.reconnect_max_s, reconnect_s=c.reconnect_s,
                              annotate=emu.truth, on_close=emu.close)
    except CameraError:
        emu.close()
        raise
    cam.emulator = emu
    return cam

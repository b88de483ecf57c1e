"""Emulated RealSense: the emulated camera's frames (sim/camera_device.py) pushed through pyrealsense2's
`software_device`, so the real driver (drivers/camera/realsense.py) runs unchanged against it
(capture_sync.md §3). A software_device lives inside one process, so this is for tests and benchmarks of the
RealSense driver; the rig's emulated camera is a stage of its own serving MJPEG (sim/emulate.py).

Each frame carries, on the emulated camera's own drifting clock:
  get_timestamp()       FRAME_TIMESTAMP / 1000 in the hardware_clock domain (what UVC metadata gives)
  SENSOR_TIMESTAMP      device µs at mid-exposure
  FRAME_TIMESTAMP       device µs at readout (mid-exposure + exposure / 2)
  TIME_OF_ARRIVAL       host system clock ms when the frame reaches the host (after `latency_ms`)
  FRAME_COUNTER, ACTUAL_EXPOSURE
The scene's ground truth of frame k is `truth(k)` (the driver never sees it). Faults: `unplug()` stops
frames and hides the device from `find()` until `replug()`.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from drivers.camera.base import CameraError
from drivers.camera.realsense import _rs
from sim.camera_device import EmulatedCamera
from sim.scene import Scene

log = logging.getLogger("radvis.camera.emulated")


class EmulatedRealSense:
    def __init__(self, scene: Scene, *, width: int = 128, height: int = 96, fps: int = 30, serial: str = "EMU-RS-0001",
                 noise: float = 1.0, hfov_deg: float = 80.0, exposure_us: int = 8000, latency_ms: float = 4.0,
                 drift_ppm: float = 30.0, boot_s: float | None = None):
        rs = self.rs = _rs()
        self.serial = serial
        self.camera = EmulatedCamera(scene, width=width, height=height, fps=fps, hfov_deg=hfov_deg, noise=noise,
                                     exposure_us=exposure_us, latency_ms=latency_ms, drift_ppm=drift_ppm,
                                     boot_s=boot_s)
        self.cam, self.exposure_us = self.camera.cam, exposure_us
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
        self.stats = {"pushed": 0, "unplugged_frames": 0}   # frames skipped on a slow host: camera.stats
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
        return self.camera.clock.us(t_mono_s)

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
        for shot in self.camera.frames(self._stop):
            if not self.plugged.is_set():
                self.stats["unplugged_frames"] += 1
                continue
            try:
                self._push(shot)
            except Exception as e:   # never let the emulated sensor thread die silently
                log.error("emulated RealSense frame %d failed: %r", shot.k, e)

    def _push(self, shot) -> None:
        rs, img = self.rs, shot.image
        self._keep.append(img)
        truth = dict(shot.truth, t_s=shot.t_cap)
        with self._lock:
            self.truths[shot.k] = truth
            while len(self.truths) > 512:
                self.truths.popitem(last=False)
        s = self.sensor
        s.set_metadata(rs.frame_metadata_value.sensor_timestamp, shot.sensor_us)
        s.set_metadata(rs.frame_metadata_value.frame_timestamp, shot.frame_us)
        s.set_metadata(rs.frame_metadata_value.frame_counter, shot.k)
        s.set_metadata(rs.frame_metadata_value.actual_exposure, self.exposure_us)
        s.set_metadata(rs.frame_metadata_value.time_of_arrival, time.time_ns() // 1_000_000)
        f = rs.software_video_frame()
        f.pixels, f.stride, f.bpp = img, img.shape[1] * 3, 3
        f.timestamp, f.domain = shot.frame_us / 1000.0, rs.timestamp_domain.hardware_clock
        f.frame_number, f.profile = shot.k, self.profile
        s.on_video_frame(f)
        self.stats["pushed"] += 1


def open_emulated(cfg, *, reconnect_backoff_s: float = 0.05, reconnect_max_s: float = 0.2, **kw):
    """RealSenseCamera driving an EmulatedRealSense built from cfg.camera / cfg.scene (tests, bench)."""
    from drivers.camera.realsense import RealSenseCamera
    c = cfg.camera
    if c.depth:
        log.warning("emulated RealSense has no depth stream: camera.depth ignored")
    emu = EmulatedRealSense(Scene.from_config(cfg.scene), width=c.width, height=c.height, fps=c.fps,
                            serial=c.serial or "EMU-RS-0001", noise=cfg.scene.noise, hfov_deg=c.hfov_deg, **kw)
    try:
        cam = RealSenseCamera(serial=emu.serial, width=c.width, height=c.height, fps=c.fps, finder=emu.find,
                              timeout_ms=c.timeout_ms, reconnect_backoff_s=reconnect_backoff_s,
                              reconnect_max_s=reconnect_max_s, reconnect_s=c.reconnect_s, on_close=emu.close)
    except CameraError:
        emu.close()
        raise
    cam.emulator = emu
    return cam

"""Intel RealSense colour (+ optional aligned depth) through pyrealsense2, with every timestamp it offers.

Per frame we keep (capture_sync.md §2.1): `get_timestamp()` (ms) and its domain (hardware_clock /
global_time / system_time), the metadata SENSOR_TIMESTAMP (µs, mid-exposure, device clock),
FRAME_TIMESTAMP (µs, readout), TIME_OF_ARRIVAL (ms, host system clock), BACKEND_TIMESTAMP and
FRAME_COUNTER when the device reports them, plus host monotonic/wall arrival. `t_device_ns` is the
device clock: SENSOR_TIMESTAMP, else FRAME_TIMESTAMP, else get_timestamp() when its domain is the
hardware clock; None otherwise (system/global time are host clocks, recorded in meta).

Global time is switched on when the sensor supports it. A device that stops delivering frames for
`timeout_ms`, or that librealsense reports removed, is closed and reopened with a doubling backoff
until `reconnect_s` has passed (then CameraDisconnected is raised to the capture daemon).

The device is found by a `finder(serial) -> rs.device | None`: the real one queries an `rs.context`;
tests hand over a pyrealsense2 `rs.software_device` (sim/realsense_device.py), so they run exactly this code.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from drivers.camera.base import Backoff, CameraDisconnected, CameraError, CameraFrame, CameraSource

log = logging.getLogger("radvis.camera.realsense")


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as e:   # the wheel needs libusb-1.0-0 from the OS (capture_sync.md §3)
        raise CameraError(f"pyrealsense2 cannot be imported ({e}); install it and the OS package libusb-1.0-0") from e
    return rs


def context_finder(ctx=None) -> Callable[[str], object]:
    """finder(serial) for real devices: the device with that serial (or the first one if serial is empty)."""
    rs = _rs()
    ctx = ctx or rs.context()

    def find(serial: str):
        for dev in ctx.query_devices():
            if not serial or dev.get_info(rs.camera_info.serial_number) == serial:
                return dev
        return None
    find.context = ctx
    return find


def list_devices() -> list[dict]:
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for k in ("name", "serial_number", "firmware_version", "usb_type_descriptor"):
            ci = getattr(rs.camera_info, k)
            if dev.supports(ci):
                info[k] = dev.get_info(ci)
        out.append(info)
    return out


_META = {  # meta key -> rs.frame_metadata_value name
    "sensor_timestamp_us": "sensor_timestamp",
    "frame_timestamp_us": "frame_timestamp",
    "time_of_arrival_ms": "time_of_arrival",
    "backend_timestamp_us": "backend_timestamp",
    "frame_counter": "frame_counter",
    "actual_exposure_us": "actual_exposure",
}


class RealSenseCamera(CameraSource):
    def __init__(self, *, serial: str = "", width: int = 640, height: int = 480, fps: int = 30,
                 depth: bool = False, finder: Callable[[str], object] | None = None, timeout_ms: int = 1000,
                 reconnect_backoff_s: float = 0.5, reconnect_max_s: float = 10.0, reconnect_s: float = 30.0,
                 on_close: Callable[[], None] | None = None):
        self.rs = _rs()
        self.serial, self.width, self.height, self.fps, self.depth = serial, width, height, fps, depth
        self.finder = finder or context_finder()
        self.timeout_ms = timeout_ms
        self.backoff = (reconnect_backoff_s, reconnect_max_s, reconnect_s)
        self.on_close = on_close
        self.stop = threading.Event()
        self.removed = threading.Event()
        self.pipe = None
        self.intrinsics: dict = {}
        self.stats = {"frames": 0, "timeouts": 0, "reconnects": 0, "last_error": ""}
        self._open()  # a missing device is a clear error at open time, not at the first frame

    # ---- device lifecycle ------------------------------------------------------------------
    def _open(self) -> None:
        rs = self.rs
        dev = self.finder(self.serial)
        if dev is None:
            which = f"serial {self.serial!r}" if self.serial else "any serial"
            raise CameraError(f"no RealSense device with {which} is connected "
                              f"(found: {[d.get('serial_number') for d in _safe_list()]})")
        sn = rs.camera_info.serial_number
        self.device_serial = dev.get_info(sn) if dev.supports(sn) else self.serial
        for s in dev.query_sensors():
            try:
                if s.supports(rs.option.global_time_enabled):
                    s.set_option(rs.option.global_time_enabled, 1)
            except RuntimeError as e:   # read-only on some SKUs: keep going with the device clock
                log.debug("global time not enabled on %s: %s", s, e)
        ctx = getattr(self.finder, "context", None)
        pipe = rs.pipeline(ctx) if ctx is not None else rs.pipeline()
        cfg = rs.config()
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            cfg.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        pipe.set_device(dev)
        try:
            profile = pipe.start(cfg)
        except RuntimeError as e:
            raise CameraError(f"RealSense {self.device_serial}: cannot stream {self.width}x{self.height} "
                              f"rgb8 @ {self.fps} fps: {e}") from e
        self.pipe = pipe
        self.align = rs.align(rs.stream.color) if self.depth else None
        vp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        i = vp.get_intrinsics()
        self.intrinsics = {"fx": i.fx, "fy": i.fy, "cx": i.ppx, "cy": i.ppy, "model": str(i.model)}
        self.removed.clear()
        if ctx is not None:   # hardware: librealsense tells us about unplugging before the timeout does
            def changed(info, dev=dev):
                try:
                    if info.was_removed(dev):
                        self.removed.set()
                except RuntimeError:
                    self.removed.set()
            ctx.set_devices_changed_callback(changed)
        log.info("RealSense %s streaming %dx%d @ %d fps", self.device_serial, self.width, self.height, self.fps)

    def _close_pipe(self) -> None:
        if self.pipe is not None:
            try:
                self.pipe.stop()
            except RuntimeError:
                pass
            self.pipe = None

    def _reconnect(self, why: str) -> bool:
        """Reopen with backoff: True when streaming again, False when closed meanwhile; raises
        CameraDisconnected after `reconnect_s`."""
        self.stats["last_error"] = why
        log.warning("RealSense %s: %s; reconnecting", self.serial or "(first)", why)
        self._close_pipe()
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
        raise CameraDisconnected(f"RealSense {self.serial or '(first)'}: {why}; not back after {self.backoff[2]} s "
                                 f"({self.stats['last_error']})")

    def close(self) -> None:
        self.stop.set()
        self._close_pipe()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    # ---- frames ----------------------------------------------------------------------------
    def _frames(self):
        while not self.stop.is_set():
            if self.pipe is None or self.removed.is_set():
                if not self._reconnect("device removed" if self.removed.is_set() else "not streaming"):
                    return
                continue
            ok, fs = self.pipe.try_wait_for_frames(self.timeout_ms)
            if self.stop.is_set():
                return
            if not ok:
                self.stats["timeouts"] += 1
                if not self._reconnect(f"no frame for {self.timeout_ms} ms"):
                    return
                continue
            t_mono, t_wall = time.monotonic_ns(), time.time_ns()
            if self.align is not None:
                fs = self.align.process(fs)
            colour = fs.get_color_frame()
            if not colour:
                continue
            self.stats["frames"] += 1
            yield self._to_frame(colour, fs.get_depth_frame() if self.depth else None, t_mono, t_wall)

    def _to_frame(self, colour, depth, t_mono: int, t_wall: int) -> CameraFrame:
        rs = self.rs
        img = np.asanyarray(colour.get_data()).copy()   # librealsense recycles the buffer
        meta = {"driver": "realsense", "serial": self.device_serial,
                "timestamp_ms": colour.get_timestamp(),
                "timestamp_domain": colour.get_frame_timestamp_domain().name,
                "device_frame_number": int(colour.get_frame_number()),
                "intrinsics": self.intrinsics, "reconnects": self.stats["reconnects"]}
        for key, name in _META.items():
            m = getattr(rs.frame_metadata_value, name)
            if colour.supports_frame_metadata(m):
                meta[key] = int(colour.get_frame_metadata(m))
        if "sensor_timestamp_us" in meta:
            t_dev = meta["sensor_timestamp_us"] * 1000
        elif "frame_timestamp_us" in meta:
            t_dev = meta["frame_timestamp_us"] * 1000
        elif meta["timestamp_domain"] == "hardware_clock":
            t_dev = int(round(meta["timestamp_ms"] * 1e6))
        else:
            t_dev = None
        d = np.asanyarray(depth.get_data()).copy() if depth else None
        return CameraFrame(img, meta["device_frame_number"], t_dev, t_mono, t_wall, meta, d)


def _safe_list() -> list[dict]:
    try:
        return list_devices()
    except Exception:   # listing is only for the error message
        return []

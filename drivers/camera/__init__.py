"""Camera drivers: HTTP MJPEG (mjpg-streamer, network cameras, the emulated camera), RealSense
(pyrealsense2), OpenCV VideoCapture.

`open_camera(camera_cfg, ...)` picks the driver named by `camera.driver`; iterating the returned CameraSource
yields CameraFrame(image uint8 HxWx3 RGB, frame_number, t_device_ns | None, t_mono_ns, t_wall_ns, meta).
A driver opens what the config names, whether a real device or an emulated one sits behind it; it reads only
the [camera] section and plain arguments. pyrealsense2 is imported only by the RealSense driver.
"""
from __future__ import annotations

from drivers.camera.base import CameraDisconnected, CameraError, CameraFrame, CameraSource

__all__ = ["CameraDisconnected", "CameraError", "CameraFrame", "CameraSource", "open_camera"]


def open_camera(c, *, reconnect_backoff_s: float = 0.5, reconnect_max_s: float = 10.0) -> CameraSource:
    """Open the camera described by `c`, the config's [camera] section. The backoff is the driver's own
    reopen delay while a device is away (first delay, cap); it gives up after `c.reconnect_s`."""
    backoff = dict(reconnect_backoff_s=reconnect_backoff_s, reconnect_max_s=reconnect_max_s,
                   reconnect_s=c.reconnect_s)
    if c.driver == "mjpeg":
        from drivers.camera.mjpeg import MjpegCamera
        return MjpegCamera(c.url, width=c.width, height=c.height, timeout_ms=c.timeout_ms, **backoff)
    if c.driver == "realsense":
        from drivers.camera.realsense import RealSenseCamera
        return RealSenseCamera(serial=c.serial, width=c.width, height=c.height, fps=c.fps, depth=c.depth,
                               timeout_ms=c.timeout_ms, **backoff)
    if c.driver == "opencv":
        from drivers.camera.opencv import OpenCVCamera
        return OpenCVCamera(c.device, width=c.width, height=c.height, fps=c.fps, latency_ms=c.latency_ms,
                            realtime=True, **backoff)
    raise CameraError(f"camera.driver: unknown driver {c.driver!r}")

"""Camera drivers: HTTP MJPEG (mjpg-streamer, network cameras, the emulated camera), RealSense
(pyrealsense2), OpenCV VideoCapture.

`open_camera(camera_cfg, ...)` picks the driver named by `camera.driver`; iterating the returned CameraSource
yields CameraFrame(image uint8 HxWx3 RGB, frame_number, t_device_ns | None, t_mono_ns, t_wall_ns, meta).
A driver opens what the config names, whether a real device or an emulated one sits behind it; it reads only
the [camera] section and plain arguments. pyrealsense2 is imported only by the RealSense driver.
"""
from __future__ import annotations

from drivers.camera.base import CameraDisconnected, CameraError, CameraFrame, CameraSource

__all__ = ["CameraDisconnected", "CameraError", "CameraFrame", "CameraSource", "check_config", "open_camera"]

# Colour modes of the RealSense D400 family's RGB sensor (librealsense `rs-enumerate-devices`); a mode
# outside them fails at pipeline start, so it is caught as a configuration mistake before that.
REALSENSE_COLOR_MODES = {(320, 180), (320, 240), (424, 240), (640, 360), (640, 480), (848, 480), (960, 540),
                         (1280, 720), (1920, 1080)}
REALSENSE_FPS = {6, 15, 30, 60}


def check_config(c, config_source: str | None = None) -> None:
    """Configuration mistakes of the [camera] section: radvis.config.ConfigError naming the key (the capture
    exits 2); a camera that is simply not there yet is the driver's to wait for."""
    from radvis.config import ConfigError
    where = f" ({config_source})" if config_source and config_source != "<defaults>" else ""
    if c.driver == "mjpeg" and not c.url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"camera.url{where}: {c.url!r} is not an http:// URL of an MJPEG stream "
                          f"(mjpg-streamer: http://HOST:8080/?action=stream)")
    if c.driver == "realsense":
        if (c.width, c.height) not in REALSENSE_COLOR_MODES:
            modes = ", ".join(f"{w}x{h}" for w, h in sorted(REALSENSE_COLOR_MODES))
            raise ConfigError(f"camera.width x camera.height{where} = {c.width}x{c.height} is not a RealSense colour "
                              f"mode ({modes}); e.g. camera.width = 640, camera.height = 480 "
                              f"(configs/iwr1843-uart-realsense.toml)")
        if c.fps not in REALSENSE_FPS:
            raise ConfigError(f"camera.fps{where} = {c.fps} is not a RealSense colour rate "
                              f"({', '.join(map(str, sorted(REALSENSE_FPS)))})")


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

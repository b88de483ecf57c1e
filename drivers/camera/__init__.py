"""Camera drivers: RealSense (pyrealsense2), OpenCV VideoCapture, emulated RealSense, generator.

`open_camera(cfg)` picks the driver named by `camera.driver`; iterating the returned CameraSource yields
CameraFrame(image uint8 HxWx3 RGB, frame_number, t_device_ns | None, t_mono_ns, t_wall_ns, meta).
pyrealsense2 is imported only by the RealSense drivers.
"""
from __future__ import annotations

from drivers.camera.base import CameraDisconnected, CameraError, CameraFrame, CameraSource

__all__ = ["CameraDisconnected", "CameraError", "CameraFrame", "CameraSource", "open_camera"]


def open_camera(cfg) -> CameraSource:
    """Open the camera described by a radvis Config (sections camera, scene, capture)."""
    c = cfg.camera
    backoff = dict(reconnect_backoff_s=cfg.capture.reconnect_backoff_s, reconnect_max_s=cfg.capture.reconnect_max_s,
                   reconnect_s=c.reconnect_s)
    if c.driver == "emulated-realsense":
        from sim.realsense_device import open_emulated
        return open_emulated(cfg)
    if c.driver == "realsense":
        from drivers.camera.realsense import RealSenseCamera
        return RealSenseCamera(serial=c.serial, width=c.width, height=c.height, fps=c.fps, depth=c.depth,
                               timeout_ms=c.timeout_ms, **backoff)
    if c.driver == "opencv":
        from drivers.camera.opencv import OpenCVCamera
        return OpenCVCamera(c.device, width=c.width, height=c.height, fps=c.fps, latency_ms=c.latency_ms,
                            realtime=True, **backoff)
    if c.driver == "generator":
        from sim.generator_camera import GeneratorCamera
        from sim.scene import Scene
        return GeneratorCamera(Scene.from_config(cfg.scene), width=c.width, height=c.height, fps=c.fps,
                               hfov_deg=c.hfov_deg, noise=cfg.scene.noise)
    raise CameraError(f"camera.driver: unknown driver {c.driver!r}")

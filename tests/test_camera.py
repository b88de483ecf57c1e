"""Camera drivers: the RealSense driver against a pyrealsense2 software_device fed by the emulated camera
(pixels, timestamps, metadata, disconnect -> reconnect), OpenCV on a generated video file, clear errors for
missing devices. (The MJPEG driver and the emulated network camera: test_camera_mjpeg.py.)"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from drivers.camera import CameraDisconnected, CameraError, open_camera
from drivers.camera.opencv import OpenCVCamera
from radvis import config
from sim import render_camera
from sim.camera_device import EmulatedCamera
from sim.scene import Scene

try:
    import pyrealsense2  # noqa: F401
    RS_ERROR = ""
except ImportError as e:   # the wheel needs the OS package libusb-1.0-0 (capture_sync.md §3)
    RS_ERROR = f"pyrealsense2 cannot be imported ({e}); apt-get install libusb-1.0-0"
needs_rs = pytest.mark.skipif(bool(RS_ERROR), reason=RS_ERROR)


def _cfg(*extra):
    return config.load(overrides=["camera.driver=\"realsense\"", "camera.timeout_ms=250", "scene.seed=5", *extra])


def open_emulated(cfg):
    from sim.realsense_device import open_emulated
    return open_emulated(cfg)


@needs_rs
def test_emulated_realsense_delivers_the_rendered_frames_with_device_timestamps():
    cfg = _cfg()
    with open_emulated(cfg) as cam:
        emu = cam.emulator
        frames = []
        for f in cam:
            frames.append(f)
            if len(frames) == 8:
                break
    assert not emu._thread.is_alive()    # closing the driver stops the emulated sensor
    scene = Scene.from_config(cfg.scene)
    pinhole = render_camera.PinholeCamera(cfg.camera.width, cfg.camera.height, cfg.camera.hfov_deg)
    for f in frames:
        assert f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8
        # the bytes that went through librealsense are exactly the renderer's frame of that instant
        assert "truth" not in f.meta                 # the driver cannot know the scene; the emulator does
        truth = emu.truth(f.frame_number)
        t = truth["t_s"]
        expect = render_camera.render(scene.state(t), pinhole, rng=render_camera.frame_rng(5, f.frame_number))
        np.testing.assert_array_equal(f.image, expect)
        assert truth == {**scene.state(t).truth(5), "intrinsics": pinhole.intrinsics(), "t_s": t}
        m = f.meta
        assert m["timestamp_domain"] == "hardware_clock" and m["serial"] == "EMU-RS-0001"
        assert m["frame_counter"] == f.frame_number
        assert m["frame_timestamp_us"] - m["sensor_timestamp_us"] == pytest.approx(m["actual_exposure_us"] / 2, abs=2)
        assert m["timestamp_ms"] == pytest.approx(m["frame_timestamp_us"] / 1000, abs=1e-3)
        assert f.t_device_ns == m["sensor_timestamp_us"] * 1000
        # device clock = emulated hardware clock of the capture instant; arrival after it, on the host clocks
        assert m["sensor_timestamp_us"] == emu.device_us(t)
        assert f.t_mono_ns >= t * 1e9
        assert abs(m["time_of_arrival_ms"] * 1e6 - f.t_wall_ns) < 0.5e9
        assert m["intrinsics"]["fx"] == pytest.approx(pinhole.fx, rel=1e-5)
    dev = np.diff([f.t_device_ns for f in frames]) / np.diff([f.frame_number for f in frames])
    np.testing.assert_allclose(dev, 1e9 / 30 * (1 + 30e-6), rtol=1e-4)   # 30 fps on a clock 30 ppm fast


@needs_rs
def test_emulated_realsense_unplug_replug_reconnects():
    with open_emulated(_cfg()) as cam:
        it = iter(cam)
        first = next(it)
        cam.emulator.unplug()
        replug = threading.Timer(0.8, cam.emulator.replug)
        replug.start()
        t0 = time.monotonic()
        after = next(it)
        drained = 0
        while after.meta["reconnects"] == 0 and drained < 5:   # frames already queued before the unplug
            after, drained = next(it), drained + 1
        waited = time.monotonic() - t0
        replug.join()
    assert cam.stats["timeouts"] >= 1 and cam.stats["reconnects"] >= 1   # >1 only if a loaded host stalls
    assert after.meta["reconnects"] >= 1
    assert "no RealSense device" in cam.stats["last_error"]       # it did look while unplugged
    assert waited >= 0.7 and after.frame_number > first.frame_number + 20   # frames lost while unplugged
    assert after.t_device_ns > first.t_device_ns


@needs_rs
def test_emulated_realsense_gives_up_after_reconnect_window():
    with open_emulated(_cfg("camera.reconnect_s=0.5")) as cam:
        it = iter(cam)
        next(it)
        cam.emulator.unplug()
        with pytest.raises(CameraDisconnected, match="not back after 0.5 s"):
            for _ in range(6):   # a few frames may already be queued in librealsense
                next(it)


@needs_rs
def test_missing_realsense_is_a_clear_error():
    cfg = config.load(overrides=["camera.driver=\"realsense\"", "camera.serial=\"123456789\""])
    with pytest.raises(CameraError, match="no RealSense device with serial '123456789'"):
        open_camera(cfg.camera)


def _write_video(path, n=12, size=(64, 48), fps=30.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for k in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)   # BGR
        img[:, :, 2] = 200                                # red in RGB
        img[:8, :8 + 4 * k] = 255                         # a bar growing with the frame index
        w.write(img)
    w.release()


def test_opencv_reads_a_generated_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    cfg = config.load(overrides=["camera.driver=\"opencv\"", f"camera.device=\"{path}\""])
    with open_camera(cfg.camera) as cam:
        cam.realtime = False
        frames = list(cam)
    assert len(frames) == 12
    assert [f.frame_number for f in frames] == list(range(12))
    for k, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3)
        r, g, b = f.image[20:, :, 0].mean(), f.image[20:, :, 1].mean(), f.image[20:, :, 2].mean()
        assert r > 150 and g < 60 and b < 60             # BGR from OpenCV was turned into RGB
        bar = (f.image[2, :, 1] > 128).sum()             # white bar length = 8 + 4k (JPEG blurs an edge pixel)
        assert abs(bar - (8 + 4 * k)) <= 2
        assert f.t_device_ns is None and f.meta["driver"] == "opencv"
        assert f.meta["pos_msec"] == pytest.approx(1000 * k / 30, abs=0.5)   # media time of the grabbed frame
    assert all(np.diff([f.t_mono_ns for f in frames]) >= 0)


def test_opencv_paces_a_file_in_real_time_and_subtracts_latency(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, n=9, fps=60.0)
    with OpenCVCamera(str(path), realtime=True, latency_ms=5.0) as cam:
        t0 = time.monotonic()
        frames = list(cam)
        elapsed = time.monotonic() - t0
    assert len(frames) == 9 and elapsed >= 8 / 60 * 0.9
    for f in frames:
        assert f.meta["arrival_mono_ns"] - f.t_mono_ns == 5_000_000


def test_opencv_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="no such video file"):
        OpenCVCamera(str(tmp_path / "nope.avi"))
    with pytest.raises(CameraError, match="cannot open camera device index 63"):
        OpenCVCamera("63")
    bad = tmp_path / "garbage.avi"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(CameraError, match="cannot open video file"):
        OpenCVCamera(str(bad))


def test_emulated_camera_renders_the_scene_at_its_capture_instants_on_its_own_clock():
    scene = Scene(2)
    cam = EmulatedCamera(scene, width=96, height=64, fps=10, boot_s=100.0, drift_ppm=50.0)
    stop = threading.Event()
    shots = []
    for shot in cam.frames(stop):
        shots.append(shot)
        if len(shots) == 4:
            stop.set()
    assert [s.k for s in shots] == [0, 1, 2, 3] and cam.stats["frames"] == 4
    assert np.allclose(np.diff([s.t_cap for s in shots]), 0.1)          # frame k at t0 + k / fps
    for s in shots:
        assert s.truth == {**scene.state(s.t_cap).truth(2), "intrinsics": render_camera.PinholeCamera(96, 64).intrinsics()}
        np.testing.assert_array_equal(s.image, render_camera.render(scene.state(s.t_cap), render_camera.PinholeCamera(96, 64),
                                                                    rng=render_camera.frame_rng(2, s.k)))
        assert s.sensor_us == cam.clock.us(s.t_cap) and s.frame_us - s.sensor_us == pytest.approx(4000, abs=1)
    # the camera's clock: booted 100 s before it was made, 50 ppm fast
    d = np.diff([s.sensor_us for s in shots]) / np.diff([s.t_cap for s in shots])
    np.testing.assert_allclose(d, 1e6 * (1 + 50e-6), rtol=1e-5)
    assert 100e6 < shots[0].sensor_us < 200e6

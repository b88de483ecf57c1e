"""The MJPEG camera driver (drivers/camera/mjpeg.py) against the emulated network camera (sim/emulate.py
CameraEmulator: the `emulate-camera` stage in-process) and against hand-written mjpg-streamer byte streams:
pixels, the camera's own clock in X-Timestamp, frame numbers, truth reported under the driver's numbers,
broken parts skipped and counted, reconnects, clear errors."""
from __future__ import annotations

import socket
import threading
import urllib.request

import cv2
import numpy as np
import pytest

from drivers.camera import CameraDisconnected, CameraError, open_camera
from drivers.camera.mjpeg import MjpegCamera, parse_timestamp_ns
from radvis import config
from sim import render_camera
from sim.emulate import CameraEmulator
from sim.scene import Scene


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def camera_cfg(port: int, *extra):
    return config.load(overrides=["camera.driver='mjpeg'", f"camera.url='http://127.0.0.1:{port}/?action=stream'",
                                  "camera.timeout_ms=500", "scene.seed=5", *extra])


def take(cam, n: int) -> list:
    out = []
    for f in cam:
        out.append(f)
        if len(out) == n:
            break
    return out


def test_emulated_camera_over_http_mjpeg_end_to_end():
    cfg = camera_cfg(free_port())
    truths = {}
    scene = Scene.from_config(cfg.scene)
    with CameraEmulator(cfg.camera, scene, truth=lambda *a: truths.__setitem__(a[2], a), drift_ppm=30.0) as emu:
        with open_camera(cfg.camera, reconnect_backoff_s=0.05, reconnect_max_s=0.2) as cam:
            frames = take(cam, 8)
    pinhole = render_camera.PinholeCamera(cfg.camera.width, cfg.camera.height, cfg.camera.hfov_deg)
    fns = [f.frame_number for f in frames]
    assert fns == sorted(set(fns))                                   # the camera's counter (X-Frame-Number)
    for f in frames:
        stream, source, k, t_cap, truth = truths[f.frame_number]     # reported under the driver's number
        assert (stream, source, k) == ("camera", "camera0", f.frame_number) and truth == {**scene.state(t_cap).truth(5), "intrinsics": pinhole.intrinsics()}
        assert t_cap * 1e9 < f.t_mono_ns                             # truth is sampled before the frame arrives
        assert f.t_device_ns == emu.camera.clock.us(t_cap) * 1000    # X-Timestamp: the camera's clock, exactly
        assert f.meta["x_timestamp"] == f"{f.t_device_ns // 10**9}.{f.t_device_ns // 1000 % 10**6:06d}"
        assert f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8 and f.meta["driver"] == "mjpeg"
        expect = render_camera.render(scene.state(t_cap), pinhole, rng=render_camera.frame_rng(5, k))
        assert np.abs(f.image.astype(int) - expect).mean() < 3.0      # the renderer's frame through JPEG q95
    dev = np.diff([f.t_device_ns for f in frames]) / np.diff(fns)
    np.testing.assert_allclose(dev, 1e9 / 30 * (1 + 30e-6), rtol=1e-4)   # 30 fps on a clock 30 ppm fast
    assert emu.stats()["connections"] == 1 and cam.stats["bad_parts"] == 0


def test_snapshot_and_reconnect_after_the_camera_restarts():
    port = free_port()
    cfg = camera_cfg(port, "camera.reconnect_s=20")
    emu = CameraEmulator(cfg.camera, Scene(1)).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?action=snapshot", timeout=10) as r:
            body, ts = r.read(), r.headers["X-Timestamp"]
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (96, 128, 3)
        assert parse_timestamp_ns(ts) > 0
        cam = MjpegCamera(cfg.camera.url, timeout_ms=500, reconnect_backoff_s=0.05, reconnect_max_s=0.2,
                          reconnect_s=20)
        it = iter(cam)
        first = next(it)
        emu.close()                                                   # the camera reboots
        emu = CameraEmulator(cfg.camera, Scene(1)).start()
        after = next(it)
        while after.meta["reconnects"] == 0:                          # parts already buffered before the reboot
            after = next(it)
        cam.close()
    finally:
        emu.close()
    assert cam.stats["reconnects"] >= 1 and after.frame_number < first.frame_number + 200
    assert "server closed the connection" in cam.stats["last_error"] or "cannot connect" in cam.stats["last_error"]


# ---------------------------------------------------------------------------------------------------------
# Hand-written streams in mjpg-streamer's exact layout (output_http/httpd.c)

HEAD = (b"HTTP/1.0 200 OK\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\nServer: MJPG-Streamer/0.2\r\n"
        b"Cache-Control: no-store, no-cache, must-revalidate, pre-check=0, post-check=0, max-age=0\r\n"
        b"Pragma: no-cache\r\nExpires: Mon, 3 Jan 2000 12:34:56 GMT\r\n"
        b"Content-Type: multipart/x-mixed-replace;boundary=boundarydonotcross\r\n\r\n--boundarydonotcross\r\n")


def jpeg(colour) -> bytes:
    img = np.zeros((24, 32, 3), np.uint8)
    img[:] = colour[::-1]                                             # BGR for OpenCV
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def part(body: bytes, ts: str, length: bool = True) -> bytes:
    h = b"Content-Type: image/jpeg\r\n" + (f"Content-Length: {len(body)}\r\n".encode() if length else b"")
    return h + f"X-Timestamp: {ts}\r\n\r\n".encode() + body + b"\r\n--boundarydonotcross\r\n"


class OneShotServer:
    """Serves `payloads[i]` to the i-th connection, then closes it; refuses once they run out."""

    def __init__(self, payloads: list[bytes]):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.payloads, self.requests = list(payloads), []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.payloads:
            conn, _ = self.sock.accept()
            with conn:
                self.requests.append(conn.recv(4096))
                conn.sendall(self.payloads.pop(0))
        self.sock.close()


def test_mjpg_streamer_stream_with_broken_parts():
    red, green, blue = jpeg((255, 0, 0)), jpeg((0, 255, 0)), jpeg((0, 0, 255))
    stream = (HEAD + part(red, "1712.000250")
              + part(b"\xff\xd8 not a jpeg at all", "1712.033583")       # undecodable: skipped, counted
              + b"garbage the server should not have sent\r\n--boundarydonotcross\r\n"   # junk: resynchronised
              + part(green, "1712.066916", length=False)                # no Content-Length: body to the boundary
              + part(blue, "17x2.1"))                                   # a timestamp that is not one: None
    srv = OneShotServer([stream])
    cam = MjpegCamera(f"http://user:pw@127.0.0.1:{srv.port}/?action=stream", timeout_ms=300,
                      reconnect_backoff_s=0.05, reconnect_max_s=0.1, reconnect_s=0.5)
    frames = []
    with pytest.raises(CameraDisconnected, match="not back after 0.5 s"):
        for f in cam:
            frames.append(f)
    assert srv.requests[0].startswith(b"GET /?action=stream HTTP/1.0\r\n")
    assert b"Authorization: Basic dXNlcjpwdw==\r\n" in srv.requests[0]
    assert [f.frame_number for f in frames] == [0, 1, 2]              # no X-Frame-Number: arrival order
    for f, rgb in zip(frames, [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):   # RGB, not OpenCV's BGR
        assert np.abs(f.image[12, 16].astype(int) - rgb).max() <= 3
    assert frames[0].t_device_ns == 1712_000250_000 and frames[1].t_device_ns == 1712_066916_000
    assert frames[2].t_device_ns is None and frames[2].meta["timestamp_domain"] == "host"
    assert cam.stats["bad_parts"] == 1 and cam.stats["bytes_skipped"] > 0 and cam.stats["frames"] == 3


def test_clear_errors_for_what_is_not_an_mjpeg_camera():
    with pytest.raises(CameraError, match="cannot connect"):
        MjpegCamera(f"http://127.0.0.1:{free_port()}/?action=stream", timeout_ms=300)
    srv = OneShotServer([b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno\r\n",
                         b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>"])
    with pytest.raises(CameraError, match="server answered 'HTTP/1.0 404 Not Found'"):
        MjpegCamera(f"http://127.0.0.1:{srv.port}/", timeout_ms=300)
    with pytest.raises(CameraError, match="not an MJPEG stream"):
        MjpegCamera(f"http://127.0.0.1:{srv.port}/", timeout_ms=300)
    with pytest.raises(CameraError, match="expected http://"):
        MjpegCamera("rtsp://127.0.0.1/stream")


def test_timestamps_parse_exactly():
    assert parse_timestamp_ns("1712.000250") == 1_712_000_250_000
    assert parse_timestamp_ns("4294967.5") == 4_294_967_500_000_000
    assert parse_timestamp_ns(" 7 ") == 7_000_000_000
    assert parse_timestamp_ns("1.5e3") is None and parse_timestamp_ns(None) is None and parse_timestamp_ns("-1.0") is None

"""An HTTP MJPEG camera: mjpg-streamer, network cameras, and radvis's emulated camera (the emulate-camera stage).

The stream (`GET /?action=stream` on mjpg-streamer) is `multipart/x-mixed-replace;boundary=B`; each part has
headers, a blank line and one JPEG. Per part we keep (capture_sync.md §0):
  - X-Timestamp: SEC.USEC, the frame's time on the camera side's clock (mjpg-streamer: the V4L2 buffer
    timestamp; the emulated camera: its own drifting clock at mid-exposure) -> `t_device_ns`, exactly
    (parsed as decimal, never through a float); absent -> None and sync uses arrival time;
  - X-Frame-Number, the camera's frame counter when the server sends one (the emulated camera does) ->
    `frame_number`; otherwise frames are numbered in arrival order, continuing across reconnects;
  - host CLOCK_MONOTONIC / wall clock when the part's last byte arrived (sync subtracts camera.latency_ms).
A part whose headers are broken or whose JPEG does not decode is skipped and counted (`bad_parts`), and the
parser finds the next boundary: bytes from the network never stop the stream. A server that goes away or
stays silent for `timeout_ms` is reconnected with a doubling backoff until `reconnect_s` has passed
(then CameraDisconnected reaches the capture daemon, which reopens).
"""
from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from drivers.camera.base import Backoff, CameraDisconnected, CameraError, CameraFrame, CameraSource

log = logging.getLogger("radvis.camera.mjpeg")

MAX_HEADER_BYTES = 8192
MAX_PART_BYTES = 32 << 20
_TS = re.compile(r"^\s*(\d+)(?:\.(\d{1,9}))?\s*$")


class StreamError(Exception):
    """The connection broke or the server does not speak MJPEG over HTTP."""


def parse_timestamp_ns(text: str | None) -> int | None:
    """'1234.000567' -> 1234000567000 (exact decimal; None for anything else)."""
    m = _TS.match(text or "")
    if not m:
        return None
    frac = (m.group(2) or "").ljust(9, "0")
    return int(m.group(1)) * 1_000_000_000 + int(frac)


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("latin-1").split("\r\n"):
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip().lower()] = v.strip()
    return out


class MjpegStream:
    """One HTTP connection: `parts()` yields (headers, jpeg bytes, arrival mono ns, arrival wall ns)."""

    def __init__(self, url: str, timeout_s: float):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise CameraError(f"camera.url: expected http://HOST[:PORT]/PATH, got {url!r}")
        self.url, self.timeout_s = url, timeout_s
        try:
            self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout_s)
        except OSError as e:
            raise StreamError(f"cannot connect to {u.hostname}:{u.port or 80}: {e}") from None
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        auth = ""
        if u.username is not None:
            cred = base64.b64encode(f"{u.username}:{u.password or ''}".encode()).decode()
            auth = f"Authorization: Basic {cred}\r\n"
        self.buf = bytearray()
        try:
            self.sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {u.netloc.rpartition('@')[2]}\r\n{auth}"
                              f"User-Agent: radvis\r\n\r\n".encode())
            head = self._read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
        except StreamError:
            self.close()
            raise
        status, _, rest = head.partition(b"\r\n")
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or parts[1] != b"200":
            self.close()
            raise StreamError(f"{url}: server answered {status.decode('latin-1')[:80]!r}")
        ctype = _headers(rest).get("content-type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.lower().startswith("multipart/x-mixed-replace") or not m:
            self.close()
            raise StreamError(f"{url}: not an MJPEG stream (Content-Type {ctype!r})")
        b = m.group(1)
        self.boundary = ("--" + b if not b.startswith("--") else b).encode()   # some servers include the dashes

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise StreamError(f"no data for {self.timeout_s:g} s") from None
        except OSError as e:
            raise StreamError(f"connection failed: {e}") from None
        if not chunk:
            raise StreamError("server closed the connection")
        self.buf += chunk

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        while True:
            k = self.buf.find(marker)
            if k >= 0:
                out = bytes(self.buf[:k])
                del self.buf[:k + len(marker)]
                return out
            if len(self.buf) > limit:
                raise StreamError(f"no {marker!r} within {limit} bytes")
            self._fill()

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def parts(self, stats: dict):
        while True:
            # skip to the boundary line (it also skips the CRLF after the previous JPEG and any preamble)
            skipped = 0
            while True:
                k = self.buf.find(self.boundary)
                if k >= 0:
                    skipped += k
                    del self.buf[:k + len(self.boundary)]
                    break
                keep = len(self.boundary)
                skipped += max(0, len(self.buf) - keep)
                del self.buf[:max(0, len(self.buf) - keep)]
                self._fill()
            if skipped > 2:                     # more than the CRLF that ends a part's body
                stats["bytes_skipped"] += skipped
            line = self._read_until(b"\r\n", 256)
            if line.strip() == b"--":           # closing boundary: the server ended the stream
                raise StreamError("server ended the stream")
            try:
                block = self._read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
            except StreamError as e:
                if "within" not in str(e):
                    raise
                stats["bad_parts"] += 1          # header soup: resynchronise on the next boundary
                continue
            k = block.rfind(self.boundary + b"\r\n")
            if k >= 0:                           # junk where headers belong, then a boundary: start after it
                stats["bytes_skipped"] += k + len(self.boundary) + 2
                block = block[k + len(self.boundary) + 2:]
            h = _headers(block)
            n = h.get("content-length")
            if n is not None:
                if not n.isdigit() or int(n) > MAX_PART_BYTES:
                    stats["bad_parts"] += 1
                    continue
                body = self._read_exact(int(n))
            else:                               # no length: the body runs to the next boundary
                body = self._read_until(b"\r\n" + self.boundary, MAX_PART_BYTES)
                self.buf[:0] = self.boundary
            yield h, body, time.monotonic_ns(), time.time_ns()


class MjpegCamera(CameraSource):
    def __init__(self, url: str, *, width: int = 0, height: int = 0, timeout_ms: int = 1000,
                 reconnect_backoff_s: float = 0.5, reconnect_max_s: float = 10.0, reconnect_s: float = 30.0):
        self.url, self.size = url, (width, height)
        self.timeout_s = timeout_ms / 1000
        self.backoff = (reconnect_backoff_s, reconnect_max_s, reconnect_s)
        self.stop = threading.Event()
        self.stats = {"frames": 0, "bad_parts": 0, "bytes_skipped": 0, "timeouts": 0, "reconnects": 0,
                      "size_mismatch": 0, "last_error": ""}
        self._count = 0                         # frame numbers when the server sends none
        self.stream: MjpegStream | None = None
        try:
            self.stream = MjpegStream(url, self.timeout_s)   # a missing camera is a clear error at open time
        except StreamError as e:
            raise CameraError(f"MJPEG camera {url}: {e}") from None

    def close(self) -> None:
        self.stop.set()
        if self.stream is not None:
            self.stream.close()

    def _reconnect(self, why: str) -> bool:
        self.stats["last_error"] = why
        log.warning("MJPEG camera %s: %s; reconnecting", self.url, why)
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        bo = Backoff(*self.backoff, stop=self.stop)
        while bo.wait(time.monotonic()):
            try:
                self.stream = MjpegStream(self.url, self.timeout_s)
                self.stats["reconnects"] += 1
                return True
            except StreamError as e:
                self.stats["last_error"] = str(e)
        if self.stop.is_set():
            return False
        raise CameraDisconnected(f"MJPEG camera {self.url}: {why}; not back after {self.backoff[2]} s "
                                 f"({self.stats['last_error']})")

    def _frames(self):
        import cv2
        while not self.stop.is_set():
            if self.stream is None and not self._reconnect("not streaming"):
                return
            try:
                for h, jpeg, t_mono, t_wall in self.stream.parts(self.stats):
                    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
                    if img is None or img.ndim != 3:
                        self.stats["bad_parts"] += 1
                        continue
                    yield self._frame(h, img, len(jpeg), t_mono, t_wall)
                    if self.stop.is_set():
                        return
            except StreamError as e:
                if self.stop.is_set():
                    return
                if "no data" in str(e):
                    self.stats["timeouts"] += 1
                if not self._reconnect(str(e)):
                    return

    def _frame(self, h: dict, bgr: np.ndarray, nbytes: int, t_mono: int, t_wall: int) -> CameraFrame:
        fn_text = h.get("x-frame-number", "")
        if fn_text.isdigit():
            fn = int(fn_text)
        else:
            fn = self._count
        self._count += 1
        t_dev = parse_timestamp_ns(h.get("x-timestamp"))
        hh, ww = bgr.shape[:2]
        if self.size[0] and (ww, hh) != self.size:
            self.stats["size_mismatch"] += 1
        self.stats["frames"] += 1
        meta = {"driver": "mjpeg", "url": self.url, "timestamp_domain": "x-timestamp" if t_dev is not None else "host",
                "x_timestamp": h.get("x-timestamp"), "jpeg_bytes": nbytes, "reconnects": self.stats["reconnects"]}
        if fn_text.isdigit():
            meta["device_frame_number"] = fn
        return CameraFrame(np.ascontiguousarray(bgr[..., ::-1]), fn, t_dev, t_mono, t_wall, meta)

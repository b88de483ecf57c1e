"""An HTTP MJPEG server speaking mjpg-streamer's protocol (output_http plugin), which network cameras and
mjpg-streamer on a Raspberry Pi serve and browsers, VLC, OpenCV and drivers/camera/mjpeg.py read:

    GET /?action=stream   -> HTTP/1.0 200 OK, Content-Type: multipart/x-mixed-replace;boundary=boundarydonotcross
                             then per frame:  Content-Type: image/jpeg / Content-Length: N /
                             X-Timestamp: SEC.USEC (the frame's capture time on the camera's clock) /
                             [X-Frame-Number: K] / blank line / JPEG bytes / "\\r\\n--boundarydonotcross\\r\\n"
    GET /?action=snapshot -> one JPEG with its X-Timestamp

X-Frame-Number is radvis's addition (the camera's frame counter, like RealSense FRAME_COUNTER); mjpg-streamer
does not send it, and the driver then numbers frames itself. Every client gets the newest frame: a slow
client skips frames (counted) and never holds the camera or the other clients back.
"""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("radvis.sim.mjpeg")

BOUNDARY = "boundarydonotcross"
STD_HEADER = ("Connection: close\r\n"
              "Server: MJPG-Streamer/0.2 (radvis emulated camera)\r\n"
              "Cache-Control: no-store, no-cache, must-revalidate, pre-check=0, post-check=0, max-age=0\r\n"
              "Pragma: no-cache\r\n"
              "Expires: Mon, 3 Jan 2000 12:34:56 GMT\r\n")


def part_header(size: int, timestamp_us: int, frame_number: int | None) -> bytes:
    h = (f"Content-Type: image/jpeg\r\nContent-Length: {size}\r\n"
         f"X-Timestamp: {timestamp_us // 1_000_000}.{timestamp_us % 1_000_000:06d}\r\n")
    if frame_number is not None:
        h += f"X-Frame-Number: {frame_number}\r\n"
    return (h + "\r\n").encode()


class MjpegServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 8080, write_timeout_s: float = 5.0):
        self.cond = threading.Condition()
        self.latest: tuple[int, bytes, int, int] | None = None     # (seq, jpeg, timestamp_us, frame_number)
        self.closed = False
        self.stats = {"clients": 0, "connections": 0, "parts_sent": 0, "parts_skipped": 0}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):          # http.server prints to stderr by default
                log.debug("%s " + fmt, self.address_string(), *args)

            def do_GET(self):
                action = parse_qs(urlsplit(self.path).query).get("action", ["stream"])[0]
                self.connection.settimeout(write_timeout_s)   # a client that stops reading is dropped
                if action == "snapshot":
                    server._snapshot(self.wfile)
                elif action == "stream":
                    server._stream(self.wfile)
                else:
                    self.wfile.write(b"HTTP/1.0 404 Not Found\r\n" + STD_HEADER.encode() + b"Content-Type: text/plain"
                                     b"\r\n\r\nunknown action (use ?action=stream or ?action=snapshot)\r\n")

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="mjpeg-server", daemon=True)

    def url(self, action: str = "stream") -> str:
        return f"http://{self.host}:{self.port}/?action={action}"

    def start(self) -> "MjpegServer":
        self.thread.start()
        return self

    def publish(self, jpeg: bytes, timestamp_us: int, frame_number: int | None = None) -> None:
        """The camera's newest frame; every client sends it next."""
        with self.cond:
            seq = self.latest[0] + 1 if self.latest else 0
            self.latest = (seq, bytes(jpeg), int(timestamp_us), frame_number)
            self.cond.notify_all()

    def _next(self, after: int) -> tuple | None:
        with self.cond:
            self.cond.wait_for(lambda: self.closed or (self.latest is not None and self.latest[0] > after))
            return None if self.closed else self.latest

    def _snapshot(self, w) -> None:
        f = self._next(-1)
        if f is None:
            return
        _, jpeg, ts, fn = f
        w.write(b"HTTP/1.0 200 OK\r\n" + STD_HEADER.encode() + part_header(len(jpeg), ts, fn) + jpeg)

    def _stream(self, w) -> None:
        with self.cond:
            self.stats["clients"] += 1
            self.stats["connections"] += 1
        try:
            w.write(("HTTP/1.0 200 OK\r\nAccess-Control-Allow-Origin: *\r\n" + STD_HEADER
                     + f"Content-Type: multipart/x-mixed-replace;boundary={BOUNDARY}\r\n\r\n--{BOUNDARY}\r\n").encode())
            last = self.latest[0] if self.latest else -1     # a new client starts with the next frame
            while True:
                f = self._next(last)
                if f is None:
                    return
                seq, jpeg, ts, fn = f
                if last >= 0 and seq > last + 1:
                    self.stats["parts_skipped"] += seq - last - 1
                last = seq
                w.write(part_header(len(jpeg), ts, fn) + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.stats["parts_sent"] += 1
        except OSError:                     # the client went away (or stopped reading for write_timeout_s)
            return
        finally:
            with self.cond:
                self.stats["clients"] -= 1

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

"""An emulated board's UART as the host reaches it, so the driver opens it exactly as it opens hardware:

  * `socket://HOST:PORT`: a TCP server speaking the raw byte stream, which is what a serial-over-network
    bridge (ser2net, `socat TCP-LISTEN`) exposes and what pyserial's `serial_for_url` opens;
  * a filesystem path: a pty whose slave is linked at that path (socat's `pty,link=PATH`), as a USB-serial
    device appears at /dev/ttyACM0;
  * `pty`: a pty at whatever /dev/pts/N the kernel gives (tests read the path from `.url`).

A UART does not wait for a reader: bytes sent while no host is attached are lost, as on the wire. Every
method is non-blocking; the device's thread selects on `fds()` and calls `receive(fd)` when one is readable.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import tty
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("radvis.sim.serial")


class PtyPort:
    def __init__(self, link: str | None = None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)             # a UART: no line discipline translation
        os.set_blocking(self.master, False)
        self.tty = os.ttyname(self.slave)
        self.link = Path(link) if link else None
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(self.link.name + f".{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.tty, tmp)
            os.replace(tmp, self.link)     # atomically: a stale link of an earlier run is replaced
        self.url = str(self.link) if self.link is not None else self.tty

    @property
    def connected(self) -> bool:
        return True                        # a pty cannot tell whether the host has it open

    def fds(self) -> list[int]:
        return [self.master]

    def receive(self, fd: int) -> bytes:
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:       # no slave open: nothing to read
                return b""
            raise

    def send(self, data) -> int:
        """Bytes accepted (0 when the kernel buffer is full: the host is not reading)."""
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None:
            try:
                if os.readlink(self.link) == self.tty:
                    self.link.unlink()
            except OSError:
                pass


class TcpPort:
    """One host at a time, as ser2net does; a new connection replaces the previous one (a capture daemon
    that reconnects after a crash must not find its own stale connection holding the port)."""

    def __init__(self, host: str, port: int):
        self.server = socket.create_server((host, port), reuse_port=False)
        self.server.setblocking(False)
        self.host, self.port = self.server.getsockname()[:2]
        self.url = f"socket://{self.host}:{self.port}"
        self.client: socket.socket | None = None
        self.connections = 0

    @property
    def connected(self) -> bool:
        return self.client is not None

    def fds(self) -> list[int]:
        return [self.server.fileno()] + ([self.client.fileno()] if self.client is not None else [])

    def receive(self, fd: int) -> bytes:
        if fd == self.server.fileno():
            try:
                conn, peer = self.server.accept()
            except BlockingIOError:
                return b""
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._drop_client()
            self.client, self.connections = conn, self.connections + 1
            log.info("%s: host connected from %s:%d", self.url, *peer[:2])
            return b""
        if self.client is None or fd != self.client.fileno():
            return b""
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:                       # the host closed the port
            self._drop_client()
        return data

    def send(self, data) -> int:
        if self.client is None:
            return len(data)               # nobody attached: the bytes are gone, as on an open UART line
        try:
            return self.client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            self._drop_client()
            return len(data)

    def _drop_client(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except OSError:
                pass
            self.client = None

    def close(self) -> None:
        self._drop_client()
        self.server.close()


def serve_port(spec: str):
    """The port object for a config value: socket://HOST:PORT, a path, or `pty`."""
    if spec.startswith("socket://"):
        u = urlsplit(spec)
        if not u.hostname or u.port is None:
            raise ValueError(f"expected socket://HOST:PORT, got {spec!r}")
        return TcpPort(u.hostname, u.port)
    if "://" in spec:
        raise ValueError(f"the emulated board serves socket://HOST:PORT or a pty path, not {spec!r}")
    return PtyPort(None if spec in ("", "pty") else spec)

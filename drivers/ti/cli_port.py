"""Client of the TI mmWave demo's CLI (config) port, over any pyserial URL.

Protocol (reference §2.1): every byte we send is echoed; output lines end in "\\n\\r"; after each command
the demo prints `Done`, `Error <n>` (often after an `Error: ...` line), `'<cmd>' is not recognized as a CLI
command`, or for a `%` comment `Skipped`, and then the prompt `mmwDemo:/>` (no newline). We always read up
to the prompt that follows our echo, so a boot banner, stale prompts or late output never shift replies.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import serial

PROMPT = b"mmwDemo:/>"
log = logging.getLogger("radvis.ti.cli")
_BANNER = re.compile(rb"(xWR\w+) MMW Demo (\d+\.\d+\.\d+\.\d+)")


class CliError(RuntimeError):
    """The device refused a cfg line (or did not answer): names the line number, the line and the reply."""

    def __init__(self, msg: str, lineno: int | None = None, line: str = "", reply: str = ""):
        super().__init__(msg)
        self.lineno, self.line, self.reply = lineno, line, reply


@dataclass
class Reply:
    line: str
    status: str                 # done | error | ignored | skipped | unknown
    lines: list[str] = field(default_factory=list)   # the device's output lines (echo and prompt removed)
    code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "ignored", "skipped")

    @property
    def text(self) -> str:
        return " | ".join(self.lines)


def interpret(line: str, out_lines: list[str]) -> Reply:
    status, code = "unknown", None
    for ln in out_lines:
        if ln == "Done":
            status = "done" if status == "unknown" else status
        elif ln.startswith("Error ") and re.fullmatch(r"Error -?\d+", ln):
            status, code = "error", int(ln.split()[1])
        elif "is not recognized as a CLI command" in ln:
            status = "error"
        elif ln == "Skipped":
            status = "skipped"
    if status == "done" and any(ln.startswith("Ignored:") for ln in out_lines):
        status = "ignored"
    return Reply(line, status, out_lines, code)


class CliPort:
    """`CliPort(url)`; `.send(line) -> Reply`; `.configure(cfg_lines)` stops at the first failure."""

    def __init__(self, url: str, baudrate: int = 115200, timeout_s: float = 2.0):
        self.url, self.timeout_s = url, timeout_s
        try:
            self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, ValueError, OSError) as e:
            raise CliError(f"cannot open CLI port {url!r}: {e}") from None
        self.banner: dict | None = None
        self._rx = bytearray()

    def close(self) -> None:
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_some(self) -> None:
        try:
            chunk = self.ser.read(max(1, self.ser.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise CliError(f"CLI port {self.url!r} failed: {e}") from None
        if chunk:
            self._rx += chunk
            m = _BANNER.search(self._rx)
            if m:
                self.banner = {"platform": m.group(1).decode(), "version": m.group(2).decode()}

    def _drain(self) -> None:
        try:
            n = self.ser.in_waiting
            if n:
                self._rx += self.ser.read(n)
        except (serial.SerialException, OSError) as e:
            raise CliError(f"CLI port {self.url!r} failed: {e}") from None
        m = _BANNER.search(self._rx)
        if m:
            self.banner = {"platform": m.group(1).decode(), "version": m.group(2).decode()}

    def send(self, line: str, timeout_s: float | None = None) -> Reply:
        """Send one line, read its echo and output up to the next prompt."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        line = line.strip()
        self._drain()              # whatever is pending (banner, old prompts) is discarded
        self._rx.clear()
        data = line.encode() + b"\n"
        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise CliError(f"CLI port {self.url!r} failed: {e}") from None
        deadline = time.monotonic() + timeout_s
        echo = line.encode()
        while True:
            k = self._rx.find(echo + b"\n") if echo else self._rx.find(b"\n")
            if k >= 0:
                p = self._rx.find(PROMPT, k)
                if p >= 0:
                    body = self._rx[k + len(echo) + 1:p]
                    out = [s.strip() for s in re.split(rb"[\r\n]+", bytes(body)) if s.strip()]
                    r = interpret(line, [s.decode(errors="replace") for s in out])
                    del self._rx[:p + len(PROMPT)]
                    if not echo:
                        r.status = "done"
                    return r
            if time.monotonic() > deadline:
                got = bytes(self._rx[-200:])
                raise CliError(f"no prompt within {timeout_s:g} s after {line!r} (got {got!r})",
                               line=line, reply=got.decode(errors="replace"))
            self._read_some()

    def sync(self, timeout_s: float = 2.0) -> None:
        """Send an empty line until a prompt answers (swallows the boot banner)."""
        self.send("", timeout_s)

    def configure(self, lines, *, stop_first: bool = True, line_timeout_s: float | None = None,
                  source: str = "<cfg>") -> list[Reply]:
        """Send cfg lines (CfgLine objects or (lineno, text) / str). Stops at the first refused line.
        `stop_first`: send `sensorStop` first if the cfg does not, so a running sensor accepts the cfg."""
        items = []
        for k, ln in enumerate(lines, 1):
            if hasattr(ln, "lineno"):
                items.append((ln.lineno, ln.text))
            elif isinstance(ln, tuple):
                items.append(ln)
            else:
                items.append((k, str(ln)))
        items = [(n, t.strip()) for n, t in items if t.strip()]
        try:
            self.sync(self.timeout_s)
        except CliError as e:
            raise CliError(f"{source}: {self.url!r} does not answer like the mmWave demo CLI (is the demo firmware "
                           f"running and is this the CLI port, not the data port?): {e}", reply=e.reply) from None
        replies = []
        if stop_first and (not items or items[0][1].split()[0] != "sensorStop"):
            replies.append(self.send("sensorStop", line_timeout_s))
        for lineno, text in items:
            # sensorStart may run a calibration first: give it longer
            t = line_timeout_s if line_timeout_s is not None else (self.timeout_s * (3 if text.startswith("sensorStart") else 1))
            try:
                r = self.send(text, t)
            except CliError as e:
                raise CliError(f"{source}:{lineno}: {text!r}: {e}", lineno, text, e.reply) from None
            replies.append(r)
            if r.status == "ignored":
                (log.info if text.split()[0] == "sensorStop" else log.warning)("%s:%d: %r: %s", source, lineno, text, r.text)
            if not r.ok:
                raise CliError(f"{source}:{lineno}: {text!r} refused by the device: {r.text or '(no output)'}",
                               lineno, text, r.text)
        return replies

"""A byte-exact emulated TI mmWave board running the SDK 3.5 out-of-box demo (xWR18xx), on two UARTs that the
host reaches like hardware: ptys or TCP ports (sim/serial_port.py).

CLI port (reference §2.1): every received byte is echoed at once (`\\r` is echoed and turned into `\\n`),
output lines end in `\\n\\r`, the prompt `mmwDemo:/>` has no newline, the boot banner is printed once,
replies are `Done`, `Error <n>` (after an `Error: ...` line), `Ignored: ...`, `Skipped` for `%` comments,
and `'<cmd>' is not recognized as a CLI command`. The first `sensorStart` is refused unless the full SDK-3.5
configuration was issued.

Data port (reference §1.2-1.5): after `sensorStart`, one packet per frame period: 40-byte header (magic,
version 0x03050004, platform 0xA1843, frameNumber counting from 1 since boot, timeCpuCycles at 200 MHz),
the TLVs selected by `guiMonitor` in the firmware's order (1, 7, 2, 3, 4, 5, 6, 9), padding to a multiple
of 32 bytes filled with non-zero garbage (as the real stack memory is). TLV contents are derived from the
frame source's raw ADC cube the way the demo does (range FFT, Doppler FFT, log2-magnitude detection
matrix, zero-Doppler azimuth heatmap as complex int16 imaginary-first).

Fault injection (`faults` dict, per frame, at most one fault per frame):
    drop_every / drop_prob            frame generated (frame number used) but never sent
    duplicate_every / duplicate_prob  packet sent twice
    reorder_every / reorder_prob      packet held back and sent after the next one
    corrupt_every / corrupt_prob      corrupt_bytes bytes flipped in corrupt_region: any | magic | payload
    stall_every / stall_prob, stall_s the data port goes silent for stall_s; frames due meanwhile are lost
    seed                              RNG seed of the probabilistic faults and the padding garbage
`.counts` says exactly what was done, `.fault_frames[kind]` to which frame numbers.
"""
from __future__ import annotations

import math
import select
import struct
import threading
import time
from collections import Counter

import numpy as np

from drivers.ti.cfg import ARGC_SDK3, REQUIRED_FRAME, REQUIRED_SDK35, CfgError, parse_cfg
from drivers.ti.dsp import azimuth_antennas
from sim.render_radar import synth_adc
from sim.serial_port import serve_port

PROMPT = b"mmwDemo:/>"
MAGIC = b"\x02\x01\x04\x03\x06\x05\x08\x07"
VERSION = 0x03050004          # SDK 3.5.0.4
PLATFORM = 0xA1843
CPU_HZ = 200_000_000          # MSS R4F PMU cycle counter
BANNER = ("******************************************\n"
          "xWR18xx MMW Demo 03.05.00.04\n"
          "******************************************\n")
FAULT_KEYS = {"seed", "drop_every", "drop_prob", "duplicate_every", "duplicate_prob", "reorder_every",
              "reorder_prob", "corrupt_every", "corrupt_prob", "corrupt_bytes", "corrupt_region",
              "stall_every", "stall_prob", "stall_s"}
# commands that need no configuration and work while the sensor runs
_ANYTIME = {"sensorStop", "sensorStart", "version", "queryDemoStatus", "help", "configDataPort"}


# --------------------------------------------------------------------------------------------------
# CLI: a pure byte-in / byte-out state machine (the pty plumbing is in EmulatedTI)
# --------------------------------------------------------------------------------------------------
class DemoCli:
    def __init__(self, on_start=None, on_stop=None, on_data_port=None):
        self.on_start, self.on_stop, self.on_data_port = on_start, on_stop, on_data_port
        self.running = False
        self.started_once = False
        self.pending: list[str] = []       # config lines issued since boot / flushCfg
        self.applied_cfg = None            # RadarCfg active since the last sensorStart
        self.data_baud = 921600
        self._line = bytearray()
        self.lines_received = 0

    @staticmethod
    def out(text: str) -> bytes:
        # UART driver text mode: every "\n" written is followed by "\r"
        return text.replace("\n", "\n\r").encode()

    def boot(self) -> bytes:
        return self.out(BANNER) + PROMPT

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host -> bytes to the host (echo, replies, prompts)."""
        out = bytearray()
        for b in data:
            if b == 0x0D:                       # '\r': echoed, then converted to '\n' (echoed too)
                out += b"\r\n"
                out += self._end_line()
            elif b == 0x0A:
                out += b"\n"
                out += self._end_line()
            else:
                out.append(b)
                if len(self._line) < 255:       # the CLI reads at most 255 characters
                    self._line.append(b)
        return bytes(out)

    def _end_line(self) -> bytes:
        line = self._line.decode(errors="replace")
        self._line.clear()
        return self.out(self.execute(line)) + PROMPT

    def execute(self, line: str) -> str:
        if line.startswith("%"):
            return "Skipped\n"
        tok = line.split()
        if not tok:
            return ""
        self.lines_received += 1
        cmd, args = tok[0], tok[1:]
        if cmd not in ARGC_SDK3:
            return f"'{cmd}' is not recognized as a CLI command\n"
        want = ARGC_SDK3[cmd]
        if want is not None and len(tok) not in want:
            return "Error: Invalid usage of the CLI command\nError -1\n"
        if cmd == "sensorStop":
            if not self.running:
                return "Ignored: Sensor is already stopped\nDone\n"
            self.running = False
            if self.on_stop:
                self.on_stop()
            return "Done\n"
        if cmd == "sensorStart":
            return self._start(args)
        if cmd == "version":
            return ("Platform                : xWR18xx\nmmWave SDK Version      : 03.05.00.04\n"
                    "Device Info             : AWR18XX non-secure ES 02.00\nRF F/W Version          : 06.02.00.00\n"
                    "RF F/W Patch            : 00.00.00.00\nmmWaveLink Version      : 01.02.06.04\n"
                    "Lot number              : 7654321\nWafer number            : 12\nDie coordinates in wafer: X = 34, Y = 15\n"
                    "Done\n")
        if cmd == "queryDemoStatus":
            return f"Sensor State: {2 if self.running else (3 if self.started_once else 0)}\n" \
                   f"Data port baud rate: {self.data_baud}\nDone\n"
        if cmd == "help":
            return "".join(f"{c}\n" for c in sorted(ARGC_SDK3)) + "Done\n"
        if self.running and cmd not in _ANYTIME:
            return "Ignored: This command is not allowed after sensor has started\nDone\n"
        if cmd == "configDataPort":
            if self.running:
                return "Ignored: This command is not allowed after sensor has started\nDone\n"
            try:
                baud, ack = int(args[0]), int(args[1])
            except (ValueError, IndexError):
                return "Error: Invalid usage of the CLI command\nError -1\n"
            if baud > 3125000:
                return f"Ignored: Invalid baud rate ({baud}) specified\nDone\n"
            self.data_baud = baud
            if self.on_data_port:
                self.on_data_port(baud, ack == 1)
            return f"Data port baud rate changed to {baud}\nDone\n"
        if cmd == "flushCfg":
            self.pending = []
            return "Done\n"
        self.pending.append(line.strip())
        return "Done\n"

    def _start(self, args) -> str:
        if self.running:
            return "Ignored: Sensor is already started\nDone\n"
        if args and args[0] != "0":
            return "Error: Invalid usage of the CLI command\nError -1\n"
        out = ""
        if not self.started_once or not args:
            issued = {ln.split()[0] for ln in self.pending}
            need = REQUIRED_FRAME + REQUIRED_SDK35
            if not self.started_once and any(c not in issued for c in need):
                return ("Error: Full configuration must be provided before sensor can be started the first time\n"
                        "Error -1\n")
            try:
                self.applied_cfg = parse_cfg("\n".join(self.pending) + "\n", sdk=(3, 5))
            except CfgError as e:
                return f"Error: {e}\nError -1\n"
            if not self.started_once:
                out += "Debug: Init Calibration Status = 0x1ffe\n"
        self.started_once = True
        self.running = True
        if self.on_start:
            self.on_start(self.applied_cfg)
        return out + "Done\n"


# --------------------------------------------------------------------------------------------------
# Data port: what the demo computes and sends for one frame
# --------------------------------------------------------------------------------------------------
def _q9(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 512.0), 0, 65535).astype("<u2")


def detection_matrix(adc: np.ndarray, profile) -> tuple[np.ndarray, np.ndarray]:
    """Range FFT (Hann) -> Doppler FFT -> mean over antennas of log2|X| : [range, Doppler]; also the
    zero-Doppler range FFT per virtual antenna [range, antenna] (the static heatmap, before scaling)."""
    L, V, N = adc.shape
    win = np.hanning(N + 2)[1:-1].astype(np.float32)
    rfft = np.fft.fft(adc * win, n=profile.num_range_bins, axis=-1)          # [L, V, R]
    dfft = np.fft.fft(rfft, n=profile.num_doppler_bins, axis=0)              # [D, V, R]
    det = np.log2(np.abs(dfft) + 1.0).mean(axis=1).T                         # [R, D]
    static = rfft.sum(axis=0).T                                              # [R, V] = Doppler bin 0
    return det, static


def pick_points(det: np.ndarray, profile, static: np.ndarray, max_points: int = 32) -> np.ndarray:
    """A simple CFAR-like peak pick on the detection matrix (when the source gives no points)."""
    R, D = det.shape
    noise = np.median(det, axis=1, keepdims=True)
    thr = noise + 3.0                                      # log2 units: 3 = ~18 dB over the range-bin median
    peak = (det > thr) & (det >= np.roll(det, 1, 0)) & (det >= np.roll(det, -1, 0)) \
        & (det >= np.roll(det, 1, 1)) & (det >= np.roll(det, -1, 1))
    peak[:2] = False
    r_idx, d_idx = np.nonzero(peak)
    order = np.argsort(-det[r_idx, d_idx])[:max_points]
    pts = []
    for r, d in zip(r_idx[order], d_idx[order]):
        spec = np.abs(np.fft.fftshift(np.fft.fft(static[r], 64)))
        k = int(np.argmax(spec)) - 32
        s = np.clip(k / 32.0, -1, 1)
        az = math.asin(s)
        rng = r * profile.range_step_m
        dd = d if d < D // 2 else d - D
        pts.append((rng * math.sin(az), rng * math.cos(az), 0.0, dd * profile.velocity_resolution_mps))
    return np.array(pts, np.float32).reshape(-1, 4)


def demo_tlvs(content, profile, gui: dict, rng: np.random.Generator, frame_number: int,
              t_boot_s: float) -> tuple[list[tuple[int, bytes]], int]:
    """The TLVs the SDK 3.5 demo sends for this frame, in its order; returns (tlvs, numDetectedObj)."""
    adc = content.adc if content.adc is not None else demo_adc_from_points(content, profile, rng)
    det, static = detection_matrix(adc, profile)
    static = static[:, azimuth_antennas(profile)]
    points = content.points if content.points is not None else pick_points(det, profile, static)
    points = np.ascontiguousarray(points, "<f4").reshape(-1, 4)
    n = len(points)
    R, D = det.shape
    noise_prof = det[:, D // 2 - 1].copy()
    range_prof = det[:, 0] if content.range_profile is None else np.asarray(content.range_profile)
    noise_out = noise_prof if content.noise_profile is None else np.asarray(content.noise_profile)
    tlvs = []
    mode = gui.get("detected_objects", 1)
    if mode == 1 or (mode == 2 and n > 0):
        tlvs.append((1, points.tobytes()))     # SDK quirk: sent with length 0 when there are no points
    if mode == 1 and n > 0:
        r_bin = np.clip(np.round(np.hypot(points[:, 0], points[:, 1]) / profile.range_step_m), 0, R - 1).astype(int)
        d_bin = np.round(points[:, 3] / profile.velocity_resolution_mps).astype(int) % D
        db = 20 * math.log10(2)                                    # dB per log2 unit of magnitude
        snr = (det[r_bin, d_bin] - noise_prof[r_bin]) * db
        side = np.stack([np.round(snr * 10), np.round(noise_prof[r_bin] * db * 10)], 1)
        tlvs.append((7, np.clip(side, -32768, 32767).astype("<i2").tobytes()))
    if gui.get("log_mag_range"):
        tlvs.append((2, _q9(range_prof).tobytes()))
    if gui.get("noise_profile"):
        tlvs.append((3, _q9(noise_out).tobytes()))
    if gui.get("range_azimuth_heatmap"):
        # scaled into int16 like the demo's fixed-point FFT output; imaginary first (cmplx16ImRe_t)
        az = static / (adc.shape[0] * 8.0)
        w = np.empty(az.shape + (2,), np.float64)
        w[..., 0], w[..., 1] = az.imag, az.real
        tlvs.append((4, np.clip(np.round(w), -32768, 32767).astype("<i2").tobytes()))
    if gui.get("range_doppler_heatmap"):
        tlvs.append((5, _q9(det).tobytes()))
    if gui.get("stats"):
        uart_us = int((sum(8 + len(p) for _, p in tlvs) + 40 + 32 + 24 + 36) * 10 / 921600 * 1e6)
        proc = int(3000 + rng.integers(0, 600))
        period_us = int(profile.frame_period_ms * 1000)
        tlvs.append((6, struct.pack("<6I", proc, uart_us, max(0, period_us - proc - uart_us), 0,
                                    int(rng.integers(3, 7)), int(rng.integers(4, 9)))))
        temps = (45 + rng.integers(0, 4, 10)).astype(int).tolist()
        tlvs.append((9, struct.pack("<iI10h", 0, int(t_boot_s * 1000) & 0xFFFFFFFF, *temps)))
    return tlvs, n


def build_packet(frame_number: int, time_cpu_cycles: int, tlvs: list[tuple[int, bytes]], num_obj: int,
                 rng: np.random.Generator, subframe: int = 0) -> bytes:
    body = b"".join(struct.pack("<2I", t, len(p)) + p for t, p in tlvs)
    n = 40 + len(body)
    total = -(-n // 32) * 32
    head = MAGIC + struct.pack("<8I", VERSION, total, PLATFORM, frame_number & 0xFFFFFFFF,
                               time_cpu_cycles & 0xFFFFFFFF, num_obj, len(tlvs), subframe)
    pad = rng.integers(1, 256, total - n, dtype=np.uint8).tobytes()   # uninitialised stack memory: not zero
    return head + body + pad


# --------------------------------------------------------------------------------------------------
# The device: two UARTs, a thread, faults
# --------------------------------------------------------------------------------------------------
class EmulatedTI:
    """`EmulatedTI(profile_cfg_text, source, faults={...}, mode="uart", cli_port="pty", data_port="pty")`;
    `.start()`, `.stop()`; the host connects to `.cli_port_url` and `.data_port_url` with pyserial.
    Ports (sim/serial_port.py): `pty`, a path (a pty linked there) or `socket://HOST:PORT` (a TCP server, as
    ser2net); `data_port=None` serves no data port (its bytes are lost, as on an unplugged UART).
    `profile_cfg_text` is informational (the device is configured over its CLI port like the real one).
    `on_frame(frame_number, t_s, content)` is called for every frame the sensor captures (before faults act on
    the UART bytes); in mode "dca1000" `content.adc` is always filled, for the DCA1000 the board streams to
    over LVDS while the demo still sends its UART TLVs."""

    def __init__(self, profile_cfg_text: str | None = None, source=None, faults: dict | None = None,
                 mode: str = "uart", on_frame=None, time_fn=time.monotonic, cli_port: str = "pty",
                 data_port: str | None = "pty", data_baud: int | None = None):
        from sim.source import PointTargetSource
        self.cfg_text = profile_cfg_text
        self.source = source if source is not None else PointTargetSource()
        self.faults = dict(faults or {})
        bad = set(self.faults) - FAULT_KEYS
        if bad:
            raise ValueError(f"radar.faults: unknown key(s) {sorted(bad)} (expected some of {sorted(FAULT_KEYS)})")
        if self.faults.get("corrupt_region", "any") not in ("any", "magic", "payload"):
            raise ValueError(f"radar.faults.corrupt_region: expected any, magic or payload, "
                             f"got {self.faults['corrupt_region']!r}")
        if mode not in ("uart", "dca1000"):
            raise ValueError(f"mode: expected uart or dca1000, got {mode!r}")
        self.mode, self.on_frame, self.time_fn = mode, on_frame, time_fn
        self.port_specs = (cli_port, data_port)
        self.rng = np.random.default_rng(int(self.faults.get("seed", 0)))
        self.counts = Counter()
        self.fault_frames: dict[str, list[int]] = {k: [] for k in ("dropped", "duplicated", "reordered",
                                                                   "corrupted", "stalled")}
        self.cli = DemoCli(on_start=self._on_start, on_stop=self._on_stop, on_data_port=self._on_data_port)
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        self.cli_port = self.data_port = None
        self.cli_port_url = self.data_port_url = None
        self.frame_number = 0           # frameStartIntCounter: counts since boot, not reset by sensorStop
        self._next_t = None
        self._held = None               # packet held back by a reorder fault
        self._stall_until = 0.0
        self._tx = bytearray()          # pending data-port bytes
        # a UART sends 10 bits per byte (8N1) at data_baud: the host sees a frame's last byte its wire time
        # after the first, as sync's uart_time_s correction expects (None: as fast as the port takes them)
        self.data_baud = data_baud
        self._tx_credit, self._tx_t = 0.0, None
        self._t_boot = None
        self.profile = None
        self.gui = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "EmulatedTI":
        if self._thread is not None:
            return self                 # already running (`with EmulatedTI(...).start()`)
        cli_spec, data_spec = self.port_specs
        self.cli_port = serve_port(cli_spec)
        try:
            self.data_port = serve_port(data_spec) if data_spec is not None else None
        except Exception:
            self.cli_port.close()
            raise
        self.cli_port_url = self.cli_port.url
        self.data_port_url = self.data_port.url if self.data_port is not None else None
        self._t_boot = self.time_fn()
        self._write_cli(self.cli.boot())
        self._thread = threading.Thread(target=self._run, name="emulated-ti", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for port in (self.cli_port, self.data_port):
            if port is not None:
                port.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return self.cli.running

    # -- CLI callbacks ---------------------------------------------------------------------------
    def _on_start(self, rcfg) -> None:
        self.profile, self.gui = rcfg.profile, rcfg.gui_monitor
        self._next_t = self.time_fn() + rcfg.profile.frame_period_ms / 1000.0
        self.counts["starts"] += 1

    def _on_stop(self) -> None:
        self._next_t = None
        if self._held is not None:
            self._tx += self._held
            self._held = None

    def _on_data_port(self, baud: int, ack: bool) -> None:
        if ack:
            self._tx += b"\xff" * 16

    # -- I/O ---------------------------------------------------------------------------------------
    def _write_cli(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view:
            k = self.cli_port.send(view)
            view = view[k:]
            if view and not k:
                if time.monotonic() > deadline:     # the host stopped reading its CLI port
                    return
                time.sleep(0.001)

    @property
    def pending_bytes(self) -> int:
        """Data-port bytes generated but not yet written (the host has not read them yet)."""
        return len(self._tx)

    def _flush_data(self) -> None:
        if self.data_port is None:
            self._tx.clear()
            return
        if not self._tx:                # an idle line saves no credit: the next frame starts at the baud rate
            self._tx_credit, self._tx_t = 0.0, None
            return
        limit = len(self._tx)
        if self.data_baud:
            now = time.monotonic()
            rate = self.data_baud / 10.0
            self._tx_credit = min(self._tx_credit + (now - (self._tx_t or now)) * rate, 0.05 * rate)
            self._tx_t = now
            limit = min(limit, int(self._tx_credit))
        while self._tx and limit > 0:
            k = self.data_port.send(self._tx[:limit])
            if self.data_baud:
                self._tx_credit -= k
            limit -= k
            if not k:
                # nobody reads the data port: a UART just keeps sending, the host loses the bytes
                if len(self._tx) > 1 << 20:
                    self.counts["overflow_bytes"] += len(self._tx)
                    self._tx.clear()
                return
            self.counts["bytes_sent"] += k
            del self._tx[:k]

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.time_fn()
            timeout = 0.05
            if self.cli.running and self._next_t is not None:
                timeout = max(0.0, min(timeout, self._next_t - now))
            if self._tx:
                timeout = min(timeout, 0.005)
            owner = {fd: port for port in (self.cli_port, self.data_port) if port is not None for fd in port.fds()}
            try:
                r, _, _ = select.select(list(owner), [], [], timeout)
            except (OSError, ValueError):
                return
            for fd in r:
                data = owner[fd].receive(fd)
                if data and owner[fd] is self.cli_port:   # what the host sends to the data port is ignored
                    with self._lock:
                        self._write_cli(self.cli.feed(data))
            with self._lock:
                now = self.time_fn()
                while self.cli.running and self._next_t is not None and now >= self._next_t:
                    self._frame(self._next_t)
                    self._next_t += self.profile.frame_period_ms / 1000.0
                    if now - self._next_t > 1.0:          # fell far behind (suspended): skip ahead
                        self._next_t = now
                self._flush_data()

    # -- frames ------------------------------------------------------------------------------------
    def _decide(self, name: str, k: int) -> bool:
        every = int(self.faults.get(f"{name}_every", 0) or 0)
        if every and k % every == 0:
            return True
        p = float(self.faults.get(f"{name}_prob", 0.0) or 0.0)
        return bool(p and self.rng.random() < p)

    def _frame(self, t_s: float) -> None:
        self.frame_number += 1
        fn = self.frame_number
        k = self.counts["frames"] = self.counts["frames"] + 1
        if t_s < self._stall_until:
            self.counts["stalled_frames"] += 1
            self.fault_frames["stalled"].append(fn)
            return
        content = self.source.frame(fn, t_s, self.profile)
        if self.mode == "dca1000" and content.adc is None:
            content.adc = demo_adc_from_points(content, self.profile, self.rng)
        if self.on_frame is not None:
            self.on_frame(fn, t_s, content)
        if self.data_port is None or not self.data_port.connected:
            return                      # nobody can see the UART bytes: do not spend the CPU on them
        frng = np.random.default_rng([int(self.faults.get("seed", 0)), fn])
        tlvs, n = demo_tlvs(content, self.profile, self.gui, frng, fn, t_s - self._t_boot)
        cycles = int(round((t_s - self._t_boot) * CPU_HZ))
        pkt = build_packet(fn, cycles, tlvs, n, frng)
        self.counts["packets"] += 1
        # faults: at most one per frame, in this order
        stall_s = float(self.faults.get("stall_s", 0.0) or 0.0)
        if stall_s > 0 and self._decide("stall", k):
            self.counts["stalls"] += 1
            self._stall_until = t_s + stall_s
            self.counts["stalled_frames"] += 1
            self.fault_frames["stalled"].append(fn)
            return
        if self._decide("drop", k):
            self.counts["dropped"] += 1
            self.fault_frames["dropped"].append(fn)
            return
        if self._held is None and self._decide("reorder", k):
            self.counts["reordered"] += 1
            self.fault_frames["reordered"].append(fn)
            self._held = pkt
            return
        if self._decide("duplicate", k):
            self.counts["duplicated"] += 1
            self.fault_frames["duplicated"].append(fn)
            self._send(pkt)
        elif self._decide("corrupt", k):
            self.counts["corrupted"] += 1
            self.fault_frames["corrupted"].append(fn)
            pkt = self._corrupt(pkt)
        self._send(pkt)
        if self._held is not None:
            self._send(self._held)
            self._held = None

    def _send(self, pkt: bytes) -> None:
        self.counts["sent"] += 1
        self._tx += pkt

    def _corrupt(self, pkt: bytes) -> bytes:
        b = bytearray(pkt)
        region = self.faults.get("corrupt_region", "any")
        lo, hi = {"magic": (0, 8), "payload": (40, len(b)), "any": (0, len(b))}[region]
        for _ in range(int(self.faults.get("corrupt_bytes", 1) or 1)):
            i = int(self.rng.integers(lo, hi))
            b[i] ^= int(self.rng.integers(1, 256))
        return bytes(b)


def demo_adc_from_points(content, profile, rng) -> np.ndarray:
    """The ADC cube of a source that gives only detected points (each a point target, amplitude ~ 1 / range)."""
    pts = content.points if content.points is not None else np.zeros((0, 4), np.float32)
    tg = [{"range_m": float(math.hypot(p[0], p[1])), "azimuth_rad": float(math.atan2(p[0], p[1])),
           "velocity_mps": float(p[3]), "amplitude": 2000.0 / max(float(math.hypot(p[0], p[1])), 0.5)} for p in pts]
    return synth_adc(profile, tg, rng=rng, noise_counts=8.0, quantise=True)

"""Emulated DCA1000EVM: the config port (UDP 4096) and the raw-mode data stream (to host UDP 4098),
byte for byte as the board sends them (../shared/reference/ti_mmwave.md §3).

* Config: requests `5A A5 | cmd | size | data | AA EE` get 8-byte replies `5A A5 | cmd | status | AA EE`
  sent back to the requester; READ_FPGA_VERSION answers 0x0402 (v2.8, record image, as the real board in
  the fixtures); malformed payload sizes or unknown commands get status 1; broken framing gets nothing
  (the FPGA drops it). RECORD_STOP flushes the stream and then sends the async status 0x0A / 0x0100
  (REC_COMPLETED), as seen in test_one_frame.pcap.
* Data: frames are appended to one byte stream and cut into 1456-byte payloads; packet = `u32 seq` (from 1)
  `| u48 byteCount` (bytes sent before it) `| payload`. A remainder shorter than 1456 B goes out when the
  stream has been idle for `flush_timeout_s` (2 s on the board) or on RECORD_STOP.
* Faults (exact and recorded): drop / duplicate / reorder (hold a packet and send it after the next one) /
  stall (pause before a packet), chosen by sequence number or with a seeded probability. `stats` says
  exactly what was done, so tests can demand exact counts from the receiver.
"""
from __future__ import annotations

import logging
import random
import select
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from drivers.ti.dca1000 import PAYLOAD_SIZES, REC_COMPLETED, Cmd, decode_command, encode_reply
from drivers.ti.dca1000_receiver import MAX_PAYLOAD, raw_from_adc

log = logging.getLogger(__name__)

FPGA_VERSION = 0x0402   # v2.8 record image (test_cmd.pcap)


@dataclass
class DcaFaults:
    """Which packets to disturb: explicit sequence numbers (tests), every n-th packet, and/or a seeded
    probability. The `*_every`/`*_prob`/`stall_s`/`seed` keys are the same vocabulary as the UART emulator's
    `radar.faults`, so one config drives both; keys that only mean something for UART bytes are ignored."""
    drop: set = field(default_factory=set)
    duplicate: set = field(default_factory=set)
    reorder: set = field(default_factory=set)       # this seq is sent after the next packet
    stall: dict = field(default_factory=dict)       # seq → seconds to pause before sending it
    drop_every: int = 0
    duplicate_every: int = 0
    reorder_every: int = 0
    stall_every: int = 0
    drop_prob: float = 0.0
    duplicate_prob: float = 0.0
    reorder_prob: float = 0.0
    stall_prob: float = 0.0
    stall_s: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, d: dict | None) -> "DcaFaults":
        d = dict(d or {})
        kw: dict = {}
        for k in ("drop", "duplicate", "reorder"):
            if k in d:
                kw[k] = {int(x) for x in d[k]}
        if "stall" in d:
            kw["stall"] = {int(k): float(v) for k, v in dict(d["stall"]).items()}
        for k in ("drop_every", "duplicate_every", "reorder_every", "stall_every", "seed"):
            if k in d:
                v = int(d[k])
                if v < 0:
                    raise ValueError(f"radar.faults.{k}={v}, expected >= 0")
                kw[k] = v
        for k in ("drop_prob", "duplicate_prob", "reorder_prob", "stall_prob"):
            if k in d:
                v = float(d[k])
                if not 0 <= v <= 1:
                    raise ValueError(f"radar.faults.{k}={v}, expected 0..1")
                kw[k] = v
        if "stall_s" in d:
            kw["stall_s"] = float(d["stall_s"])
        return cls(**kw)

    def hit(self, kind: str, seq: int, rng: random.Random) -> bool:
        every = getattr(self, f"{kind}_every")
        prob = getattr(self, f"{kind}_prob")
        return (seq in getattr(self, kind) or (every > 0 and seq % every == 0)
                or (prob > 0 and rng.random() < prob))


@dataclass
class DcaEmulatorStats:
    commands: int = 0
    bad_commands: int = 0           # framing broken: no reply
    failed_commands: int = 0        # answered with status 1
    frames: int = 0                 # frames appended while recording
    frames_not_recording: int = 0   # frames offered while not recording (the board discards them)
    packets: int = 0                # distinct packets made (seq numbers used)
    payload_bytes: int = 0          # stream bytes (each byte once)
    sent_datagrams: int = 0         # datagrams put on the wire (duplicates included)
    dropped: list = field(default_factory=list)       # seq numbers dropped
    dropped_bytes: int = 0
    duplicated: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    stalls: int = 0
    stall_s: float = 0.0
    short_packets: int = 0          # remainder packets (< 1456 B)

    def to_dict(self) -> dict:
        return asdict(self)


class DCA1000Emulator:
    """`config_address` is the board's config port (host sends commands there); data goes to `data_dest`
    from the socket at `data_source` (port 1024 on hardware). Call `start()` to serve, `send_frame()` per
    radar frame (bytes or complex ADC), `close()` at the end."""

    def __init__(self, *, host: str = "127.0.0.1", config_port: int = 0, data_dest: tuple[str, int] = ("127.0.0.1", 4098),
                 data_source_port: int = 0, iq_order: str = "qi", faults: DcaFaults | dict | None = None,
                 fpga_version: int = FPGA_VERSION, flush_timeout_s: float = 2.0, payload_size: int = MAX_PAYLOAD,
                 sndbuf_bytes: int = 8 << 20):
        self.faults = faults if isinstance(faults, DcaFaults) else DcaFaults.from_config(faults)
        self._rng = random.Random(self.faults.seed)
        self.iq_order = iq_order
        self.fpga_version = fpga_version
        self.flush_timeout_s = flush_timeout_s
        self.payload_size = payload_size
        self.data_dest = tuple(data_dest)
        self.stats = DcaEmulatorStats()
        self.fpga_config: bytes | None = None
        self.record_config: bytes | None = None
        self.recording = False
        self.cfg_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.cfg_sock.bind((host, config_port))
        self.config_address = self.cfg_sock.getsockname()
        self.data_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.data_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf_bytes)
        self.data_sock.bind((host, data_source_port))
        self.data_source = self.data_sock.getsockname()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._host_cfg: tuple | None = None      # where async status goes (last requester)
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.stream_frames = 0                   # frames appended since RECORD_START (the host numbers frames so)
        self._seq = 0
        self._byte_count = 0
        self._pending = bytearray()
        self._held: bytes | None = None          # a packet held back for reordering
        self._last_data = time.monotonic()

    # config port -----------------------------------------------------------------------------------
    def start(self) -> "DCA1000Emulator":
        self._thread = threading.Thread(target=self._serve, name="dca1000-emu", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select((self.cfg_sock,), (), (), 0.05)
            if r:
                try:
                    buf, addr = self.cfg_sock.recvfrom(4096)
                except OSError:
                    break
                self.handle_request(buf, addr)
            with self._lock:
                if (self._pending and self.recording
                        and time.monotonic() - self._last_data >= self.flush_timeout_s):
                    self._flush_locked()

    def handle_request(self, buf: bytes, addr) -> None:
        self.stats.commands += 1
        try:
            cmd, data = decode_command(buf)
        except ValueError as e:
            self.stats.bad_commands += 1
            log.debug("DCA1000 emulator: dropped request: %s", e)
            return
        self._host_cfg = addr
        want = PAYLOAD_SIZES.get(cmd, "unknown")
        if want == "unknown" or (want is not None and len(data) != want):
            self.stats.failed_commands += 1
            self._reply(cmd, 1, addr)
            return
        status = 0
        if cmd == Cmd.READ_FPGA_VERSION:
            status = self.fpga_version
        elif cmd == Cmd.CONFIG_FPGA_GEN:
            if data[0] not in (1, 2) or data[1] not in (1, 2) or data[4] not in (1, 2, 3):
                status = 1
            else:
                self.fpga_config = data
        elif cmd == Cmd.CONFIG_PACKET_DATA:
            self.record_config = data
        elif cmd == Cmd.RECORD_START:
            with self._lock:
                self._reset_stream()
                self.recording = True
        elif cmd in (Cmd.RESET_FPGA,):
            with self._lock:
                self.recording = False
                self._reset_stream()
        was = False
        if cmd == Cmd.RECORD_STOP:
            # stop (and flush the short remainder) before replying: a host that sees the reply must find
            # the board stopped; the async REC_COMPLETED still follows the reply on the wire
            with self._lock:
                was = self.recording
                if was:
                    self._flush_locked()
                    self.recording = False
        if status and cmd != Cmd.READ_FPGA_VERSION:   # the version reply carries the version in its status
            self.stats.failed_commands += 1
        self._reply(cmd, status, addr)
        if was:
            self._reply(Cmd.SYSTEM_ERROR, REC_COMPLETED, addr)

    def _reply(self, cmd: int, status: int, addr) -> None:
        self.cfg_sock.sendto(encode_reply(cmd, status), addr)

    # data stream -----------------------------------------------------------------------------------
    def start_recording(self) -> None:
        """As if RECORD_START had arrived (for callers that drive the emulator directly)."""
        with self._lock:
            self._reset_stream()
            self.recording = True

    def send_frame(self, frame) -> int | None:
        """Append one frame (bytes, or complex ADC [chirps, virt, samples] packed with `iq_order`) to the
        stream and send every full packet. Returns the frame's index in this recording (0-based: it starts at
        byte index x frame size, which is how the host numbers it), or None if not recording (the board
        drops it)."""
        data = frame if isinstance(frame, (bytes, bytearray, memoryview)) else raw_from_adc(np.asarray(frame), self.iq_order)
        with self._lock:
            if not self.recording:
                self.stats.frames_not_recording += 1
                return None
            self.stats.frames += 1
            index = self.stream_frames
            self.stream_frames += 1
            self._pending += data
            n = self.payload_size
            off = 0
            while len(self._pending) - off >= n:
                self._packet(bytes(self._pending[off:off + n]))
                off += n
            del self._pending[:off]
            self._last_data = time.monotonic()
        return index

    def flush(self) -> None:
        """Send the short remainder now (the board does this after 2 s without LVDS data)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending:
            self.stats.short_packets += 1
            self._packet(bytes(self._pending))
            self._pending.clear()
        if self._held is not None:             # nothing came after a held packet: send it now
            self._send(self._held)
            self._held = None

    def _packet(self, payload: bytes) -> None:
        self._seq += 1
        seq, bc = self._seq, self._byte_count
        self._byte_count += len(payload)
        st, f = self.stats, self.faults
        st.packets += 1
        st.payload_bytes += len(payload)
        pkt = struct.pack("<IIH", seq, bc & 0xFFFFFFFF, bc >> 32) + payload
        pause = f.stall.get(seq, f.stall_s if f.hit("stall", seq, self._rng) else 0.0)
        if pause:
            time.sleep(pause)
            st.stalls += 1
            st.stall_s += pause
        if f.hit("drop", seq, self._rng):
            st.dropped.append(seq)
            st.dropped_bytes += len(payload)
            self._release_held()
            return
        if self._held is None and f.hit("reorder", seq, self._rng):
            self._held = pkt
            st.reordered.append(seq)
            return
        self._send(pkt)
        if f.hit("duplicate", seq, self._rng):
            st.duplicated.append(seq)
            self._send(pkt)
        self._release_held()

    def _release_held(self) -> None:
        if self._held is not None and self._held[:4] != struct.pack("<I", self._seq):
            self._send(self._held)
            self._held = None

    def _send(self, pkt: bytes) -> None:
        while True:
            try:
                self.data_sock.sendto(pkt, self.data_dest)
                break
            except BlockingIOError:
                time.sleep(0.0005)
            except ConnectionRefusedError:
                break                           # nobody listening yet (ICMP): the board does not care either
        self.stats.sent_datagrams += 1

    def stream(self, source, profile, n_frames: int, period_s: float | None = None, start_frame: int = 0) -> None:
        """Send `n_frames` frames from a FrameSource (`.frame(n, t_s, profile).adc`, t_s = n × frame period)
        paced at `period_s` of wall time (default the profile's frame period; 0 = as fast as possible)."""
        frame_s = profile.frame_period_ms / 1000
        period = frame_s if period_s is None else period_s
        t0 = time.monotonic()
        for i in range(n_frames):
            k = start_frame + i
            content = source.frame(k, k * frame_s, profile)
            self.send_frame(content.adc)
            if period:
                delay = t0 + (i + 1) * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.cfg_sock.close()
        self.data_sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def blast(dest: tuple[str, int], seconds: float, rate_bps: float = 0.0, frame_bytes: int = 131072,
          result=None) -> dict:
    """Send a DCA1000 data stream (1456-byte payloads, real seq/byteCount headers) to `dest` for `seconds`,
    paced to `rate_bps` of UDP payload (0 = as fast as possible). For the receive benchmark: run it in another
    process. Payload bytes are a fixed pattern; returns packets and bytes sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.connect(tuple(dest))
    n = MAX_PAYLOAD
    pkt = bytearray(10 + n)
    pkt[10:] = (np.arange(n, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8).tobytes()
    pack = struct.Struct("<IIH").pack_into
    send = sock.send
    seq, bc = 0, 0
    t0 = time.perf_counter()
    end = t0 + seconds
    per_packet = (10 + n) * 8 / rate_bps if rate_bps else 0.0
    batch = 64
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if per_packet and now < t0 + seq * per_packet:
            continue                                 # spin: sleep() is far too coarse at µs pacing
        for _ in range(batch):
            seq += 1
            pack(pkt, 0, seq, bc & 0xFFFFFFFF, bc >> 32)
            bc += n
            try:
                send(pkt)
            except BlockingIOError:
                pass
            except ConnectionRefusedError:
                pass
    sock.close()
    out = {"packets": seq, "payload_bytes": bc, "seconds": time.perf_counter() - t0}
    if result is not None:
        result.update(out)
    return out

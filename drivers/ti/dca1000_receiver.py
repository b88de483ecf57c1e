"""DCA1000 raw-ADC data path: UDP packets on port 4098 → fixed-size frames → complex ADC cubes.

A data packet is `u32 seq | u48 byteCount | payload (≤ 1456 B)`; byteCount counts the payload bytes the
FPGA sent before this packet. Raw mode has no frame markers, so frame k is bytes [k·F, (k+1)·F) of the
stream (F = bytes per frame from the chirp profile): frames are cut by byte count modulo F, never at
packet boundaries (a 1456-byte packet regularly straddles two frames). Lost packets leave zeros in the
frame and are counted exactly from byte counts (not from seq × 1456: the last packet of a burst can be
short); duplicates and reordered packets are recognised by their byte count.

`FrameAssembler` is the pure state machine (also used for pcap/bin files); `DataReceiver` owns the socket
and keeps up with the board's full rate: one preallocated packet buffer, `recv_into`, a large SO_RCVBUF,
payloads copied once straight into the frame buffer. `adc_from_raw` turns frame bytes into complex64
`[chirps (loops), virtual antennas, samples]` with the device's I/Q order.
"""
from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

PACKET_HEADER = 10          # u32 seq + u48 byteCount
MAX_PAYLOAD = 1456          # FPGA raw-mode payload (91 × 16 B keeps I/Q groups whole)
MAX_DATAGRAM = 2048         # receive buffer per datagram; anything longer is truncated → malformed
_HDR = struct.Struct("<IIH")


@dataclass
class RawFrame:
    frame_number: int       # byteCount // frame_bytes of the frame's first byte
    data: np.ndarray        # uint8 [frame_bytes]; lost bytes are zero
    complete: bool
    lost_bytes: int
    packets: int            # packets that contributed bytes
    t_first_ns: int         # arrival (monotonic) of the first / last contributing packet (0 for files w/o times)
    t_last_ns: int


@dataclass
class ReceiverStats:
    packets: int = 0            # datagrams seen
    malformed: int = 0          # too short / too long: dropped
    duplicates: int = 0         # same byteCount again: dropped
    reordered: int = 0          # arrived after a higher seq, still placed in its frame
    late: int = 0               # arrived after its frame was emitted: bytes already counted lost
    payload_bytes: int = 0      # unique payload bytes written into frames
    lost_bytes: int = 0         # zero-filled bytes over all emitted frames (exact)
    lost_packets: int = 0       # seq numbers never received (updated as frames are emitted and on flush)
    frames: int = 0
    frames_complete: int = 0
    frames_incomplete: int = 0
    restarts: int = 0           # stream restarted (seq 1, byteCount 0 again: RECORD_STOP/START)
    resyncs: int = 0            # implausible byteCount jump: window restarted there
    skipped_bytes: int = 0      # bytes of whole frames skipped by a resync (not emitted)

    def to_dict(self) -> dict:
        return asdict(self)


class _Slot:
    __slots__ = ("buf", "mv", "filled", "seen", "packets", "t_first", "t_last")

    def __init__(self, frame_bytes: int, t_ns: int):
        self.buf = bytearray(frame_bytes)       # zero-filled: lost bytes stay zero
        self.mv = memoryview(self.buf)
        self.filled = 0
        self.seen: set[int] = set()             # byteCounts of packets written here (duplicate check)
        self.packets = 0
        self.t_first = t_ns
        self.t_last = t_ns


class FrameAssembler:
    """Cut a DCA1000 packet stream into frames of `frame_bytes` by byte count.

    `window` frames are open at once: a frame is emitted as soon as it is complete and every earlier frame
    has been emitted, or (incomplete, with its lost bytes counted) when a packet arrives for a frame `window`
    or more beyond it, or on `flush()`. The window is `window_frames`, widened for small frames so that it
    spans at least `reorder_bytes` (packets displaced by up to that much are still placed, not late).
    Emitted frames queue in `.ready`."""

    def __init__(self, frame_bytes: int, window_frames: int = 2, max_gap_frames: int = 256,
                 reorder_bytes: int = 32 * MAX_PAYLOAD):
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes={frame_bytes}, expected > 0")
        self.frame_bytes = int(frame_bytes)
        self.window = max(1, int(window_frames), 1 + -(-int(reorder_bytes) // self.frame_bytes))
        self.max_gap = int(max_gap_frames)
        self.stats = ReceiverStats()
        self.ready: deque[RawFrame] = deque()
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._cur: _Slot | None = None          # slot the last in-order packet went to (fast path)
        self._cur_start = 0
        self._base: int | None = None           # lowest frame not yet emitted
        self._emitted = 0                       # frames emitted this epoch
        self._slots: dict[int, _Slot] = {}
        self._recent: dict[int, set[int]] = {}  # seen-sets of recently emitted frames (late vs duplicate)
        self._max_seq = 0
        self._min_seq: int | None = None
        self._unique = 0                        # distinct packets this epoch (for lost_packets)
        self._lost_pk_base = self.stats.lost_packets

    # ------------------------------------------------------------------------------------------------
    def feed_datagram(self, mv: memoryview, n: int, t_ns: int = 0) -> None:
        """Feed one received datagram of `n` bytes held in `mv` (a reusable buffer)."""
        st = self.stats
        st.packets += 1
        if n < PACKET_HEADER or n > PACKET_HEADER + MAX_PAYLOAD:
            st.malformed += 1
            return
        seq, lo, hi = _HDR.unpack_from(mv)
        bc = lo | (hi << 32)
        slot = self._cur
        if slot is not None and seq == self._max_seq + 1:
            # fast path: the next packet in order, landing inside the frame the previous one went to
            o = bc - self._cur_start
            plen = n - PACKET_HEADER
            if 0 <= o and o + plen < self.frame_bytes:
                slot.mv[o:o + plen] = mv[PACKET_HEADER:n]
                slot.filled += plen
                slot.seen.add(bc)
                slot.packets += 1
                slot.t_last = t_ns
                st.payload_bytes += plen
                self._max_seq = seq
                self._unique += 1
                return
        self.feed(seq, bc, mv[PACKET_HEADER:n], t_ns, counted=True)

    def feed(self, seq: int, byte_count: int, payload, t_ns: int = 0, *, counted: bool = False) -> None:
        st = self.stats
        if not counted:
            st.packets += 1
        fb = self.frame_bytes
        plen = len(payload)
        if plen == 0:
            st.malformed += 1
            return
        if seq == 1 and byte_count == 0 and self._base is not None and self._base > self.window:
            # board restarted recording (frame 0 is long gone, so this is no late or duplicate packet):
            # close the old stream, start frame numbering again
            self.flush()
            st.restarts += 1
            self._reset_epoch()
        end = byte_count + plen
        k0 = byte_count // fb
        k1 = (end - 1) // fb
        base = self._base
        if base is None:
            base = self._base = k0
            self._min_seq = seq
        elif k1 - base >= self.window + self.max_gap or k0 < base - self.max_gap:
            # implausible jump (corrupt header or a foreign stream): restart the window here
            self.flush()
            st.resyncs += 1
            st.skipped_bytes += max(0, k0 - (self._base or k0)) * fb
            keep = st.lost_packets
            self._reset_epoch()
            self._lost_pk_base = keep
            base = self._base = k0
            self._min_seq = seq

        # duplicate / late check (by byteCount, in every frame this packet touches)
        for k in range(k0, k1 + 1):
            slot = self._slots.get(k)
            seen = slot.seen if slot is not None else self._recent.get(k)
            if seen is not None and byte_count in seen:
                st.duplicates += 1
                return
        if seq < self._max_seq:
            st.reordered += 1
        else:
            self._max_seq = seq
        if self._min_seq is None or seq < self._min_seq:
            self._min_seq = seq
        self._unique += 1

        if k0 < base and not self._emitted and max(self._slots, default=k0) - k0 < self.window:
            base = self._base = k0                # nothing emitted yet: the first packet was a reordered one
        if k1 >= base + self.window:              # packet is beyond the window: push old frames out
            self._emit_until(k1 - self.window + 1)
            base = self._base
        if k0 < base:
            st.late += 1
            if k1 < base:
                return
        # copy the payload into the frame(s) it covers
        slots = self._slots
        pos = byte_count
        off_in_payload = 0
        k = k0
        while pos < end:
            frame_start = k * fb
            take = min(end, frame_start + fb) - pos
            if k >= base:
                slot = slots.get(k)
                if slot is None:
                    slot = slots[k] = _Slot(fb, t_ns)
                o = pos - frame_start
                slot.mv[o:o + take] = payload[off_in_payload:off_in_payload + take]
                slot.filled += take
                slot.seen.add(byte_count)
                slot.packets += 1
                slot.t_last = t_ns
                st.payload_bytes += take
                self._cur, self._cur_start = slot, frame_start
            pos += take
            off_in_payload += take
            k += 1
        # emit frames that are complete, in order
        slot = slots.get(self._base)
        while slot is not None and slot.filled >= fb:
            self._emit_one()
            slot = slots.get(self._base)

    def _emit_one(self) -> None:
        k = self._base
        slot = self._slots.pop(k, None)
        if slot is not None and slot is self._cur:
            self._cur = None
        fb = self.frame_bytes
        st = self.stats
        if slot is None:
            slot_filled, data, packets, t0, t1, seen = 0, np.zeros(fb, np.uint8), 0, 0, 0, set()
        else:
            slot_filled = min(slot.filled, fb)
            slot.mv.release()
            data = np.frombuffer(slot.buf, np.uint8)
            packets, t0, t1, seen = slot.packets, slot.t_first, slot.t_last, slot.seen
        lost = fb - slot_filled
        st.frames += 1
        st.lost_bytes += lost
        if lost:
            st.frames_incomplete += 1
        else:
            st.frames_complete += 1
        self._recent[k] = seen
        self._recent.pop(k - self.window - 1, None)
        self._base = k + 1
        self._emitted += 1
        self._update_lost_packets()
        self.ready.append(RawFrame(k, data, lost == 0, lost, packets, t0, t1))

    def _emit_until(self, k_stop: int) -> None:
        while self._base < k_stop:     # frames never seen are emitted all-zero, all bytes lost
            self._emit_one()

    def _update_lost_packets(self) -> None:
        if self._min_seq is not None:
            span = self._max_seq - self._min_seq + 1
            self.stats.lost_packets = self._lost_pk_base + max(0, span - self._unique)

    def flush(self) -> None:
        """Emit every open frame (the stream ended or went idle); missing bytes count as lost."""
        if self._base is None:
            return
        if self._slots:
            last = max(self._slots)
            while self._base <= last:
                self._emit_one()
        self._update_lost_packets()

    def pop_ready(self) -> list[RawFrame]:
        out = list(self.ready)
        self.ready.clear()
        return out


class DataReceiver:
    """Live DCA1000 data receiver on UDP (`bind`, 192.168.33.30:4098 on hardware).

    `board`, when given, connects the socket to the FPGA's data source address (192.168.33.180:1024) so
    the kernel drops datagrams from anyone else. `poll(timeout_s)` receives until at least one frame is
    ready or the timeout passes; frames still open after `idle_flush_s` without data are emitted
    incomplete (the FPGA itself flushes a short packet after 2 s)."""

    def __init__(self, frame_bytes: int, bind: tuple[str, int] = ("192.168.33.30", 4098), *,
                 board: tuple[str, int] | None = None, rcvbuf_bytes: int = 32 << 20, window_frames: int = 2,
                 idle_flush_s: float = 3.0):
        self.asm = FrameAssembler(frame_bytes, window_frames)
        self.stats = self.asm.stats
        self.idle_flush_s = idle_flush_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        # Linux doubles the request and caps it at net.core.rmem_max; say so, it is the usual cause of loss
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if self.rcvbuf < min(rcvbuf_bytes, 4 * frame_bytes):
            log.warning("SO_RCVBUF is %d bytes (asked %d); raise net.core.rmem_max to avoid packet loss",
                        self.rcvbuf, rcvbuf_bytes)
        try:
            self.sock.bind(tuple(bind))
            if board is not None:
                self.sock.connect(tuple(board))
        except OSError as e:
            self.sock.close()
            raise OSError(f"cannot bind DCA1000 data socket to {bind[0]}:{bind[1]}: {e}") from e
        self.address = self.sock.getsockname()
        self.sock.setblocking(False)
        self._buf = bytearray(MAX_DATAGRAM)
        self._mv = memoryview(self._buf)
        self._last_rx = time.monotonic()

    def poll(self, timeout_s: float = 1.0) -> list[RawFrame]:
        asm, sock, buf, mv = self.asm, self.sock, self._buf, self._mv
        ready = asm.ready
        recv_into = sock.recv_into
        feed = asm.feed_datagram
        now_ns = time.monotonic_ns
        deadline = time.monotonic() + timeout_s
        while not ready:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                t = time.monotonic()
                if asm._slots and t - self._last_rx > self.idle_flush_s:
                    asm.flush()
                    break
                left = deadline - t
                if left <= 0:
                    break
                select.select((sock,), (), (), min(left, self.idle_flush_s))
                continue
            except ConnectionRefusedError:
                continue        # ICMP from a connected peer; not data
            self._last_rx = time.monotonic()
            feed(mv, n, now_ns())
        return asm.pop_ready()

    def __iter__(self):
        while True:
            yield from self.poll(1.0)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------------
# frame bytes → complex ADC

def _get(profile, name):
    v = getattr(profile, name, None)
    if v is None:
        raise ValueError(f"chirp profile has no {name!r}")
    return int(v)


def lvds_lanes(profile) -> int:
    """xWR12xx/14xx stream on 4 LVDS lanes (all 4 always present), the others on 2."""
    platform = str(getattr(profile, "platform", "") or "")
    return 4 if ("14" in platform[:6] or "12" in platform[:6]) else 2


def raw_frame_bytes(profile, lanes: int | None = None) -> int:
    """Bytes per frame on the DCA1000 for complex 16-bit ADC: samples × rx × chirps × 4."""
    lanes = lanes or lvds_lanes(profile)
    rx = 4 if lanes == 4 else _get(profile, "num_rx")
    n = _get(profile, "num_adc_samples") * rx * _get(profile, "chirps_per_frame") * 4
    declared = getattr(profile, "bytes_per_frame_raw", None)
    if lanes == 2 and declared is not None and int(declared) != n:
        raise ValueError(f"profile.bytes_per_frame_raw={declared} but samples×rx×chirps×4 = {n}")
    return n


def default_iq_order(mode: str = "sdk") -> str:
    """'qi' (Q first) for the SDK demo's LVDS stream (adcbufCfg SampleSwap=1), 'iq' for mmWave Studio."""
    return "iq" if mode in ("studio", "mmwave_studio", "iq") else "qi"


def complex_from_words(words: np.ndarray, iq_order: str = "qi") -> np.ndarray:
    """2-lane (xWR16/18/68xx) word stream → flat complex64 in wire order.

    Each group of 4 int16 words is X(n) X(n+1) Y(n) Y(n+1); for 'iq' X=I, Y=Q, for 'qi' X=Q, Y=I."""
    if iq_order not in ("iq", "qi"):
        raise ValueError(f"iq_order={iq_order!r}, expected 'iq' or 'qi'")
    w = np.asarray(words, dtype="<i2")
    if w.size % 4:
        raise ValueError(f"{w.size} int16 words is not a multiple of 4 (one 2-lane I/Q group)")
    g = w.reshape(-1, 4)
    x, y = g[:, 0:2], g[:, 2:4]
    re, im = (x, y) if iq_order == "iq" else (y, x)
    out = np.empty((g.shape[0], 2), np.complex64)
    f = out.view(np.float32).reshape(g.shape[0], 2, 2)
    f[..., 0] = re
    f[..., 1] = im
    return out.reshape(-1)


def adc_from_raw(raw, profile, iq_order: str = "qi", lanes: int | None = None) -> np.ndarray:
    """One frame of DCA1000 bytes → complex64 [loops, virtual antennas (tx-major), samples].

    Chirps follow the chirpCfg order inside a loop (TDM: tx0, tx1, ...); virtual antenna = tx·num_rx + rx."""
    lanes = lanes or lvds_lanes(profile)
    ns, nrx = _get(profile, "num_adc_samples"), _get(profile, "num_rx")
    ntx, nloops = _get(profile, "num_tx"), _get(profile, "num_loops")
    nchirps = _get(profile, "chirps_per_frame")
    if nchirps != ntx * nloops:
        raise ValueError(f"chirps_per_frame={nchirps} is not num_tx×num_loops={ntx}×{nloops}")
    words = np.frombuffer(raw, dtype="<i2") if not isinstance(raw, np.ndarray) else raw.view("<i2").reshape(-1)
    want = raw_frame_bytes(profile, lanes) // 2
    if words.size != want:
        raise ValueError(f"frame has {words.size * 2} bytes, profile needs {want * 2}")
    if lanes == 2:
        c = complex_from_words(words, iq_order).reshape(nchirps, nrx, ns)
    else:
        # xWR14xx 4-lane: per sample time I_rx0..3 then Q_rx0..3 (swapped when Q first)
        g = words.reshape(nchirps, ns, 2, 4).astype(np.float32)
        re, im = (g[:, :, 0], g[:, :, 1]) if iq_order == "iq" else (g[:, :, 1], g[:, :, 0])
        c = (re + 1j * im).astype(np.complex64).transpose(0, 2, 1)[:, :nrx]
    return np.ascontiguousarray(c.reshape(nloops, ntx * nrx, ns))


def raw_from_adc(adc: np.ndarray, iq_order: str = "qi") -> bytes:
    """Inverse of `adc_from_raw` for 2-lane devices: complex [loops, virt, samples] → frame bytes (int16,
    rounded and clipped). Used by the emulator to put a frame on the wire exactly as the board would."""
    c = np.asarray(adc).reshape(-1)
    if c.size % 2:
        raise ValueError("2-lane packing needs an even number of complex samples")
    pairs = c.reshape(-1, 2)
    re = np.clip(np.rint(pairs.real), -32768, 32767).astype("<i2")
    im = np.clip(np.rint(pairs.imag), -32768, 32767).astype("<i2")
    x, y = (re, im) if iq_order == "iq" else (im, re)
    return np.concatenate([x, y], axis=1).tobytes()


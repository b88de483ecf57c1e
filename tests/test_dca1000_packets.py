"""DCA1000 packetisation and what it does to frame timing (issue #13): the emulator sends 1456-byte packets
regardless of frame boundaries and flushes a short one only after 2 s without data, exactly as the board
(ti_mmwave.md §3.3); so a frame that does not end on a packet boundary completes when the next frame's
first chirps arrive. `radvis radar cfg` warns about such frame sizes and suggests aligned ones."""
from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from drivers.ti.cfg import parse_cfg
from drivers.ti.dca1000_packets import PACKET, aligned_alternatives, on_time_every, packet_warning
from radvis import cli
from sim.dca1000_device import DCA1000Emulator
from tests.conftest import REPO

DCA_CFG = REPO / "drivers" / "ti" / "cfgs" / "radvis_iwr1843_dca.cfg"
UART_CFG = REPO / "drivers" / "ti" / "cfgs" / "radvis_iwr1843.cfg"


def test_on_time_every():
    assert on_time_every(262144) == 91  # the rig's frames: 91 frames = 16 384 packets exactly
    assert on_time_every(16 * PACKET) == on_time_every(PACKET) == 1
    assert on_time_every(2 * PACKET + 728) == 2 and on_time_every(2048) == 91


def test_cfg_warns_about_unaligned_dca1000_frames_and_suggests_aligned_ones():
    rc = parse_cfg(DCA_CFG)
    assert rc.profile.bytes_per_frame_raw == 262144
    [w] = [w for w in rc.warnings if "1456" in w]
    assert "90 in 91 frames" in w and "one frame period (100 ms) late" in w and "clock_warmup_s >= 18.2 s" in w
    alt = aligned_alternatives(rc.profile)
    assert alt == {"num_adc_samples": 91, "num_loops": 91}
    assert "numAdcSamples 91" in w and "91 loops" in w
    # each suggestion really aligns, and really fits the chirp (sampling window) and the frame period
    text = DCA_CFG.read_text()
    for old, new in (("1 128 4000 0 0 30", "1 91 4000 0 0 30"), ("frameCfg 0 1 64 0 100", "frameCfg 0 1 91 0 100")):
        fixed = parse_cfg(text.replace(old, new))
        assert fixed.profile.bytes_per_frame_raw % PACKET == 0 and not [w for w in fixed.warnings if "1456" in w]
    # UART output (no raw ADC over LVDS) is not packetised by a DCA1000: no warning
    assert not [w for w in parse_cfg(UART_CFG).warnings if "1456" in w]
    assert packet_warning(parse_cfg(text.replace("1 128 4000 0 0 30", "1 91 4000 0 0 30")).profile) is None


def test_radar_cfg_cli_prints_the_warning(capsys):
    assert cli.main(["radar", "cfg", str(DCA_CFG)]) == 0
    out, err = capsys.readouterr()
    assert "radvis: warning:" in err and "not a multiple of the 1456-byte packet" in err
    assert '"bytes_per_frame_raw": 262144' in out


class _Wire:
    """The host side of the data port: every datagram with its arrival time."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.packets: list[tuple[int, int, int, float]] = []  # (seq, byte count, payload bytes, arrival)

    def drain_until(self, n: int, timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while len(self.packets) < n and time.monotonic() < end:
            try:
                d = self.sock.recv(2048)
            except socket.timeout:
                continue
            seq, lo, hi = struct.unpack_from("<IIH", d)
            self.packets.append((seq, lo | hi << 32, len(d) - 10, time.monotonic()))

    @property
    def bytes(self) -> int:
        return sum(p[2] for p in self.packets)


def test_emulator_packets_are_1456_bytes_and_a_frame_completes_with_the_next_one():
    """Frames of 2048 B (like the rig's 262 144 B: gcd with 1456 is 16, so 1 in 91 ends on a packet
    boundary): while frames keep coming every datagram carries exactly 1456 B with the documented header,
    and after frame k is handed over its last byte is on the wire only if (k + 1) x 2048 is a multiple of
    1456; otherwise the next frame's first bytes complete it."""
    fb, n = 2048, 2 * 91 + 3
    wire = _Wire()
    emu = DCA1000Emulator(data_dest=wire.sock.getsockname())
    try:
        emu.start_recording()
        on_time = []
        for k in range(n):
            emu.send_frame(bytes([k % 256]) * fb)
            wire.drain_until(emu.stats.packets)
            assert len(wire.packets) == emu.stats.packets == (k + 1) * fb // PACKET
            complete = wire.bytes >= (k + 1) * fb
            assert complete == ((k + 1) * fb % PACKET == 0)
            if k:
                assert wire.bytes >= k * fb  # the previous frame is complete now
            if complete:
                on_time.append(k)
        assert on_time == [90, 181]  # 1 frame in 91
        assert [p[0] for p in wire.packets] == list(range(1, len(wire.packets) + 1))
        assert [p[1] for p in wire.packets] == [i * PACKET for i in range(len(wire.packets))]
        assert {p[2] for p in wire.packets} == {PACKET} and emu.stats.short_packets == 0
    finally:
        emu.close()
        wire.sock.close()


def test_emulator_flushes_the_remainder_after_2_s_idle():
    """The last partial packet goes out once the stream has been idle for 2 s (the board's flush), not
    before; its byte count continues the stream."""
    fb = 2048
    wire = _Wire()
    emu = DCA1000Emulator(data_dest=wire.sock.getsockname()).start()
    try:
        emu.start_recording()
        for k in range(3):
            emu.send_frame(bytes([k]) * fb)
        t_last = time.monotonic()
        full = 3 * fb // PACKET
        wire.drain_until(full)
        assert len(wire.packets) == full
        wire.drain_until(full + 1, timeout_s=15)
        assert len(wire.packets) == full + 1, "no flush of the remainder"
        seq, bc, size, t = wire.packets[-1]
        assert (seq, bc, size) == (full + 1, full * PACKET, 3 * fb - full * PACKET)
        assert t - t_last >= 2.0 * 0.95  # the board waits 2 s without data (a lower bound: never earlier)
        assert emu.stats.short_packets == 1 and wire.bytes == 3 * fb
    finally:
        emu.close()
        wire.sock.close()

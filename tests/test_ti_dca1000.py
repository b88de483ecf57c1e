"""DCA1000: real pcaps (frame + the nine reference samples, command replies), the config protocol against the
emulator, and emulator → receiver over real UDP loopback with every fault mode and exact counts."""
from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from sim.dca1000_device import DCA1000Emulator, DcaFaults
from drivers.ti.cfg import parse_cfg
from drivers.ti.dca1000 import (Cmd, DCA1000Config, DcaError, decode_command, decode_reply, encode_command,
                                packet_delay_payload)
from drivers.ti.dca1000_files import CaptureParser, read_bin, read_pcap
from drivers.ti.dca1000_receiver import (DataReceiver, FrameAssembler, adc_from_raw, complex_from_words,
                                         raw_frame_bytes, raw_from_adc)

MCS = "ti/mmwave-capture-std/tests"
# sample index → value asserted by mmwave-capture-std tests/test_parser_pcap.py (fixture README §3)
REFERENCE = {4065: 223 + 120j, 3293: -90 - 615j, 415: -88 + 193j, 1255: 366 - 21j, 671: -55 + 205j,
             1736: -127 - 238j, 3474: 268 - 48j, 2394: 745 - 301j, 1262: 582 + 30j}


def one_frame_cfg(fixtures: Path, tmp_path: Path) -> Path:
    """The fixture xWR18xx cfg cut down to the pcap's inferred frame: 1 TX, 4 RX, 4 chirps × 256 samples."""
    text = (fixtures / MCS / "configs/xwr18xx_profile_2023_01_01T00_00_00_000.cfg").read_text()
    lines = []
    for ln in text.splitlines():
        if ln.startswith("channelCfg"):
            ln = "channelCfg 15 1 0"
        elif ln.startswith("chirpCfg 1"):
            continue
        elif ln.startswith("frameCfg"):
            ln = "frameCfg 0 0 4 0 100 1 0"
        lines.append(ln)
    p = tmp_path / "one_frame.cfg"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture
def small_profile(shared_fixtures, tmp_path):
    return parse_cfg(one_frame_cfg(shared_fixtures, tmp_path)).profile


# ---------------------------------------------------------------------------------------------- real pcaps

def test_one_frame_pcap_gives_the_documented_frame_and_reference_samples(shared_fixtures, small_profile):
    assert raw_frame_bytes(small_profile) == 16384
    parser = CaptureParser(16384)
    events = list(parser.events(shared_fixtures / MCS / "pcaps/test_one_frame.pcap"))
    replies = [e.reply for e in events if e.kind == "reply"]
    assert [(r.cmd, r.status) for r in replies] == [(0x09, 0), (0x01, 0), (0x03, 0), (0x0B, 0), (0x05, 0),
                                                    (0x0A, 0x0100)]
    assert replies[-1].to_dict()["flags"] == ["REC_COMPLETED"]
    frames = [e.frame for e in events if e.kind == "frame"]
    assert len(frames) == 1
    f = frames[0]
    assert (f.frame_number, f.complete, f.lost_bytes, f.packets) == (0, True, 0, 12)
    st = parser.stats
    assert (st.packets, st.payload_bytes, st.lost_bytes, st.lost_packets, st.duplicates, st.reordered) == \
        (12, 16384, 0, 0, 0, 0)
    flat = complex_from_words(f.data.view("<i2"), "qi")
    for i, v in REFERENCE.items():
        assert flat[i] == v, (i, flat[i], v)
    # the I-first convention (OpenRadar / mmWave Studio) reproduces none of them
    flat_iq = complex_from_words(f.data.view("<i2"), "iq")
    assert not any(flat_iq[i] == v for i, v in REFERENCE.items())
    adc = adc_from_raw(f.data, small_profile, "qi")
    assert adc.shape == (4, 4, 256) and adc.dtype == np.complex64
    assert adc.reshape(-1)[4065] == REFERENCE[4065]


def test_one_frame_pcap_datagram_layout(shared_fixtures):
    dgs = list(read_pcap(shared_fixtures / MCS / "pcaps/test_one_frame.pcap"))
    data = [d for d in dgs if d.dport == 4098]
    assert all(d.src == "192.168.33.180" and d.sport == 1024 and d.dst == "192.168.33.30" for d in dgs)
    assert [struct.unpack_from("<I", d.payload)[0] for d in data] == list(range(1, 13))
    counts = [int.from_bytes(d.payload[4:10], "little") for d in data]
    assert counts == [1456 * i for i in range(12)]
    assert [len(d.payload) - 10 for d in data] == [1456] * 11 + [368]
    # the short packet is the FPGA's 2-second flush
    assert abs((data[-1].t_ns - data[-2].t_ns) / 1e9 - 2.0) < 0.01


def test_cmd_pcap_replies_parse(shared_fixtures):
    parser = CaptureParser(16384)
    events = list(parser.events(shared_fixtures / MCS / "pcaps/test_cmd.pcap"))
    assert [e.kind for e in events] == ["reply"] * 10
    got = [(e.reply.cmd, e.reply.status, e.reply.ok) for e in events]
    assert got == [(c, 0, True) for c in (0x01, 0x02, 0x05, 0x06, 0x0B, 0x03, 0x04, 0x09, 0x0A)] + [(0x0E, 0x0402, True)]
    assert events[-1].to_dict()["version"] == {"major": 2, "minor": 8, "playback": False}
    assert parser.pcap.udp == 10 and parser.pcap.truncated == 0


def test_cli_parse_pcap_json(shared_fixtures, tmp_path, capsys):
    from radvis.cli import main
    cfg = one_frame_cfg(shared_fixtures, tmp_path)
    rc = main(["dca1000", "parse", str(shared_fixtures / MCS / "pcaps/test_one_frame.pcap"), "--cfg", str(cfg), "--json"])
    assert rc == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    frames = [r for r in recs if r["type"] == "frame"]
    assert len(frames) == 1 and frames[0]["complete"] and frames[0]["shape"] == [4, 4, 256]
    assert [r["name"] for r in recs if r["type"] == "reply"][-1] == "SYSTEM_ERROR"
    assert recs[-1]["type"] == "stats" and recs[-1]["receiver"]["lost_bytes"] == 0
    # a missing capture is a clear error, exit 2
    rc = main(["dca1000", "parse", str(tmp_path / "missing.pcap"), "--cfg", str(cfg), "--json"])
    assert rc == 2


def test_bin_raw_and_records(tmp_path):
    rng = np.random.default_rng(1)
    stream = rng.integers(0, 256, 3 * 1000 + 250, dtype=np.uint8).tobytes()
    p = tmp_path / "adc_data.bin"
    p.write_bytes(stream)
    frames, asm = read_bin(p, 1000)
    assert [f.complete for f in frames] == [True, True, True, False]
    assert frames[3].lost_bytes == 750 and bytes(frames[1].data) == stream[1000:2000]
    # DLL record format with one packet missing: zero-filled by byte count
    recs, bc, seq = b"", 0, 0
    for chunk in [stream[i:i + 300] for i in range(0, 3000, 300)]:
        seq += 1
        if seq != 4:
            recs += struct.pack("<IIIH", seq, len(chunk), bc, 0) + chunk
        bc += len(chunk)
    q = tmp_path / "adc_Raw_0.bin"
    q.write_bytes(recs)
    frames, asm = read_bin(q, 1000, "records")
    assert [f.lost_bytes for f in frames] == [100, 200, 0]
    assert bytes(frames[0].data[900:]) == b"\0" * 100 and bytes(frames[2].data) == stream[2000:3000]
    assert asm.stats.lost_packets == 1


# ---------------------------------------------------------------------------------------------- assembler

def packets(stream: bytes, size: int = 1456):
    return [(i + 1, off, stream[off:off + size]) for i, off in enumerate(range(0, len(stream), size))]


def test_assembler_cuts_by_byte_count_not_packets():
    fb = 5000                                   # not a multiple of 1456: packets straddle frames
    stream = np.arange(4 * fb, dtype=np.uint32).astype(np.uint8).tobytes()
    asm = FrameAssembler(fb)
    for seq, bc, pl in packets(stream):
        asm.feed(seq, bc, memoryview(pl))
    asm.flush()
    frames = asm.pop_ready()
    assert [f.frame_number for f in frames] == [0, 1, 2, 3]
    assert all(f.complete for f in frames)
    assert b"".join(bytes(f.data) for f in frames) == stream


def test_assembler_loss_duplicates_reorder_exact():
    fb = 5000
    stream = np.random.default_rng(0).integers(0, 256, 6 * fb, dtype=np.uint8).tobytes()
    pk = packets(stream)                        # 21 packets, last one short
    order = [p for p in pk if p[0] not in (4, 7)]      # 4 lies inside frame 1; 7 straddles frames 1 and 2
    i3 = [p[0] for p in order].index(10)
    order[i3], order[i3 + 1] = order[i3 + 1], order[i3]  # 10 ↔ 11
    order.insert(5, pk[2])                      # duplicate of seq 3
    asm = FrameAssembler(fb)
    for seq, bc, pl in order:
        asm.feed(seq, bc, memoryview(pl))
    asm.flush()
    frames = asm.pop_ready()
    lost = {f.frame_number: f.lost_bytes for f in frames}
    # seq 4 = bytes 4368..5824 → 632 in frame 0, 824 in frame 1; seq 7 = 8736..10192 → 1264 in 1, 192 in 2
    assert lost == {0: 632, 1: 824 + 1264, 2: 192, 3: 0, 4: 0, 5: 0}
    st = asm.stats
    assert (st.duplicates, st.reordered, st.lost_packets, st.lost_bytes) == (1, 1, 2, 2 * 1456)
    assert st.frames_complete == 3 and st.frames_incomplete == 3
    for f in frames:                            # every byte not lost is the right byte; lost ones are zero
        ref = np.frombuffer(stream[f.frame_number * fb:(f.frame_number + 1) * fb], np.uint8)
        got = f.data
        assert np.all((got == ref) | (got == 0))
    assert not frames[1].data[:824].any() and not frames[1].data[3736:5000].any()


def test_assembler_late_packet_and_restart_and_garbage():
    fb = 2000
    stream = bytes(range(256)) * 40              # 10240 bytes = 5 frames + 240
    pk = packets(stream, 1000)
    asm = FrameAssembler(fb, window_frames=2, reorder_bytes=0)
    late = pk[1]
    for p in pk[:1] + pk[2:8]:                   # bytes 0..8000; packet 2 held back
        asm.feed(p[0], p[1], memoryview(p[2]))
    asm.feed(late[0], late[1], memoryview(late[2]))  # frame 0 already pushed out by frame 3's data
    st = asm.stats
    assert st.late == 1 and st.frames >= 1 and asm.ready[0].lost_bytes == 1000
    asm.feed_datagram(memoryview(b"\x01\x02"), 2)     # runt datagram
    assert st.malformed == 1
    asm.feed(1, 0, memoryview(stream[:1000]))         # board restarted recording
    assert st.restarts == 1
    asm.flush()
    assert asm.ready[-1].frame_number == 0


def test_iq_pack_unpack_round_trip(small_profile):
    rng = np.random.default_rng(3)
    adc = (rng.integers(-2000, 2000, (4, 4, 256)) + 1j * rng.integers(-2000, 2000, (4, 4, 256))).astype(np.complex64)
    for iq in ("qi", "iq"):
        raw = raw_from_adc(adc, iq)
        assert len(raw) == 16384
        np.testing.assert_array_equal(adc_from_raw(raw, small_profile, iq), adc)
    # wire layout of the SDK stream: Q(n) Q(n+1) I(n) I(n+1)
    w = np.frombuffer(raw_from_adc(adc, "qi"), "<i2")[:4]
    assert list(w) == [adc[0, 0, 0].imag, adc[0, 0, 1].imag, adc[0, 0, 0].real, adc[0, 0, 1].real]


# ---------------------------------------------------------------------------------------------- config port

def test_command_framing_and_errors():
    req = encode_command(Cmd.CONFIG_PACKET_DATA, packet_delay_payload(25))
    assert req.hex() == "5aa50b000600c005350c0000aaee"       # what TI's RF_API sends for 25 µs
    assert decode_command(req) == (0x0B, bytes.fromhex("c005350c0000"))
    with pytest.raises(ValueError, match="footer"):
        decode_command(req[:-1] + b"\x00")
    with pytest.raises(DcaError, match="8"):
        decode_reply(b"\x5a\xa5\x01\x00")


@pytest.fixture
def emulator_and_client():
    emu = DCA1000Emulator(host="127.0.0.1", data_dest=("127.0.0.1", 9)).start()
    cli = DCA1000Config(board=emu.config_address, bind=("127.0.0.1", 0), timeout_s=0.5, retries=0)
    yield emu, cli
    cli.close()
    emu.close()


def test_config_client_against_emulator(emulator_and_client):
    emu, cli = emulator_and_client
    assert cli.setup() == {"major": 2, "minor": 8, "playback": False}
    assert emu.fpga_config == bytes([1, 2, 1, 2, 3, 30]) and emu.record_config == bytes.fromhex("c005350c0000")
    for code in range(1, 0x0F):
        if code in (0x03, 0x04, 0x0B, 0x0C, 0x0D):
            continue
        assert cli.command(code).cmd == code
    cli.configure_eeprom(host_ip="192.168.33.30", board_ip="192.168.33.180", board_mac="12:34:56:78:90:12",
                         config_port=4096, data_port=4098)
    cli.start_record()
    assert emu.recording
    cli.stop_record()
    assert not emu.recording
    # async REC_COMPLETED arrives after the stop reply; it is kept, not mistaken for a reply
    cli.connect()
    assert cli.async_status == [0x0100, 0x0100]     # one per record start/stop (the loop did 0x05/0x06 too)
    with pytest.raises(DcaError, match="takes 6 data bytes"):
        cli.command(Cmd.CONFIG_FPGA_GEN, b"\x01")
    with pytest.raises(ValueError, match="lvds_mode"):
        cli.configure_fpga(lvds_mode=3)


def test_config_client_failure_status_and_timeout(emulator_and_client):
    emu, cli = emulator_and_client
    with pytest.raises(DcaError, match="CONFIG_FPGA_GEN failed: status 1"):
        cli.command(Cmd.CONFIG_FPGA_GEN, bytes([9, 2, 1, 2, 3, 30]))
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    c2 = DCA1000Config(board=dead.getsockname(), bind=("127.0.0.1", 0), timeout_s=0.1, retries=1)
    with pytest.raises(DcaError, match="no reply .* after 2 tries"):  # gives up after its retries
        c2.connect()
    c2.close()
    dead.close()
    # a malformed request gets no reply at all from the board
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    s.sendto(b"\x5a\xa5\x09\x00\x00\x00\x00\x00", emu.config_address)
    with pytest.raises(socket.timeout):
        s.recv(64)
    s.close()
    assert emu.stats.bad_commands == 1


# ---------------------------------------------------------------------------------------------- emulator → receiver

def run_stream(frames: list[bytes], fb: int, faults: DcaFaults):
    rx = DataReceiver(fb, bind=("127.0.0.1", 0), rcvbuf_bytes=4 << 20, idle_flush_s=0.3)
    emu = DCA1000Emulator(data_dest=rx.address, faults=faults, flush_timeout_s=0.2)
    rx.sock.connect(emu.data_source)            # only the board's data source port is accepted
    emu.start()
    cli = DCA1000Config(board=emu.config_address, bind=("127.0.0.1", 0), timeout_s=1.0, retries=0)
    got = []
    try:
        cli.start_record()
        for i, f in enumerate(frames):
            emu.send_frame(f)
            got += rx.poll(0.0)
        cli.stop_record()                         # flushes the short remainder
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (not got or got[-1].frame_number < len(frames) - 1):
            got += rx.poll(0.5)
        got += rx.poll(0.2)                       # stragglers (a duplicate of the last packet) get counted
    finally:
        cli.close()
        emu.close()
        rx.close()
    return got, rx.stats, emu.stats


@pytest.fixture
def frames16k():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, 16384, dtype=np.uint8).tobytes() for _ in range(12)]   # 135 × 1456 + 48: 136 packets


def check_frames(got, frames, fb):
    assert [f.frame_number for f in got] == list(range(len(frames)))
    for f in got:
        ref = np.frombuffer(frames[f.frame_number], np.uint8)
        ok = f.data == ref
        assert np.count_nonzero(~ok & (f.data != 0)) == 0       # wrong bytes are never invented
        assert f.lost_bytes >= np.count_nonzero(~ok)          # (a lost byte may happen to be 0 already)
        assert f.complete == (f.lost_bytes == 0)


def test_emulator_to_receiver_clean(frames16k):
    got, rs, es = run_stream(frames16k, 16384, DcaFaults())
    check_frames(got, frames16k, 16384)
    assert all(f.complete for f in got)
    assert b"".join(bytes(f.data) for f in got) == b"".join(frames16k)
    assert es.packets == rs.packets == 136 and es.short_packets == 1
    assert rs.lost_bytes == 0 and rs.duplicates == rs.reordered == rs.lost_packets == 0


def test_emulator_to_receiver_loss_exact(frames16k):
    got, rs, es = run_stream(frames16k, 16384, DcaFaults(drop={3, 12, 40, 41, 136}))
    check_frames(got, frames16k, 16384)
    assert es.dropped == [3, 12, 40, 41, 136]
    assert rs.lost_bytes == es.dropped_bytes == 4 * 1456 + 48      # 136 is the 48-byte flush packet
    # seq 12 = bytes 16016..17472 straddles frames 0 and 1
    by = {f.frame_number: f.lost_bytes for f in got}
    assert by[0] == 1456 + 368 and by[1] == 1088
    assert rs.lost_packets == 4                 # the lost final packet has no later seq to reveal it
    assert [f.frame_number for f in got if not f.complete] == [0, 1, 3, 11]
    assert rs.frames_incomplete == 4 and by[11] == 48


def test_emulator_to_receiver_duplicates_reorder_stall_exact(frames16k):
    faults = DcaFaults(duplicate={5, 60, 61}, reorder={10, 90}, stall={30: 0.25, 100: 0.1})
    t = time.monotonic()
    got, rs, es = run_stream(frames16k, 16384, faults)
    assert time.monotonic() - t >= 0.35
    assert es.duplicated == [5, 60, 61] and es.reordered == [10, 90] and es.stalls == 2
    assert (rs.duplicates, rs.reordered, rs.lost_bytes, rs.lost_packets) == (3, 2, 0, 0)
    assert rs.packets == 136 + 3
    assert b"".join(bytes(f.data) for f in got) == b"".join(frames16k)


def test_emulator_to_receiver_random_faults_exact(frames16k):
    faults = DcaFaults(drop_prob=0.05, duplicate_prob=0.05, reorder_prob=0.05, seed=11)
    got, rs, es = run_stream(frames16k, 16384, faults)
    assert es.dropped and es.duplicated and es.reordered
    assert rs.lost_bytes == es.dropped_bytes
    assert rs.duplicates == len(es.duplicated)
    # a reordered packet counts as reordered unless the packet after it was dropped
    late_after_drop = sum(1 for s in es.reordered if s + 1 in es.dropped)
    assert rs.reordered == len(es.reordered) - late_after_drop
    check_frames(got, frames16k, 16384)


def test_emulator_faults_from_config_vocabulary(frames16k):
    """The radar.faults keys shared with the UART emulator; UART-only keys (corrupt_*) are ignored here."""
    faults = DcaFaults.from_config({"drop_every": 50, "duplicate_every": 40, "stall_every": 100, "stall_s": 0.05,
                                    "corrupt_prob": 0.5, "seed": 3})
    got, rs, es = run_stream(frames16k, 16384, faults)
    assert es.dropped == [50, 100] and es.duplicated == [40, 80, 120] and es.stalls == 1
    assert (rs.lost_bytes, rs.duplicates, rs.lost_packets) == (2 * 1456, 3, 2)
    check_frames(got, frames16k, 16384)
    with pytest.raises(ValueError, match="drop_prob=2.0, expected 0..1"):
        DcaFaults.from_config({"drop_prob": 2})


# ---------------------------------------------------------------------------------------------- end to end

def test_capture_session_emulated_point_targets_to_ra_map():
    """Config bring-up, RECORD_START, frames from the deterministic point-target source streamed as the board
    would, received, unpacked (Q first) and turned into an RA map whose peak is the strong reflector. Board and
    host each have their own loopback address with the real port numbers, as 192.168.33.180 and .30 do."""
    import math

    from drivers.ti import dsp
    from drivers.ti.dca1000_capture import DCA1000Capture
    from radvis import config as configmod
    from sim.source import PointTargetSource

    a, b = (int(x) for x in np.random.default_rng().integers(1, 250, 2))
    host, board = f"127.{a}.{b}.1", f"127.{a}.{b}.2"
    cfg = configmod.load(None, ["radar.mode='dca1000'", f"radar.dca_host='{host}'", f"radar.dca_board='{board}'"])
    profile = parse_cfg(Path(__file__).resolve().parent.parent / "drivers/ti/cfgs/radvis_iwr1843_dca.cfg").profile
    with DCA1000Emulator(host=board, config_port=4096, data_dest=(host, 4098), data_source_port=1024).start() as emu, \
            DCA1000Capture.from_config(cfg.radar, profile) as cap:
        assert cap.start() == {"major": 2, "minor": 8, "playback": False}
        assert emu.stats.failed_commands == 0 and emu.recording
        src = PointTargetSource()
        emu.stream(src, profile, 3, period_s=0)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            got += cap.poll(0.5)
        assert [f.frame_number for f, _ in got] == [0, 1, 2] and all(f.complete for f, _ in got)
        ref = src.frame(1, 0.1, profile).adc
        np.testing.assert_array_equal(got[1][1], ref)       # bit-exact through the wire format
        m = dsp.ra_magnitude(dsp.ra_map(got[0][1], profile))
        pr, pa = np.unravel_index(m.argmax(), m.shape)
        assert pr == int(np.abs(dsp.range_grid() - 6.0).argmin())
        assert abs(pa - int(np.abs(dsp.azimuth_grid() - math.radians(-25)).argmin())) <= 1
        assert cap.stats.lost_bytes == 0
        assert emu.data_source == (board, 1024)            # the FPGA sends from port 1024


# ---------------------------------------------------------------------------------------------- property

from hypothesis import given, settings, strategies as hst  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(fb=hst.integers(1500, 12000), n=hst.integers(1, 60), data=hst.data())
def test_assembler_accounting_is_exact_for_any_loss_duplication_and_local_reordering(fb, n, data):
    size = 1456
    length = (n - 1) * size + data.draw(hst.integers(1, size))          # short final packet
    stream = np.random.default_rng(n).integers(1, 256, length, dtype=np.uint8).tobytes()   # no zero bytes
    pk = packets(stream, size)
    dropped = set(data.draw(hst.sets(hst.integers(1, n), max_size=n // 3)))
    dups = set(data.draw(hst.sets(hst.integers(1, n), max_size=n // 4))) - dropped
    order = [p for p in pk if p[0] not in dropped]
    for i in data.draw(hst.lists(hst.integers(0, max(0, len(order) - 2)), max_size=5)):
        if i + 1 < len(order):                                          # adjacent swaps stay within the window
            order[i], order[i + 1] = order[i + 1], order[i]
    sent = []
    for p in order:
        sent.append(p)
        if p[0] in dups:
            sent.append(p)
    asm = FrameAssembler(fb)
    for seq, bc, pl in sent:
        asm.feed(seq, bc, memoryview(pl))
    asm.flush()
    frames = asm.pop_ready()
    covered = np.zeros(((length + fb - 1) // fb + 1) * fb, bool)
    for seq, bc, pl in order:
        covered[bc:bc + len(pl)] = True
    ref = np.zeros(covered.size, np.uint8)
    ref[:length] = np.frombuffer(stream, np.uint8)
    assert asm.stats.duplicates == len(dups)
    assert asm.stats.malformed == asm.stats.late == 0
    total = 0
    for f in frames:
        sl = slice(f.frame_number * fb, (f.frame_number + 1) * fb)
        assert f.lost_bytes == fb - covered[sl].sum()
        np.testing.assert_array_equal(f.data, np.where(covered[sl], ref[sl], 0))
        total += f.lost_bytes
    assert asm.stats.lost_bytes == total
    if order:
        seen = sorted({p[1] // fb for p in order} | {(p[1] + len(p[2]) - 1) // fb for p in order})
        assert [f.frame_number for f in frames] == list(range(seen[0], seen[-1] + 1))

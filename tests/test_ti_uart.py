"""UART data-port parser on the real captures (values from shared/fixtures/ti/README.md), synthetic edge
cases built byte by byte from the documented layout, and hypothesis fuzzing of corrupted real captures."""
from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.ti.cfg import parse_cfg
from drivers.ti.uart import MAGIC, UartParser, parse_bytes
from radvis.cli import main as radvis_main

DATA = "ti/AWR1632BOOST_mmWaveRadar/test_data"
SDK3 = f"{DATA}/AWR1642_test_data_SDK_3_6_0.dat"
SDK2 = f"{DATA}/xwr16xx_processed_stream_2023_10_30T09_00_44_253.dat"


@pytest.fixture(scope="module")
def sdk3_bytes(shared_fixtures):
    return (shared_fixtures / SDK3).read_bytes()


@pytest.fixture(scope="module")
def sdk2_bytes(shared_fixtures):
    return (shared_fixtures / SDK2).read_bytes()


def test_sdk36_capture_decodes_every_complete_frame(sdk3_bytes):
    frames, stats = parse_bytes(sdk3_bytes)
    assert [f.frame_number for f in frames] == list(range(69, 169))   # 101 headers, the last one truncated
    assert frames[0].offset == 376
    assert stats.rejected == {"truncated": 1} and stats.lost == 0 and stats.duplicates == 0
    assert stats.frames == 100
    assert sum(f.total_packet_len for f in frames) + stats.bytes_skipped == len(sdk3_bytes)
    cycles = np.diff([f.time_cpu_cycles for f in frames]) % (1 << 32)   # the counter wraps inside this capture
    assert cycles.min() == 19_992_490 and cycles.max() == 20_009_210          # 200 MHz, 100 ms
    for f in frames:
        assert (f.version, f.platform, f.header_len) == (0x03060000, 0xA1642, 40)
        assert f.tlv_types == [1, 7, 2, 6, 9]
        n = f.num_detected_obj
        assert 6 <= n <= 11 and f.total_packet_len % 32 == 0 and 768 <= f.total_packet_len <= 864
        assert [f.spans[t][1] for t in f.tlv_types] == [16 * n, 4 * n, 512, 24, 28]
        assert f.tlvs[1]["points"].shape == (n, 4) and f.tlvs[7]["snr_noise_db"].shape == (n, 2)
        assert f.tlvs[2]["raw_q9"].shape == (256,)
    first = frames[0]
    np.testing.assert_allclose(first.points[0], [0.04908, 0.25713, 0.0, 0.0], atol=1e-5)
    assert first.points.dtype == np.float32
    assert [first.tlvs[6][k] for k in first.tlvs[6]] == [4281, 9417, 79991, 471, 4, 5]
    t = first.tlvs[9]
    assert t["report_valid"] and t["time_ms"] == 655887
    assert list(t["temp_c"].values()) == [49, 49, 48, 48, 50, 50, 49, 50, 51, 50]
    # the real pad bytes are not zero (uninitialised memory): the parser must not care
    pad_start = first.offset + 40 + sum(8 + first.spans[t][1] for t in first.tlv_types)
    assert sdk3_bytes[pad_start:pad_start + 4] == bytes([0x00, 0x03, 0x13, 0x00])


def test_sdk21_capture_q_format_points(sdk2_bytes, shared_fixtures):
    profile = parse_cfg(shared_fixtures / "ti/AWR1632BOOST_mmWaveRadar/cfgs/AWR1642-SDK_2_1_0.cfg").profile
    frames, stats = parse_bytes(sdk2_bytes, profile)
    assert [f.frame_number for f in frames] == list(range(167, 266))  # frame 266 is truncated by 120 B
    assert frames[0].offset == 216 and stats.rejected == {"truncated": 1}
    assert len(sdk2_bytes) - (frames[-1].offset + frames[-1].total_packet_len) + 120 in (704, 672)
    for f in frames:
        assert (f.version, f.platform) == (0x02010004, 0xA1642)
        assert f.tlv_types == [1, 2, 6] and f.total_packet_len in (672, 704)
        assert f.tlvs[1]["q_format"] == 9 and f.spans[1][1] == 4 + 12 * f.num_detected_obj
    d = frames[0].tlvs[1]
    assert d["range_idx"][0] == 15
    assert d["points"][0, 0] == pytest.approx(10 / 512) and d["points"][0, 1] == pytest.approx(335 / 512)
    cycles = np.diff([f.time_cpu_cycles for f in frames]) % (1 << 32)
    assert np.all(np.abs(cycles - 60.0e6) < 0.001 * 60e6)                  # 600 MHz DSP clock


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_chunking_gives_the_same_frames(sdk3_bytes, seed):
    ref, _ = parse_bytes(sdk3_bytes)
    rng = random.Random(seed)
    p, out, i = UartParser(), [], 0
    while i < len(sdk3_bytes):
        k = rng.choice([1, 2, 7, 8, 9, 40, 333, 4096])
        out += p.feed(sdk3_bytes[i:i + k])
        i += k
    out += p.flush()
    assert [(f.frame_number, f.offset) for f in out] == [(f.frame_number, f.offset) for f in ref]
    assert all(np.array_equal(a.points, b.points) for a, b in zip(out, ref))


def test_pad_contents_are_ignored(sdk3_bytes):
    ref, _ = parse_bytes(sdk3_bytes)
    b = bytearray(sdk3_bytes)
    for f in ref:
        used = 40 + sum(8 + f.spans[t][1] for t in f.tlv_types)
        for k in range(f.offset + used, f.offset + f.total_packet_len):
            b[k] = 0xA5
    frames, _ = parse_bytes(bytes(b))
    assert [f.frame_number for f in frames] == [f.frame_number for f in ref]


# ---- synthetic packets built from the documented layout (independent of the emulator) -------------
def packet(fn, tlvs, *, nobj=0, version=0x03050004, platform=0xA1843, header=40, pad=0x5C):
    body = b"".join(struct.pack("<2I", t, len(p)) + p for t, p in tlvs)
    n = header + len(body)
    total = -(-n // 32) * 32
    fields = [version, total, platform, fn, 1000 * fn, nobj, len(tlvs)] + ([0] if header == 40 else [])
    return MAGIC + struct.pack(f"<{len(fields)}I", *fields) + body + bytes([pad]) * (total - n)


def test_zero_length_point_tlv_and_heatmap_imag_first():
    hm = struct.pack("<8h", 1, 2, 3, 4, -5, 6, 7, -8)           # (im, re) pairs: 2+1j, 4+3j, 6-5j, -8+7j
    prof = struct.pack("<2H", 512, 1024)                         # 2 range bins, log2 mag 1.0 and 2.0
    data = packet(5, [(1, b""), (2, prof), (4, hm)]) + packet(6, [(1, b"")])
    frames, stats = parse_bytes(data)
    assert [f.frame_number for f in frames] == [5, 6] and stats.bytes_skipped == 0
    f = frames[0]
    assert f.points.shape == (0, 4)
    np.testing.assert_array_equal(f.tlvs[2]["log2_mag"], [1.0, 2.0])
    np.testing.assert_array_equal(f.tlvs[4]["heatmap"], np.array([[2 + 1j, 4 + 3j], [6 - 5j, -8 + 7j]], np.complex64))


def test_noise_profile_range_doppler_and_azimuth_elevation_heatmaps():
    profile = parse_cfg("drivers/ti/cfgs/radvis_iwr1843.cfg").profile          # 128 range bins, 64 Doppler bins
    R, D = profile.num_range_bins, profile.num_doppler_bins
    rd = (np.arange(R * D) % 65536).astype("<u2")
    ae = np.arange(R * 12 * 2).astype("<i2")                                       # 12 virtual antennas (3 TX)
    temp = struct.pack("<iI10h", 1, 42, *range(10))
    data = packet(3, [(3, np.full(R, 1024, "<u2").tobytes()), (5, rd.tobytes()), (8, ae.tobytes()), (9, temp)])
    f = UartParser(profile).parse_all(data)[0]
    np.testing.assert_array_equal(f.tlvs[3]["log2_mag"], np.full(R, 2.0, np.float32))
    assert f.tlvs[5]["raw_q9"].shape == (R, D) and f.tlvs[5]["raw_q9"][1, 0] == D
    hm = f.tlvs[8]["heatmap"]
    assert hm.shape == (R, 12) and hm[0, 0] == 1 + 0j and hm[0, 1] == 3 + 2j      # (imag, real) pairs
    assert f.tlvs[9] == {"report_valid": False, "time_ms": 42, "temp_c": dict(zip(
        ("rx0", "rx1", "rx2", "rx3", "tx0", "tx1", "tx2", "pm", "dig0", "dig1"), range(10)))}
    # a stats TLV of the wrong size rejects the packet (and only it)
    bad = packet(4, [(6, bytes(20))]) + packet(5, [(6, bytes(24))])
    frames, stats = parse_bytes(bad)
    assert [x.frame_number for x in frames] == [5] and stats.rejected == {"tlv_length": 1}


def test_xwr14xx_36_byte_header_and_unknown_tlv():
    q = struct.pack("<HH", 1, 7) + struct.pack("<HhHhhh", 3, -1, 99, 128, 256, 0)
    data = packet(9, [(1, q), (1000, b"abcd")], nobj=1, version=0x02010004, platform=0xA1443, header=36)
    frames, stats = parse_bytes(data)
    assert len(frames) == 1 and frames[0].header_len == 36 and frames[0].subframe_number == 0
    np.testing.assert_allclose(frames[0].points[0, :3], [1.0, 2.0, 0.0])
    assert frames[0].tlv_types == [1, 1000] and stats.unknown_tlvs == 1


def test_other_demo_52_byte_header_is_not_taken_for_oob():
    # people-counting style: version, platform, timestamp, packetLength, ... at the same magic
    fake = MAGIC + struct.pack("<10I2H", 0x03050004, 0xA6843, 123, 96, 7, 0, 0, 0, 0, 0, 1, 0) + bytes(44)
    good = packet(1, [(1, b"")])
    frames, stats = parse_bytes(fake + good)
    assert [f.frame_number for f in frames] == [1] and stats.rejected == {"platform": 1}   # 123 read as platform


def test_magic_inside_a_payload_does_not_break_framing():
    prof = MAGIC + struct.pack("<8I", 0x03050004, 64, 0xA1843, 77, 0, 0, 0, 0) + bytes(8)   # looks like a header
    data = packet(1, [(2, prof)]) + packet(2, [(2, prof)])
    frames, stats = parse_bytes(data)
    assert [f.frame_number for f in frames] == [1, 2] and stats.bytes_skipped == 0


def test_corrupt_length_cannot_swallow_good_frames():
    pk = [packet(k, [(1, b""), (2, bytes(200))]) for k in range(1, 6)]
    bad = bytearray(pk[1])
    struct.pack_into("<I", bad, 12, len(bad) + 3 * 32 * 8)          # frame 2 claims to cover frames 3..5
    frames, stats = parse_bytes(pk[0] + bytes(bad) + b"".join(pk[2:]))
    assert [f.frame_number for f in frames] == [1, 3, 4, 5]
    assert stats.lost == 1 and sum(stats.rejected.values()) >= 1


def test_counters_for_gaps_duplicates_and_reordering():
    pk = {k: packet(k, [(1, b"")]) for k in range(1, 10)}
    order = [1, 2, 4, 3, 5, 5, 8, 9]                               # 3 late, 5 twice, 6 and 7 lost
    frames, stats = parse_bytes(b"".join(pk[k] for k in order))
    assert [f.frame_number for f in frames] == order
    assert (stats.lost, stats.reordered, stats.duplicates) == (2, 1, 1)


def test_cli_radar_parse_json(capsys, shared_fixtures):
    rc = radvis_main(["radar", "parse", str(shared_fixtures / SDK3), "--json",
                      "--cfg", str(shared_fixtures / "ti/AWR1632BOOST_mmWaveRadar/cfgs/AWR1642-SDK_3_6_0.cfg")])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 101 and lines[-1]["stats"]["frames"] == 100
    assert lines[0]["frame_number"] == 69 and lines[0]["platform"] == "0xA1642"
    assert [t["type"] for t in lines[0]["tlvs"]] == [1, 7, 2, 6, 9]
    assert lines[0]["tlvs"][0]["value"]["points"][0][:2] == [0.049082, 0.257129]
    assert radvis_main(["radar", "parse", str(shared_fixtures / "nope.dat"), "--json"]) == 2
    assert "nope.dat" in capsys.readouterr().err


# ---- fuzz: corruption of real captures ------------------------------------------------------------
# The mutated stream is kept as pieces ("o", a, b) = original bytes [a, b) or ("n", bytes) = new bytes,
# so we know exactly which original frames are still intact and where they are now.
def _flat(pieces, orig):
    return b"".join(orig[p[1]:p[2]] if p[0] == "o" else p[1] for p in pieces)


def _split(pieces, pos, orig):
    out, at = [], 0
    for p in pieces:
        ln = p[2] - p[1] if p[0] == "o" else len(p[1])
        if at < pos < at + ln:
            k = pos - at
            out += [("o", p[1], p[1] + k), ("o", p[1] + k, p[2])] if p[0] == "o" else [("n", p[1][:k]), ("n", p[1][k:])]
        else:
            out.append(p)
        at += ln
    return out


def _cut(pieces, lo, hi, orig):
    """Remove [lo, hi) of the current stream; return (remaining pieces, removed pieces)."""
    pieces = _split(_split(pieces, lo, orig), hi, orig)
    keep, removed, at = [], [], 0
    for p in pieces:
        ln = p[2] - p[1] if p[0] == "o" else len(p[1])
        (removed if lo <= at and at + ln <= hi else keep).append(p)
        at += ln
    return keep, removed


def _insert(pieces, pos, new, orig):
    pieces = _split(pieces, pos, orig)
    out, at, done = [], 0, False
    for p in pieces:
        if at == pos and not done:
            out += new
            done = True
        out.append(p)
        at += p[2] - p[1] if p[0] == "o" else len(p[1])
    return out if done else out + new


def mutate(orig: bytes, ops) -> list:
    pieces = [("o", 0, len(orig))]
    for kind, a, b, data in ops:
        n = len(_flat(pieces, orig))
        if n == 0:
            break
        pos = a % n
        if kind == "flip":                           # XOR one byte with a non-zero mask
            cur = _flat(pieces, orig)[pos]
            pieces, _ = _cut(pieces, pos, pos + 1, orig)
            pieces = _insert(pieces, pos, [("n", bytes([cur ^ ((b % 255) + 1)]))], orig)
        elif kind == "insert":
            pieces = _insert(pieces, pos, [("n", data)], orig)
        elif kind == "delete":
            pieces, _ = _cut(pieces, pos, min(n, pos + 1 + b % 300), orig)
        elif kind == "truncate":
            pieces, _ = _cut(pieces, pos, n, orig)
        elif kind == "splice":                       # copy a chunk (e.g. part of a frame) elsewhere
            lo = pos
            hi = min(n, lo + 1 + b % 1500)
            _, chunk = _cut(list(pieces), lo, hi, orig)
            pieces = _insert(pieces, data[0] % n if data else 0, chunk, orig)
    return pieces


def check_untouched_frames_survive(orig: bytes, ops) -> None:
    ref, _ = parse_bytes(orig)
    pieces = mutate(orig, ops)
    data = _flat(pieces, orig)
    frames, stats = parse_bytes(data)                                  # must never raise
    for f in frames:
        f.tlvs                                                         # decoding must never raise either
    got = {(f.offset, f.frame_number) for f in frames}
    at = 0
    for p in pieces:
        ln = p[2] - p[1] if p[0] == "o" else len(p[1])
        if p[0] == "o":
            for f in ref:
                if p[1] <= f.offset and f.offset + f.total_packet_len <= p[2]:
                    assert (at + f.offset - p[1], f.frame_number) in got, (ops, f.frame_number)
        at += ln
    assert stats.frames == len(frames)


op = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]),
               st.integers(0, 1 << 20), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=64))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=6))
@example(ops=[("delete", 54877, 0, b"\x00")])     # frame 134 then ends 1 byte into frame 135's magic
def test_fuzz_sdk3_capture(sdk3_bytes, ops):
    check_untouched_frames_survive(sdk3_bytes, ops)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=6))
def test_fuzz_sdk2_capture(sdk2_bytes, ops):
    check_untouched_frames_survive(sdk2_bytes, ops)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=4), chunk=st.integers(7, 3000))
def test_fuzz_chunked_feed_matches_whole(sdk3_bytes, ops, chunk):
    data = _flat(mutate(sdk3_bytes, ops), sdk3_bytes)
    whole, _ = parse_bytes(data)
    p, out = UartParser(), []
    for i in range(0, len(data), chunk):
        out += p.feed(data[i:i + chunk])
    out += p.flush()
    assert [(f.offset, f.frame_number) for f in out] == [(f.offset, f.frame_number) for f in whole]

"""Radar driver throughput: UART TLV parsing vs the 921600-baud line rate, the emulated board's per-frame
cost, and (from bench/radar_dca.py when present) DCA1000 receive and RA-map cost.

Rows:
- UART parse MB/s on the real SDK 3.6 capture (small 0.8 kB packets: the worst case per byte) and on the
  radvis cfg's stream (~5 kB packets with the azimuth heatmap), both fed in 4 kB chunks like a serial
  read; once framing + validation only (TLV arrays are built on first access), once with every TLV
  decoded. Baseline = the data port's line rate (921600 baud 8N1 = 92 160 B/s); need ≥ 500×. A second
  baseline is measured: a TI-parser-style reader (byte-by-byte magic scan, trusts every length, no
  validation), i.e. what the validation costs.
- Emulated board: ms to build one frame's TLVs from the ADC cube (range FFT, Doppler FFT, heatmap) vs
  the 100 ms frame period.

    .venv/bin/python -m bench.radar [--quick]
"""
from __future__ import annotations

import argparse
import os
import struct
import time
from pathlib import Path

import numpy as np

from drivers.ti.cfg import parse_cfg
from drivers.ti.uart import MAGIC, UartParser
from bench.common import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
CFG = ROOT / "drivers/ti/cfgs/radvis_iwr1843.cfg"
LINE_RATE_MBPS = 921600 / 10 / 1e6          # 8N1: 10 bits per byte
SHARED = Path(os.environ.get("RADVIS_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures/ti/AWR1632BOOST_mmWaveRadar/test_data/AWR1642_test_data_SDK_3_6_0.dat"


def naive_parse(data: bytes) -> int:
    """What TI's parser_mmw_demo.py-style readers do: scan byte by byte for the magic, trust the length."""
    i, n, frames = 0, len(data), 0
    while i + 40 <= n:
        if data[i:i + 8] != MAGIC:
            i += 1
            continue
        total, ntlv = struct.unpack_from("<I", data, i + 12)[0], struct.unpack_from("<I", data, i + 32)[0]
        if i + total > n:
            break
        off = i + 40
        for _ in range(ntlv):
            if off + 8 > i + total:          # the one check it needs not to crash on a cut-off packet
                break
            t, ln = struct.unpack_from("<2I", data, off)
            payload = data[off + 8:off + 8 + ln]
            if t == 1:
                np.frombuffer(payload, "<f4").reshape(-1, 4)
            elif t in (2, 3, 5):
                np.frombuffer(payload, "<u2")
            elif t == 4:
                np.frombuffer(payload, "<i2")
            off += 8 + ln
        frames += 1
        i += total
    return frames


def parse_rate(data: bytes, chunk: int = 4096, min_s: float = 1.0, decode: bool = True) -> tuple[float, int]:
    """MB/s of the streaming parser fed `chunk`-byte reads (decoding every TLV to numpy when `decode`)."""
    t0, total, frames = time.perf_counter(), 0, 0
    while True:
        p = UartParser()
        for i in range(0, len(data), chunk):
            for f in p.feed(data[i:i + chunk]):
                if decode:
                    f.tlvs
                frames += 1
        total += len(data)
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return total / dt / 1e6, frames


def naive_rate(data: bytes, min_s: float = 1.0) -> float:
    t0, total = time.perf_counter(), 0
    while True:
        naive_parse(data)
        total += len(data)
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return total / dt / 1e6


def rig_stream(n_frames: int) -> tuple[bytes, float]:
    """The radvis cfg's data-port bytes as the emulated board builds them, and its ms per frame."""
    from sim.source import PointTargetSource
    from sim.ti_device import build_packet, demo_tlvs
    rc = parse_cfg(CFG)
    src = PointTargetSource()
    out, t_build = [], 0.0
    for fn in range(1, n_frames + 1):
        t = fn * rc.profile.frame_period_ms / 1000
        content = src.frame(fn, t, rc.profile)
        rng = np.random.default_rng(fn)
        t0 = time.perf_counter()
        tlvs, n = demo_tlvs(content, rc.profile, rc.gui_monitor, rng, fn, t)
        out.append(build_packet(fn, int(t * 200e6), tlvs, n, rng))
        t_build += time.perf_counter() - t0
    return b"".join(out), t_build / n_frames * 1000


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing loops (< 60 s with the DCA rows)")
    ap.add_argument("--no-dca", action="store_true", help="skip bench/radar_dca.py")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON lines")
    args = ap.parse_args(argv)
    min_s = 0.5 if args.quick else 2.0
    rows = []
    rig, build_ms = rig_stream(20 if args.quick else 60)
    streams = [("radvis cfg stream (emulated, heatmap TLV)", rig)]
    if FIXTURE.exists():
        streams.insert(0, ("real SDK 3.6 capture (0.8 kB packets)", FIXTURE.read_bytes() * 10))
    for name, data in streams:
        lazy, _ = parse_rate(data, min_s=min_s, decode=False)
        full, _ = parse_rate(data, min_s=min_s, decode=True)
        naive = naive_rate(data, min_s=min_s)
        rows.append({"stage": "uart parse", "metric": f"{name}: framing + validation (TLV arrays decoded lazily)",
                     "value": round(lazy, 2), "unit": "MB/s", "baseline": round(LINE_RATE_MBPS, 4),
                     "ratio": round(lazy / LINE_RATE_MBPS, 1), "need": "≥ 500× line rate"})
        rows.append({"stage": "uart parse", "metric": f"{name}: + every TLV decoded to numpy",
                     "value": round(full, 2), "unit": "MB/s", "baseline": round(LINE_RATE_MBPS, 4),
                     "ratio": round(full / LINE_RATE_MBPS, 1), "need": "≥ 500× line rate"})
        rows.append({"stage": "uart parse", "metric": f"{name}: decoded, vs TI-style parser (no validation)",
                     "value": round(full, 2), "unit": "MB/s", "baseline": round(naive, 2),
                     "ratio": round(full / naive, 2), "need": ""})
    period = parse_cfg(CFG).profile.frame_period_ms
    rows.append({"stage": "emulated board", "metric": "build one frame's TLVs from the ADC cube (radvis cfg)",
                 "value": round(build_ms, 2), "unit": "ms/frame", "baseline": period,
                 "ratio": round(period / build_ms, 1), "need": f"< {period:.0f} ms (frame period)"})
    print(f"{'stage':16} {'metric':78} {'value':>10} {'unit':9} {'baseline':>9} {'ratio':>7}  need")
    for r in rows:
        print(f"{r['stage']:16} {r['metric']:78} {r['value']!s:>10} {r['unit']:9} {r['baseline']!s:>9} "
              f"{r['ratio']!s:>7}  {r['need']}")
    if not FIXTURE.exists():
        print(f"(real capture not found at {FIXTURE}: only the emulated stream was measured)")
    if not args.no_dca and (ROOT / "bench/radar_dca.py").exists():
        from bench import radar_dca
        rows += radar_dca.main(["--quick"] if args.quick else [])
    write_jsonl(args.json, rows)
    return rows


if __name__ == "__main__":
    main()

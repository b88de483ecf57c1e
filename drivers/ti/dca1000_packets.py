"""What the DCA1000's packetisation does to frame timing, and which radar configs avoid it.

In raw mode the FPGA sends a data packet only once 1456 payload bytes are buffered (1456 = 91 x 16, "to
maintain I and Q alignment"), or after 2 s without LVDS data (ti_mmwave.md §3.3: the real test_one_frame.pcap
ends with a 368-byte packet sent 2.000 s after the previous one). Packets ignore frame boundaries, so a
frame whose last byte is not at the end of a packet is complete only when the *next* frame's first chirps
fill that packet: one frame period late. With F bytes per frame, frame k ends on a packet boundary iff
(k + 1) F is a multiple of 1456, i.e. 1 frame in N = 1456 / gcd(F, 1456) arrives on time and the others a
frame period late; the last frame of a capture waits for the 2-s flush (or RECORD_STOP).

The synchroniser's clock model copes (it finds the rare on-time frames: docs/sync.md), but it needs two of
them before it is right, so sync.clock_warmup_s should cover 2 N frame periods; a frame size that is a
multiple of 1456 B makes every frame arrive on time. `radvis radar cfg` warns and suggests one.
"""
from __future__ import annotations

from math import gcd

PACKET = 1456  # payload bytes per DCA1000 raw-mode data packet (drivers/ti/dca1000_receiver.MAX_PAYLOAD)
FLUSH_S = 2.0  # the FPGA sends a partial packet after this long without LVDS data


def on_time_every(frame_bytes: int, packet: int = PACKET) -> int:
    """N: 1 frame in N ends on a packet boundary and arrives on time (1 = every frame)."""
    return packet // gcd(int(frame_bytes), packet)


def aligned_alternatives(profile, packet: int = PACKET) -> dict:
    """The nearest numAdcSamples (same loops) and frameCfg loop count (same samples) whose frames are a
    multiple of `packet` bytes and still fit: samples within the chirp's ramp, chirps within the frame
    period. {"num_adc_samples": int | None, "num_loops": int | None}."""
    per_sample = profile.num_rx * profile.chirps_per_frame * (4 if profile.complex_adc else 2)
    types = profile.chirps_per_frame // max(1, profile.num_loops)
    per_loop = profile.num_adc_samples * profile.num_rx * types * (4 if profile.complex_adc else 2)

    def fits_samples(s: int) -> bool:
        return s >= 16 and profile.adc_start_us + s / (profile.sample_rate_ksps * 1e-3) <= profile.ramp_end_us

    def fits_loops(n: int) -> bool:
        return 1 <= n <= 255 and n * types * profile.chirp_interval_us <= profile.frame_period_ms * 1e3

    best_s = best_l = None
    for d in range(1, 4097):
        for s in (profile.num_adc_samples - d, profile.num_adc_samples + d):
            if best_s is None and s > 0 and (s * per_sample) % packet == 0 and fits_samples(s):
                best_s = s
        for n in (profile.num_loops - d, profile.num_loops + d):
            if best_l is None and n > 0 and (n * per_loop) % packet == 0 and fits_loops(n):
                best_l = n
        if best_s is not None and best_l is not None:
            break
    return {"num_adc_samples": best_s, "num_loops": best_l}


def packet_warning(profile, src: str = "<cfg>") -> str | None:
    """The `radvis radar cfg` warning for a raw-ADC (DCA1000) config whose frames are not a multiple of
    1456 bytes; None when they are."""
    f = profile.bytes_per_frame_raw
    n = on_time_every(f)
    if n == 1:
        return None
    period = profile.frame_period_ms
    alt = aligned_alternatives(profile)
    ways = []
    if alt["num_adc_samples"] is not None:
        ways.append(f"numAdcSamples {alt['num_adc_samples']} (profileCfg, now {profile.num_adc_samples})")
    if alt["num_loops"] is not None:
        ways.append(f"{alt['num_loops']} loops (frameCfg, now {profile.num_loops})")
    fix = ("; frames that are a multiple of it: " + " or ".join(ways)) if ways else \
        "; no nearby numAdcSamples or loop count fits the chirp and the frame period"
    return (f"{src}: DCA1000 raw frames are {f} B, not a multiple of the {PACKET}-byte packet: a frame completes "
            f"only when the next frame's first chirps fill its last packet, so {n - 1} in {n} frames reach the "
            f"host one frame period ({period:g} ms) late and 1 in {n} on time, and pairs lean on the clock "
            f"model finding those (keep sync.clock_warmup_s >= {2 * n * period / 1000:g} s); the last frame "
            f"of a capture waits for the {FLUSH_S:g}-s flush{fix}")

"""Deterministic synthetic rigs of known truth for the clock models and the matcher (tests and bench/sync.py).

A rig is two streams, each a table of frames: the true capture instant on host CLOCK_MONOTONIC (`tau`),
the device time the driver reports (`dev`, None for a sensor without a device clock), the host arrival
stamp the capture daemon takes (`arrival`), and whether the frame reached the synchroniser (`keep`).

`issue13()` is the reproduction of issue #13, the DCA1000 latency pattern:
- radar 10 Hz, device time = frame number x 100 ms on a crystal +80 ppm fast; arrival latency 110 ms,
  except every 91st frame at 15 ms (a 262 144-byte frame completes only when the next frame's first chirps
  fill its last 1456-byte packet; 91 frames are exactly 16 384 packets), exponential jitter 2 ms;
- camera 30 Hz, device clock in milliseconds (RealSense-style, microsecond resolution) -60 ppm, latency
  4 ms + exponential 1 ms;
- 2.5 % of the frames of each stream dropped; the synchroniser is told radar_latency_ms = 15,
  camera latency_ms = 4.
The same generator gives the variants the clock model is tested on: 1-in-300 fast frames, a latency pattern
that changes mid-run, UART-mode frames (wire time by packet size, read in bursts).

Every array is a function of the seed alone (numpy default_rng), so a test or a benchmark row names its
seed and can be rerun exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radvis.wire import Message

NS = 1_000_000_000
MS = 1_000_000
DCA_PACKET = 1456  # bytes of ADC payload per DCA1000 packet (ti_mmwave.md §3.3)


@dataclass
class Stream:
    name: str
    tau: np.ndarray  # true capture instant, host ns
    dev: np.ndarray | None  # device time, ns (None: no device clock)
    arrival: np.ndarray  # host arrival stamp, ns (of the last byte for UART frames)
    keep: np.ndarray  # frame reached the synchroniser
    frame_number: np.ndarray  # the device's frame counter
    period_ns: float  # nominal frame period (device time)
    latency_ns: int  # the minimum latency the synchroniser is told (config)
    uart_time_s: np.ndarray | None = None  # meta uart_time_s (UART wire time of the packet), radar UART mode
    fast: np.ndarray | None = None  # radar: frame arrived at the minimum-latency mode

    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.keep)


@dataclass
class Rig:
    radar: Stream
    camera: Stream
    t0: int
    seed: int
    notes: dict = field(default_factory=dict)

    def stream(self, name: str) -> Stream:
        return self.radar if name == "radar" else self.camera

    def events(self) -> list[tuple[int, str, int]]:
        """(arrival ns, stream, index) of every kept frame, in arrival order (what a capture daemon publishes
        and a recorder records; ties: radar first, deterministic)."""
        ev = [(int(s.arrival[i]), s.name, int(i)) for s in (self.radar, self.camera) for i in s.kept()]
        ev.sort(key=lambda e: (e[0], e[1] != "radar", e[2]))
        return ev


def dca_fast_every(frame_bytes: int, packet: int = DCA_PACKET) -> int:
    """Every how many frames a frame ends exactly on a packet boundary (arrives without waiting for the
    next frame): packet / gcd(frame_bytes, packet). 1 = every frame aligned."""
    return packet // int(np.gcd(int(frame_bytes), packet))


def radar_stream(rng: np.random.Generator, *, t0: int, duration_s: float, period_ms: float = 100.0,
                 drift_ppm: float = 80.0, base_ms: float = 15.0, late_ms: float = 110.0, fast_every: int = 91,
                 jitter_ms: float = 2.0, drop: float = 0.025, told_latency_ms: float | None = None,
                 change_at_s: float | None = None, late_after_ms: float | None = None,
                 fast_every_after: int | None = None, base_after_ms: float | None = None,
                 uart: bool = False, baud: int = 921600, bursts: bool = False) -> Stream:
    """10 Hz radar whose device time is frame number x period (TI SWRA574B) on a crystal `drift_ppm` fast.

    Latency: `late_ms` for most frames, `base_ms` for every `fast_every`-th (DCA1000 packetisation; set
    fast_every=1 for a unimodal latency), + exponential jitter. From `change_at_s` on, `late_after_ms`,
    `fast_every_after` and/or `base_after_ms` replace them (a latency pattern that changes mid-run).
    `uart`: the frame's TLV packet (200..6000 B, with the point count) is on the wire for bytes x 10 / baud
    after the frame's `base_ms` processing; the stamp is the last byte's (meta uart_time_s says how long it
    took). `bursts`: the host reads the port in bursts: frames of 0.15..0.6 s stretches are delivered together
    at the end of the stretch (a busy capture process)."""
    n = int(duration_s * 1000 / period_ms)
    fn = np.arange(n)
    period_host = period_ms * MS / (1 + drift_ppm * 1e-6)  # a fast crystal makes host-time periods shorter
    tau = t0 + rng.uniform(0, period_ms * MS) + fn * period_host
    dev = fn * period_ms * MS
    phase = int(rng.integers(0, max(1, fast_every)))
    fast = (fn + phase) % max(1, fast_every) == 0
    lat = np.where(fast, base_ms, late_ms) * MS
    if change_at_s is not None:
        after = tau >= t0 + change_at_s * NS
        fe = fast_every if fast_every_after is None else fast_every_after
        f2 = (fn + phase) % max(1, fe) == 0
        b2 = base_ms if base_after_ms is None else base_after_ms
        l2 = late_ms if late_after_ms is None else late_after_ms
        fast = np.where(after, f2, fast)
        lat = np.where(after, np.where(f2, b2, l2) * MS, lat)
    lat = lat + rng.exponential(jitter_ms * MS, n)
    uart_s = None
    if uart:
        nbytes = rng.integers(200, 6000, n)
        uart_s = nbytes * 10 / baud
        lat = lat + uart_s * NS
    arrival = tau + lat
    if bursts:
        t = tau[0]
        while t < tau[-1]:
            t += rng.uniform(1.0, 4.0) * NS  # a hiccup every 1-4 s
            w = rng.uniform(0.15, 0.6) * NS
            sel = (arrival >= t) & (arrival < t + w)
            arrival[sel] = t + w + rng.uniform(0, 0.2 * MS, int(sel.sum()))
            t += w
        arrival = np.maximum.accumulate(arrival)  # one port, read in order
    keep = rng.random(n) >= drop
    told = base_ms if told_latency_ms is None else told_latency_ms
    return Stream("radar", tau, dev, np.round(arrival), keep, fn, period_ms * MS, int(told * MS), uart_s, fast)


def camera_stream(rng: np.random.Generator, *, t0: int, duration_s: float, fps: float = 30.0,
                  drift_ppm: float = -60.0, latency_ms: float = 4.0, jitter_ms: float = 1.0,
                  drop: float = 0.025, ms_clock: bool = True) -> Stream:
    """30 fps camera with its own crystal (`drift_ppm`) and a device clock offset by a random amount;
    `ms_clock`: the device reports milliseconds with microsecond resolution (RealSense frame timestamps),
    converted to ns by the capture daemon."""
    m = int(duration_s * fps)
    j = np.arange(m)
    tau = t0 + j * (NS / fps) / (1 + drift_ppm * 1e-6) + rng.normal(0, 10_000, m)  # 10 us trigger jitter
    off = rng.uniform(-1e3, 1e3) * NS
    dev = (tau - off) * (1 + drift_ppm * 1e-6)
    if ms_clock:
        dev = np.round(dev / 1000.0) * 1000.0  # a float ms clock with us resolution
    arrival = tau + latency_ms * MS + rng.exponential(jitter_ms * MS, m)
    keep = rng.random(m) >= drop
    return Stream("camera", tau, dev, np.round(arrival), keep, j, NS / fps, int(latency_ms * MS))


def issue13(seed: int = 0, *, duration_s: float = 240.0, **radar_kw) -> Rig:
    """The issue #13 reproduction (module docstring); `radar_kw` overrides radar_stream() arguments for the
    variants (fast_every=300, a mid-run change, uart=True, ...)."""
    rng = np.random.default_rng(seed)
    t0 = 5000 * NS
    kw = dict(drift_ppm=80.0, base_ms=15.0, late_ms=110.0, fast_every=91, jitter_ms=2.0, drop=0.025)
    kw.update(radar_kw)
    radar = radar_stream(rng, t0=t0, duration_s=duration_s, **kw)
    camera = camera_stream(rng, t0=t0, duration_s=duration_s)
    return Rig(radar, camera, t0, seed, notes=dict(kw))


def messages(rig: Rig, *, replay: bool, truth: bool = False, small: bool = True) -> list[Message]:
    """The rig as the capture daemons publish it (and a recorder records it), in arrival order: radar
    messages with meta frame_number / frame_period_ms (/ uart_time_s), camera messages with t.device_ns,
    small buffers (`small`) or the rig's shapes; `truth`: a truth message per frame (docs/sync.md)."""
    out, seq = [], {"radar": 0, "camera": 0}
    rshape, cshape = ((4, 4, 2), (4, 4, 3)) if small else ((128, 128, 2), (96, 128, 3))
    for arr, name, i in rig.events():
        s = rig.stream(name)
        if name == "radar":
            meta = {"frame_number": int(s.frame_number[i]), "frame_period_ms": 100.0, "mode": "dca1000"}
            if s.uart_time_s is not None:
                meta.update(mode="uart", uart_time_s=float(s.uart_time_s[i]))
            m = Message(kind="radar", source="radar0", buffers={"ra": np.full(rshape, i, np.float32)}, meta=meta)
        else:
            m = Message(kind="camera", source="camera0", buffers={"image": np.full(cshape, i % 251, np.uint8)},
                        meta={"frame_number": int(i), "encoding": "raw"}, t_device_ns=int(s.dev[i]))
        m.t_mono_ns, m.t_wall_ns, m.replay, m.epoch = int(arr), int(arr) + 10**18, replay, 5
        m.seq = seq[name]
        seq[name] += 1
        out.append(m)
    if truth:
        out = with_truth(rig, out)
    return out


def truth_message(rig: Rig, name: str, i: int) -> Message:
    s = rig.stream(name)
    return Message(kind="truth", source=f"{name}0",
                   meta={"stream": name, "frame_number": int(s.frame_number[i]), "t_capture_ns": int(s.tau[i]),
                         "label": "empty"})


def with_truth(rig: Rig, msgs: list[Message]) -> list[Message]:
    """Interleave a truth message per frame: half before the frame (the emulator samples the scene first),
    half after (a slower truth socket), so the join is tested both ways."""
    out, seq = [], {"radar": 0, "camera": 0}
    for m in msgs:
        i = int(m.meta["frame_number"]) if m.kind == "camera" else int(np.flatnonzero(rig.radar.frame_number ==
                                                                                     m.meta["frame_number"])[0])
        t = truth_message(rig, m.kind, i)
        # numbered per source like any stream (a subscriber drops a repeated (epoch, seq) as a stale duplicate)
        t.epoch, t.seq = m.epoch, seq[m.kind]
        seq[m.kind] += 1
        out += [t, m] if i % 2 else [m, t]
    return out


def truth_pairs(rig: Rig, max_skew_ns: int) -> set[tuple[int, int]]:
    """The pairing rule (sync.matcher.match_offline) applied to the *true* capture times of the frames that
    reached the synchroniser: (radar index, camera index)."""
    from sync.matcher import match_offline
    ri, ci = rig.radar.kept(), rig.camera.kept()
    return {(int(ri[a]), int(ci[b])) for a, b in match_offline(rig.radar.tau[ri], rig.camera.tau[ci], max_skew_ns)}


def radar_warm_time(rig: Rig, warmup_s: float = 20.0) -> int | None:
    """True capture time of the first radar frame a fresh radar ClockModel calls warm (`is_warm`), i.e.
    from when the synchroniser pairs with sync.clock_warmup_s = warmup_s; None if never."""
    from sync.clock import ClockModel
    r = rig.radar
    m = ClockModel("radar", latency_ns=r.latency_ns)
    for arr, name, i in rig.events():
        if name == "radar":
            tx = int(round(r.uart_time_s[i] * NS)) if r.uart_time_s is not None else 0
            m.update(arr, float(r.dev[i]), tx_ns=tx)
            if m.is_warm(warmup_s * NS):
                return int(r.tau[i])
    return None


def truth_pair_sets(rig: Rig, max_skew_ns: int, tol_ns: int) -> tuple[set, set]:
    """(robust, loose) truth pairs for a corrected-time accuracy of `tol_ns`: robust = mutual nearest
    neighbours (true capture times) within max_skew - tol whose runner-up is more than tol further (no
    estimate within the tolerance can change them: a synchroniser must produce them); loose = every pair
    within tol of being a mutual nearest neighbour within max skew (an estimate within the tolerance may
    produce it: not an error). With tol = 0 both are `truth_pairs`."""
    ri, ci = rig.radar.kept(), rig.camera.kept()
    tr, tc = rig.radar.tau[ri], rig.camera.tau[ci]

    def two_nearest(src, dst):
        i = np.searchsorted(dst, src)
        cand = np.stack([dst[np.clip(i + k, 0, len(dst) - 1)] for k in (-2, -1, 0, 1)], 1)
        ok = np.stack([(i + k >= 0) & (i + k < len(dst)) for k in (-2, -1, 0, 1)], 1)
        d = np.sort(np.where(ok, np.abs(cand - src[:, None]), np.inf), 1)
        return d[:, 0], d[:, 1]

    r1, r2 = two_nearest(tr, tc)
    c1, c2 = two_nearest(tc, tr)
    robust, loose = set(), set()
    for a in range(len(ri)):
        lo, hi = np.searchsorted(tc, [tr[a] - max_skew_ns - tol_ns, tr[a] + max_skew_ns + tol_ns])
        for b in range(lo, hi):
            d = abs(tc[b] - tr[a])
            if d <= r1[a] + tol_ns and d <= c1[b] + tol_ns and d <= max_skew_ns + tol_ns:
                loose.add((int(ri[a]), int(ci[b])))
            if d == r1[a] and d == c1[b] and d <= max_skew_ns - tol_ns and r2[a] - d > tol_ns and c2[b] - d > tol_ns:
                robust.add((int(ri[a]), int(ci[b])))
    return robust, loose


def precision_recall(got: set, want: set) -> tuple[float, float]:
    tp = len(got & want)
    return tp / max(1, len(got)), tp / max(1, len(want))

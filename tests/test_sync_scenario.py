"""Issue #13's scenario (sync/scenario.py): DCA1000 frames that arrive a frame period late except 1 in 91.

Radar 10 Hz, device time = frame number x 100 ms, +80 ppm; latency 110 ms except every 91st frame at 15 ms,
exponential jitter 2 ms. Camera 30 Hz, millisecond device clock, -60 ppm, latency 4 ms + exp(1 ms). 2.5 %
drops. Sync is told radar_latency_ms = 15. Before the fix: corrected radar times ~95 ms off for minutes,
drift swinging +-900 ppm, pair precision = recall ~0.3-0.5.

Stated accuracy (docs/sync.md): once a clock model is warm (its epoch spans sync.clock_warmup_s, 20 s, and
its offset rests on 6 bins of the lowest latency mode: ~45-55 s for 1 frame in 91 on time) each corrected
time is within 1.5 ms of the truth; in general the radar error is the smallest jitter among the on-time
frames seen so far (+ 0.5 ms). Pairs are judged against the pairing rule applied to the true capture times
(sync.scenario.truth_pairs), for radar frames after the warm-up: precision = recall >= 0.99 (strict), and
with the truth's own ambiguity at the 1.5 ms tolerance (truth_pair_sets) for more seeds."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from radvis.config import load
from radvis.transport import Publisher, Subscriber
from radvis.wire import Message
from sync.clock import ClockModel
from sync.daemon import END_OF_STREAM, SyncDaemon, SyncProcessor
from sync.scenario import (MS, NS, Rig, issue13, messages, precision_recall, radar_warm_time, truth_message,
                            truth_pairs)

WARMUP_S = 20.0  # sync.clock_warmup_s default (the least warm-up; the lowest mode's bins decide the rest)
TIME_TOL_MS = 1.5  # docs/sync.md: corrected time after warm-up
SKEW = NS // 60
SEEDS = [1, 2, 3]


# ------------------------------------------------------------------------------------------------
# helpers: the scenario as clock samples, as wire messages, through the processor
# ------------------------------------------------------------------------------------------------

def clock_errors(rig: Rig, stream: str) -> tuple[np.ndarray, np.ndarray, ClockModel, list]:
    """(true time since start s, corrected - true ns) per kept frame, fed in arrival order; drift per frame."""
    s = rig.stream(stream)
    m = ClockModel(stream, latency_ns=s.latency_ns)
    err, drift = {}, []
    for arr, name, i in rig.events():
        if name != stream:
            continue
        tx = int(round(s.uart_time_s[i] * NS)) if s.uart_time_s is not None else 0
        err[i] = m.update(arr, float(s.dev[i]), tx_ns=tx).t_ns - s.tau[i]
        drift.append(((s.tau[i] - rig.t0) / NS, m.drift_ppm()))
    k = s.kept()
    return (s.tau[k] - rig.t0) / NS, np.array([err[i] for i in k]), m, drift


def best_fast_jitter(rig: Rig) -> np.ndarray:
    """Per kept radar frame: the smallest latency jitter among the on-time frames that arrived before it
    (what an envelope can know at that moment); inf before the first one."""
    r = rig.radar
    jit = (r.arrival - r.tau) - r.latency_ns - (r.uart_time_s * NS if r.uart_time_s is not None else 0)
    best, out = np.inf, {}
    for arr, name, i in rig.events():
        if name == "radar":
            if r.fast[i]:
                best = min(best, jit[i])
            out[i] = best
    return np.array([out[i] for i in r.kept()])


def cfg_for(tmp_path=None, **extra):
    sets = ["sync.radar_latency_ms=15", "camera.latency_ms=4", "rig.stats_interval_s=0.5"]
    if tmp_path is not None:
        for n in ("radar", "camera", "pairs", "truth"):
            sets.append(f"endpoints.{n}=ipc://{tmp_path}/{n}")
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load(None, sets)


def pair_set(rig: Rig, out: list[Message]) -> set[tuple[int, int]]:
    """(radar index, camera index) of the pair messages (radar frame numbers are indices: fn = index)."""
    return {(int(m.meta["radar"]["meta"]["frame_number"]), int(m.meta["camera"]["meta"]["frame_number"]))
            for m in out if m.kind == "pair"}


def warm_from(rig: Rig) -> int:
    """When the sync pairs from (the radar clock model warm), computed apart from the sync; bounded."""
    t = radar_warm_time(rig, WARMUP_S)
    assert t is not None and t - rig.t0 < 75 * NS, "warm-up longer than 75 s"
    return t


def warm_truth(rig: Rig) -> set[tuple[int, int]]:
    t = warm_from(rig)
    return {p for p in truth_pairs(rig, SKEW) if rig.radar.tau[p[0]] >= t}


def run_processor(msgs, cfg) -> tuple[list[Message], SyncProcessor]:
    p = SyncProcessor(cfg)
    out = []
    for m in msgs:
        out += p.process(m, now_ns=m.t_mono_ns)
    return out + p.flush(), p


# ------------------------------------------------------------------------------------------------
# the clock model on the scenario and its variants
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_clock_model_holds_the_sparse_envelope(seed):
    rig = issue13(seed)
    t, err, m, drift = clock_errors(rig, "radar")
    warm = t >= (warm_from(rig) - rig.t0) / NS
    assert np.abs(err[warm]).max() < TIME_TOL_MS * MS, np.abs(err[warm]).max() / MS
    # the envelope error is the on-time frames' jitter, nothing more
    assert np.all(np.abs(err[warm]) <= best_fast_jitter(rig)[warm] + 0.5 * MS)
    # drift: fitted once the window spans 10 s (not 0 until it fills), never swinging (truth +80 ppm)
    ts, d = np.array(drift).T
    assert np.abs(d[ts >= 12] - 80).max() < 20 and np.abs(d[ts >= 30] - 80).max() < 2, d[ts >= 12][:20]
    assert m.state()["latency_modes"] >= 2 and m.restarts == 0
    tc, errc, mc, _ = clock_errors(rig, "camera")
    assert np.abs(errc[tc >= 3]).max() < 0.2 * MS and abs(mc.drift_ppm() + 60) < 1


def test_pairs_within_the_stated_tolerance_over_more_seeds():
    """Seeds 1-8, pairs by the pairing rule on the corrected times after warm-up: every pair the truth makes
    unambiguous at the 1.5 ms tolerance is produced, and every produced pair is right within it; corrected
    radar times within 1.5 ms. (Strict precision = recall, where a 0.3 ms error may pick the other of two
    camera frames 16.6 and 16.7 ms away, is >= 0.99 for 16 of 20 seeds, min 0.968: docs/sync.md.)"""
    from sync.matcher import match_offline
    from sync.scenario import truth_pair_sets
    for seed in range(1, 9):
        rig = issue13(seed)
        t0 = warm_from(rig)
        est = {}
        for name in ("radar", "camera"):
            t, err, _, _ = clock_errors(rig, name)
            s = rig.stream(name)
            est[name] = s.tau[s.kept()] + err
            if name == "radar":
                assert np.abs(err[s.tau[s.kept()] >= t0]).max() < TIME_TOL_MS * MS, seed
        ri, ci = rig.radar.kept(), rig.camera.kept()
        got = {(int(ri[a]), int(ci[b])) for a, b in match_offline(est["radar"], est["camera"], SKEW)
               if rig.radar.tau[ri[a]] >= t0}
        robust, loose = truth_pair_sets(rig, SKEW, int(TIME_TOL_MS * MS))
        robust = {p for p in robust if rig.radar.tau[p[0]] >= t0}
        assert len(got & loose) / len(got) >= 0.99 and len(got & robust) / len(robust) >= 0.99, seed


@pytest.mark.parametrize("variant", [
    dict(fast_every=300),  # 1 frame in 300 on time: one every 30 s
    dict(change_at_s=120, fast_every_after=10**9),  # on-time frames stop (floor rises by 95 ms) mid-run
    dict(change_at_s=120, fast_every_after=1, base_after_ms=40.0),  # unimodal 40 ms from 120 s on
    dict(fast_every=10**9, change_at_s=60, fast_every_after=1),  # all late, then all on time from 60 s
    dict(fast_every=1, base_ms=5.0, uart=True, bursts=True),  # UART: wire time by packet size, read in bursts
], ids=["1in300", "ontime-stops", "floor-rises", "floor-drops", "uart-bursts"])
def test_clock_model_variants(variant):
    for seed in SEEDS:
        rig = issue13(seed, **variant)
        t, err, m, drift = clock_errors(rig, "radar")
        known = best_fast_jitter(rig)
        # after the warm-up: within the best on-time jitter seen so far, whatever came after it
        # (a floor that rose is held by the anchors that left the window, counted 5 ppm/s higher)
        ok = (t >= WARMUP_S) & np.isfinite(known)
        assert np.all(np.abs(err[ok]) <= known[ok] + 0.5 * MS), (seed, np.abs(err[ok] - known[ok]).max() / MS)
        assert m.restarts == 0 and abs(m.drift_ppm() - 80) < 2
        if variant.get("uart"):
            assert np.abs(err[t >= WARMUP_S]).max() < 0.2 * MS  # bursts are late frames, not restarts


# ------------------------------------------------------------------------------------------------
# pairs, through SyncProcessor: replay, and live = replay whatever the interleaving
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_replayed_scenario_pairs_match_truth(seed):
    rig = issue13(seed)
    out, proc = run_processor(messages(rig, replay=True, truth=True), cfg_for())
    got = pair_set(rig, out)
    want = warm_truth(rig)
    prec, rec = precision_recall(got, want)
    assert prec >= 0.99 and rec >= 0.99, (prec, rec)
    st = proc.stats()
    # nothing paired during the clock warm-up; those frames are accounted for
    t_warm = warm_from(rig)
    assert not [p for p in pair_set(rig, out) if rig.radar.tau[p[0]] < t_warm - NS]
    assert st["unmatched"]["radar"]["warmup"] > 150
    # the truth join: every pair's true offset is known; p99 within half a camera period
    tr = st["truth"]
    assert tr["pairs_joined"] == st["pairs"] and tr["truth_bad"] == 0
    assert tr["true_offset_ms"]["max"] <= 1e3 / 60 + TIME_TOL_MS and tr["skew_error_ms"]["p99"] < TIME_TOL_MS


def test_live_pairs_equal_replayed_pairs_whatever_the_interleaving():
    """The same recording processed live (replay=false) by a process running 2 s behind, with the radar
    delivered in batches up to 0.6 s behind the camera (a loaded machine, fair-queued sockets), and replayed
    in arrival order: identical pairs and drop events. Before #13 the processing-time arrival bound and
    frames below their stream's watermark made these differ."""
    rig = issue13(2, duration_s=120)
    cfg = cfg_for()
    replay, _ = run_processor(messages(rig, replay=True), cfg)
    live_msgs = messages(rig, replay=False)
    rng = np.random.default_rng(0)
    # delivery order: camera as stamped; radar each held back by a delay that changes every few frames
    # (0..0.6 s: batches), its own order kept
    key, last, d = [], 0, 0.0
    for m in live_msgs:
        if m.kind == "radar":
            if rng.random() < 0.2:
                d = rng.uniform(0, 0.6) * NS
            last = max(last, m.t_mono_ns + d)
            key.append(last)
        else:
            key.append(m.t_mono_ns)
    mixed = [live_msgs[i] for i in np.argsort(key, kind="stable")]
    assert [m.seq for m in mixed if m.kind == "radar"] == sorted(m.seq for m in mixed if m.kind == "radar")
    proc = SyncProcessor(cfg)
    live, now = [], 0
    for m in mixed:
        now = max(now, m.t_mono_ns + 2 * NS)  # this process's clock: 2 s behind the capture daemons
        live += proc.process(m, now_ns=now)
        live += proc.tick(now_ns=now)  # no socket silent for max_latency: nothing forced
    live += proc.flush()

    def key(out):
        return sorted((m.meta["radar"]["seq"], m.meta["camera"]["seq"]) for m in out if m.kind == "pair")

    def events(out):
        return sorted((m.meta["stream"], m.meta["seq"], m.meta["reason"]) for m in out if m.kind == "event")
    assert key(live) == key(replay) and len(key(replay)) > 500
    assert events(live) == events(replay)
    assert proc.counts["stalls"] == 0


def test_stalled_stream_is_forced_only_live():
    """The camera goes silent for 3 s mid-run: live, the radar frames waiting for it are decided once its
    socket has been silent for max_latency (counted as a stall); a replay waits for the data instead. Pairs
    away from the stall are the same both ways."""
    rig = issue13(3, duration_s=100)
    t_gap = rig.t0 + 80 * NS
    gap = (rig.camera.arrival >= t_gap) & (rig.camera.arrival < t_gap + 3 * NS)
    rig.camera.keep &= ~gap
    cfg = cfg_for()
    proc = SyncProcessor(cfg)
    out = []
    for m in messages(rig, replay=False):
        out += proc.tick(now_ns=m.t_mono_ns)
        out += proc.process(m, now_ns=m.t_mono_ns)
    out += proc.flush()
    replay, _ = run_processor(messages(rig, replay=True), cfg)
    assert proc.counts["stalls"] == 1
    assert pair_set(rig, out) == pair_set(rig, replay)


# ------------------------------------------------------------------------------------------------
# over real sockets, in real time
# ------------------------------------------------------------------------------------------------

def _collect(sub, until, limit_s=60.0):
    out, end = [], time.monotonic() + limit_s
    while time.monotonic() < end and not until(out):
        m = sub.recv(timeout_ms=50)
        if m is not None:
            out.append(m)
    return out


def test_sync_daemon_real_time_over_sockets(tmp_path):
    """The scenario through `SyncDaemon` over ZeroMQ: the first 66 s of the run (a backlog, as after a
    stall) as fast as the sockets go, then the next 4 s in real time, paced by the arrival stamps mapped onto
    this host's clock; truth on its own endpoint. The pairs equal the replay of the same messages; precision
    and recall >= 0.99 against the truth after warm-up; the sync's stats carry the pairing error."""
    rig = issue13(1, duration_s=70)
    cfg = cfg_for(tmp_path)
    replay_pairs = pair_set(rig, run_processor(messages(rig, replay=True), cfg)[0])
    msgs = messages(rig, replay=False)
    truths = [truth_message(rig, m.kind, int(m.meta["frame_number"])) for m in msgs]  # fn = index
    # shift the timeline so that t = 66 s of the run is "now + 0.5 s" on this host (the real-time part)
    shift = time.monotonic_ns() + NS // 2 - (rig.t0 + 66 * NS)
    for m, t in zip(msgs, truths):
        m.t_mono_ns += shift
        t.meta["t_capture_ns"] += shift
    pubs = {k: Publisher(getattr(cfg.endpoints, k), hwm=100_000) for k in ("radar", "camera", "truth")}
    daemon = SyncDaemon(cfg)
    sub = Subscriber(cfg.endpoints.pairs, ["pair"])
    stop = threading.Event()
    result = {}
    th = threading.Thread(target=lambda: result.update(daemon.serve(stop=stop)), daemon=True)
    try:
        for k, p in pubs.items():
            assert p.wait_for_subscribers(1, 10, topic=k)
        assert daemon.pub.wait_for_subscribers(1, 10, topic="pair")
        th.start()
        for m, t in zip(msgs, truths):
            wait = (m.t_mono_ns - time.monotonic_ns()) / 1e9
            if wait > 0:  # real time: a capture daemon publishes each frame when it arrives
                time.sleep(wait)
            assert pubs["truth"].send(t) and pubs[m.kind].send(m, keep_seq=True)
        got = _collect(sub, lambda o: len(o) >= len(replay_pairs), 60)
        stop.set()
        th.join(10)
    finally:
        stop.set()
        for p in pubs.values():
            p.close()
        sub.close()
        daemon.close()
    assert pair_set(rig, got) == replay_pairs
    prec, rec = precision_recall(replay_pairs, warm_truth(rig))
    assert prec >= 0.99 and rec >= 0.99, (prec, rec)
    assert result["stalls"] == 0 and result["pairs"] == len(replay_pairs)
    tr = result["truth"]
    assert tr["truth_in"] == len(msgs) and tr["pairs_joined"] == result["pairs"]
    assert tr["true_offset_ms"]["p99"] <= 1e3 / 60 and tr["skew_error_ms"]["p99"] < TIME_TOL_MS
    assert result["skew_ms_p99"] is not None  # the sync's own estimate, beside the truth


def test_no_truth_says_so():
    rig = issue13(1, duration_s=90)
    _, proc = run_processor(messages(rig, replay=True), cfg_for())
    assert proc.stats()["truth"] == {"truth": "none"} and proc.stats()["pairs"] > 50


def test_end_of_stream_event_decides_the_tail():
    """A replay's end-of-stream events (one per endpoint) decide what is held, with no quiet-period wait."""
    rig = issue13(1, duration_s=30)
    cfg = cfg_for()
    proc = SyncProcessor(cfg)
    out = []
    for m in messages(rig, replay=True):
        out += proc.process(m)
    n_before = sum(1 for m in out if m.kind == "pair")
    held = len(proc.matcher.pending) + sum(not f.done for f in proc.matcher.s["camera"].frames)
    end = [Message(kind="event", source="replay", meta={"event": END_OF_STREAM, "stream": s}, replay=True)
           for s in ("radar", "camera")]
    assert proc.process(end[0]) == []  # the camera may still be in flight
    tail = proc.process(end[1])
    assert held > 0 and proc.stats()["ends"] == 1 and not proc.matcher.pending
    flushed, _ = run_processor(messages(rig, replay=True), cfg)
    assert n_before + sum(1 for m in tail if m.kind == "pair") == sum(1 for m in flushed if m.kind == "pair")


def test_recorded_live_run_replays_to_the_same_pairs(tmp_path):
    """What `radvis rig` checks after a run, with the DCA1000 latency pattern: capture daemons publish 60 s of
    the scenario live (as fast as the sockets take it), a live `SyncDaemon` pairs it while a `Recorder`
    records radar, camera and pairs; the session replayed by `capture.replay` into a fresh sync gives exactly
    the recorded live pairs (rig/cli.recorded_pairs reads them as the rig does)."""
    from capture.record import Recorder
    from capture.replay import replay_session
    from rig.cli import _pair_id, recorded_pairs
    rig = issue13(4, duration_s=60)
    live_eps = {k: f"ipc://{tmp_path}/live-{k}" for k in ("radar", "camera", "pairs", "truth")}
    cfg_live = cfg_for(None, **{f"endpoints.{k}": v for k, v in live_eps.items()})
    pubs = {k: Publisher(live_eps[k], hwm=100_000) for k in ("radar", "camera", "truth")}
    sync = SyncDaemon(cfg_live)
    rec = Recorder(live_eps, tmp_path / "session", fsync_s=0.5)
    msgs = messages(rig, replay=False, truth=True)
    n_truth = sum(1 for m in msgs if m.kind == "truth")
    stop, rstop = threading.Event(), threading.Event()
    result = {}
    ths = [threading.Thread(target=lambda: result.update(sync.serve(stop=stop)), daemon=True),
           threading.Thread(target=lambda: [rec.poll_once(20) for _ in iter(rstop.is_set, True)], daemon=True)]
    try:
        for k, p in pubs.items():  # both consumers of each endpoint: sync and the recorder
            assert p.wait_for_subscribers(2, 10, topic=k)
        assert sync.pub.wait_for_subscribers(1, 10, topic="pair")
        for th in ths:
            th.start()
        for m in msgs:
            assert pubs[m.kind].send(m, keep_seq=True)
        # the rig stops producers, then sync (which decides what it holds), then the recorder
        n_frames = len(msgs) - n_truth
        end = time.monotonic() + 240
        while time.monotonic() < end and sync.proc.counts["radar_in"] + sync.proc.counts["camera_in"] < n_frames:
            time.sleep(0.05)
        stop.set()
        ths[0].join(10)
        end = time.monotonic() + 120
        while time.monotonic() < end and rec.written < n_frames + n_truth + result["pairs"]:
            time.sleep(0.05)
        rstop.set()
        ths[1].join(10)
    finally:
        stop.set()
        rstop.set()
        rec.close()
        for p in pubs.values():
            p.close()
        sync.close()
    live, frames = recorded_pairs(tmp_path / "session")
    assert len(live) == result["pairs"] > 100 and len(frames) == n_frames, (len(live), result["unmatched"], result["stalls"], result["sub"])

    cfg = cfg_for(tmp_path)
    daemon = SyncDaemon(cfg)
    sub = Subscriber(cfg.endpoints.pairs, ["pair"], hwm=100_000)
    stop = threading.Event()
    th = threading.Thread(target=lambda: daemon.serve(stop=stop), daemon=True)
    try:
        assert daemon.pub.wait_for_subscribers(1, 10, topic="pair")
        th.start()
        st = replay_session(cfg, str(tmp_path / "session"), topics=["radar", "camera"], as_fast=True,
                            wait_subscribers=1)
        got = _collect(sub, lambda o: len(o) >= len(live), 240)  # a deadline, generous for a busy machine
        assert _collect(sub, lambda o: daemon.proc.counts["ends"] >= 1, 120) == []  # decided by the end event
        stop.set()
        th.join(10)
    finally:
        stop.set()
        sub.close()
        daemon.close()
    assert st.sent == n_frames
    assert sorted(_pair_id(m.meta) for m in got) == sorted(live)

    # the rig report's timing section, from the same recording (rig/sync_report.py)
    from rig.sync_report import analyse, plot, read_session, sync_report
    rep = sync_report(tmp_path / "session", tmp_path)
    a = rep["analysis"]
    assert a["has_truth"] and a["pairs"] == len(live) and a["pair_error_ms"]["n"] == len(live)
    assert a["pair_error_ms"]["p99"] < 1e3 / 60 and a["skew_error_ms"]["p99"] < TIME_TOL_MS
    assert 15 < a["latency_ms"]["radar"]["p50"] < 125 and a["latency_ms"]["camera"]["max"] < 20
    # against the best pair the truth allows (the camera frame captured nearest each radar frame)
    assert a["optimal_fraction"] >= 0.99 and a["excess_ms"]["p99"] < TIME_TOL_MS and a["excess_ms"]["n"] == len(live)
    assert "captured nearest the radar frame" in rep["line"]
    assert "pairing error against the truth" in rep["line"] and (tmp_path / "timing.png").stat().st_size > 1000
    assert any("timing.png" in ln for ln in rep["markdown"])
    data = read_session(tmp_path / "session")
    data["truth"] = {}  # real devices
    b = analyse(data)
    assert not b["has_truth"] and b["pair_error_ms"] is None and plot(b, tmp_path / "nt.png") is not None

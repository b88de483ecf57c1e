"""Clock models against synthetic sensors of known truth: true capture instants on host CLOCK_MONOTONIC,
a device clock with offset and drift, non-negative transport latency with jitter."""
from __future__ import annotations

import itertools

import numpy as np
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from sync.clock import NS, ClockModel, envelope_line, lower_hull, uart_tx_ns

MS = 1_000_000
DRIFT_TOL_PPM = 5.0  # stated tolerance of the drift estimate after 60 s (truth up to +-100 ppm)
WARM_TOL_NS = 1_500_000  # corrected capture time 3-12 s after the first sample (offset-only warm-up)
TIME_TOL_NS = 500_000  # corrected capture time once drift is fitted (>= 12 s)
FAST = dict(deadline=None, derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no slow shrinking


def check_err(err, rate):
    """Error of corrected capture times against truth, per stated tolerance."""
    assert np.abs(err[int(3 * rate):int(12 * rate)]).max(initial=0) < WARM_TOL_NS
    assert np.abs(err[int(12 * rate):]).max(initial=0) < TIME_TOL_NS


def sensor(rng, *, rate_hz, duration_s, drift_ppm, offset_s, min_latency_ms, jitter_ms, t0_s=1000.0):
    """True capture times tau (host ns), device times (ns, device runs (1 + drift) fast), arrival stamps."""
    n = int(duration_s * rate_hz)
    tau = t0_s * NS + np.arange(n) * (NS / rate_hz) + rng.normal(0, 20_000, n)  # capture jitter 20 us
    dev = (tau - offset_s * NS) * (1 + drift_ppm * 1e-6)
    arrival = tau + min_latency_ms * MS + rng.exponential(jitter_ms * MS, n)
    return tau, dev, arrival


@settings(max_examples=12, **FAST)
@given(seed=st.integers(0, 2**31), drift=st.floats(-100, 100), offset=st.floats(-5000, 5000),
       rate=st.sampled_from([10, 30]), jitter=st.floats(0.2, 4.0), lat=st.floats(0, 20))
def test_offset_and_drift_recovered(seed, drift, offset, rate, jitter, lat):
    rng = np.random.default_rng(seed)
    tau, dev, arr = sensor(rng, rate_hz=rate, duration_s=60, drift_ppm=drift, offset_s=offset,
                           min_latency_ms=lat, jitter_ms=jitter)
    m = ClockModel("s", latency_ns=int(lat * MS))
    err = np.array([m.update(int(a), float(d)).t_ns for a, d in zip(arr, dev)]) - tau
    assert abs(m.drift_ppm() - drift) < DRIFT_TOL_PPM, (m.drift_ppm(), drift)
    warm = int(3 * rate)
    check_err(err, rate)
    # an average of arrival - device (the naive map) is off by the mean latency; the envelope is not
    assert np.abs(err[warm:]).mean() < 0.25 * jitter * MS
    st_ = m.state()
    assert st_["mode"] == "device" and st_["restarts"] == 0 and st_["samples"] == len(tau)


def test_uart_transmission_time_is_removed():
    """921600 baud: a 4 KiB frame takes 44 ms on the wire. Stamps of the last byte, corrected by
    bytes x 10 / baud, are as good as stamps of the first byte; uncorrected they wander by the point count."""
    assert uart_tx_ns(1000, 921600) == round(1000 * 10 * NS / 921600)  # 10.85 ms
    assert uart_tx_ns(0, 921600) == 0 and uart_tx_ns(10, 0) == 0
    rng = np.random.default_rng(3)
    tau, dev, first_byte = sensor(rng, rate_hz=10, duration_s=30, drift_ppm=40, offset_s=7,
                                  min_latency_ms=1, jitter_ms=0.3)
    nbytes = rng.integers(200, 4000, len(tau))  # packet size follows the number of detected points
    last_byte = first_byte + nbytes * 10 * NS / 921600
    good, naive = ClockModel("r", latency_ns=MS), ClockModel("r", latency_ns=MS)
    e_good = np.array([good.update(int(a), float(d), tx_ns=uart_tx_ns(int(b), 921600)).t_ns
                       for a, d, b in zip(last_byte, dev, nbytes)]) - tau
    e_naive = np.array([naive.update(int(a), float(d)).t_ns for a, d in zip(last_byte, dev)]) - tau
    check_err(e_good, 10)
    # uncorrected, every frame is late by at least the smallest packet's wire time (200 B = 2.2 ms)
    assert np.abs(e_naive[120:]).min() > 2 * MS


def test_32bit_cycle_counter_wraps():
    """timeCpuCycles at 200 MHz wraps every 2^32 x 5 ns = 21.47 s; 75 s of radar frames cross it 3-4 times."""
    rng = np.random.default_rng(5)
    tau, dev, arr = sensor(rng, rate_hz=10, duration_s=75, drift_ppm=-80, offset_s=123.4,
                           min_latency_ms=2, jitter_ms=1)
    cycles = (np.round(dev / 5.0).astype(np.int64)) % 2**32
    raw = cycles * 5.0  # device ns as the driver reports it (wrapping)
    m = ClockModel("r", latency_ns=2 * MS, wrap_ns=2**32 * 5.0)
    err = np.array([m.update(int(a), float(d)).t_ns for a, d in zip(arr, raw)]) - tau
    expected_wraps = int(np.floor(dev[-1] / (2**32 * 5.0)) - np.floor(dev[0] / (2**32 * 5.0)))
    assert expected_wraps >= 3
    assert m.wraps == expected_wraps and m.restarts == 0
    check_err(err, 10)
    assert abs(m.drift_ppm() - (-80)) < DRIFT_TOL_PPM
    # without the wrap period the jumps look like restarts and the fit never settles
    bad = ClockModel("r", latency_ns=2 * MS)
    for a, d in zip(arr, raw):
        bad.update(int(a), float(d))
    assert bad.restarts == expected_wraps


def _restart_run():
    rng = np.random.default_rng(7)
    period = 100 * MS
    tau1 = 500 * NS + np.arange(300) * period
    tau2 = tau1[-1] + 1.5 * NS + np.arange(300) * period
    tau = np.concatenate([tau1, tau2])
    fn = np.concatenate([np.arange(300), np.arange(300)])
    dev = fn * period * (1 + 50e-6)
    arr = tau + 2 * MS + rng.exponential(MS, len(tau))
    return tau, fn, dev, arr


def test_device_restart_frame_number_resets():
    """The radar restarts after 30 s (frame numbers from 0 again, 1.5 s later): with the frame-number hint
    (what sync passes when the counter went back by RESTART_JUMP or more) the model starts a new epoch at
    once, and corrected times stay on the host timeline."""
    tau, fn, dev, arr = _restart_run()
    m = ClockModel("r", latency_ns=2 * MS)
    stamps = [m.update(int(a), float(d), restart_hint=bool(k and f < fn[k - 1] - 100))
              for k, (a, d, f) in enumerate(zip(arr, dev, fn))]
    assert m.restarts == 1
    assert [i for i, s in enumerate(stamps) if s.restarted] == [300]
    err = np.array([s.t_ns for s in stamps]) - tau
    check_err(err[:300], 10)
    check_err(err[300:], 10)
    # the first frames of the new epoch are off only by that frame's latency jitter, not by 30 s
    assert np.abs(err[300:330]).max() < 10 * MS


def test_device_restart_without_hint_is_confirmed_by_consecutive_frames():
    """Without a hint, a device time that went back shows as frames all late by the same ~31.5 s: the
    third such frame starts the new epoch (the first two are stamped with the old map, far off, so the
    matcher drops them as late); the new epoch's fit includes them."""
    tau, fn, dev, arr = _restart_run()
    m = ClockModel("r", latency_ns=2 * MS)
    stamps = [m.update(int(a), float(d)) for a, d in zip(arr, dev)]
    assert m.restarts == 1
    assert [i for i, s in enumerate(stamps) if s.restarted] == [300 + ClockModel.RESTART_CONFIRM - 1]
    err = np.array([s.t_ns for s in stamps]) - tau
    assert np.all(err[300:302] < -25 * NS)  # the old map puts them 30 s in the past
    check_err(err[:300], 10)
    assert np.abs(err[302:330]).max() < 10 * MS
    assert np.abs(err[400:]).max() < TIME_TOL_NS


def test_late_burst_is_not_a_restart():
    """A stalled reader delivers 0.6-1.2 s of frames at once (each late by a different amount, some by more
    than restart_ns): no new epoch, the fit keeps its drift, and later frames are as accurate as before."""
    rng = np.random.default_rng(8)
    tau, dev, arr = sensor(rng, rate_hz=30, duration_s=60, drift_ppm=-40, offset_s=3, min_latency_ms=2, jitter_ms=0.5)
    for start_s, width_s in ((20, 0.6), (35, 1.2), (50, 0.9)):
        t0 = tau[0] + start_s * NS
        sel = (arr >= t0) & (arr < t0 + width_s * NS)
        arr[sel] = t0 + width_s * NS
    m = ClockModel("c", latency_ns=2 * MS)
    err = np.array([m.update(int(a), float(d)).t_ns for a, d in zip(arr, dev)]) - tau
    assert m.restarts == 0 and abs(m.drift_ppm() + 40) < DRIFT_TOL_PPM
    assert np.abs(err[12 * 30:]).max() < TIME_TOL_NS  # burst frames too: stamped with the map, not arrival


def test_restart_hint_from_caller():
    m = ClockModel("c")
    for k in range(50):
        m.update(10 * NS + k * 33 * MS, float(k * 33 * MS))
    s = m.update(10 * NS + 50 * 33 * MS, float(50 * 33 * MS), restart_hint=True)
    assert s.restarted and m.restarts == 1 and m.state()["samples"] == 51


def test_sensor_without_device_clock():
    rng = np.random.default_rng(11)
    tau = 50 * NS + np.arange(100) * (NS / 30)
    arr = tau + 8 * MS + rng.exponential(0.5 * MS, 100)
    m = ClockModel("c", latency_ns=8 * MS)
    stamps = [m.update(int(a), None) for a in arr]
    assert all(s.mode == "arrival" for s in stamps)
    assert [s.t_ns for s in stamps] == [int(a) - 8 * MS for a in arr]
    assert 0 < stamps[-1].unc_ns < 2 * MS  # the arrival jitter, reported as the uncertainty
    assert m.state()["arrival_only"] == 100


def test_reordered_samples_do_not_break_the_fit():
    rng = np.random.default_rng(13)
    tau, dev, arr = sensor(rng, rate_hz=30, duration_s=40, drift_ppm=90, offset_s=-3,
                           min_latency_ms=4, jitter_ms=2)
    order = np.argsort(arr + rng.uniform(0, 60 * MS, len(arr)))  # delivered up to 60 ms out of order
    m = ClockModel("c", latency_ns=4 * MS)
    err = {}
    for i in order:
        err[i] = m.update(int(arr[i]), float(dev[i])).t_ns - tau[i]
    check_err(np.array([err[i] for i in order]), 30)
    assert m.restarts == 0
    assert abs(m.drift_ppm() - 90) < DRIFT_TOL_PPM


def test_uncertainty_shrinks_as_samples_accumulate():
    rng = np.random.default_rng(17)
    tau, dev, arr = sensor(rng, rate_hz=30, duration_s=20, drift_ppm=0, offset_s=1, min_latency_ms=0, jitter_ms=3)
    m = ClockModel("c")
    unc = [m.update(int(a), float(d)).unc_ns for a, d in zip(arr, dev)]
    assert unc[5] > unc[-1] and unc[-1] >= 1000


@settings(max_examples=30, **FAST)
@given(pts=st.lists(st.tuples(st.floats(0, 1e3), st.floats(-1e3, 1e3)), min_size=3, max_size=14,
                    unique_by=lambda p: p[0]))
def test_envelope_line_is_the_lp_optimum(pts):
    """Brute force: among all lines through two points that stay below every point, the envelope line
    is the highest at mean(x) (the minimum-latency edge)."""
    pts = sorted(pts)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if xs[-1] - xs[0] < 1e-3 or min(b - a for a, b in zip(xs, xs[1:])) < 1e-6:
        return
    a, b = envelope_line(xs, ys)
    scale = 1e-6 * (1 + max(abs(y) for y in ys)) * (1 + abs(b))
    assert all(a + b * x <= y + scale * 10 for x, y in pts)
    xm = sum(xs) / len(xs)
    best = -np.inf
    for (x1, y1), (x2, y2) in itertools.combinations(pts, 2):
        bb = (y2 - y1) / (x2 - x1)
        aa = y1 - bb * x1
        if all(aa + bb * x <= y + 1e-6 * (1 + abs(y)) * (1 + abs(bb)) for x, y in pts):
            best = max(best, aa + bb * xm)
    assert abs((a + b * xm) - best) <= 1e-6 * (1 + abs(best)) * 100
    h = lower_hull(xs, ys)
    assert h[0] == 0 and h[-1] == len(xs) - 1

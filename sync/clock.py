"""Per-sensor clock model: device time -> host CLOCK_MONOTONIC (capture instant), estimated online.

Every sample is (device time, host arrival). Transport latency is never negative and its minimum is
stable, so host_arrival - device_time = offset + drift * device_time + latency lies *above* a line;
the line under all samples that touches the minimum-latency edge (the lower envelope, Olson 2010 /
TICSync) is the clock map. A plain regression through all samples would absorb the mean latency
and its jitter instead.

How the line is found:
- samples are reduced to one minimum-latency sample per `bin_ns` of device time (detrended with the
  current drift, so the pick is not biased by the slope); at most `window_bins` bins are kept
  (a sliding window, so slow drift changes are tracked);
- the lower convex hull of those points is computed and the hull edge under the mean device time is
  taken: the linear program "highest line below every sample, evaluated at the centre" (minimum-latency
  edge); then the slope is re-estimated by least squares over the samples nearest that edge (the
  lowest quarter), and the line is lowered onto the lowest sample (regression on the envelope, like
  librealsense's GLOBAL_TIME fit over its minimum-delay samples). Over a short span (< `min_span_ns`) drift is not observable and the
  model is offset-only (Olson's running minimum).

Also handled here, because they decide which device time a sample has:
- counter wrap-around (`wrap_ns`: e.g. a 32-bit 200 MHz cycle counter wraps every 21.47 s): the
  wrap count is chosen so the unwrapped time is closest to the prediction from host elapsed time;
- device restarts: a sample whose apparent latency is off the envelope by more than `restart_ns`
  (or a caller hint, e.g. the frame number went backwards) resets the model;
- sensors without a device clock: capture time = arrival - configured latency;
- UART transmission time: the arrival stamp of the last byte minus bytes x 10 bit / baud
  (start + 8 data + stop bits) gives the arrival of the first byte.

The configured `latency_ns` (minimum latency from capture to first byte at the host, which no
passive method can observe) is subtracted so the result is the capture instant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NS = 1_000_000_000


def uart_tx_ns(nbytes: int, baud: int) -> int:
    """Wire time of `nbytes` on an 8N1 UART: 10 bit per byte (start, 8 data, stop)."""
    if nbytes <= 0 or baud <= 0:
        return 0
    return int(round(nbytes * 10 * NS / baud))


@dataclass
class Stamp:
    t_ns: int  # corrected capture time, host CLOCK_MONOTONIC ns
    unc_ns: int  # uncertainty of t_ns (heuristic 1-sigma-ish bound, see ClockModel.uncertainty)
    mode: str  # "device" (mapped device clock) or "arrival" (arrival minus latency)
    restarted: bool = False  # this sample started a new clock epoch (device restart)


def lower_hull(xs: list[float], ys: list[float]) -> list[int]:
    """Indices of the lower convex hull of points sorted by x (Andrew's monotone chain)."""
    h: list[int] = []
    for i in range(len(xs)):
        while len(h) >= 2:
            a, b = h[-2], h[-1]
            # drop b if it lies on or above the segment a -> i
            if (xs[b] - xs[a]) * (ys[i] - ys[a]) - (ys[b] - ys[a]) * (xs[i] - xs[a]) <= 0:
                h.pop()
            else:
                break
        h.append(i)
    return h


def envelope_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of the line y = a + b x below every point that is highest at mean(x): the hull edge that
    spans mean(x). xs must be sorted and span a positive range."""
    h = lower_hull(xs, ys)
    xm = sum(xs) / len(xs)
    for j in range(len(h) - 1):
        i0, i1 = h[j], h[j + 1]
        if xs[i1] >= xm:
            b = (ys[i1] - ys[i0]) / (xs[i1] - xs[i0])
            return ys[i0] - b * xs[i0], b
    i0, i1 = h[-2], h[-1]
    b = (ys[i1] - ys[i0]) / (xs[i1] - xs[i0])
    return ys[i0] - b * xs[i0], b


def refine(xs: list[float], ys: list[float], a: float, b: float) -> tuple[float, float]:
    """Regression on the minimum-latency samples: the envelope edge rests on two points, which may be
    close together; a least-squares slope through every sample within the lowest quarter of heights
    above that edge uses the whole window. The line is then lowered onto the lowest sample again."""
    res = [y - (a + b * x) for x, y in zip(xs, ys)]
    cut = sorted(res)[len(res) // 4]
    sel = [(x, y) for x, y, r in zip(xs, ys, res) if r <= cut]
    if len(sel) < 3:
        return a, b
    mx = sum(x for x, _ in sel) / len(sel)
    my = sum(y for _, y in sel) / len(sel)
    sxx = sum((x - mx) ** 2 for x, _ in sel)
    if sxx <= 0:
        return a, b
    b2 = sum((x - mx) * (y - my) for x, y in sel) / sxx
    return min(y - b2 * x for x, y in zip(xs, ys)), b2


class ClockModel:
    """Online map from one sensor's device time to host CLOCK_MONOTONIC.

    `update(arrival_ns, device_ns)` feeds one frame and returns its corrected capture time; call it for
    every frame of the sensor, in arrival order."""

    def __init__(self, name: str = "sensor", *, latency_ns: int = 0, wrap_ns: float = 0.0,
                 bin_ns: int = NS // 2, window_bins: int = 240, min_span_ns: int = 10 * NS, warm_ns: int = 2 * NS,
                 max_drift_ppm: float = 1000.0, restart_ns: int = NS // 2):
        self.name = name
        self.latency_ns = int(latency_ns)
        self.wrap_ns = float(wrap_ns)
        self.bin_ns, self.window_bins, self.min_span_ns = int(bin_ns), int(window_bins), int(min_span_ns)
        self.warm_ns = int(warm_ns)
        self.max_drift = max_drift_ppm * 1e-6
        self.restart_ns = int(restart_ns)
        self.restarts = 0
        self.wraps = 0
        self.samples = 0
        self.arrival_only = 0
        self._jitter = _RunningJitter()
        self._reset_fit()

    # -- state ------------------------------------------------------------------------------------
    def _reset_fit(self) -> None:
        self.x0: float | None = None  # device time of the first sample (fit is relative to it: precision)
        self.y0 = 0.0  # host - device at the first sample
        self.bins: list[tuple[int, float, float]] = []  # closed bins: (bin id, x, y) minimum-latency sample
        self.cur: list[tuple[float, float]] = []  # samples of the open bin
        self.cur_bin: int | None = None
        self.a = 0.0  # fitted y (relative to y0) at x = 0 (relative to x0)
        self.b = 0.0  # drift: d(host - device)/d(device)
        self.fitted = False
        self.last_x: float | None = None
        self.last_arrival: int | None = None
        self.k_wrap = 0
        self.unc = 0.0
        self.span = 0.0

    def reset(self) -> None:
        """Forget the fit (e.g. replay looped back in time); counters are kept."""
        self._reset_fit()

    def state(self) -> dict:
        """JSON-able model state, published with every pair."""
        return {"mode": "device" if self.fitted else "arrival", "offset_ns": int(round(self.offset_ns())),
                "drift_ppm": round(self.drift_ppm(), 3), "unc_ns": int(self.unc), "samples": self.samples,
                "span_s": round(self.span / NS, 3), "latency_ns": self.latency_ns, "restarts": self.restarts,
                "wraps": self.wraps, "arrival_only": self.arrival_only}

    def drift_ppm(self) -> float:
        """How fast the device clock runs relative to host CLOCK_MONOTONIC, in ppm (+ = device fast)."""
        return (1.0 / (1.0 + self.b) - 1.0) * 1e6

    def offset_ns(self) -> float:
        """host - device at the most recent sample's device time (0 before the first sample)."""
        if self.x0 is None or self.last_x is None:
            return 0.0
        return self.y0 + self.a + self.b * (self.last_x - self.x0)

    # -- mapping ----------------------------------------------------------------------------------
    def to_host(self, device_ns: float) -> float:
        """Host time of an (unwrapped) device time on the lower envelope (before latency correction)."""
        x = device_ns - self.x0
        return device_ns + self.y0 + self.a + self.b * x

    def uncertainty(self, device_ns: float) -> float:
        """Floor noise of the envelope plus drift uncertainty when extrapolating beyond the window."""
        x = device_ns - self.x0
        end = self.bins[-1][1] if self.bins else (self.cur[-1][0] if self.cur else 0.0)
        extra = max(0.0, x - end)
        if self.span >= self.min_span_ns:
            return self.unc + extra * 1e-5
        # offset-only warm-up: an unobserved drift of up to 100 ppm over the running-minimum window
        return self.unc + 1e-4 * (min(self.span, self.warm_ns) + extra)

    # -- update -----------------------------------------------------------------------------------
    def update(self, arrival_ns: int, device_ns: float | None = None, *, tx_bytes: int = 0, baud: int = 0,
               restart_hint: bool = False) -> Stamp:
        """One frame: host arrival stamp (of the last byte when tx_bytes/baud are given) and device time
        in ns (None = this sensor has no device clock). Returns the corrected capture time."""
        self.samples += 1
        arrival = int(arrival_ns) - uart_tx_ns(tx_bytes, baud)  # first byte of the frame
        if device_ns is None:
            self.arrival_only += 1
            self._jitter.add(arrival)
            t = arrival - self.latency_ns
            return Stamp(int(t), int(self._jitter.value()), "arrival")

        restarted = False
        x_abs = self._unwrap(float(device_ns), arrival)
        if self.x0 is not None:
            resid = (arrival - x_abs) - (self.y0 + self.a + self.b * (x_abs - self.x0))
            if restart_hint or abs(resid) > self.restart_ns:
                # device restarted (or its clock jumped): the old map says nothing about the new epoch
                self.restarts += 1
                restarted = True
                self._reset_fit()
                x_abs = float(device_ns)
        self._add(x_abs, arrival)
        t = self.to_host(x_abs) - self.latency_ns
        return Stamp(int(round(t)), int(round(self.uncertainty(x_abs))), "device", restarted)

    def _unwrap(self, raw: float, arrival: int) -> float:
        if self.wrap_ns <= 0:
            return raw
        if self.last_x is None:
            self.k_wrap = 0
            return raw
        # predicted device time from host elapsed time; choose the wrap count that lands closest
        pred = self.last_x + (arrival - self.last_arrival) / (1.0 + self.b)
        k = round((pred - raw) / self.wrap_ns)
        if k > self.k_wrap:
            self.wraps += k - self.k_wrap
        self.k_wrap = max(self.k_wrap, k)
        return raw + k * self.wrap_ns

    def _add(self, x_abs: float, arrival: int) -> None:
        if self.x0 is None:
            self.x0, self.y0 = x_abs, float(arrival) - x_abs
        x = x_abs - self.x0
        y = (float(arrival) - x_abs) - self.y0
        if self.last_x is None or x_abs > self.last_x:
            self.last_x, self.last_arrival = x_abs, arrival
        bin_id = int(x // self.bin_ns)
        if self.cur_bin is not None and bin_id < self.cur_bin:
            # a reordered sample from a closed bin: keep it as its own envelope candidate
            self.bins.append((bin_id, x, y))
            self.bins.sort(key=lambda t: t[1])
            self._fit()
            return
        if self.cur_bin is not None and bin_id != self.cur_bin:
            self._close_bin()
        if self.cur_bin is None or bin_id != self.cur_bin:
            self.cur_bin = bin_id
        self.cur.append((x, y))
        self._fit()

    def _close_bin(self) -> None:
        # keep only the minimum-latency sample (detrended with the current drift estimate)
        x, y = min(self.cur, key=lambda p: p[1] - self.b * p[0])
        self.bins.append((self.cur_bin, x, y))
        self.bins.sort(key=lambda t: t[1])  # a late-arriving older bin stays in x order
        if len(self.bins) > self.window_bins:
            del self.bins[: len(self.bins) - self.window_bins]
        self.cur = []

    def _fit(self) -> None:
        pts = [(x, y) for _, x, y in self.bins] + sorted(self.cur)
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        self.span = xs[-1] - xs[0] if len(xs) > 1 else 0.0
        a, b = None, 0.0
        if self.span >= self.min_span_ns and len(xs) >= 3:
            a, b = refine(xs, ys, *envelope_line(xs, ys))
            if abs(b) > self.max_drift:  # implausible crystal: keep offset-only rather than extrapolate wildly
                a, b = None, 0.0
        if a is None:
            # drift not yet observable: Olson's running minimum over the recent samples only, so an
            # unknown drift of 100 ppm costs at most 100 ppm x warm_ns
            b = self.b if abs(self.b) <= self.max_drift and self.fitted else 0.0
            a = min(y - b * x for x, y in zip(xs, ys) if x >= xs[-1] - self.warm_ns)
        self.a, self.b, self.fitted = a, b, True
        # floor noise: median height of the per-bin minima above the line (how well the edge is pinned)
        res = sorted(y - (a + b * x) for x, y in zip(xs, ys))
        mid = res[len(res) // 2] if res else 0.0
        self.unc = max(1000.0, mid / math.sqrt(max(1, len(res))) * 2.0)


class _RunningJitter:
    """Arrival-only sensors: spread of inter-arrival times around their median (recent 64)."""

    def __init__(self, n: int = 64):
        self.n, self.last, self.deltas = n, None, []

    def add(self, t: int) -> None:
        if self.last is not None:
            self.deltas.append(t - self.last)
            if len(self.deltas) > self.n:
                self.deltas.pop(0)
        self.last = t

    def value(self) -> float:
        if len(self.deltas) < 2:
            return 0.0
        d = sorted(self.deltas)
        med = d[len(d) // 2]
        dev = sorted(abs(v - med) for v in d)
        return float(dev[len(dev) // 2])

"""Per-sensor clock model: device time -> host CLOCK_MONOTONIC (capture instant), estimated online.

Every sample is (device time, host arrival). Transport latency is never negative and its minimum is
stable, so host_arrival - device_time = offset + drift * device_time + latency lies *above* a line;
the line under all samples that touches the minimum-latency edge (the lower envelope, Olson 2010 /
TICSync) is the clock map. A plain regression through all samples would absorb the mean latency
and its jitter instead.

The minimum-latency samples can be rare. A DCA1000 frame whose size is not a multiple of the 1456-byte
packet completes only when the next frame's first chirps fill its last packet: 90 frames in 91 arrive a
frame period late and 1 in 91 on time (issue #13). A line through the few fast samples alone has a
noisy slope (they are seconds apart, each with its own jitter), and any least-squares step over "the
lowest quarter" mixes the two latency modes. So the model separates the two jobs:

- samples are reduced to one minimum-latency sample per `bin_ns` of device time (detrended with the
  current drift); at most `window_bins` bins are kept (a sliding window, so slow drift changes are
  tracked);
- **latency modes**: the bins' heights above the current line, sorted, split wherever consecutive
  heights are more than `mode_gap_ns` (10 ms) apart (one frame period late vs on time are ~95 ms apart;
  jitter within a mode is continuous: on the emulated rig under load the on-time frames alone spread over
  ~20 ms, a few ms apart);
- **drift** (slope) = the lower-envelope line (the edge of the lower convex hull under the centre: the
  LP "highest line below every sample") of the mode that pins the slope best (most bins x span^2) -
  usually the dense late mode, whose every bin is a sample;
- **offset** = the support line with that slope under *every* bin of the window: the lowest mode sets
  it, however sparse. Bins of the lowest mode that slide out of the window are kept for `hold_s` as
  anchors, each counted `hold_leak_ppm` higher per second it is older than the window (how far the
  drift may have wandered since), so a run of late frames longer than the window (1-in-300 fast frames,
  or a latency floor that rose) keeps the old envelope instead of jumping onto the late mode;
- **warm-up**: while the window spans less than `min_span_ns`, drift is not observable; the model is
  offset-only: the lowest sample so far, each counted `warm_leak_ppm` higher per second of age (the
  largest drift a crystal plausibly has), so a single fast sample is kept, not forgotten after 2 s.

Also handled here, because they decide which device time a sample has:
- counter wrap-around (`wrap_ns`: e.g. a 32-bit 200 MHz cycle counter wraps every 21.47 s): the
  wrap count is chosen so the unwrapped time is closest to the prediction from host elapsed time;
- device restarts: a caller hint (the frame number went back, radvis/frames.py), a sample that would have
  arrived more than `restart_ns` *before* it was captured, or RESTART_CONFIRM consecutive samples all
  more than `restart_ns` late by the same amount (the device time went back) reset the model; frames
  that are merely late (a stalled reader delivers a burst: each frame late by a different amount) are
  stamped with the current map and then join the fit;
- sensors without a device clock: capture time = arrival - configured latency;
- UART transmission time: the arrival stamp of the last byte minus the packet's wire time gives the
  arrival of the first byte.

The configured `latency_ns` (minimum latency from capture to first byte at the host, which no
passive method can observe) is subtracted so the result is the capture instant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NS = 1_000_000_000
MS = 1_000_000
INF = float("inf")


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
    h = [i for k, i in enumerate(h) if k == 0 or xs[i] > xs[h[k - 1]]]  # equal x (a duplicate sample): no edge
    if len(h) < 2:
        return ys[h[0]], 0.0
    xm = sum(xs) / len(xs)
    for j in range(len(h) - 1):
        i0, i1 = h[j], h[j + 1]
        if xs[i1] >= xm:
            b = (ys[i1] - ys[i0]) / (xs[i1] - xs[i0])
            return ys[i0] - b * xs[i0], b
    i0, i1 = h[-2], h[-1]
    b = (ys[i1] - ys[i0]) / (xs[i1] - xs[i0])
    return ys[i0] - b * xs[i0], b


class ClockModel:
    """Online map from one sensor's device time to host CLOCK_MONOTONIC.

    `update(arrival_ns, device_ns)` feeds one frame and returns its corrected capture time; call it for
    every frame of the sensor, in arrival order. The result depends only on the samples fed so far."""

    RESTART_CONFIRM = 3  # consecutive frames off the map by the same amount (> restart_ns): a new epoch
    WARM_FLOOR_BINS = 6  # lowest-latency bins a warm model rests on (1 in 91 on time: ~55 s; unimodal: at once)

    def __init__(self, name: str = "sensor", *, latency_ns: int = 0, wrap_ns: float = 0.0,
                 bin_ns: int = NS // 2, window_bins: int = 240, min_span_ns: int = 10 * NS,
                 max_drift_ppm: float = 1000.0, restart_ns: int = NS // 2, mode_gap_ns: int = 10 * MS,
                 warm_leak_ppm: float = 100.0, hold_s: float = 600.0, hold_leak_ppm: float = 5.0):
        self.name = name
        self.latency_ns = int(latency_ns)
        self.wrap_ns = float(wrap_ns)
        self.bin_ns, self.window_bins, self.min_span_ns = int(bin_ns), int(window_bins), int(min_span_ns)
        self.max_drift = max_drift_ppm * 1e-6
        self.restart_ns = int(restart_ns)
        self.mode_gap = float(mode_gap_ns)
        self.warm_leak = warm_leak_ppm * 1e-6
        self.hold_ns, self.hold_leak = hold_s * NS, hold_leak_ppm * 1e-6
        self.restarts = 0
        self.wraps = 0
        self.samples = 0
        self.arrival_only = 0
        self._jitter = _RunningJitter()
        self._reset_fit()

    # -- state ------------------------------------------------------------------------------------
    def _reset_fit(self) -> None:
        self._suspect: list[tuple[float, float, int, float]] = []  # samples far above the map: restart or late?
        self.x0: float | None = None  # device time of the first sample (fit is relative to it: precision)
        self.y0 = 0.0  # host - device at the first sample
        self.bins: list[tuple[int, float, float]] = []  # closed bins: (bin id, x, y) minimum-latency sample, by x
        self.held: list[tuple[float, float]] = []  # lowest-mode bins that left the window (anchors), by x
        self.cur: list[tuple[float, float]] = []  # samples of the open bin
        self.cur_bin: int | None = None
        self.a = 0.0  # fitted y (relative to y0) at x = 0 (relative to x0)
        self.b = 0.0  # drift: d(host - device)/d(device)
        self.a_closed = INF  # min over closed window bins of y - b x
        self.a_held = INF  # min over held anchors of y - b x + leak
        self.held_age = 0.0  # how far before the window that anchor lies
        self.fitted = False  # drift fitted (span >= min_span at least once since the last reset)
        self.last_x: float | None = None
        self.last_arrival: int | None = None
        self.k_wrap = 0
        self.unc = 0.0
        self.floor_unc = 0.0
        self.span = 0.0
        self.modes = 0  # latency modes in the window (1 = unimodal; 2 = e.g. DCA1000 late/on-time frames)
        self.floor_bins = 0  # bins on the lowest mode (the ones that set the offset)
        self.anchor_age = 0.0  # ns the offset's anchor lies before the window (0: inside it)
        self.warm = False  # latched by is_warm() for this epoch

    def reset(self) -> None:
        """Forget the fit (e.g. replay looped back in time); counters are kept."""
        self._reset_fit()

    def state(self) -> dict:
        """JSON-able model state, published with every pair."""
        return {"mode": "device" if self.x0 is not None else "arrival", "offset_ns": int(round(self.offset_ns())),
                "drift_ppm": round(self.drift_ppm(), 3), "unc_ns": int(self.unc), "samples": self.samples,
                "span_s": round(self.span / NS, 3), "latency_ns": self.latency_ns, "restarts": self.restarts,
                "wraps": self.wraps, "arrival_only": self.arrival_only, "drift_fitted": self.fitted,
                "latency_modes": self.modes, "floor_bins": self.floor_bins,
                "anchor_age_s": round(self.anchor_age / NS, 3)}

    def drift_ppm(self) -> float:
        """How fast the device clock runs relative to host CLOCK_MONOTONIC, in ppm (+ = device fast)."""
        return (1.0 / (1.0 + self.b) - 1.0) * 1e6

    def offset_ns(self) -> float:
        """host - device at the most recent sample's device time (0 before the first sample)."""
        if self.x0 is None or self.last_x is None:
            return 0.0
        return self.y0 + self.a + self.b * (self.last_x - self.x0)

    def epoch_span_ns(self) -> float:
        """Device time covered since this clock epoch began (first sample or last restart)."""
        if self.x0 is None or self.last_x is None:
            return 0.0
        return self.last_x - self.x0

    def is_warm(self, min_span_ns: float) -> bool:
        """Trust this epoch's corrected times for pairing: the drift is fitted, the epoch spans min_span_ns
        of device time, and the offset rests on WARM_FLOOR_BINS bins of the lowest latency mode (the
        error is then the smallest of that many jitters; with 1 frame in 91 on time and 2 ms jitter, within
        1.5 ms). Latched until the next restart: a run of late frames later does not make it cold.
        min_span_ns <= 0: always warm (no warm-up gate)."""
        if min_span_ns <= 0:
            return True
        if not self.warm and self.x0 is not None and self.fitted and self.epoch_span_ns() >= min_span_ns \
                and self.floor_bins >= self.WARM_FLOOR_BINS:
            self.warm = True
        return self.warm

    # -- mapping ----------------------------------------------------------------------------------
    def to_host(self, device_ns: float) -> float:
        """Host time of an (unwrapped) device time on the lower envelope (before latency correction)."""
        x = device_ns - self.x0
        return device_ns + self.y0 + self.a + self.b * x

    def uncertainty(self, device_ns: float) -> float:
        """Floor noise of the envelope, plus how far the offset's anchor may have drifted, plus drift
        uncertainty when extrapolating beyond the window; during warm-up an unobserved drift."""
        x = device_ns - self.x0
        end = self.bins[-1][1] if self.bins else (self.cur[-1][0] if self.cur else 0.0)
        extra = max(0.0, x - end)
        if self.fitted:
            return self.floor_unc + self.hold_leak * self.anchor_age + extra * 1e-5
        return self.floor_unc + self.warm_leak * (self.anchor_age + extra)

    # -- update -----------------------------------------------------------------------------------
    def update(self, arrival_ns: int, device_ns: float | None = None, *, tx_ns: int = 0,
               restart_hint: bool = False) -> Stamp:
        """One frame: host arrival stamp (of the last byte when the frame took `tx_ns` on the wire, e.g.
        a UART packet) and device time in ns (None = this sensor has no device clock). Returns the
        corrected capture time."""
        self.samples += 1
        arrival = int(arrival_ns) - max(0, int(tx_ns))  # first byte of the frame
        if device_ns is None:
            self.arrival_only += 1
            self._jitter.add(arrival)
            t = arrival - self.latency_ns
            return Stamp(int(t), int(self._jitter.value()), "arrival")

        restarted = False
        x_abs = self._unwrap(float(device_ns), arrival)
        if self.x0 is not None:
            resid = (arrival - x_abs) - (self.y0 + self.a + self.b * (x_abs - self.x0))
            if restart_hint or resid < -self.restart_ns:
                # device restarted or its clock jumped ahead (no frame arrives before it is captured): the
                # old map says nothing about the new epoch
                self._restart()
                restarted, x_abs = True, float(device_ns)
            elif resid > self.restart_ns:
                # delivered late by more than restart_ns (a stalled reader, a burst), or the device time went
                # back (restart): a restart moves consecutive frames by the same amount, a stall does not
                self._suspect.append((float(device_ns), x_abs, arrival, resid))
                rs = [r for *_, r in self._suspect]
                if len(self._suspect) < self.RESTART_CONFIRM or max(rs) - min(rs) > 4 * self.mode_gap:
                    if len(self._suspect) >= self.RESTART_CONFIRM:
                        self._suspect.pop(0)
                    t = self.to_host(x_abs) - self.latency_ns  # the current map; not fitted (yet)
                    return Stamp(int(round(t)), int(round(self.unc + resid)), "device")
                held = self._suspect[:-1]
                self._restart()
                for dev, _, arr, _ in held:
                    self._add(dev, arr)
                restarted, x_abs = True, float(device_ns)
            elif self._suspect:  # they were late, not a new epoch: they belong to the fit
                for _, x, arr, _ in self._suspect:
                    self._add(x, arr)
                self._suspect = []
        self._add(x_abs, arrival)
        t = self.to_host(x_abs) - self.latency_ns
        self.unc = self.uncertainty(x_abs)
        return Stamp(int(round(t)), int(round(self.unc)), "device", restarted)

    def _restart(self) -> None:
        self.restarts += 1
        self._reset_fit()

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
            self._refit()
        else:
            if self.cur_bin is not None and bin_id != self.cur_bin:
                self._close_bin()
                self._refit()
            self.cur_bin = bin_id
            self.cur.append((x, y))
        self._offset(x)

    def _close_bin(self) -> None:
        # keep only the minimum-latency sample (detrended with the current drift estimate)
        x, y = min(self.cur, key=lambda p: p[1] - self.b * p[0])
        self.bins.append((self.cur_bin, x, y))
        self.bins.sort(key=lambda t: t[1])  # a late-arriving older bin stays in x order
        self.cur = []
        if len(self.bins) > self.window_bins:
            gone = self.bins[: len(self.bins) - self.window_bins]
            del self.bins[: len(gone)]
            # lowest-mode bins leaving the window stay as anchors of the offset (hold_s, with a leak)
            floor = self.a_closed if self.a_closed < INF else self.a
            self.held += [(x, y) for _, x, y in gone if y - self.b * x - floor <= self.mode_gap]
            first = self.bins[0][1]
            while self.held and first - self.held[0][0] > self.hold_ns:
                self.held.pop(0)
            if len(self.held) > 4 * self.window_bins:
                del self.held[: len(self.held) - 4 * self.window_bins]

    def _refit(self) -> None:
        """Drift from the mode that pins it best; offset bookkeeping for the closed bins (every bin_ns)."""
        xs = [x for _, x, _ in self.bins]
        ys = [y for _, _, y in self.bins]
        if not xs:
            return
        self.span = xs[-1] - xs[0]
        if self.span >= self.min_span_ns and len(xs) >= 3:
            b = self._slope(xs, ys)
            if b is not None and abs(b) <= self.max_drift:  # else: implausible crystal, keep the last drift
                self.b, self.fitted = b, True
        if not self.fitted:
            return
        b = self.b
        self.a_closed = min(y - b * x for x, y in zip(xs, ys))
        first = xs[0]
        self.a_held, self.held_age = INF, 0.0
        for x, y in self.held:
            v = y - b * x + self.hold_leak * (first - x)
            if v < self.a_held:
                self.a_held, self.held_age = v, first - x
        # floor noise: heights of the lowest mode's bins above the support line (how well the edge is pinned)
        a = min(self.a_closed, self.a_held)
        # the lowest latency mode: heights above the support line, up to the first gap > mode_gap
        h = []
        for r in sorted(y - b * x - a for x, y in zip(xs, ys)):
            if h and r - h[-1] > self.mode_gap:
                break
            h.append(r)
        self.floor_bins = len(h)
        mid = h[len(h) // 2] if h else 0.0
        self.floor_unc = max(1000.0, mid / math.sqrt(max(1, len(h))) * 2.0)

    def _slope(self, xs: list[float], ys: list[float]) -> float | None:
        """Lower-envelope slope of the latency mode with the most bins x span^2 (re-split with the new
        slope until it settles)."""
        b = self.b
        for _ in range(3):
            groups = latency_modes(xs, ys, b, self.mode_gap)
            best, best_w = None, 0.0
            for g in groups:
                if len(g) < 3:
                    continue
                span = xs[g[-1]] - xs[g[0]]
                w = len(g) * span * span
                if span >= self.min_span_ns / 2 and w > best_w:
                    best, best_w = g, w
            self.modes = len(groups)
            if best is None:
                return None
            b_new = envelope_line([xs[i] for i in best], [ys[i] for i in best])[1]
            done = abs(b_new - b) < 1e-7
            b = b_new
            if done:
                break
        return b

    def _offset(self, x: float) -> None:
        """Support line with slope b under every bin (window, open bin, held anchors)."""
        b = self.b
        if self.fitted:
            a_cur = min(py - b * px for px, py in self.cur) if self.cur else INF
            a = min(self.a_closed, a_cur)
            self.anchor_age = 0.0
            if self.a_held < a:
                a, self.anchor_age = self.a_held, self.held_age
            self.a = a
            return
        # warm-up, offset-only: the lowest sample so far, each counted higher by the largest plausible
        # drift times its age (so a lone fast sample is kept, and an old one cannot pull the line too low)
        pts = [(px, py) for _, px, py in self.bins] + self.cur
        best, age = INF, 0.0
        for px, py in pts:
            v = py - b * px + self.warm_leak * (x - px)
            if v < best:
                best, age = v, x - px
        self.a, self.anchor_age = best, age
        self.span = max(p[0] for p in pts) - min(p[0] for p in pts)
        h = sorted(max(0.0, py - b * px - best) for px, py in pts)
        self.floor_bins = len(h)
        self.floor_unc = max(1000.0, h[len(h) // 2] / math.sqrt(len(h)) * 2.0)


def latency_modes(xs: list[float], ys: list[float], b: float, gap: float) -> list[list[int]]:
    """Indices of the points grouped by height above the line of slope b: sorted heights split wherever
    two consecutive heights are more than `gap` apart. Each group is returned in x order."""
    order = sorted(range(len(xs)), key=lambda i: ys[i] - b * xs[i])
    groups: list[list[int]] = [[order[0]]] if order else []
    for i, j in zip(order, order[1:]):
        if (ys[j] - b * xs[j]) - (ys[i] - b * xs[i]) > gap:
            groups.append([])
        groups[-1].append(j)
    return [sorted(g) for g in groups]


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

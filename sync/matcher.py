"""Radar-camera matcher: each radar frame with the camera frame nearest in corrected time, published the
moment that choice is provably final.

Pairing rule (a function of the two sets of corrected times only, so arrival order, lag and replay
speed cannot change it): radar frame r and camera frame c pair iff c is r's nearest camera frame, r is
c's nearest radar frame (mutual nearest neighbours; ties go to the earlier frame) and |t_r - t_c| <=
max_skew. Each frame is used at most once by construction. When radar frames are more than
2 x max_skew apart (10 Hz radar, 16.7 ms skew) this is exactly "every radar frame gets the nearest
camera frame within max_skew".

When is a choice final? Like ROS ApproximateTime's virtual-message search, each stream has a
*watermark* W: no frame of that stream still to come can have a corrected time below W.
    W = max( t_newest + min_period      (in-order stream: inter-message lower bound)
             or t_newest - reorder       (stream allowed to reorder by `reorder` ns),
             now - max_latency )         (arrival bound: a frame is never older than this on arrival)
Radar frame r with nearest camera c at distance d is final once W_camera >= t_r + d (no closer camera
can come) and W_radar >= t_c + d (no radar closer to c can come). With the camera period as its lower
bound this usually holds when c itself arrives: no extra frame period of waiting (fkie/message_filters#2).

Frames that arrive below what their own stream promised (newest + min_period in order, newest - reorder
otherwise) or below an arrival-bound / stall watermark are "late"; a full buffer evicts its oldest frame
("overflow"); frames that never pair are "no_partner". Each is an explicit `Drop` event. Without the
arrival bound (`now` never given: the sync daemon's mode, which forces a watermark only for a stream
that went silent, `stall()`), every decision is a function of the two streams' own sequences, not of
how they were interleaved on arrival: a replay reproduces the live pairs. `FixedWaitMatcher` is the baseline for bench/sync.py.
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

INF = float("inf")
RADAR, CAMERA = "radar", "camera"
REASONS = ("no_partner", "late", "overflow", "reset", "warmup")


def _int(t: float) -> int:
    return int(t) if -INF < t < INF else 0


class Frame:
    """One frame in the matcher: corrected time, a key (e.g. seq) and whatever the caller attaches."""
    __slots__ = ("t", "key", "data", "arrival", "done")

    def __init__(self, t: int, key: Any = None, data: Any = None, arrival: int = 0):
        self.t, self.key, self.data, self.arrival, self.done = t, key, data, arrival, False

    def __repr__(self) -> str:
        return f"Frame(t={self.t}, key={self.key!r})"


@dataclass
class Pair:
    radar: Frame
    camera: Frame
    skew_ns: int  # t_camera - t_radar
    t_decided: int = 0  # matcher time (ns) at which the pair became final


@dataclass
class Drop:
    stream: str
    frame: Frame
    reason: str  # one of REASONS


@dataclass
class _Stream:
    min_period: float
    reorder: float
    frames: list = field(default_factory=list)  # Frame, sorted by t (decided ones kept for NN checks)
    times: list = field(default_factory=list)  # their t, for bisect
    newest: float = -INF
    wm: float = -INF  # watermark (monotone)
    hard: float = -INF  # below this a new frame is late (arrival bound / reorder allowance)
    steady: bool = True  # its corrected times step by whole periods (a young clock model's do not)

    def floor(self) -> float:
        """No frame of this stream still to come lies below this (what its frames so far promise): the
        newest + the inter-message lower bound (in order; only while the stream's times are `steady`), or
        the newest - the reorder allowance."""
        if self.reorder:
            return self.newest - self.reorder
        return self.newest + (self.min_period if self.steady else 0.0)

    def insert(self, f: Frame) -> None:
        if not self.times or f.t >= self.times[-1]:
            self.times.append(f.t)
            self.frames.append(f)
        else:
            i = bisect.bisect_right(self.times, f.t)
            self.times.insert(i, f.t)
            self.frames.insert(i, f)

    def prune_before(self, t: float) -> list[Frame]:
        i = bisect.bisect_left(self.times, t)
        if i == 0:
            return []
        gone = self.frames[:i]
        del self.frames[:i], self.times[:i]
        return gone


class Matcher:
    """Online two-stream matcher. Feed frames with `push(stream, t_ns, key, data, now_ns)` and call
    `poll(now_ns)` when idle; both return the Pair/Drop events that became final. `flush()` at end of
    stream decides everything left."""

    def __init__(self, max_skew_ns: int, *, radar_min_period_ns: float = 0, camera_min_period_ns: float = 0,
                 max_latency_ns: float = INF, radar_reorder_ns: float = 0, camera_reorder_ns: float = 0,
                 buffer_frames: int = 256):
        if max_skew_ns <= 0:
            raise ValueError(f"max_skew_ns must be > 0, got {max_skew_ns}")
        self.skew = int(max_skew_ns)
        self.max_latency = float(max_latency_ns)
        self.buffer = int(buffer_frames)
        self.s = {RADAR: _Stream(float(radar_min_period_ns), float(radar_reorder_ns)),
                  CAMERA: _Stream(float(camera_min_period_ns), float(camera_reorder_ns))}
        self.pending: list[Frame] = []  # undecided radar frames, by t
        self.now = -INF
        self.counts = {RADAR: Counter(), CAMERA: Counter()}
        self.pairs = 0

    # -- configuration that becomes known later (e.g. the radar frame period from its first message) --
    def set_min_period(self, stream: str, ns: float) -> None:
        self.s[stream].min_period = float(ns)

    def set_steady(self, stream: str, steady: bool) -> None:
        """Whether `stream`'s next frames keep the inter-message lower bound. A clock model that has not
        fitted its drift yet may map a frame a few ms earlier than its predecessor's period implies (its
        first samples pin the offset poorly): without the bound such a frame is used, not `late`, and the
        pairs around it wait for one more frame of that stream instead."""
        self.s[stream].steady = bool(steady)

    # -- events ---------------------------------------------------------------------------------------
    def push(self, stream: str, t_ns: int, key: Any = None, data: Any = None, now_ns: float | None = None) -> list:
        now = self.now if now_ns is None else max(self.now, now_ns)
        f = Frame(int(t_ns), key, data, _int(now))
        st = self.s[stream]
        out: list = []
        self._advance(now)
        self._watermarks()
        if f.t < st.hard or f.t < st.floor():
            # below what this stream's own earlier frames promised (its watermark): decisions this frame
            # could have changed may be out already. Dropping it is a rule of the stream's own frames, so a
            # replay drops exactly the same frames whatever the interleaving with the other stream.
            self.counts[stream]["late"] += 1
            f.done = True
            out.append(Drop(stream, f, "late"))
            return out + self._decide()
        st.insert(f)
        st.newest = max(st.newest, f.t)
        if stream == RADAR:
            bisect.insort(self.pending, f, key=lambda x: x.t)
            if len(self.pending) > self.buffer:
                old = self.pending.pop(0)
                self._drop(out, RADAR, old, "overflow")
            if len(st.frames) > 2 * self.buffer:  # decided frames kept only for nearest-neighbour checks
                st.frames.pop(0)
                st.times.pop(0)
        elif len(st.frames) > self.buffer:
            old = st.frames.pop(0)
            st.times.pop(0)
            if not old.done:
                self._drop(out, CAMERA, old, "overflow")
        self._watermarks()
        out += self._decide()
        return out

    def skip(self, stream: str, t_ns: int, key: Any = None, data: Any = None, reason: str = "warmup") -> list:
        """A frame of `stream` exists at t_ns but is not to be paired (e.g. stamped while its clock model
        warmed up): it is dropped with `reason` and moves the stream's watermark as a pushed frame would,
        so the other stream's frames around it are decided (a frame below the stream's floor moves nothing)."""
        st = self.s[stream]
        out: list = []
        if t_ns >= st.hard and t_ns >= st.floor():
            st.newest = max(st.newest, float(t_ns))
        self._drop(out, stream, Frame(int(t_ns), key, data, _int(self.now)), reason)
        self._watermarks()
        return out + self._decide()

    def stall(self, stream: str, t_ns: float) -> list:
        """`stream` has gone silent: declare that none of its frames still to come lies below t_ns (frames
        that do come below it are late). The live daemon calls this when a socket stayed silent for
        max_latency, so a stalled sensor cannot hold the other's frames back for ever."""
        st = self.s[stream]
        st.hard = max(st.hard, float(t_ns))
        st.wm = max(st.wm, float(t_ns))
        return self._decide()

    def poll(self, now_ns: float) -> list:
        self._advance(now_ns)
        self._watermarks()
        return self._decide()

    def flush(self) -> list:
        """End of stream: every remaining frame is final. The matcher then starts empty (a stream that
        resumes after a flush is paired afresh)."""
        for st in self.s.values():
            st.wm = INF
        out = self._decide()
        for stream in (RADAR, CAMERA):
            for f in self.s[stream].frames:
                if not f.done:
                    self._drop(out, stream, f, "no_partner")
            st = self.s[stream]
            self.s[stream] = _Stream(st.min_period, st.reorder, steady=st.steady)
        self.pending.clear()
        self.now = -INF
        return out

    def reset(self) -> list:
        """Time jumped backwards (replay looped): drop everything pending and start over."""
        out: list = []
        for stream in (RADAR, CAMERA):
            for f in self.s[stream].frames:
                if not f.done:
                    self._drop(out, stream, f, "reset")
            st = self.s[stream]
            self.s[stream] = _Stream(st.min_period, st.reorder, steady=st.steady)
        self.pending.clear()
        self.now = -INF
        return out

    def next_deadline(self) -> float:
        """Matcher time at which the arrival bound alone will decide the oldest pending radar frame
        (INF when nothing is pending). The daemon uses it as its poll timeout."""
        best = INF
        for r in self.pending:
            c, d = self._nearest(self.s[CAMERA], r.t)
            # the arrival bound must carry W_camera past t_r + d and W_radar past t_c + d
            need = r.t + self.skew if c is None else max(r.t, c.t) + d
            best = min(best, need + self.max_latency)
        return best

    # -- internals ------------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        if now > self.now:
            self.now = now

    def _watermarks(self) -> None:
        arr = self.now - self.max_latency
        for st in self.s.values():
            w = max(st.floor(), arr)
            if w > st.wm:
                st.wm = w
            if arr > st.hard:
                st.hard = arr

    def _drop(self, out: list, stream: str, f: Frame, reason: str) -> None:
        f.done = True
        self.counts[stream][reason] += 1
        out.append(Drop(stream, f, reason))

    def _nearest(self, st: _Stream, t: int, exclude: Frame | None = None) -> tuple[Frame | None, float]:
        """Nearest frame of a stream to t within max_skew (ties: the earlier), skipping `exclude`."""
        times, frames = st.times, st.frames
        i = bisect.bisect_left(times, t)
        best, bd = None, INF
        j = i - 1  # earlier side
        while j >= 0 and t - times[j] <= self.skew:
            if frames[j] is not exclude:
                best, bd = frames[j], t - times[j]
                break
            j -= 1
        j = i  # later side (t_j >= t); strictly closer wins, so a tie keeps the earlier frame
        while j < len(times) and times[j] - t <= self.skew:
            if frames[j] is not exclude:
                if times[j] - t < bd or (times[j] - t == bd and best is None):
                    best, bd = frames[j], times[j] - t
                break
            j += 1
        return best, bd

    def _decide(self) -> list:
        out: list = []
        cam, rad = self.s[CAMERA], self.s[RADAR]
        keep = []
        for r in self.pending:
            c, d = self._nearest(cam, r.t)
            if c is None:
                if cam.wm >= r.t + self.skew:
                    self._drop(out, RADAR, r, "no_partner")
                else:
                    keep.append(r)
                continue
            if cam.wm < r.t + d:  # a closer camera frame may still arrive
                keep.append(r)
                continue
            # c is r's nearest camera for good; is r c's nearest radar?
            r2, d2 = self._nearest(rad, c.t, exclude=r)
            rival = r2 is not None and (d2 < d or (d2 == d and r2.t < r.t))
            if rival or c.done:
                self._drop(out, RADAR, r, "no_partner")
            elif rad.wm >= c.t + d:
                r.done = c.done = True
                self.pairs += 1
                out.append(Pair(r, c, c.t - r.t, _int(self.now)))
            else:
                keep.append(r)
        self.pending = keep
        self._prune(out)
        return out

    def _prune(self, out: list) -> None:
        # frames older than every undecided choice by more than 2 x skew can no longer matter
        lo = min(self.s[RADAR].wm, self.s[CAMERA].wm)
        if self.pending:
            lo = min(lo, self.pending[0].t)
        if lo == -INF:
            return
        lo -= 2 * self.skew + 1
        for stream in (RADAR, CAMERA):
            for f in self.s[stream].prune_before(lo):
                if not f.done:
                    self._drop(out, stream, f, "no_partner")


def match_offline(radar_t, camera_t, max_skew_ns: int) -> list[tuple[int, int]]:
    """The pairing rule over complete sets (indices into the two sequences): what the online matcher
    produces when nothing is late or overflowed. Used to re-pair a recording after refitting clocks."""
    import numpy as np
    r = np.asarray(radar_t, dtype=np.int64)
    c = np.asarray(camera_t, dtype=np.int64)
    if len(r) == 0 or len(c) == 0:
        return []
    ro, co = np.argsort(r, kind="stable"), np.argsort(c, kind="stable")
    rs, cs = r[ro], c[co]

    def nearest(src, dst):  # index into dst of the nearest element to each src (ties: earlier)
        i = np.searchsorted(dst, src, side="left")
        lo = np.clip(i - 1, 0, len(dst) - 1)
        hi = np.clip(i, 0, len(dst) - 1)
        dlo = np.where(i > 0, src - dst[lo], np.iinfo(np.int64).max)
        dhi = np.where(i < len(dst), dst[hi] - src, np.iinfo(np.int64).max)
        return np.where(dhi < dlo, hi, lo), np.minimum(dlo, dhi)

    nc, dc = nearest(rs, cs)
    nr, _ = nearest(cs, rs)
    out = []
    for i in range(len(rs)):
        j = nc[i]
        if dc[i] <= max_skew_ns and nr[j] == i:
            out.append((int(ro[i]), int(co[j])))
    return out


class FixedWaitMatcher:
    """Baseline: hold each radar frame for a fixed wait (max_skew + max_latency, the bound you need
    without inter-message bounds), then take the nearest unused camera frame within max_skew."""

    def __init__(self, max_skew_ns: int, *, max_latency_ns: float, buffer_frames: int = 256):
        self.skew, self.wait, self.buffer = int(max_skew_ns), float(max_latency_ns), int(buffer_frames)
        self.radar: list[Frame] = []
        self.cam: list[Frame] = []
        self.cam_t: list[int] = []
        self.now = -INF
        self.pairs = 0

    def push(self, stream: str, t_ns: int, key: Any = None, data: Any = None, now_ns: float | None = None) -> list:
        if now_ns is not None:
            self.now = max(self.now, now_ns)
        f = Frame(int(t_ns), key, data, _int(self.now))
        if stream == RADAR:
            self.radar.append(f)
        else:
            i = bisect.bisect_right(self.cam_t, f.t)
            self.cam_t.insert(i, f.t)
            self.cam.insert(i, f)
            if len(self.cam) > self.buffer:
                self.cam.pop(0)
                self.cam_t.pop(0)
        return self.poll(self.now)

    def next_deadline(self) -> float:
        return self.radar[0].t + self.skew + self.wait if self.radar else INF

    def skip(self, stream: str, t_ns: int, key: Any = None, data: Any = None, reason: str = "warmup") -> list:
        """A frame of `stream` exists at t_ns but is not to be paired (e.g. stamped while its clock model
        warmed up): it is dropped with `reason` and moves the stream's watermark as a pushed frame would,
        so the other stream's frames around it are decided (a frame below the stream's floor moves nothing)."""
        st = self.s[stream]
        out: list = []
        if t_ns >= st.hard and t_ns >= st.floor():
            st.newest = max(st.newest, float(t_ns))
        self._drop(out, stream, Frame(int(t_ns), key, data, _int(self.now)), reason)
        self._watermarks()
        return out + self._decide()

    def stall(self, stream: str, t_ns: float) -> list:
        """`stream` has gone silent: declare that none of its frames still to come lies below t_ns (frames
        that do come below it are late). The live daemon calls this when a socket stayed silent for
        max_latency, so a stalled sensor cannot hold the other's frames back for ever."""
        st = self.s[stream]
        st.hard = max(st.hard, float(t_ns))
        st.wm = max(st.wm, float(t_ns))
        return self._decide()

    def poll(self, now_ns: float) -> list:
        self.now = max(self.now, now_ns)
        out = []
        while self.radar and self.now >= self.radar[0].t + self.skew + self.wait:
            r = self.radar.pop(0)
            i = bisect.bisect_left(self.cam_t, r.t)
            best, bd = None, self.skew + 1
            for j in (i - 1, i):
                if 0 <= j < len(self.cam) and not self.cam[j].done and abs(self.cam_t[j] - r.t) < bd:
                    best, bd = self.cam[j], abs(self.cam_t[j] - r.t)
            if best is not None:
                best.done = True
                self.pairs += 1
                out.append(Pair(r, best, best.t - r.t, _int(self.now)))
            else:
                out.append(Drop(RADAR, r, "no_partner"))
        return out

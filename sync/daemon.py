"""`radvis sync`: radar + camera messages in, radar-camera `pair` messages out (docs/sync.md).

`SyncProcessor` is the whole algorithm with no sockets: message in -> messages to publish. Each
message's host stamp (t.mono_ns, taken by the capture daemon when the frame reached the host) and
device time feed that sensor's ClockModel; the corrected capture time goes to the Matcher; final
pairs become `pair` messages, unpaired frames `event` messages.

Live vs replay: the messages are processed identically, so a replay reproduces the live pairs. Every
decision is a function of each stream's own messages (host stamps, device times, their order within the
stream), never of this process's clock or of how the two streams interleaved on arrival (issue #13: a
120 s rig run replayed to 2 different pairs out of 1138 because a frame the live sync received more
than max_latency after its capture was dropped as late by a processing-time arrival bound, and because
a frame whose corrected time stepped back below its stream's watermark was accepted, so the outcome
depended on which of the other stream's frames had been decided before it arrived). The only live-only
input: a stream whose socket stays silent for max_latency while the other has frames waiting is declared
stalled (`tick`), so a dead sensor cannot hold pairs back for ever; counted in stats `stalls`. A replay
ends with an end-of-stream event per endpoint, which decides what is still held. Host stamps going
backwards (replay --loop) reset the matcher and the clock models.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, deque

import numpy as np
import zmq

from radvis.log import StatsLine
from radvis.control import announce_ready
from radvis.transport import RateLimitedLog, publisher_from_config, subscriber_from_config
from radvis.wire import END_OF_STREAM, END_OF_STREAM_ACK, Message
from radvis.frames import is_restart
from sync.clock import NS, ClockModel, Stamp
from sync.matcher import CAMERA, INF, RADAR, Drop, Matcher, Pair
from sync.truth import PairingError

log = logging.getLogger("radvis.sync")


def _is_end_of_stream(msg: Message) -> bool:
    return msg.kind == "event" and isinstance(msg.meta, dict) and msg.meta.get("event") == END_OF_STREAM


def _int_or_none(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num_or_none(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e18 else None


def _pct(values, q) -> float | None:
    return round(float(np.percentile(np.fromiter(values, float), q)), 3) if values else None


class SyncProcessor:
    """Messages in, messages out. The pairs are a function of the two streams' own message sequences
    (stamps, device times, order within each stream): not of how the streams interleaved on arrival, nor of
    when this process ran. The one live-only input is a stream going silent (`tick`)."""

    def __init__(self, cfg):
        self.cfg = cfg
        s = cfg.sync
        self.camera_period_ns = NS / cfg.camera.fps
        self.skew_ns = int(s.max_skew_ms * 1e6) if s.max_skew_ms > 0 else int(self.camera_period_ns / 2)
        self.max_latency_ns = s.max_latency_ms * 1e6
        self.warmup_ns = s.clock_warmup_s * NS
        self.radar_period_ns = s.radar_period_ms * 1e6 or None
        self.matcher = self._new_matcher()
        self.clocks: dict[tuple[str, str], ClockModel] = {}
        self.last_fn: dict[tuple[str, str], int] = {}
        self.last_mono: dict[str, int] = {}
        self.counts = Counter()  # radar_in, camera_in, pairs, ignored, errors, resets, stalls, ends
        self.warmup = Counter()  # per stream: frames not paired while their clock model warmed up
        self.skews = deque(maxlen=2000)  # ms
        self.added = deque(maxlen=2000)  # ms: publish time - arrival of the later frame of the pair (live)
        self.truth = PairingError()
        self.started_wall = time.monotonic_ns()
        self.last_rx: dict[str, int] = {}  # live: this process's clock when each stream last delivered a frame
        self.stalled: set[str] = set()
        self.last_input_wall = time.monotonic()
        self.replay_seen = False
        self.ended: set[str] = set()  # streams whose replay sent its end-of-stream event
        self.ratelog = RateLimitedLog(log)

    def _new_matcher(self) -> Matcher:
        s = self.cfg.sync
        frac = s.min_period_fraction
        # no arrival bound inside the matcher (max_latency = inf): processing time must not decide pairs;
        # a silent stream is handled by tick() -> Matcher.stall()
        return Matcher(self.skew_ns, camera_min_period_ns=frac * self.camera_period_ns,
                       radar_min_period_ns=frac * (self.radar_period_ns or 0), max_latency_ns=INF,
                       radar_reorder_ns=s.reorder_ms * 1e6, camera_reorder_ns=s.reorder_ms * 1e6,
                       buffer_frames=s.buffer_frames)

    # -- clocks -------------------------------------------------------------------------------------
    def clock(self, kind: str, source: str) -> ClockModel:
        key = (kind, source)
        if key not in self.clocks:
            s = self.cfg.sync
            latency = (s.radar_latency_ms if kind == RADAR else self.cfg.camera.latency_ms) * 1e6
            wrap = (s.radar_wrap_s if kind == RADAR else s.camera_wrap_s) * NS
            self.clocks[key] = ClockModel(f"{kind}:{source}", latency_ns=int(latency), wrap_ns=wrap,
                                          window_bins=max(4, int(s.clock_window_s * 2)),
                                          restart_ns=int(s.restart_ms * 1e6))
        return self.clocks[key]

    def device_time(self, msg: Message) -> float | None:
        """The device time (ns) this message's clock model uses, or None (no device clock)."""
        s = self.cfg.sync
        mode = s.radar_clock if msg.kind == RADAR else s.camera_clock
        if msg.kind == RADAR and mode in ("auto", "frame"):
            fn = _int_or_none(msg.meta.get("frame_number"))
            period = self.radar_period_ns or (_num_or_none(msg.meta.get("frame_period_ms")) or 0) * 1e6
            if fn is not None and fn >= 0 and period > 0:
                return fn * period  # TI SWRA574B: the frame period has no trigger uncertainty
            if mode == "frame":
                self.ratelog.warning("no_frame", "radar_clock = frame but a radar message lacks meta "
                                     "frame_number/frame_period_ms; using arrival time")
                return None
        if mode in ("auto", "device", "frame") and msg.t_device_ns is not None:
            return float(msg.t_device_ns)
        return None

    # -- processing ---------------------------------------------------------------------------------
    def process(self, msg: Message, now_ns: int | None = None) -> list[Message]:
        """One received message -> messages to publish. Never raises on bad input (counted). `now_ns`:
        this process's CLOCK_MONOTONIC on receipt (live bookkeeping only; default: read it)."""
        try:
            return self._process(msg, now_ns)
        except Exception as e:  # a device/network message must never take the daemon down
            self.counts["errors"] += 1
            self.ratelog.warning("error", f"dropped a {msg.kind} message that could not be processed: {e!r}")
            return []

    def _process(self, msg: Message, now_ns: int | None) -> list[Message]:
        if msg.kind == "truth":
            self.truth.add_truth(msg)
            return []
        if _is_end_of_stream(msg):
            return self._end_of_stream(msg)
        if msg.kind not in (RADAR, CAMERA):
            self.counts["ignored"] += 1
            return []
        self.last_input_wall = time.monotonic()
        out: list[Message] = []
        replay = bool(msg.replay)
        self.replay_seen |= replay
        # replay --loop (or any backwards step of a stream's host stamps): start over
        last = self.last_mono.get(msg.kind)
        if last is not None and msg.t_mono_ns < last - self.cfg.sync.time_jump_s * NS:
            out += self.reset("time_jump")  # clears last_mono
        self.last_mono[msg.kind] = max(msg.t_mono_ns, self.last_mono.get(msg.kind, 0))

        self.counts[f"{msg.kind}_in"] += 1
        stamp = self._stamp(msg)
        if msg.kind == RADAR and not self.radar_period_ns:
            period = _num_or_none(msg.meta.get("frame_period_ms"))
            if period and period > 0:
                self.radar_period_ns = period * 1e6
                self.matcher.set_min_period(RADAR, self.cfg.sync.min_period_fraction * self.radar_period_ns)
        now = None
        if not replay:
            now = now_ns if now_ns is not None else time.monotonic_ns()
            self.last_rx[msg.kind] = now
            self.stalled.discard(msg.kind)
        clock = self.clock(msg.kind, msg.source)
        # the inter-message bound holds for a model that fitted its drift (steps are then µs), or arrival stamps
        self.matcher.set_steady(msg.kind, stamp.mode != "device" or clock.fitted)
        if stamp.mode == "device" and not clock.is_warm(self.warmup_ns):
            # the clock model is still warming up: this frame's time is not trusted for a pair, but it
            # exists, so the other stream's frames around it are decided as if it had been pushed
            self.warmup[msg.kind] += 1
            events = self.matcher.skip(msg.kind, stamp.t_ns, key=msg.seq, data=(msg, stamp), reason="warmup")
        else:
            events = self.matcher.push(msg.kind, stamp.t_ns, key=msg.seq, data=(msg, stamp), now_ns=now)
        return out + self._emit(events, now)

    def _stamp(self, msg: Message) -> Stamp:
        clock = self.clock(msg.kind, msg.source)
        dev = self.device_time(msg)
        key = (msg.kind, msg.source)
        fn = _int_or_none(msg.meta.get("frame_number"))
        hint = False
        if fn is not None:
            prev = self.last_fn.get(key)
            hint = is_restart(prev, fn)  # counter went far back: device restarted (not reordering)
            self.last_fn[key] = fn if prev is None or fn > prev or hint else prev
        tx = 0
        if msg.kind == RADAR and self.cfg.sync.uart_tx_correction:
            # what the UART driver measured for this packet (drivers/ti/radar.py: meta uart_time_s)
            v = _num_or_none(msg.meta.get("uart_time_s"))
            if v is not None and 0 < v < 10:
                tx = int(round(v * NS))
        return clock.update(msg.t_mono_ns, dev, tx_ns=tx, restart_hint=hint and dev is not None)

    def _end_of_stream(self, msg: Message) -> list[Message]:
        """A replayer's end-of-stream event on one endpoint. Once every stream that sent frames has ended,
        everything held is decided (the replay's tail), independent of how long this process waits."""
        stream = msg.meta.get("stream")
        if stream in (RADAR, CAMERA):
            self.ended.add(stream)
        seen = {k for k in (RADAR, CAMERA) if self.counts[f"{k}_in"]}
        if seen and seen <= self.ended:
            self.counts["ends"] += 1
            self.ended.clear()
            return self.flush()
        return []

    def tick(self, now_ns: int | None = None) -> list[Message]:
        """Idle. Live: a stream whose socket has been silent for max_latency, while the other stream's host
        stamps have run more than max_latency past its own and the other has frames waiting, is stalled:
        none of its frames still to come lies below (the other's newest stamp - max_latency). Both
        conditions: silence alone is also what a backlog of the other stream looks like (one socket drained
        before the other), and stamps alone cannot tell a stalled sensor from a slow socket.
        Replay: decisions wait for the data (or its end-of-stream events); a replay that goes quiet for a
        long time without them is flushed as a fallback."""
        if self.replay_seen:
            quiet = max(10.0, 4 * self.max_latency_ns / NS)
            if time.monotonic() - self.last_input_wall > quiet and (self.matcher.pending or self._buffered()):
                return self.flush()
            return []
        now = now_ns if now_ns is not None else time.monotonic_ns()
        out: list = []
        for stream, other in ((RADAR, CAMERA), (CAMERA, RADAR)):
            silent = now - self.last_rx.get(stream, self.started_wall) > self.max_latency_ns
            ahead = self.last_mono.get(other)
            behind = self.last_mono.get(stream)
            if silent and ahead is not None and (behind is None or ahead - behind > self.max_latency_ns) \
                    and self._waiting(other):
                if stream not in self.stalled:
                    self.counts["stalls"] += 1
                    self.stalled.add(stream)
                out += self.matcher.stall(stream, ahead - self.max_latency_ns)
        return self._emit(out, now)

    def _waiting(self, stream: str) -> bool:
        if stream == RADAR:
            return bool(self.matcher.pending)
        return any(not f.done for f in self.matcher.s[CAMERA].frames)

    def _buffered(self) -> bool:
        return any(not f.done for st in self.matcher.s.values() for f in st.frames)

    def flush(self) -> list[Message]:
        return self._emit(self.matcher.flush(), None)

    def reset(self, why: str) -> list[Message]:
        self.counts["resets"] += 1
        log.info("sync reset (%s): matcher and clock models start over", why)
        out = self._emit(self.matcher.reset(), None)
        for c in self.clocks.values():
            c.reset()
        self.last_fn.clear()
        self.last_mono.clear()
        return out

    def deadline_ns(self) -> float:
        return INF

    # -- output -------------------------------------------------------------------------------------
    def _emit(self, events: list, now: int | None) -> list[Message]:
        out = []
        for ev in events:
            if isinstance(ev, Pair):
                out.append(self.pair_message(ev))
                self.counts["pairs"] += 1
                self.skews.append(ev.skew_ns / 1e6)
                if now is not None:
                    self.added.append((now - max(ev.radar.arrival, ev.camera.arrival)) / 1e6)
                rh, ch = ev.radar.data[0], ev.camera.data[0]
                self.truth.add_pair((rh.source, _int_or_none(rh.meta.get("frame_number"))),
                                    (ch.source, _int_or_none(ch.meta.get("frame_number"))), ev.skew_ns,
                                    (rh.t_mono_ns, ch.t_mono_ns))
            elif isinstance(ev, Drop):
                if self.cfg.sync.events and (ev.stream == RADAR or ev.reason not in ("no_partner", "warmup")):
                    out.append(self.drop_message(ev))
        return out

    def pair_message(self, p: Pair) -> Message:
        (rm, rs), (cm, cs) = p.radar.data, p.camera.data
        buffers = {f"radar.{k}": v for k, v in rm.buffers.items()}
        buffers.update({f"camera.{k}": v for k, v in cm.buffers.items()})
        meta = {"radar": self._header(rm), "camera": self._header(cm),
                "skew_ns": int(p.skew_ns), "t_pair_ns": int(rs.t_ns), "t_radar_ns": int(rs.t_ns),
                "t_camera_ns": int(cs.t_ns), "unc_ns": {"radar": rs.unc_ns, "camera": cs.unc_ns},
                "clock": {"radar": self.clock(RADAR, rm.source).state(),
                          "camera": self.clock(CAMERA, cm.source).state()}}
        replay = rm.replay or cm.replay
        m = Message(kind="pair", source=self.cfg.sync.source, buffers=buffers, meta=meta, replay=replay)
        if replay:  # a replayed pair carries recorded stamps, like its inputs
            m.t_mono_ns, m.t_wall_ns = max(rm.t_mono_ns, cm.t_mono_ns), max(rm.t_wall_ns, cm.t_wall_ns)
        return m

    @staticmethod
    def _header(m: Message) -> dict:
        h = m.header_dict()
        del h["buffers"]  # the arrays travel in the pair's buffers, prefixed radar./camera.
        return h

    def drop_message(self, d: Drop) -> Message:
        msg, stamp = d.frame.data
        meta = {"event": "unpaired", "stream": d.stream, "reason": d.reason, "source": msg.source,
                "seq": msg.seq, "epoch": msg.epoch, "t_ns": stamp.t_ns}
        m = Message(kind="event", source=self.cfg.sync.source, meta=meta, replay=msg.replay)
        if msg.replay:
            m.t_mono_ns, m.t_wall_ns = msg.t_mono_ns, msg.t_wall_ns
        return m

    # -- stats --------------------------------------------------------------------------------------
    def stats(self) -> dict:
        m = self.matcher
        return {"pairs": self.counts["pairs"], "radar_in": self.counts["radar_in"],
                "camera_in": self.counts["camera_in"],
                "skew_ms_p50": _pct(self.skews, 50), "skew_ms_p99": _pct(self.skews, 99),
                "added_ms_p50": _pct(self.added, 50), "added_ms_p99": _pct(self.added, 99),
                "unmatched": {RADAR: dict(m.counts[RADAR]), CAMERA: dict(m.counts[CAMERA])},
                "pending": len(m.pending), "resets": self.counts["resets"], "errors": self.counts["errors"],
                "ignored": self.counts["ignored"], "stalls": self.counts["stalls"], "ends": self.counts["ends"],
                "truth": self.truth.stats(),
                "clock": {f"{k}:{s}": c.state() for (k, s), c in self.clocks.items()}}


class SyncDaemon:
    """Sockets around a SyncProcessor: SUB to the radar, camera and truth endpoints, PUB on the pairs endpoint.

    One SUB per endpoint, read in host-stamp order: when both frame sockets have messages queued, the one
    whose stream is behind in t.mono_ns is read first. A single SUB fair-queues message by message, so
    a backlog (a replay at full speed, a busy host) let the 10 Hz radar run seconds ahead of the 30 Hz
    camera and overflow sync's buffers, and what overflowed depended on the timing."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.proc = SyncProcessor(cfg)
        # frames plus a replayer's end-of-stream events; (emulated devices) the scene's ground truth
        # END_OF_STREAM_ACK: the promise to acknowledge a replayer's end of stream (Subscriber.ack)
        self.subs = {RADAR: subscriber_from_config(cfg, ["radar"], topics=[RADAR, "event", END_OF_STREAM_ACK],
                                                   name="sync"),
                     CAMERA: subscriber_from_config(cfg, ["camera"], topics=[CAMERA, "event", END_OF_STREAM_ACK],
                                                    name="sync"),
                     "truth": subscriber_from_config(cfg, ["truth"], topics=["truth"], name="sync")}
        self.poller = zmq.Poller()
        for sub in self.subs.values():
            self.poller.register(sub.sock, zmq.POLLIN)
        self.pub = publisher_from_config(cfg, "pairs")
        self.statsline = StatsLine(log, cfg.rig.stats_interval_s, rates=("pairs", "radar_in", "camera_in"))

    def stats(self) -> dict:
        d = self.proc.stats()
        sub = {"received": 0, "bytes": 0, "rejected": Counter(), "lost": 0}
        for s in self.subs.values():  # one Subscriber per endpoint: their counters add up
            for k, v in s.stats.as_dict().items():
                if k == "rejected":
                    sub[k].update(v)
                else:
                    sub[k] = sub.get(k, 0) + v
        sub["rejected"] = dict(sub["rejected"])
        d["sub"] = sub
        d["pub_dropped_hwm"] = self.pub.stats.dropped_hwm
        return d

    def _next(self, timeout_ms: int) -> Message | None:
        """The next message: truth first (it only annotates), then the frame stream that is behind."""
        ready = dict(self.poller.poll(timeout_ms))
        for sub in self.subs.values():  # re-make a connection libzmq dropped for an oversize frame (counted)
            sub.watch()
        order = ["truth"]
        r, c = self.proc.last_mono.get(RADAR, -1), self.proc.last_mono.get(CAMERA, -1)
        order += [RADAR, CAMERA] if r <= c else [CAMERA, RADAR]
        for name in order:
            sub = self.subs[name]
            if sub.sock in ready:
                frames = sub.recv_frames(0)
                if frames is not None:
                    msg = sub.accept(frames)  # None when malformed (counted)
                    if msg is not None and _is_end_of_stream(msg):
                        sub.ack(END_OF_STREAM_ACK)  # all before it is read: the replayer may close now
                    return msg
        return None

    def serve(self, duration_s: float | None = None, stop=None, *, drain_quiet_ms: int = 500,
              drain_max_s: float | None = None) -> dict:
        """Run until `duration_s` passes or `stop` (a threading.Event) is set, then `drain` and pair what is
        still held. Returns the final stats."""
        end = None if not duration_s else time.monotonic() + duration_s
        next_tick = time.monotonic()
        while not (stop is not None and stop.is_set()) and (end is None or time.monotonic() < end):
            msg = self._next(50)
            outs = self.proc.process(msg) if msg is not None else []
            if time.monotonic() >= next_tick:  # also while one stream keeps talking: the other may be silent
                outs += self.proc.tick()
                next_tick = time.monotonic() + 0.05
            for m in outs:
                self.pub.send(m)
            if self.statsline.due():
                self.statsline.tick(self.stats())
        # a clean stop (the rig stops the capture stages first): take what they published before they
        # stopped, then pair what is still held, as a replay that ends does, so the live and replayed pair
        # streams end alike
        self.drain(drain_quiet_ms, drain_max_s)
        for m in self.proc.flush():
            self.pub.send(m)
        self.statsline.tick(self.stats(), force=True)
        return self.stats()

    def drain(self, quiet_ms: int = 500, max_s: float | None = None) -> int:
        """Before stopping: process what is still queued in the sockets (or on its way from a producer
        that stopped just before us) until they have been quiet for `quiet_ms`, at most `max_s`. Without
        it frames still queued at the stop were never paired live while the recording has them, so the
        replay's last pairs could differ (near a half-camera-period offset every pair waits for the next
        camera frame). `max_s` defaults to 0.8 x rig.stop_timeout_s (the time the rig gives a stage to stop,
        so it never has to kill sync mid-flush). Returns the messages read (malformed ones included: they
        are counted, as ever)."""
        if max_s is None:
            max_s = 0.8 * self.cfg.rig.stop_timeout_s
        n, end = 0, time.monotonic() + max_s
        while time.monotonic() < end:
            if not self.poller.poll(quiet_ms):
                break
            msg = self._next(0)
            n += 1
            for m in (self.proc.process(msg) if msg is not None else []):
                self.pub.send(m)
        return n

    def close(self) -> None:
        for sub in self.subs.values():
            sub.close()
        self.pub.close()


def run(cfg, duration_s: float | None = None, stop=None) -> int:
    d = SyncDaemon(cfg)
    log.info("sync: %s + %s -> %s (max skew %.1f ms)", cfg.endpoints.radar, cfg.endpoints.camera,
             d.pub.endpoint, d.proc.skew_ns / 1e6)
    announce_ready(cfg, "sync")  # subscribed: `radvis rig` starts the capture stages after this message
    try:
        d.serve(duration_s, stop)
    finally:
        d.close()
    return 0

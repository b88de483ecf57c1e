"""Replay a recorded session (or a CRUW sequence) onto the rig's endpoints as if it were live.

Recorded messages go out byte for byte as they were received, except `"replay": true` in the header
(seq and epoch kept, so subscribers' gap accounting works unchanged; on `--loop` pass p > 0 the epoch is
advanced by p so a new pass looks like a publisher restart, not a flood of out-of-order messages).

Timing: message i is sent at start + (log_time_i - log_time_0) / rate against CLOCK_MONOTONIC, so errors
never accumulate; `--max` sends as fast as subscribers take them (blocking, no drops).
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zmq

from capture.record import ENCODING, ScanResult, scan, segments, unframe
from radvis import cruw
from radvis.config import bind_endpoint
from radvis.transport import Publisher, keys_from_config
from radvis.truth import truth_message
from radvis.wire import END_OF_STREAM, END_OF_STREAM_ACK, Message, encode

log = logging.getLogger("radvis.replay")

MAX_EPOCH = 2**62


def mark_replay(header: bytes, epoch_offset: int = 0) -> bytes:
    """The recorded header with replay = true (and epoch advanced on a loop); key order and compact
    separators are kept, so a header written by radvis.wire differs only in that field."""
    h = json.loads(header)
    h["replay"] = True
    if epoch_offset:
        h["epoch"] = (int(h.get("epoch", 0)) + epoch_offset) % MAX_EPOCH
    return json.dumps(h, separators=(",", ":")).encode()


@dataclass
class ReplayStats:
    sent: int = 0
    bytes: int = 0
    dropped: int = 0  # refused at the high-water mark in timed mode (a slow subscriber)
    bad: int = 0  # recorded payloads that did not unframe
    late_ms_max: float = 0.0  # how late a message left compared to its schedule
    late_ms_sum: float = 0.0
    schedule_s: float = 0.0  # timed modes: the recording's time span / rate, summed over passes
    paced_s: float = 0.0  # the time the replay actually took for it (never less: no message leaves early)
    passes: int = 0
    truncated: list = field(default_factory=list)  # segments that ended early (unfinished files)
    annotation_lines_skipped: int = 0  # CRUW replay: malformed annotation lines (their frames carry no truth)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "bytes": self.bytes, "dropped": self.dropped, "bad": self.bad,
                "late_ms_max": round(self.late_ms_max, 3),
                "late_ms_mean": round(self.late_ms_sum / max(self.sent, 1), 3), "passes": self.passes,
                "schedule_s": round(self.schedule_s, 6), "paced_s": round(self.paced_s, 6),
                "truncated": self.truncated, "annotation_lines_skipped": self.annotation_lines_skipped}


# --max: how long the tail may wait for a slow subscriber. A fast replay ends with up to sndhwm messages
# queued on its side, the kernel's socket buffer full and the subscriber's receive queue full, so the
# end-of-stream event waits for room, then for the consumers' acknowledgements, for this long. Closing
# earlier lost a busy synchroniser's last ~230 camera frames and the end event: libzmq discards what is
# left in the socket buffer of a subscriber at its receive high-water mark when the publisher's
# connection closes, whatever the linger (zeromq/libzmq#4660; ~1 run in 20 of a CI test under load).
FAST_TAIL_S = 60.0


def _send_waiting(pub: Publisher, frames: list, stop: threading.Event, wait_s: float | None = None) -> bool:
    """Send, waiting for room in 100 ms slices (XPUB_NODROP refuses instead of dropping) until sent, `stop`
    is set or `wait_s` has passed (None: no limit). Returns whether it was sent."""
    pub.sock.sndtimeo = 100
    end = None if wait_s is None else time.monotonic() + wait_s
    while True:
        try:
            pub.sock.send_multipart(frames, copy=False)
            return True
        except zmq.Again:
            if stop.is_set() or (end is not None and time.monotonic() >= end):
                return False


class Pacer:
    """Sends messages on schedule (or as fast as possible) on per-endpoint publishers."""

    def __init__(self, pubs: dict[str, Publisher], rate: float = 1.0, as_fast: bool = False,
                 stop: threading.Event | None = None):
        self.pubs, self.rate, self.as_fast = pubs, rate, as_fast
        # how long the end-of-stream event waits for room, and the close linger (FAST_TAIL_S: why --max waits longer)
        self.end_wait_s, self.linger_ms = (FAST_TAIL_S, int(FAST_TAIL_S * 1000)) if as_fast else (2.0, 5000)
        self.stop = stop or threading.Event()
        self.stats = ReplayStats()
        self.t0_ns: int | None = None  # timeline origin (message time)
        self.start_mono: int = 0
        self._done = (0.0, 0.0)  # (schedule_s, paced_s) of the finished passes

    def reset_clock(self) -> None:
        self.t0_ns = None
        self._done = (self.stats.schedule_s, self.stats.paced_s)

    def wait_until(self, t_ns: int) -> None:
        """Timed modes: wait until message time `t_ns` is due on the absolute schedule of this pass (its
        first message leaves at once), and account for lateness and the span paced."""
        if self.as_fast:
            return
        now = time.monotonic_ns()
        if self.t0_ns is None:
            self.t0_ns, self.start_mono = t_ns, now
        target = self.start_mono + (t_ns - self.t0_ns) / self.rate
        if target > now:
            self.stop.wait((target - now) / 1e9)
            now = time.monotonic_ns()
        late = (now - target) / 1e6
        self.stats.late_ms_max = max(self.stats.late_ms_max, late)
        self.stats.late_ms_sum += max(late, 0.0)
        self.stats.schedule_s = self._done[0] + (t_ns - self.t0_ns) / self.rate / 1e9
        self.stats.paced_s = self._done[1] + (now - self.start_mono) / 1e9

    def send(self, endpoint: str, frames: list, t_ns: int, *, waited: bool = False) -> bool:
        """Send on schedule (after `wait_until(t_ns)` unless the caller has just done it)."""
        pub = self.pubs[endpoint]
        if not self.as_fast:
            if not waited:
                self.wait_until(t_ns)
            ok = pub.send_frames(frames)  # live semantics: a full queue drops (counted)
            if not ok:
                self.stats.dropped += 1
        else:
            # --max: block for room instead of dropping (XPUB_NODROP), but stay stoppable
            if not _send_waiting(pub, frames, self.stop):
                return False
            ok = True
        if ok:
            self.stats.sent += 1
            self.stats.bytes += sum(memoryview(f).nbytes for f in frames)
        return ok


# the kind (= ZeroMQ topic) of the messages on each rig endpoint, so `--wait-subscribers N` counts N
# consumers of those messages, not N subscriptions (one sync subscribes to several topics per endpoint)
ENDPOINT_KIND = {"radar": "radar", "camera": "camera", "pairs": "pair", "truth": "truth", "control": "stats"}


def _bind_publishers(cfg, names, wait_n: int, wait_s: float) -> dict[str, Publisher]:
    pubs = {}
    for n in names:
        if getattr(cfg.endpoints, n, None) is None:
            raise ValueError(f"recorded topic {n!r} has no endpoint in [endpoints]; use --topics to skip it")
        pubs[n] = Publisher(bind_endpoint(cfg, n), hwm=cfg.transport.sndhwm, curve=keys_from_config(cfg))
    if wait_n:
        for n, p in pubs.items():
            if not p.wait_for_subscribers(wait_n, wait_s, topic=ENDPOINT_KIND.get(n)):
                log.warning("%s: %d subscriber(s) after %.1f s (asked for %d), replaying anyway", n,
                            p.subscribers_for(ENDPOINT_KIND.get(n)), wait_s, wait_n)
    return pubs


def _end_of_stream(pubs: dict[str, Publisher], stop: threading.Event, wait_s: float = 2.0) -> dict[str, str]:
    """After the last message: an `event` {"event": "end_of_stream", "stream": endpoint} on each frame
    endpoint (after that endpoint's data on the same socket), so a synchroniser decides its tail now
    instead of guessing from a quiet period. Not sent when stopped early (a partial replay has no end).
    Then wait for every consumer that promised to acknowledge it (sync does; a recorder does not) to do
    so (Subscriber.ack): only then has it read all before it, and closing cannot cost it the tail. Each
    wait (room for the event, the acks) is at most `wait_s`, stoppable. Returns, per endpoint whose end
    was not confirmed, why (also logged)."""
    if stop.is_set():
        return {}
    missing = {}
    for n in ("radar", "camera"):
        p = pubs.get(n)
        if p is None:
            continue
        m = Message(kind="event", source="replay", meta={"event": END_OF_STREAM, "stream": n}, replay=True)
        m.stamp()
        m.seq, m.epoch = p.next_seq(m.kind), p.epoch
        want = p.ackers(END_OF_STREAM_ACK)
        p.acks[END_OF_STREAM_ACK.encode()] = 0  # count this end's acknowledgements only
        try:
            if not _send_waiting(p, encode(m), stop, wait_s):
                missing[n] = f"end-of-stream event not sent: no room for {wait_s:.1f} s"
                continue
        except zmq.ZMQError as e:
            missing[n] = f"end-of-stream event not sent: {e}"
            continue
        got = p.wait_for_acks(END_OF_STREAM_ACK, want, wait_s, stop)
        if got < want:
            missing[n] = (f"{got} of {want} consumers acknowledged the end of stream within {wait_s:.1f} s: "
                          "one still behind may lose its last messages when the replay closes")
    for n, why in missing.items():
        log.warning("%s: %s", n, why)
    return missing


def _close_all(pubs: dict[str, Publisher], linger_ms: int = 5000) -> None:
    for p in pubs.values():
        p.sock.close(linger=linger_ms)  # give subscribers time to take what is queued


def session_topics(files: list[Path]) -> list[str]:
    """Channel topics of a session, from each segment's summary (or a scan when it is unfinished)."""
    from mcap.reader import make_reader
    topics: list[str] = []
    for path in files:
        names = None
        try:
            with open(path, "rb") as f:
                summary = make_reader(f).get_summary()
            if summary is not None:  # the exact channels only: the Foxglove ones are pictures of them
                names = [c.topic for c in summary.channels.values() if c.message_encoding == ENCODING]
        except Exception:
            names = None
        if names is None:
            res = ScanResult()
            for _ in scan(path, res):
                pass
            names = [c.topic for c in res.channels.values() if c.message_encoding == ENCODING]
        topics += [t for t in names if t not in topics]
    return topics


def replay_session(cfg, session: str, *, topics: list[str] | None = None, rate: float = 1.0,
                   as_fast: bool = False, start_s: float = 0.0, end_s: float = 0.0, loop: bool = False,
                   wait_subscribers: int = 1, stop: threading.Event | None = None) -> ReplayStats:
    files = segments(session)
    names = [t for t in session_topics(files) if topics is None or t in topics]
    if not names:
        raise ValueError(f"{session}: nothing to replay (topics in file: {session_topics(files)}, asked {topics})")
    pubs = _bind_publishers(cfg, names, wait_subscribers, cfg.transport.slow_joiner_s)
    pacer = Pacer(pubs, rate, as_fast, stop)
    st = pacer.stats
    try:
        p = 0
        while not pacer.stop.is_set():
            pacer.reset_clock()
            first, past_end = None, False
            for path in files:
                res = ScanResult()
                for ch, m in scan(path, res):
                    if pacer.stop.is_set():
                        break
                    first = m.log_time if first is None else first
                    rel = (m.log_time - first) / 1e9
                    if rel < start_s:
                        continue
                    if end_s and rel >= end_s:
                        past_end = True
                        break
                    if ch.topic not in pubs:
                        continue
                    try:
                        frames = unframe(m.data)
                        frames[1] = mark_replay(bytes(frames[1]), p)
                    except ValueError as e:
                        st.bad += 1
                        log.warning("%s: skipped unreadable message: %s", path.name, e)
                        continue
                    pacer.send(ch.topic, frames, m.log_time)
                if res.error and p == 0:
                    st.truncated.append(f"{path.name}: {res.error}")
                    log.warning("%s ends early (%s): replayed its %d complete messages", path, res.error, res.messages)
                if past_end:
                    break  # later segments are later still
            p += 1
            st.passes = p
            if not loop:
                break
        _end_of_stream(pubs, pacer.stop, pacer.end_wait_s)
    finally:
        _close_all(pubs, pacer.linger_ms)
    return st


# ---------------------------------------------------------------------------------------------
# CRUW (ROD2021) sequences
# ---------------------------------------------------------------------------------------------

def cruw_sequence_dir(root: str | Path, seq: str) -> Path:
    """A CRUW sequence folder: under sequences/train or sequences/test of a dataset root, or given directly."""
    root = Path(root)
    for cand in [cruw.sequence_dir(root, "train", seq), cruw.sequence_dir(root, "test", seq), root / seq, root]:
        if (cand / cruw.RADAR_DIR).is_dir() and (cand.name == seq or cand == root / seq):
            return cand
    raise FileNotFoundError(f"CRUW sequence {seq!r} not found under {root} "
                            f"(expected sequences/{{train,test}}/{seq}/{cruw.RADAR_DIR})")


def cruw_annotations(root: str | Path, seq: str) -> cruw.Annotations | None:
    """The sequence's annotations, read leniently: a replay of a partly damaged file still runs, every
    skipped line is counted (and logged), and the frames they belonged to carry no truth rather than a
    label that may be wrong. None when the sequence has no annotation file (the test split)."""
    for split in ("train", "test"):
        p = cruw.annotation_path(root, split, seq)
        if p.exists():
            ann = cruw.read_annotations(p, strict=False)
            if ann.skipped:
                log.warning("%s: skipped %d malformed annotation lines (%s); frames %s carry no truth", p,
                            sum(ann.skipped.values()), dict(ann.skipped), sorted(ann.damaged)[:10])
            return ann
    return None


def cruw_frames(root: str | Path, seq: str,
                ann: cruw.Annotations | None = None) -> Iterator[tuple[int, np.ndarray, bytes | None, dict | None]]:
    """(frame id, RA float32 (128,128,2), JPEG bytes or None, truth or None) in frame order. `ann`: the
    sequence's annotations (default: read them)."""
    d = cruw_sequence_dir(root, seq)
    chirp = cruw.CHIRP_IDS[0]  # ROD2021 ships 4 chirps per frame; the first stands for the frame
    ids = cruw.frame_ids(d)
    if ann is None:
        ann = cruw_annotations(root, seq)
    scene = zlib.crc32(seq.encode()) & 0x7FFFFFFF
    for k in ids:
        rp = cruw.radar_path(d, k, chirp)
        if not rp.is_file():
            log.warning("%s: frame %d has an image but no radar file; skipped", seq, k)
            continue
        ra = np.load(rp, allow_pickle=False)
        if ra.shape != cruw.RA_SHAPE:
            log.warning("%s: frame %d radar shape %s != %s; skipped", seq, k, ra.shape, cruw.RA_SHAPE)
            continue
        ip = cruw.image_path(d, k)
        jpeg = ip.read_bytes() if ip.is_file() else None
        truth = None
        if ann is not None and k not in ann.damaged:
            truth = {"label": ann.label(k), "scene_id": scene, "objects": [o.truth() for o in ann.frame(k)]}
        yield k, np.ascontiguousarray(ra, dtype=np.float32), jpeg, truth


def replay_cruw(cfg, root: str, seq: str, *, rate: float = 1.0, as_fast: bool = False, start_s: float = 0.0,
                end_s: float = 0.0, loop: bool = False, wait_subscribers: int = 1,
                stop: threading.Event | None = None) -> ReplayStats:
    """Stream a CRUW sequence as live radar + camera messages at its frame rate (ROD2021: 30 fps) x rate, and its
    annotations as the frames' ground truth on the truth topic (radvis/truth.py), sent just before the frames
    they describe."""
    import cv2
    cruw_sequence_dir(root, seq)  # fail early with a clear message
    ann = cruw_annotations(root, seq)
    pubs = _bind_publishers(cfg, ["radar", "camera"], wait_subscribers, cfg.transport.slow_joiner_s)
    pubs["truth"] = Publisher(cfg.endpoints.truth, hwm=cfg.transport.sndhwm, curve=keys_from_config(cfg))
    if wait_subscribers:  # a learner subscribes to truth, sync does not: not finding one is not worth a warning
        pubs["truth"].wait_for_subscribers(wait_subscribers, cfg.transport.slow_joiner_s)
    pacer = Pacer(pubs, rate, as_fast, stop)
    if ann is not None:
        pacer.stats.annotation_lines_skipped = sum(ann.skipped.values())
    fps = cruw.read_fps(root)
    period_ns = 1e9 / fps
    size = None
    try:
        p = 0
        while not pacer.stop.is_set():
            pacer.reset_clock()
            for k, ra, jpeg, truth in cruw_frames(root, seq, ann):
                if pacer.stop.is_set():
                    break
                t_dev = int(round(k * period_ns))
                if k / fps < start_s or (end_s and k / fps >= end_s):
                    continue
                meta = {"frame_number": k, "cfg_digest": "cruw-rod2021", "units": "complex-ra",
                        "frame_period_ms": 1000 / fps, "mode": "cruw", "sequence": seq}
                radar = Message(kind="radar", source=cfg.radar.source, buffers={"ra": ra}, meta=meta,
                                t_device_ns=t_dev, replay=True).stamp()  # host stamps now, as a live capture would
                msgs = []
                if truth is not None:  # the frame was captured now: its scene is sampled at its host stamp
                    for stream, source in (("radar", cfg.radar.source), ("camera", cfg.camera.source)):
                        if stream == "radar" or jpeg is not None:
                            msgs.append(("truth", truth_message(stream, source, k, radar.t_mono_ns, truth)))
                msgs.append(("radar", radar))
                if jpeg is not None:
                    if size is None:  # CRUW's JPEG size is not what its config says: read it
                        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                        size = (int(img.shape[1]), int(img.shape[0])) if img is not None else (0, 0)
                    cmeta = {"width": size[0], "height": size[1], "encoding": "jpeg", "frame_number": k,
                             "timestamp_domain": "cruw-frame-index", "sequence": seq}
                    msgs.append(("camera", Message(kind="camera", source=cfg.camera.source,
                                                   buffers={"image": np.frombuffer(jpeg, np.uint8)}, meta=cmeta,
                                                   t_device_ns=t_dev, replay=True)))
                pacer.wait_until(t_dev)  # then stamp: the host stamps say when the frame "arrived"
                for ep, m in msgs:
                    pub = pubs[ep]
                    m.stamp()  # host stamps now, as a live capture would
                    m.seq, m.epoch = pub.next_seq(m.kind), pub.epoch
                    if ep == "truth":  # side information: not paced, not counted as replayed frames
                        pub.send_frames(encode(m))
                    else:
                        pacer.send(ep, encode(m), t_dev, waited=True)
            p += 1
            pacer.stats.passes = p
            if not loop:
                break
        _end_of_stream(pubs, pacer.stop, pacer.end_wait_s)
    finally:
        _close_all(pubs, pacer.linger_ms)
    return pacer.stats


def install_stop() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop

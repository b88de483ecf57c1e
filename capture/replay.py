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
import re
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
from radvis.transport import Publisher, keys_from_config
from radvis.wire import Message, encode

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
    passes: int = 0
    truncated: list = field(default_factory=list)  # segments that ended early (unfinished files)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "bytes": self.bytes, "dropped": self.dropped, "bad": self.bad,
                "late_ms_max": round(self.late_ms_max, 3),
                "late_ms_mean": round(self.late_ms_sum / max(self.sent, 1), 3), "passes": self.passes,
                "truncated": self.truncated}


class Pacer:
    """Sends messages on schedule (or as fast as possible) on per-endpoint publishers."""

    def __init__(self, pubs: dict[str, Publisher], rate: float = 1.0, as_fast: bool = False,
                 stop: threading.Event | None = None):
        self.pubs, self.rate, self.as_fast = pubs, rate, as_fast
        self.stop = stop or threading.Event()
        self.stats = ReplayStats()
        self.t0_ns: int | None = None  # timeline origin (message time)
        self.start_mono: int = 0

    def reset_clock(self) -> None:
        self.t0_ns = None

    def send(self, endpoint: str, frames: list, t_ns: int) -> bool:
        pub = self.pubs[endpoint]
        if not self.as_fast:
            if self.t0_ns is None:
                self.t0_ns, self.start_mono = t_ns, time.monotonic_ns()
            target = self.start_mono + (t_ns - self.t0_ns) / self.rate
            wait = (target - time.monotonic_ns()) / 1e9
            if wait > 0:
                self.stop.wait(wait)
            late = (time.monotonic_ns() - target) / 1e6
            self.stats.late_ms_max = max(self.stats.late_ms_max, late)
            self.stats.late_ms_sum += max(late, 0.0)
            ok = pub.send_frames(frames)  # live semantics: a full queue drops (counted)
            if not ok:
                self.stats.dropped += 1
        else:
            pub.sock.sndtimeo = 100  # --max: block for room instead of dropping (XPUB_NODROP), but stay stoppable
            while True:
                try:
                    pub.sock.send_multipart(frames, copy=False)
                    break
                except zmq.Again:
                    if self.stop.is_set():
                        return False
            ok = True
        if ok:
            self.stats.sent += 1
            self.stats.bytes += sum(memoryview(f).nbytes for f in frames)
        return ok


def _bind_publishers(cfg, names, wait_n: int, wait_s: float) -> dict[str, Publisher]:
    pubs = {}
    for n in names:
        ep = getattr(cfg.endpoints, n, None)
        if ep is None:
            raise ValueError(f"recorded topic {n!r} has no endpoint in [endpoints]; use --topics to skip it")
        pubs[n] = Publisher(ep, hwm=cfg.transport.sndhwm, curve=keys_from_config(cfg))
    if wait_n:
        for n, p in pubs.items():
            if not p.wait_for_subscribers(wait_n, wait_s):
                log.warning("%s: no subscriber after %.1f s, replaying anyway", n, wait_s)
    return pubs


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
    finally:
        _close_all(pubs)
    return st


# ---------------------------------------------------------------------------------------------
# CRUW (ROD2021) sequences
# ---------------------------------------------------------------------------------------------

CRUW_FPS = 30.0
CHIRP = "0000"  # ROD2021 ships chirps 0/64/128/192; the first stands for the frame


def cruw_sequence_dir(root: str | Path, seq: str) -> Path:
    root = Path(root)
    for cand in [root / "sequences" / "train" / seq, root / "sequences" / "test" / seq, root / seq, root]:
        if (cand / "RADAR_RA_H").is_dir() and (cand.name == seq or cand == root / seq):
            return cand
    raise FileNotFoundError(f"CRUW sequence {seq!r} not found under {root} "
                            f"(expected sequences/{{train,test}}/{seq}/RADAR_RA_H)")


def cruw_labels(root: Path, seq: str) -> dict[int, list] | None:
    for split in ("train", "test"):
        p = Path(root) / "annotations" / split / f"{seq}.txt"
        if p.exists():
            objs: dict[int, list] = {}
            for ln, line in enumerate(p.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    fid, r, a, cls = int(parts[0]), float(parts[1]), float(parts[2]), parts[3]
                except (ValueError, IndexError):
                    log.warning("%s:%d: skipped malformed annotation line %r", p, ln, line[:80])
                    continue
                objs.setdefault(fid, []).append({"cls": cls, "range_m": r, "azimuth_rad": a})
            return objs
    return None


def _label(objs: list) -> str:
    classes = {o["cls"] for o in objs}
    return "empty" if not classes else (classes.pop() if len(classes) == 1 else "mixed")


def cruw_frames(root: str | Path, seq: str) -> Iterator[tuple[int, np.ndarray, bytes | None, dict | None]]:
    """(frame id, RA float32 (128,128,2), JPEG bytes or None, truth or None) in frame order."""
    d = cruw_sequence_dir(root, seq)
    radar = {int(m.group(1)): p for p in (d / "RADAR_RA_H").glob(f"*_{CHIRP}.npy")
             if (m := re.fullmatch(rf"(\d+)_{CHIRP}\.npy", p.name))}
    images = {int(p.stem): p for p in (d / "IMAGES_0").glob("*.jpg") if p.stem.isdigit()} \
        if (d / "IMAGES_0").is_dir() else {}
    ids = sorted(images) if images else sorted(radar)
    labels = cruw_labels(Path(root), seq)
    scene = zlib.crc32(seq.encode()) & 0x7FFFFFFF
    for k in ids:
        if k not in radar:
            log.warning("%s: frame %d has an image but no radar file; skipped", seq, k)
            continue
        ra = np.load(radar[k], allow_pickle=False)
        if ra.shape != (128, 128, 2):
            log.warning("%s: frame %d radar shape %s != (128, 128, 2); skipped", seq, k, ra.shape)
            continue
        jpeg = images[k].read_bytes() if k in images else None
        truth = None
        if labels is not None:
            objs = labels.get(k, [])
            truth = {"label": _label(objs), "scene_id": scene, "objects": objs}
        yield k, np.ascontiguousarray(ra, dtype=np.float32), jpeg, truth


def replay_cruw(cfg, root: str, seq: str, *, rate: float = 1.0, as_fast: bool = False, start_s: float = 0.0,
                end_s: float = 0.0, loop: bool = False, wait_subscribers: int = 1,
                stop: threading.Event | None = None) -> ReplayStats:
    """Stream a CRUW sequence as live radar + camera messages at 30 fps (x rate)."""
    import cv2
    cruw_sequence_dir(root, seq)  # fail early with a clear message
    pubs = _bind_publishers(cfg, ["radar", "camera"], wait_subscribers, cfg.transport.slow_joiner_s)
    pacer = Pacer(pubs, rate, as_fast, stop)
    period_ns = 1e9 / CRUW_FPS
    size = None
    try:
        p = 0
        while not pacer.stop.is_set():
            pacer.reset_clock()
            for k, ra, jpeg, truth in cruw_frames(root, seq):
                if pacer.stop.is_set():
                    break
                t_dev = int(round(k * period_ns))
                if k / CRUW_FPS < start_s or (end_s and k / CRUW_FPS >= end_s):
                    continue
                meta = {"frame_number": k, "cfg_digest": "cruw-rod2021", "units": "complex-ra",
                        "frame_period_ms": 1000 / CRUW_FPS, "mode": "cruw", "sequence": seq}
                if truth is not None:
                    meta["truth"] = truth
                radar = Message(kind="radar", source=cfg.radar.source, buffers={"ra": ra}, meta=meta,
                                t_device_ns=t_dev, replay=True)
                msgs = [("radar", radar)]
                if jpeg is not None:
                    if size is None:  # CRUW's JPEG size is not what its config says: read it
                        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                        size = (int(img.shape[1]), int(img.shape[0])) if img is not None else (0, 0)
                    cmeta = {"width": size[0], "height": size[1], "encoding": "jpeg", "frame_number": k,
                             "timestamp_domain": "cruw-frame-index", "sequence": seq}
                    if truth is not None:
                        cmeta["truth"] = truth
                    msgs.append(("camera", Message(kind="camera", source=cfg.camera.source,
                                                   buffers={"image": np.frombuffer(jpeg, np.uint8)}, meta=cmeta,
                                                   t_device_ns=t_dev, replay=True)))
                for ep, m in msgs:
                    pub = pubs[ep]
                    m.stamp()  # host stamps now, as a live capture would
                    m.seq, m.epoch = pub.next_seq(m.kind), pub.epoch
                    pacer.send(ep, encode(m), t_dev)
            p += 1
            pacer.stats.passes = p
            if not loop:
                break
    finally:
        _close_all(pubs)
    return pacer.stats


def install_stop() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop

"""Ingest for the online learner: socket → bounded queue → decoded pairs → frozen image keys →
near-duplicate gate → replay buffer and negative queue. Every pair that does not make it is counted
with its reason.

The socket is drained by its own thread (`Receiver`) that only receives, validates the wire message
and appends it to a bounded in-process queue, so a slow training step never backs up into ZeroMQ (where
the publisher would silently drop at its high-water mark). If the learner falls so far behind that the
queue fills, the newest message is dropped and counted as `queue_full`; the queue depth and the time a
pair waited in it (`lag_s`) are reported so this is visible long before it happens.

Pair messages (kind `pair`, written by `radvis sync`, docs/sync.md): buffers `radar.ra` float32
(128, 128, 2) and `camera.image` uint8 (H, W, 3) RGB, or uint8 1-D JPEG bytes when
meta["camera"]["meta"]["encoding"] == "jpeg"; meta {"radar": radar header, "camera": camera header,
"skew_ns", "t_pair_ns", ...}.

Labels (for the live labelled hold-out) come from the scene's ground truth, which emulated devices publish on
the `truth` topic (radvis/truth.py); the receiver takes it from the same socket as the pairs, and a pair is
joined with the truth of its radar frame (else its camera frame) by (source, frame_number). On an emulated
rig a pair whose truth has not arrived yet waits for it (at most `truth_wait_s`, counted as `truth_missing`
if it never comes); real devices send no truth and nothing waits. Sessions recorded before truth had its own
topic carry it in the frames' meta["truth"]; that is still read.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from radvis.transport import RateLimitedLog
from radvis import chirps as radar_chirps
from radvis.cruw import label_index
from radvis.truth import TruthJoin
from radvis.wire import Message

log = logging.getLogger("radvis.learn.online")
_ratelog = RateLimitedLog(log)  # a dropped pair: at most one line per 5 s per reason (all are counted)

RA_SHAPE = (128, 128, 2)
_LRU = 64  # sequences remembered for dedup / stream position (a restart of sync opens a new one)


class PairError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Pair:
    radar: np.ndarray  # float32 (2C, 128, 128): channels first, as the encoders take it (C chirps, usually 1)
    image: np.ndarray  # uint8 (H, W, 3) RGB
    t_ns: int  # pair time (sync's t_pair_ns)
    seq_id: int  # stream identity: (source, epoch) of the sync publisher (a restart starts a new sequence); see seq_key
    label: int  # index into LABELS (the 4-class task) from meta truth, -1 when unknown or mixed
    scene_id: int | None
    source: str
    msg_seq: int
    recv_ns: int  # monotonic time the receiver thread got it
    truth_keys: tuple = ()  # ((source, frame_number, arrival mono ns) of the radar frame, then of the camera frame)


def seq_key(source: str, epoch: int) -> int:
    """A sequence's id: its (source, epoch) folded into 62 bits (it is stored in int64 tensors by the buffer
    and the queue). The source takes part so that two rigs whose publishers share an epoch (two replays of
    one recorded session keep its epochs) are still two sequences to the temporal exclusion, the dedup gate
    and the buffer's redundancy eviction. For one source it is a bijection of the epoch."""
    h = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "little")
    return (int(epoch) ^ h) & (2**62 - 1)


def label_of(truth) -> tuple[int, int | None]:
    if not isinstance(truth, dict):
        return -1, None
    lab = truth.get("label")
    sid = truth.get("scene_id")
    sid = sid if isinstance(sid, int) and not isinstance(sid, bool) else None
    return label_index(lab), sid


def decode_image(buf: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "jpeg":
        import cv2
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise PairError("image", f"jpeg image must be 1-D uint8, got {buf.dtype} {buf.shape}")
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise PairError("jpeg", f"undecodable JPEG ({buf.nbytes} bytes)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if buf.dtype != np.uint8 or buf.ndim != 3 or buf.shape[2] != 3 or min(buf.shape[:2]) < 1:
        raise PairError("image", f"camera.image must be uint8 (H, W, 3), got {buf.dtype} {buf.shape}")
    return buf


def _sub(d: dict, *keys) -> dict:
    """d[k1][k2]... or {} when any level is missing or not an object."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, dict) else {}


def _chirp_stack(msg: Message, chirps: tuple) -> np.ndarray:
    """(128, 128, 2C) float32 of `chirps` from the pair's radar.ra_chirps (the radar's radar.ra_chirps)."""
    have = _sub(msg.meta, "radar", "meta").get("ra_chirps")
    rc = msg.buffers.get("radar.ra_chirps")
    if rc is None or not isinstance(have, list):
        raise PairError("radar_chirps", f"the learner reads chirps {list(chirps)} (learner.online_chirps) from the "
                                        f"radar's per-chirp maps (radar.ra_chirps, dca1000 mode); this pair has none "
                                        f"(a radar or recording without them: set learner.online_chirps = [])")
    try:
        return radar_chirps.select(rc, radar_chirps.check(rc, have), chirps)
    except radar_chirps.ChirpStackError as e:
        raise PairError("radar", str(e)) from None
    except KeyError:
        raise PairError("radar_chirps", f"the learner reads chirps {list(chirps)} (learner.online_chirps) but the "
                                        f"radar sends chirps {have}") from None


def decode_pair(msg: Message, recv_ns: int = 0, chirps: tuple = ()) -> Pair:
    """Validate a `pair` message; PairError(reason) for anything the learner cannot use. `chirps`: the
    learner's online chirps (`radvis.chirps.online_chirps`); the radar input is then those chirps' maps, else the frame's one `ra`."""
    if msg.kind != "pair":
        raise PairError("kind", f"expected kind 'pair', got {msg.kind!r}")
    ra, img = msg.buffers.get("radar.ra"), msg.buffers.get("camera.image")
    if ra is None or img is None:
        raise PairError("missing_buffer", f"need radar.ra and camera.image, got {sorted(msg.buffers)}")
    if ra.dtype != np.float32 or ra.shape != RA_SHAPE:
        raise PairError("radar", f"radar.ra must be float32 {RA_SHAPE}, got {ra.dtype} {ra.shape}")
    if chirps:
        ra = _chirp_stack(msg, tuple(chirps))
    if not np.isfinite(ra).all():
        raise PairError("radar_nonfinite", "radar.ra holds NaN or inf")
    image = decode_image(img, _sub(msg.meta, "camera", "meta").get("encoding", "raw"))
    t = msg.meta.get("t_pair_ns")
    if t is None:
        t = msg.t_device_ns if msg.t_device_ns is not None else msg.t_mono_ns
    elif isinstance(t, bool) or not isinstance(t, int) or not -(2**63) <= t < 2**63:
        raise PairError("t_pair", f"meta.t_pair_ns must be an int64 integer (docs/wire-format.md), got {t!r:.40}")
    # sessions recorded before truth had its own topic carry it in the frames' meta
    truth = (msg.meta.get("truth") or _sub(msg.meta, "radar", "meta").get("truth")
             or _sub(msg.meta, "camera", "meta").get("truth"))
    label, sid = label_of(truth)
    keys = []
    for stream in ("radar", "camera"):
        h = _sub(msg.meta, stream)
        fn, t_arr = _sub(h, "meta").get("frame_number"), _sub(h, "t").get("mono_ns")
        if isinstance(h.get("source"), str) and isinstance(fn, int) and not isinstance(fn, bool):
            keys.append((h["source"], fn, t_arr if isinstance(t_arr, int) and t_arr > 0 else None))
    return Pair(radar=np.ascontiguousarray(ra.transpose(2, 0, 1)), image=image, t_ns=int(t),
                seq_id=seq_key(msg.source, msg.epoch), label=label, scene_id=sid, source=msg.source,
                msg_seq=msg.seq, recv_ns=recv_ns, truth_keys=tuple(keys))


class RunningClutter:
    """Static clutter of one radar stream: an exponential running mean of the complex RA map with time
    constant `tau_s` (the classic MTI clutter map), the online twin of the offline per-sequence mean
    (`CRUWFrames.static_clutter`). Each frame updates the map, then the map is subtracted from it, as the
    offline mean includes the frame too. The weight follows the frames' own time stamps, so the filter is
    the same at any frame rate and a gap in the stream (or a restart) lets the map forget faster."""

    def __init__(self, tau_s: float = 2.0):
        self.tau_ns = float(tau_s) * 1e9
        self.mean: np.ndarray | None = None
        self.t_ns = 0
        self.n = 0

    def remove(self, radar: np.ndarray, t_ns: int) -> np.ndarray:
        if self.mean is None:
            self.mean = radar.astype(np.float32, copy=True)
        else:
            dt = max(0, t_ns - self.t_ns)
            # until tau's worth of frames are in, weight as a plain mean of what was seen (no cold bias)
            a = max(1.0 - float(np.exp(-dt / self.tau_ns)), 1.0 / (self.n + 1))
            self.mean += a * (radar - self.mean)
        self.t_ns, self.n = t_ns, self.n + 1
        return radar - self.mean


# ---------------------------------------------------------------------------------------------
# Receiver thread
# ---------------------------------------------------------------------------------------------

class Receiver:
    """Drains a Subscriber on its own thread into a bounded queue; never blocks on the consumer."""

    def __init__(self, make_subscriber: Callable, maxsize: int = 512):
        self.q: queue.Queue = queue.Queue(maxsize)
        self.make_subscriber = make_subscriber
        self.sub = None
        self.dropped_full = 0
        self.received = 0  # pairs (and anything else but truth)
        self.truth_received = self.truth_dropped_full = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="online-ingest-rx", daemon=True)

    def start(self, timeout_s: float = 10.0) -> "Receiver":
        self.thread.start()
        self._ready.wait(timeout_s)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            self.sub = self.make_subscriber()  # created on this thread: a zmq socket belongs to one thread
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                msg = self.sub.recv(timeout_ms=100)
                if msg is None:
                    continue
                truth = msg.kind == "truth"
                if truth:
                    self.truth_received += 1
                else:
                    self.received += 1
                try:
                    self.q.put_nowait((time.monotonic_ns(), msg))
                except queue.Full:
                    if truth:
                        self.truth_dropped_full += 1
                    else:
                        self.dropped_full += 1
        finally:
            self.sub.close()

    def sub_stats(self) -> dict:
        s = self.sub.stats if self.sub is not None else None
        if s is None:
            return {"lost": 0, "rejected": {}, "restarts": 0, "lost_by_source": {}}
        # pairs lost upstream (the truth stream's own gaps are not pairs)
        streams = list(s.per_source.items())
        truth_lost = sum(v["lost"] for k, v in streams if k[2] == "truth")
        by_source: Counter = Counter()  # pairs lost upstream, per publisher (one sync per rig)
        for k, v in streams:
            if k[2] != "truth":
                by_source[k[0]] += v["lost"]
        return {"lost": s.lost - truth_lost, "rejected": dict(s.rejected), "restarts": s.restarts,
                "lost_by_source": dict(by_source)}

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(5)


# ---------------------------------------------------------------------------------------------
# Processing: embed, deduplicate, insert
# ---------------------------------------------------------------------------------------------

class Ingest:
    """Turns received messages into buffer entries and queue keys. Runs on the training thread between
    steps (the receiver thread keeps the socket drained meanwhile).

    embed: uint8 (B, H, W, 3) → L2-normalised (B, D) torch/np (the frozen teacher, computed once per pair).
    buffer: a ReplayBuffer; queue: a NegativeQueue (or None); heldout: optional LiveHoldout for live
    labelled evaluation (pairs of held-out scenes go there instead of training)."""

    def __init__(self, receiver: Receiver | None, embed: Callable, buffer, queue=None, *, dedup_threshold: float = 0.98,
                 keep_interval_s: float = 1.0, heldout=None, max_batch: int = 64, center_pairs: int = 0,
                 set_center: Callable | None = None, finish: Callable | None = None, clutter_tau_s: float = 0.0,
                 truth_wait_s: float = 2.0, chirps: tuple = ()):
        self.chirps = tuple(chirps)  # learner.online_chirps: several chirps per frame from radar.ra_chirps
        self.rx, self.embed, self.buffer, self.queue = receiver, embed, buffer, queue
        # scene ground truth from the truth topic (emulated rigs), joined to pairs by frame
        self.truth, self.truth_wait_ns = TruthJoin(), int(truth_wait_s * 1e9)
        self.waiting: list[Pair] = []  # decoded pairs whose truth has not arrived yet
        # Key centring (weight-free teachers): the first `center_pairs` pairs wait (bounded) until the mean
        # key is known, so every key stored in the buffer/queue and every dedup cosine is in one fixed space.
        self.center_pairs, self.set_center, self.finish = center_pairs, set_center, finish
        self.pending: list = []
        self.dedup_threshold, self.keep_interval_ns = dedup_threshold, int(keep_interval_s * 1e9)
        self.heldout, self.max_batch = heldout, max_batch
        self.counts: Counter = Counter()  # pairs_in, kept, duplicates_skipped, inserted, heldout
        # per rig (the pair's source, one sync per rig): pairs_in, inserted, duplicates_skipped
        self.by_source: dict[str, Counter] = {}
        self.dropped: Counter = Counter()  # reason -> pairs that never reached the buffer for a fault
        self.last_kept: OrderedDict = OrderedDict()  # seq_id -> (key float32, t_ns)
        self.position: OrderedDict = OrderedDict()  # (source, seq_id) -> last message seq processed
        self.lag_s = 0.0
        self.backgrounds: dict = {}  # source -> teachers.Background (teachers that subtract the static scene)
        self.clutter_tau_s = clutter_tau_s  # > 0: radar static-clutter removal (RunningClutter per stream)
        self.clutter: OrderedDict = OrderedDict()  # (source, seq_id) -> RunningClutter

    # stream position, saved in checkpoints so a restart against a replay skips what it already used
    def _already_seen(self, p: Pair) -> bool:
        k = f"{p.source}/{p.seq_id}"
        last = self.position.get(k)
        if last is not None and p.msg_seq <= last:
            return True
        self.position[k] = p.msg_seq
        self.position.move_to_end(k)
        while len(self.position) > _LRU:
            self.position.popitem(last=False)
        return False

    def poll(self, max_items: int | None = None) -> int:
        """Process what the receiver has queued (up to max_items). Returns the number of pairs taken."""
        items = []
        limit = max_items or self.max_batch
        while len(items) < limit:
            try:
                items.append(self.rx.q.get_nowait())
            except queue.Empty:
                break
        if items or self.waiting:
            self.process(items)
        return len(items)

    def process(self, items: list[tuple[int, Message]]) -> None:
        fresh = []
        for recv_ns, msg in items:
            if msg.kind == "truth":
                self.counts["truth_in"] += 1
                if not self.truth.add(msg):
                    self.counts["truth_bad"] += 1
                continue
            try:
                p = decode_pair(msg, recv_ns, self.chirps)
            except PairError as e:
                self.dropped[f"bad_pair_{e.reason}"] += 1
                _ratelog.warning(e.reason, f"dropped a pair: {e}")
                continue
            except Exception as e:  # a pair from the network must never stop the learner
                self.dropped["bad_pair_malformed"] += 1
                _ratelog.warning("malformed", f"dropped a pair that could not be decoded: {e!r}")
                continue
            if self._already_seen(p):
                self.dropped["already_seen"] += 1
                continue
            fresh.append(p)
        pairs = self._with_truth(self.waiting + fresh)
        for p in pairs:
            if self.clutter_tau_s > 0:
                p.radar = self._clutter_of(p).remove(p.radar, p.t_ns)
        self.counts["pairs_in"] += len(pairs)
        for p in pairs:
            self._src(p)["pairs_in"] += 1
        if not pairs:
            return
        keys = self._embed(pairs)
        if self.center_pending:
            self.pending += list(zip(pairs, keys))
            if len(self.pending) < self.center_pairs:
                return
            pairs, raw = [p for p, _ in self.pending], np.stack([k for _, k in self.pending])
            self.pending = []
            self.set_center(raw.mean(0))
            self.center_pairs = 0
            import torch
            keys = self.finish(torch.from_numpy(raw)).cpu().numpy()
        kept_keys, kept_t, kept_seq = [], [], []
        for p, k in zip(pairs, keys):
            if self._duplicate(p, k):
                self.counts["duplicates_skipped"] += 1
                self._src(p)["duplicates_skipped"] += 1
                continue
            self.counts["kept"] += 1
            if self.heldout is not None and self.heldout.offer(p):
                self.counts["heldout"] += 1
                continue
            try:
                slot = self.buffer.add(p.radar, k, p.t_ns, p.seq_id, p.label)
            except ValueError as e:  # checked before the buffer changes: the pair is dropped, counted
                self.counts["kept"] -= 1  # once, as dropped (every pair is counted exactly once)
                self.dropped["bad_pair_buffer"] += 1
                _ratelog.warning("buffer", f"dropped a pair the replay buffer cannot hold: {e}")
                continue
            if slot >= 0:
                self.counts["inserted"] += 1
                self._src(p)["inserted"] += 1
            kept_keys.append(k)
            kept_t.append(p.t_ns)
            kept_seq.append(p.seq_id)
        if self.queue is not None and kept_keys:
            import torch
            dev = self.queue.keys.device
            self.queue.enqueue(torch.from_numpy(np.stack(kept_keys)).to(dev),
                               torch.tensor(kept_t, dtype=torch.int64, device=dev),
                               torch.tensor(kept_seq, dtype=torch.int64, device=dev))
        self.lag_s = (time.monotonic_ns() - min(p.recv_ns for p in pairs)) / 1e9

    def _src(self, p: Pair) -> Counter:
        c = self.by_source.get(p.source)
        if c is None:
            c = self.by_source[p.source] = Counter()
        return c

    def _with_truth(self, pairs: list[Pair]) -> list[Pair]:
        """Label pairs from the truth topic; keep back (in arrival order) the ones still waiting for theirs.
        Pairs are released in arrival order, so a late truth never reorders the stream."""
        now = time.monotonic_ns()
        final = self.rx is not None and self.rx.stopped   # stopping: nothing more will arrive
        out, self.waiting = [], []
        for i, p in enumerate(pairs):
            truth = next((t for t in (self.truth.get(*k) for k in p.truth_keys) if t is not None), None)
            if truth is not None:
                p.label, p.scene_id = label_of(truth)
                self.counts["truth_joined"] += 1
            elif p.label < 0 and p.scene_id is None and any(k[0] in self.truth.seen for k in p.truth_keys):
                if not final and now - p.recv_ns < self.truth_wait_ns:   # an emulated rig: truth on its way
                    self.waiting = pairs[i:]
                    break
                self.counts["truth_missing"] += 1
            out.append(p)
        return out

    def _clutter_of(self, p: Pair) -> RunningClutter:
        k = (p.source, p.seq_id)
        c = self.clutter.get(k)
        if c is None:
            c = self.clutter[k] = RunningClutter(self.clutter_tau_s)
            while len(self.clutter) > 4:  # a restarted sync opens a new stream; the old map is stale
                self.clutter.popitem(last=False)
        return c

    @property
    def center_pending(self) -> bool:
        return self.center_pairs > 0

    def _embed(self, pairs: list[Pair]) -> np.ndarray:
        """One teacher call per image size and stream, keys as float32 numpy. A teacher that subtracts the
        static scene (`fg-descriptor`) gets the stream's running background (`teachers.Background`: median of
        recent frames, the online twin of the offline per-sequence median), updated with these frames first."""
        from learner.teachers import Background, takes_background   # torch only where a teacher runs
        out = [None] * len(pairs)
        by_shape: dict = {}
        wants_bg = takes_background(self.embed)
        for i, p in enumerate(pairs):
            by_shape.setdefault((p.image.shape, p.source if wants_bg else ""), []).append(i)
        for (_, source), idx in by_shape.items():
            images = np.stack([pairs[i].image for i in idx])
            if wants_bg:
                bg = self.backgrounds.setdefault(source, Background()).update(images)
                e = self.embed(images, background=bg)
            else:
                e = self.embed(images)
            e = e.detach().cpu().float().numpy() if hasattr(e, "detach") else np.asarray(e, np.float32)
            for j, i in enumerate(idx):
                out[i] = e[j]
        return np.stack(out)

    def _duplicate(self, p: Pair, k: np.ndarray) -> bool:
        """Near-duplicate of the last kept frame of its sequence, unless keep_interval has passed
        (a static scene still gets one frame per interval)."""
        last = self.last_kept.get(p.seq_id)
        if (last is not None and self.dedup_threshold < 1.0
                and float(np.dot(last[0], k)) > self.dedup_threshold
                and p.t_ns - last[1] < self.keep_interval_ns):
            return True
        self.last_kept[p.seq_id] = (k, p.t_ns)
        self.last_kept.move_to_end(p.seq_id)
        while len(self.last_kept) > _LRU:
            self.last_kept.popitem(last=False)
        return False

    def stats(self) -> dict:
        dropped = dict(self.dropped)
        by_source = {src: dict(c) for src, c in self.by_source.items()}
        if self.rx is not None:
            s = self.rx.sub_stats()
            for src, n in s.get("lost_by_source", {}).items():
                by_source.setdefault(src, {})["lost_in_transport"] = n
            dropped["queue_full"] = self.rx.dropped_full
            dropped["lost_in_transport"] = s["lost"]
            for r, n in s["rejected"].items():
                dropped[f"malformed_{r}"] = n
        dropped = {k: v for k, v in dropped.items() if v}
        c = self.counts
        out = {k: v for k, v in c.items() if not k.startswith("truth_")}
        # scene ground truth (emulated rigs): truth messages in, pairs labelled from them, pairs whose truth never
        # came, malformed truth, truth dropped when the receiver queue was full; not part of the pair accounting
        out["truth"] = {"in": c["truth_in"], "joined": c["truth_joined"], "missing": c["truth_missing"],
                        "bad": c["truth_bad"], "queue_full": self.rx.truth_dropped_full if self.rx else 0}
        out.update(received=self.rx.received if self.rx else out.get("pairs_in", 0),
                   by_source=by_source, waiting_for_truth=len(self.waiting), dropped=sum(dropped.values()), dropped_by_reason=dropped,
                   reservoir_discarded=self.buffer.counts["discarded"],
                   rx_queue=self.rx.q.qsize() if self.rx else 0, lag_s=round(self.lag_s, 4))
        return out

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "dropped": dict(self.dropped),
                "by_source": {k: dict(v) for k, v in self.by_source.items()},
                "position": [[k, int(v)] for k, v in self.position.items()],
                "last_kept": [[int(s), _t(k), int(t)] for s, (k, t) in self.last_kept.items()]}

    def load_state_dict(self, sd: dict) -> None:
        self.counts = Counter(sd["counts"])
        self.dropped = Counter(sd["dropped"])
        self.by_source = {k: Counter(v) for k, v in sd.get("by_source", {}).items()}  # absent before issue #19
        self.position = OrderedDict((k, v) for k, v in sd["position"])
        self.last_kept = OrderedDict((s, (k.numpy(), t)) for s, k, t in sd["last_kept"])


def _t(a: np.ndarray):
    import torch
    return torch.from_numpy(np.asarray(a, np.float32).copy())


# ---------------------------------------------------------------------------------------------
# Live labelled hold-out (emulated rigs publish the scene's ground truth on the truth topic)
# ---------------------------------------------------------------------------------------------

class LiveHoldout:
    """Pairs of a fixed fraction of scenes (by a hash of truth.scene_id) are kept out of training and
    collected here, with their labels, for the periodic kNN / linear probe. Bounded: one reservoir of
    `capacity` entries. Splitting by scene, not frame, keeps near-identical neighbours out of both sides."""

    def __init__(self, fraction: float = 0.2, capacity: int = 2000, seed: int = 0, channels: int = 2):
        self.fraction, self.capacity = fraction, capacity
        self.radar = np.zeros((capacity, channels, 128, 128), np.float16)
        self.scale = np.zeros(capacity, np.float32)
        self.label = np.zeros(capacity, np.int64)
        self.scene = np.zeros(capacity, np.int64)
        self.size = self.offered = 0
        self.rng = np.random.default_rng(seed + 7)

    def is_heldout(self, scene_id: int) -> bool:
        return (zlib.crc32(str(scene_id).encode()) % 1000) < self.fraction * 1000

    def offer(self, p: Pair) -> bool:
        """True if this pair belongs to the held-out scenes (then it is not for training)."""
        if p.scene_id is None or not self.is_heldout(p.scene_id):
            return False
        if p.label < 0:
            return True  # held-out scene but no 4-class label (mixed): still not trained on
        self.offered += 1
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
        else:
            slot = int(self.rng.integers(0, self.offered))
            if slot >= self.capacity:
                return True
        m = float(np.abs(p.radar).max()) or 1.0
        self.radar[slot], self.scale[slot] = p.radar / m, m
        self.label[slot], self.scene[slot] = p.label, p.scene_id
        return True

    def arrays(self):
        n = self.size
        return (self.radar[:n].astype(np.float32) * self.scale[:n, None, None, None], self.label[:n].copy(),
                self.scene[:n].copy())

    def state_dict(self) -> dict:
        import torch
        n = self.size
        return {"size": n, "offered": self.offered, "rng": self.rng.bit_generator.state,
                "radar": torch.from_numpy(self.radar[:n].copy()), "scale": torch.from_numpy(self.scale[:n].copy()),
                "label": torch.from_numpy(self.label[:n].copy()), "scene": torch.from_numpy(self.scene[:n].copy())}

    def load_state_dict(self, sd: dict) -> None:
        n = min(int(sd["size"]), self.capacity)
        self.radar[:n], self.scale[:n] = sd["radar"].numpy()[:n], sd["scale"].numpy()[:n]
        self.label[:n], self.scene[:n] = sd["label"].numpy()[:n], sd["scene"].numpy()[:n]
        self.size, self.offered = n, int(sd["offered"])
        self.rng.bit_generator.state = sd["rng"]

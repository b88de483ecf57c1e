"""Flood: sync, the recorder and the online learner run together as real processes while a seeded
stream of valid messages is interleaved with thousands of mutations of them — frame counts, header
bytes, types, ranges, dtypes, shapes, sizes just over each limit, NaN/inf, duplicates, regressing
sequence numbers, topics (docs/wire-format.md is the contract each mutation breaks). Then:

- every process is alive, and its RSS grew by a bounded amount;
- sync's pairs are exactly the pairs of the valid messages, each once;
- the recorder has every valid message, byte for byte, and every pair sync published;
- the learner trained on every valid pair and is still training after the flood;
- every stage counted every rejected message by its reason, exactly as sent (the counts are in the
  assertion messages; `pytest -s` prints the table).

Topology (ipc:// in tmp_path): the test publishes radar and camera frames -> sync and recorder; sync's
pairs -> recorder and a relay in the test, which forwards them to the learner (on its own endpoint,
so the learner gets mutated pairs too). Valid frames carry host stamps on a fixed schedule (radar 10 Hz,
camera 30 Hz, radar frame k captured 6.7 ms after camera frame 3k + 1), so the right pairs are known.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from capture.record import scan, segments, unframe
from radvis.transport import Subscriber
from radvis.wire import Limits, Message, encode

from .conftest import stop_radvis
from .conftest import start_radvis as _start

SEED = 15
N_RADAR = 200  # 20 s of stream at 10 Hz (sent faster than real time), 600 camera frames
MUTATIONS_PER_FRAME = 6  # into sync + recorder, interleaved with the valid frames
ROGUE_PER_PAIR = 5  # into the learner, after each pair it relays
MAX_MSG = 1 << 20  # transport.max_message_bytes for this run
MAX_HDR = 65536
MAX_BUF = 16
NS, MS = 1_000_000_000, 1_000_000
IMG = (48, 64, 3)
RSS_GROWTH_MB = {"sync": 64, "record": 64, "learner": 160}


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------

def _sets(tmp: Path) -> list[str]:
    sets = [f"endpoints.radar='ipc://{tmp}/radar.sock'", f"endpoints.camera='ipc://{tmp}/camera.sock'",
            f"endpoints.pairs='ipc://{tmp}/pairs.sock'", f"endpoints.control='ipc://{tmp}/control.sock'",
            f"transport.max_message_bytes={MAX_MSG}", f"transport.max_header_bytes={MAX_HDR}",
            "rig.stats_interval_s=0.25", "sync.max_latency_ms=120000.0", "sync.radar_latency_ms=3.0",
            "camera.latency_ms=6.0", "sync.clock_warmup_s=0", f"endpoints.truth='ipc://{tmp}/truth.sock'",
            "learner.radar_encoder='tiny'", "learner.vision_encoder='descriptor'", "learner.threads=1",
            "learner.batch_size=16", "learner.online_min_fill=8", "learner.online_center_pairs=8", "learner.online_chirps=[]",
            "learner.online_dedup_threshold=1.0", "learner.online_live_eval_fraction=0.0",
            "learner.online_eval_every_steps=0", "learner.online_max_updates_per_pair=0",
            "learner.online_rx_queue=8192", "learner.log_every=1", "learner.online_ckpt_every_steps=0",
            # small receive queues: how much backlog a busy machine lets pile up is then bounded by them, so
            # RSS growth measures leaks, not load (the feeds wait for room: nothing valid is dropped)
            "transport.rcvhwm=64"]
    return [a for s in sets for a in ("--set", s)]


def _stop(p: subprocess.Popen, timeout: float = 60) -> int:
    return stop_radvis(p, timeout)


def _log(tmp: Path, name: str) -> str:
    return (tmp / f"{name}.log").read_text(errors="replace")


def _last_stats(tmp: Path, name: str) -> dict:
    lines = [ln for ln in _log(tmp, name).splitlines() if " stats {" in ln]
    return json.loads(lines[-1].split(" stats ", 1)[1]) if lines else {}


def _final_json(tmp: Path, name: str) -> dict:
    lines = [ln for ln in _log(tmp, name).splitlines() if ln.startswith("{")]
    assert lines, _log(tmp, name)[-3000:]
    return json.loads(lines[-1])


def _metrics(tmp: Path) -> list[dict]:
    p = tmp / "run" / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for ln in p.read_text().splitlines():
        try:
            rows.append(json.loads(ln))
        except ValueError:  # a line being written
            pass
    return rows


def _learner_row(tmp: Path) -> dict | None:
    rows = [r for r in _metrics(tmp) if "dropped_by_reason" in r]
    return rows[-1] if rows else None


def _learner_seen(row: dict) -> int:
    """Messages that reached the learner's socket: delivered, or dropped by its subscriber."""
    return row["received"] + sum(v for k, v in row["dropped_by_reason"].items() if k.startswith("malformed_"))


def _rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) / 1024
    return 0.0


def _wait(pred, timeout_s: float, what: str, procs: dict, tmp: Path):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        dead = [n for n, p in procs.items() if p.poll() is not None]
        assert not dead, f"{dead} died while waiting for {what}:\n" + "\n".join(_log(tmp, n)[-3000:] for n in dead)
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {n}\n{_log(tmp, n)[-1500:]}" for n in procs)
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# the test's publishers: raw XPUB sockets that see every (un)subscription, so the test knows when a
# subscriber that libzmq cut off has reconnected
# ---------------------------------------------------------------------------------------------

class Feed:
    def __init__(self, ctx: zmq.Context, endpoint: str, source: str = "", epoch: int = 0):
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.sndhwm = 64
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # never drop: a full subscriber makes send wait
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every subscribe and unsubscribe, per subscriber
        self.sock.bind(endpoint)
        self.source, self.epoch = source, epoch
        self.seq: Counter = Counter()
        self.subscribed: Counter = Counter()  # topic -> subscriptions seen in all (never decremented)

    def pump(self) -> None:
        while self.sock.poll(0, zmq.POLLIN):
            ev = self.sock.recv()
            if ev[:1] == b"\x01":
                self.subscribed[ev[1:]] += 1

    def send(self, frames: list) -> None:
        while True:
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:  # a subscriber's queue is full: wait for it (valid messages are never lost)
                self.pump()
                time.sleep(0.001)

    def valid(self, msg: Message, source: str | None = None, epoch: int | None = None) -> list[bytes]:
        """Number and send a valid message (as `source`/`epoch`, default the feed's own)."""
        src = source or self.source
        msg.source, msg.epoch = src, self.epoch if epoch is None else epoch
        msg.seq = self.seq[src, msg.kind]
        self.seq[src, msg.kind] += 1
        frames = [bytes(f) for f in encode(msg)]
        self.send(frames)
        return frames

    def wait_for(self, topics: dict, what: str, procs: dict, tmp: Path, timeout_s: float = 60) -> None:
        """Until each topic has been subscribed to `topics[t]` times in all."""
        def ok():
            self.pump()
            return all(self.subscribed[t] >= n for t, n in topics.items())
        _wait(ok, timeout_s, what, procs, tmp)


# ---------------------------------------------------------------------------------------------
# valid messages
# ---------------------------------------------------------------------------------------------

def radar_msg(k: int, t0: int, rng) -> Message:
    stamp = t0 + 40 * MS + k * 100 * MS + 3 * MS
    ra = rng.standard_normal((128, 128, 2)).astype(np.float32)
    return Message(kind="radar", source="", buffers={"ra": ra}, t_mono_ns=stamp, t_wall_ns=stamp + 10**18,
                   meta={"frame_number": k, "frame_period_ms": 100.0, "cfg_digest": "flood", "units": "linear",
                         "mode": "uart"})


def camera_msg(j: int, t0: int, rng) -> Message:
    stamp = t0 + j * NS // 30 + 6 * MS
    img = rng.integers(0, 256, IMG, dtype=np.uint8)
    return Message(kind="camera", source="", buffers={"image": img}, t_mono_ns=stamp, t_wall_ns=stamp + 10**18,
                   t_device_ns=int((stamp - 6 * MS - 5 * NS) * (1 + 80e-6)),
                   meta={"width": IMG[1], "height": IMG[0], "encoding": "raw", "frame_number": j,
                         "timestamp_domain": "hardware_clock"})


# ---------------------------------------------------------------------------------------------
# mutations: (frames, the reason the contract gives for dropping them)
# ---------------------------------------------------------------------------------------------

def _h(frames) -> dict:
    return json.loads(frames[1])


def _with(frames, h: dict | bytes, topic: bytes | None = None, bufs: list | None = None) -> list[bytes]:
    hb = h if isinstance(h, bytes) else json.dumps(h, separators=(",", ":")).encode()
    return [frames[0] if topic is None else topic, hb] + (frames[2:] if bufs is None else bufs)


def _set(frames, path, value) -> list[bytes]:
    h = _h(frames)
    node = h
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return _with(frames, h)


RANGES = [(("seq",), 2**64), (("seq",), -1), (("epoch",), 2**62), (("epoch",), 2**64 - 1),
          (("t", "mono_ns"), 2**63), (("t", "mono_ns"), -1), (("t", "wall_ns"), 2**63),
          (("t", "device_ns"), 2**63), (("t", "device_ns"), -(2**63) - 1), (("meta", "frame_number"), 2**64),
          (("meta", "t_pair_ns"), 2**70), (("meta", "deep"), [{"x": -(2**63) - 1}])]
TYPES = [(("seq",), "5"), (("seq",), 1.5), (("seq",), True), (("replay",), 1), (("t",), []), (("meta",), []),
         (("buffers",), {}), (("t", "mono_ns"), "1"), (("t", "device_ns"), 1.0)]
DTYPES = ["|O", ">f4", "<U4", "f4", "<M8", 7, None]


def wire_mutation(rng, frames: list[bytes], kind: str) -> tuple[list[bytes], str]:
    """One mutation of a valid message that breaks the wire contract (dropped by every Subscriber)."""
    h = _h(frames)
    fam = rng.integers(0, 19)
    if fam == 0:
        return frames[:1], "frames"
    if fam == 1:
        return (frames[:2], "buffer_count") if rng.random() < 0.5 else (frames + [b"extra"], "buffer_count")
    if fam == 2:
        return _with(frames, frames[1][:int(rng.integers(1, len(frames[1]) - 1))]), "header_json"
    if fam == 3:
        return _with(frames, [b"[1,2]", b"null", b"", b'"radar"', b"{,}"][rng.integers(0, 5)]), "header_json"
    if fam == 4:
        text = [b'"nan_":NaN,', b'"inf_":-Infinity,', b'"a":1,"a":2,'][rng.integers(0, 3)]
        return _with(frames, frames[1].replace(b'"meta":{', b'"meta":{' + text, 1)), "header_json"
    if fam == 5:
        return _with(frames, frames[1].replace(b'"meta":{', b'"meta":{"big":1e999,', 1)), "range"
    if fam == 6:
        bad = [b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\\ud800", b"\xe2\x82"][rng.integers(0, 5)]
        src = f'"source":"{h["source"]}"'.encode()
        return _with(frames, frames[1].replace(src, src[:-1] + bad + b'"', 1)), "header_utf8"
    if fam == 7:  # header just over max_header_bytes (still valid JSON)
        return _with(frames, frames[1] + b" " * (MAX_HDR + 1 - len(frames[1]))), "header_size"
    if fam == 8:
        return _set(frames, ("v",), [2, True, "1", None, 0][rng.integers(0, 5)]), "version"
    if fam == 9:
        return _set(frames, ("kind",), ["lidar", 5, None, "RADAR", ""][rng.integers(0, 5)]), "kind"
    if fam == 10:
        return _set(frames, ("source",), ["", "x" * 65, "radar 0", "radär0", "-r", 3, "a/b"][rng.integers(0, 7)]), "source"
    if fam == 11:
        # a subscriber's prefix filter still lets these through (sync subscribes to its endpoint's own kind;
        # a wholly foreign topic such as "camera" on the radar endpoint is filtered by ZeroMQ, never decoded)
        other = {"radar": b"radar/camera", "camera": b"camera/radar", "pair": b"pair/x"}[kind]
        topic = [kind.encode() + b"\xff", kind.encode() + b" 1", other, kind.encode() + b":x"][rng.integers(0, 4)]
        return _with(frames, frames[1], topic=topic), "topic"
    if fam == 12:
        path, value = RANGES[rng.integers(0, len(RANGES))]
        return _set(frames, path, value), "range"
    if fam == 13:
        path, value = TYPES[rng.integers(0, len(TYPES))]
        return _set(frames, path, value), "fields"
    if fam == 14:
        return _set(frames, ("buffers", 0, "dtype"), DTYPES[rng.integers(0, len(DTYPES))]), "dtype"
    if fam == 15:
        shape = [[-1, 2], [1] * 9, [2**41], [True, 2], "128", [1.5]][rng.integers(0, 6)]
        return _set(frames, ("buffers", 0, "shape"), shape), "shape"
    if fam == 16:
        if rng.random() < 0.5:
            return _set(frames, ("buffers", 0, "nbytes"), h["buffers"][0]["nbytes"] + 1), "size_mismatch"
        return frames[:2] + [frames[2][:-1]] + frames[3:], "size_mismatch"
    if fam == 17:  # total just over max_message_bytes (each frame under the socket ceiling)
        pad = MAX_MSG + 1 - len(frames[0]) - len(frames[1])
        return [frames[0], frames[1], b"\0" * pad], "oversize"
    # max_buffers + 1 small, well-formed buffers
    descs = [{"name": f"b{i}", "dtype": "|u1", "shape": [1], "nbytes": 1} for i in range(MAX_BUF + 1)]
    h["buffers"] = descs
    return _with(frames, h, bufs=[b"\0"] * (MAX_BUF + 1)), "buffer_count"


def seq_mutation(rng, frames: list[bytes]) -> tuple[list[bytes], str]:
    """A wire-valid message that the sequence contract drops: a duplicate, a regressing seq (new
    content, old number), or a seq far ahead."""
    fam = rng.integers(0, 3)
    h = _h(frames)
    if fam == 0:
        return frames, "stale"
    if fam == 1:
        h["seq"] = max(0, h["seq"] - int(rng.integers(1, 50)))
        h["meta"]["regressed"] = True
        return _with(frames, h), "stale"
    h["seq"] = h["seq"] + (1 << 21) + int(rng.integers(0, 1 << 40))
    return _with(frames, h), "seq_jump"


def mutation(rng, frames, kind) -> tuple[list[bytes], str]:
    return seq_mutation(rng, frames) if rng.random() < 0.15 else wire_mutation(rng, frames, kind)


def rogue_pair(rng, feed: Feed, rogue_epoch: int, template: list[bytes]) -> tuple[list[bytes] | None, str]:
    """A pair the learner must drop: the wire mutations above (of a relayed pair), or a wire-valid pair
    from another publisher with a value the learner cannot use (docs/online.md, decode_pair)."""
    if rng.random() < 0.45:
        fr, why = mutation(rng, template, "pair")
        feed.send(fr)
        return fr, f"malformed_{why}"
    ra = rng.standard_normal((128, 128, 2)).astype(np.float32)
    img = rng.integers(0, 256, IMG, dtype=np.uint8)
    meta = {"radar": {"kind": "radar", "meta": {}}, "camera": {"kind": "camera", "meta": {"encoding": "raw"}},
            "skew_ns": 0, "t_pair_ns": 1}
    fam = rng.integers(0, 9)
    bufs = {"radar.ra": ra, "camera.image": img}
    if fam == 0:
        bufs.pop(["radar.ra", "camera.image"][rng.integers(0, 2)])
        why = "missing_buffer"
    elif fam == 1:
        bufs["radar.ra"] = [ra.astype(np.float64), ra[:64], ra[..., 0]][rng.integers(0, 3)]
        why = "radar"
    elif fam == 2:
        ra[rng.integers(0, 128), rng.integers(0, 128), 0] = [np.nan, np.inf, -np.inf][rng.integers(0, 3)]
        why = "radar_nonfinite"
    elif fam == 3:
        bufs["camera.image"] = [img[..., 0], img.astype(np.float32), img[:, :, :2]][rng.integers(0, 3)]
        why = "image"
    elif fam == 4:
        bufs["camera.image"] = rng.integers(0, 256, 300, dtype=np.uint8)
        meta["camera"]["meta"]["encoding"] = "jpeg"
        why = "jpeg"
    else:
        meta["t_pair_ns"] = [2**63, 2**64 - 1, "soon", 1.5, True][rng.integers(0, 5)]
        why = "t_pair"
    msg = Message(kind="pair", source="", buffers=bufs, meta=meta).stamp()
    return feed.valid(msg, source="flood0", epoch=rogue_epoch), f"bad_pair_{why}"


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------

def _subs(kind: str) -> dict:
    """The subscriptions sync (its kind, end-of-stream events) and the recorder (everything) make on a feed."""
    return {kind.encode(): 1, b"event": 1, b"": 1}


def test_flood_of_malformed_messages_costs_only_those_messages(tmp_path):
    # one generator per stream of decisions, so the counts do not depend on when pairs come back
    rng, rng_data, rng_lrn = (np.random.default_rng([SEED, i]) for i in range(3))
    t_start = time.monotonic()
    sets = _sets(tmp_path)
    procs = {"sync": _start(tmp_path, "sync", ["sync", *sets]),
             "record": _start(tmp_path, "record", ["record", "--topics", "radar", "camera", "pairs",
                                                   "--out", str(tmp_path / "session"), *sets]),
             "learner": _start(tmp_path, "learner", ["learn", "online", "--out", str(tmp_path / "run"),
                                                     "--endpoint", f"ipc://{tmp_path}/lpairs.sock", *sets])}
    ctx = zmq.Context()
    feeds = {"radar": Feed(ctx, f"ipc://{tmp_path}/radar.sock", "radar0", int(rng.integers(0, 2**62))),
             "camera": Feed(ctx, f"ipc://{tmp_path}/camera.sock", "camera0", int(rng.integers(0, 2**62)))}
    lfeed = Feed(ctx, f"ipc://{tmp_path}/lpairs.sock")  # sync's pairs (as they are) + rogue pairs
    rogue_epoch = int(rng.integers(0, 2**62))
    relay = Subscriber(f"ipc://{tmp_path}/pairs.sock", limits=Limits(MAX_MSG, MAX_HDR, MAX_BUF), ctx=ctx)
    sent = {"sync": Counter(), "learner": Counter()}  # reason -> messages sent that must be dropped for it
    valid = {"radar": [], "camera": []}
    relayed, cuts = [], Counter()
    rss0: dict = {}
    try:
        # sync subscribes to each endpoint's kind and end-of-stream events, the recorder to everything, the
        # learner to pairs
        for kind, f in feeds.items():
            f.wait_for(_subs(kind), "sync and the recorder to subscribe", procs, tmp_path)
        lfeed.wait_for({b"pair": 1}, "the learner to subscribe", procs, tmp_path, timeout_s=120)

        def relay_pairs(timeout_ms=0) -> int:
            """Forward sync's pairs to the learner as they are, each followed by rogue pairs."""
            n = 0
            while (raw := relay.recv_frames(timeout_ms)) is not None:
                timeout_ms = 0
                m = relay.accept(raw)
                if m is None or m.kind != "pair":
                    continue
                frames = [bytes(x) for x in raw]
                lfeed.send(frames)
                relayed.append(frames)
                n += 1
                for _ in range(ROGUE_PER_PAIR):
                    _, why = rogue_pair(rng_lrn, lfeed, rogue_epoch, frames)
                    sent["learner"][why] += 1
            return n

        def cut(feed: Feed, topics: dict, who: str, topic: bytes):
            """A frame over the subscribers' socket ceiling: libzmq drops their connections; they
            reconnect (counted); wait for that before any valid message follows."""
            feed.pump()
            before = {t: feed.subscribed[t] for t in topics}
            feed.send([topic, b"{}", b"\0" * (2 * MAX_MSG + 1)])
            feed.wait_for({t: before[t] + n for t, n in topics.items()}, f"{who} to reconnect", procs, tmp_path)
            cuts[who] += 1

        t0 = time.monotonic_ns()
        sched = sorted([(radar_msg(k, t0, rng_data), "radar") for k in range(N_RADAR)]
                       + [(camera_msg(j, t0, rng_data), "camera") for j in range(3 * N_RADAR)],
                       key=lambda x: x[0].t_mono_ns)
        last = {}
        for i, (msg, kind) in enumerate(sched):
            feed = feeds[kind]
            last[kind] = feed.valid(msg)
            valid[kind].append(last[kind])
            for _ in range(MUTATIONS_PER_FRAME):
                k2 = kind if rng.random() < 0.5 or len(last) < 2 else ("camera" if kind == "radar" else "radar")
                fr, why = mutation(rng, last[k2], k2)
                feeds[k2].send(fr)
                sent["sync"][why] += 1
            if i == len(sched) // 5:
                _wait(lambda: relay_pairs(50) or relayed, 60, "the first pair", procs, tmp_path)
            if i in (len(sched) // 3, 2 * len(sched) // 3):
                # what is queued for a subscriber when its connection is cut is lost with it (counted as a
                # gap): let sync and the recorder take everything sent so far, then cut
                n_valid, n_bad = i + 1, sum(sent["sync"].values())
                _wait(lambda: (relay_pairs() or True) and (s := _last_stats(tmp_path, "sync"))
                      and (s["sub"]["received"], sum(s["sub"]["rejected"].values())) == (n_valid, n_bad)
                      and (r := _last_stats(tmp_path, "record")) and r["rejected"] == n_bad
                      and r["written"] >= n_valid, 60, "sync and the recorder to catch up", procs, tmp_path)
                if i == 2 * len(sched) // 3:  # memory baseline: warmed up (a cut behind us) and caught up, so
                    # no backlog sits in a socket queue at either measurement (that alone swings RSS ~100 MB)
                    rss0 = {n: _rss_mb(p.pid) for n, p in procs.items() if n != "learner"}
                cut(feeds[kind], _subs(kind), f"sync+record@{kind}", kind.encode())
                n_lrn = len(relayed) + sum(sent["learner"].values())
                _wait(lambda: (r := _learner_row(tmp_path)) and _learner_seen(r) >= n_lrn, 60,
                      "the learner to catch up", procs, tmp_path)
                if i == 2 * len(sched) // 3:
                    rss0["learner"] = _rss_mb(procs["learner"].pid)
                cut(lfeed, {b"pair": 1}, "learner", b"pair")
            relay_pairs()
        want_pairs = [(k, 3 * k + 1) for k in range(N_RADAR)]
        # sync has taken every valid frame and dropped every mutation (its stats line says so)
        n_sync = len(sched) + sum(sent["sync"].values())
        _wait(lambda: (relay_pairs() or True) and (s := _last_stats(tmp_path, "sync"))
              and s["sub"]["received"] + sum(s["sub"]["rejected"].values()) >= n_sync, 60,
              "sync to take the flood", procs, tmp_path)
        rss1 = {"sync": _rss_mb(procs["sync"].pid)}  # caught up (the record and learner: once they are)
        alive = {n: p.poll() is None for n, p in procs.items()}
        rc_sync = _stop(procs["sync"])  # a clean stop pairs what it still holds
        running = {n: p for n, p in procs.items() if n != "sync"}
        end = time.monotonic() + 10
        while len(relayed) < N_RADAR and time.monotonic() < end:  # the last pairs (or a short count below)
            relay_pairs(100)
        # the learner has everything: wait until it has taken it and trained on
        n_learner = len(relayed) + sum(sent["learner"].values())

        def learner_done():
            relay_pairs()
            r = _learner_row(tmp_path)
            return r if r and _learner_seen(r) >= n_learner and r["pairs_in"] >= len(relayed) else None
        r_done = _wait(learner_done, 90, "the learner to take the flood", running, tmp_path)
        rss1["learner"] = _rss_mb(procs["learner"].pid)
        _wait(lambda: (rows := [r for r in _metrics(tmp_path) if "step" in r]) and rows[-1]["step"] > r_done["step"],
              60, "the learner to train on after the flood", running, tmp_path)
        # the recorder has taken everything too (on a busy machine it can be seconds behind; its stop
        # drains what is queued, but only within the time the rig gives a stage to stop)
        n_rec = len(sched) + len(relayed)
        _wait(lambda: (r := _last_stats(tmp_path, "record")) and r["rejected"] == sum(sent["sync"].values())
              and r["written"] >= n_rec, 60, "the recorder to take the flood", running, tmp_path)
        rss1["record"] = _rss_mb(procs["record"].pid)
        rc_rec, rc_lrn = _stop(procs["record"]), _stop(procs["learner"])
    finally:
        for p in procs.values():
            _stop(p)
        relay.close()
        ctx.destroy(linger=0)

    # -- every process alive through the flood, memory bounded, clean exits
    assert all(alive.values()), alive
    assert (rc_sync, rc_rec, rc_lrn) == (0, 0, 0)
    growth = {n: round(rss1[n] - rss0[n], 1) for n in rss0}
    assert all(growth[n] < RSS_GROWTH_MB[n] for n in growth), (growth, rss0)

    # -- sync: exactly the pairs of the valid frames, each once; every mutation counted by its reason
    st_sync = _last_stats(tmp_path, "sync")
    got = [(json.loads(f[1])["meta"]["radar"]["meta"]["frame_number"],
            json.loads(f[1])["meta"]["camera"]["meta"]["frame_number"]) for f in relayed]
    assert sorted(got) == want_pairs, (len(got), sorted(set(want_pairs) ^ set(got))[:10])
    sub = st_sync["sub"]
    table = {"sent": dict(sent["sync"]), "sync": sub["rejected"]}
    assert sub["rejected"] == dict(sent["sync"]), table
    assert sub["received"] == len(sched) and sub["lost"] == 0 and st_sync["resets"] == 0 and st_sync["errors"] == 0
    assert sub["reconnects"] == cuts["sync+record@radar"] + cuts["sync+record@camera"], sub
    assert set(st_sync["clock"]) == {"radar:radar0", "camera:camera0"}

    # -- recorder: every valid message, byte for byte, in order per channel; every pair sync published
    rec = _final_json(tmp_path, "record")
    recorded = {"radar": [], "camera": [], "pairs": []}
    for path in segments(tmp_path / "session"):
        for ch, m in scan(path):
            recorded[ch.topic].append([bytes(x) for x in unframe(m.data)])
    assert recorded["radar"] == valid["radar"] and recorded["camera"] == valid["camera"]
    assert [f for f in recorded["pairs"] if f[0] == b"pair"] == relayed
    per = rec["per_endpoint"]
    rec_rejected = Counter(per["radar"]["rejected"]) + Counter(per["camera"]["rejected"])
    table["record"] = dict(rec_rejected)
    assert dict(rec_rejected) == dict(sent["sync"]), table
    assert rec["lost"] == 0 and per["pairs"]["rejected"] == {}
    assert per["radar"]["reconnects"] == cuts["sync+record@radar"] and per["camera"]["reconnects"] == cuts["sync+record@camera"]

    # -- learner: trained on every valid pair, dropped exactly the rogue ones, by reason, still training
    rows = [r for r in _metrics(tmp_path) if "dropped_by_reason" in r]
    last_row = rows[-1]
    d = dict(last_row["dropped_by_reason"])
    table["learner"] = d
    assert d == dict(sent["learner"]), table
    assert last_row["pairs_in"] == len(relayed) == N_RADAR and last_row["kept"] == N_RADAR
    assert last_row["step"] > r_done["step"] > 0
    print(f"\nflood (seed {SEED}): sync + recorder got {len(sched)} valid frames and {sum(sent['sync'].values())} "
          f"mutations; the learner {len(relayed)} valid pairs and {sum(sent['learner'].values())} bad ones")
    print(f"{'reason':28s} {'sent':>6s} {'sync':>6s} {'record':>6s}")
    for k in sorted(sent["sync"]):
        print(f"{k:28s} {sent['sync'][k]:6d} {sub['rejected'].get(k, 0):6d} {rec_rejected.get(k, 0):6d}")
    print(f"{'learner reason':28s} {'sent':>6s} {'learner':>7s}")
    for k in sorted(sent["learner"]):
        print(f"{k:28s} {sent['learner'][k]:6d} {d.get(k, 0):7d}")
    print(f"reconnects after a frame over the socket ceiling: {dict(cuts)}; RSS growth MB {growth} "
          f"(from {rss0}); learner steps {r_done['step']} -> {last_row['step']}; wall {time.monotonic() - t_start:.1f} s")

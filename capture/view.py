"""`radvis view`: the live rig in the Foxglove app, over Foxglove's WebSocket protocol (foxglove-sdk server).

    radvis view [--host 127.0.0.1] [--port 8765]     then in Foxglove: Open connection -> ws://HOST:PORT

Topics are those of the recording's Foxglove channels (capture/foxglove.py): /camera/image, /radar/heatmap,
/radar/points, /pairs (per-pair skew_ms: the sync skew), truth overlays, and /stats/<stage> for every stage
that publishes stats (the learner's carry loss, linear_acc and knn_acc; the view's own carry its drops).

Never slows capture, in three layers:
1. A receive thread does nothing but drain the SUB sockets (validate, keep the newest radar and camera frame,
   queue the small messages), so the view's ZeroMQ queues stay empty and a capture daemon's publisher (XPUB
   with NODROP: one full subscriber queue would refuse the message for everyone) never sees the view as slow.
2. Pictures are made in the main thread, only for topics some viewer subscribed to, at most view.max_hz per
   kind (the rest `skipped_rate`); a frame replaced by a newer one before that loop got to it (the view was
   busy) is dropped and counted (`dropped`).
3. Each viewer connection has a bounded queue (view.backlog, in the SDK); a slow viewer loses its oldest
   messages there, and other viewers and the rig are unaffected. (The SDK does not report those drops.)
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time

import zmq

from capture.foxglove import (CAMERA, CAMERA_PAIR, CAMERA_TRUTH, HEATMAP, HEATMAP_TRUTH, PAIRS, POINTS, SCENE,
                              Converter, schema)
from radvis.log import StatsLine
from radvis.transport import Subscriber, keys_from_config
from radvis.wire import Limits, Message

log = logging.getLogger("radvis.view")

FRAME_TOPICS = {"radar": (HEATMAP, POINTS, HEATMAP_TRUTH, SCENE), "camera": (CAMERA, CAMERA_TRUTH)}
SCHEMAS = {CAMERA: "CompressedImage", HEATMAP: "RawImage", POINTS: "PointCloud", PAIRS: "radvis.PairLink",
           CAMERA_PAIR: "ImageAnnotations", SCENE: "SceneUpdate", HEATMAP_TRUTH: "ImageAnnotations",
           CAMERA_TRUTH: "ImageAnnotations"}
STAGES = ("learner", "sync", "record", "capture-radar", "capture-camera", "view")  # stats channels made up front
SMALL_QUEUE = 1024  # pairs, truth, stats waiting for the main thread (newest kept; overflow counted)


class _Listener:
    """Which channels some viewer is subscribed to (on_unsubscribe also fires on disconnect)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.subs: collections.Counter = collections.Counter()  # channel id -> subscriptions
        self.clients: set = set()
        self.subscribe_events = 0

    def on_subscribe(self, client, channel) -> None:
        with self.lock:
            self.subs[channel.id] += 1
            self.clients.add(client.id)
            self.subscribe_events += 1

    def on_unsubscribe(self, client, channel) -> None:
        with self.lock:
            self.subs[channel.id] = max(0, self.subs[channel.id] - 1)

    def watched(self) -> set[int]:
        with self.lock:
            return {cid for cid, n in self.subs.items() if n > 0}


class Receiver(threading.Thread):
    """Drains the view's SUB sockets as fast as messages come (never lets their queues grow)."""

    def __init__(self, subs: dict[str, Subscriber]):
        super().__init__(name="view-rx", daemon=True)
        self.subs = subs
        self.poller = zmq.Poller()
        self.by_sock = {}
        for name, s in subs.items():
            self.poller.register(s.sock, zmq.POLLIN)
            self.by_sock[s.sock] = name
        self.lock = threading.Condition()
        self.latest: dict[str, Message] = {}  # newest radar / camera frame not pictured yet
        self.small: collections.deque = collections.deque()
        self.counts = collections.Counter()  # received_<kind>, dropped_<kind>, dropped_small
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                ready = self.poller.poll(100)
            except zmq.ZMQError as e:  # the sockets were closed under us (shutdown): nothing more to drain
                log.debug("view receiver stops: %s", e)
                return
            for sock, _ in ready:
                sub = self.subs[self.by_sock[sock]]
                for _ in range(256):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    msg = sub.accept(frames)  # validated; malformed ones counted in the subscriber's stats
                    if msg is not None:
                        self._take(msg)

    def _take(self, msg: Message) -> None:
        with self.lock:
            self.counts[f"received_{msg.kind}"] += 1
            if msg.kind in FRAME_TOPICS:
                if msg.kind in self.latest:
                    self.counts[f"dropped_{msg.kind}"] += 1  # never pictured: a newer frame came first
                self.latest[msg.kind] = msg
            else:
                if len(self.small) >= SMALL_QUEUE:
                    self.small.popleft()
                    self.counts["dropped_small"] += 1
                self.small.append(msg)
            self.lock.notify()

    def take(self, timeout: float) -> tuple[list[Message], list[Message]]:
        """(newest frame of each kind, small messages) received since the last take, waiting up to `timeout`."""
        with self.lock:
            if not self.small and not self.latest:
                self.lock.wait(timeout)
            frames = list(self.latest.values())
            self.latest.clear()
            small = list(self.small)
            self.small.clear()
        return frames, small

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(2)


class View:
    def __init__(self, cfg, host: str | None = None, port: int | None = None):
        import foxglove
        self.cfg, vc = cfg, cfg.view
        self.ctx = foxglove.Context()
        self.listener = _Listener()
        self.channels: dict[str, object] = {}
        for topic, sch in SCHEMAS.items():
            self._channel(topic, sch)
        for stage in STAGES:
            self._channel(f"/stats/{stage}", "radvis.Stats")
        self.server = foxglove.start_server(name=f"radvis view ({cfg.rig.name})", host=host or vc.host,
                                            port=vc.port if port is None else port, server_listener=self.listener,
                                            message_backlog_size=vc.backlog, context=self.ctx)
        self.conv = Converter.from_config(cfg.foxglove, topics=set())
        t, limits, curve = cfg.transport, Limits.from_config(cfg.transport), keys_from_config(cfg)
        subs = {}
        for name in vc.topics:
            ep = getattr(cfg.endpoints, name, None)
            if ep is None:
                from radvis.config import ConfigError
                raise ConfigError(f"{cfg.source}: view.topics: expected endpoint names from [endpoints], got {name!r}")
            subs[name] = Subscriber(ep, hwm=t.rcvhwm, limits=limits, curve=curve, name=f"view.{name}")
        if cfg.endpoints.view_stats:  # the stats bus: every stage's stats publisher connects here
            subs["stats"] = Subscriber(cfg.endpoints.view_stats, bind=True, hwm=t.rcvhwm, limits=limits, curve=curve,
                                       name="view.stats")
        self.rx = Receiver(subs)
        self.period = 1.0 / vc.max_hz
        self.last_pub: dict[str, float] = {}
        self.published = collections.Counter()  # Foxglove messages sent, per topic
        self.frames = collections.Counter()  # pictured_<kind> (someone watched), unwatched_<kind> (nobody did)

    @property
    def port(self) -> int:
        return self.server.port

    def _channel(self, topic: str, sch: str):
        ch = self.channels.get(topic)
        if ch is None:
            import foxglove
            name, enc, data, msg_enc = schema(sch)
            ch = self.channels[topic] = foxglove.Channel(topic, schema=foxglove.Schema(name=name, encoding=enc, data=data),
                                                         message_encoding=msg_enc, context=self.ctx,
                                                         metadata={"radvis": "view"})
        return ch

    def _watched_topics(self) -> set[str]:
        ids = self.listener.watched()
        return {t for t, ch in self.channels.items() if ch.id() in ids}

    def step(self, timeout: float = 0.1) -> int:
        """Picture and send what arrived; returns messages sent. A frame nobody watches only feeds the truth
        join (`unwatched`); one that comes sooner than 1/view.max_hz after the last picture of its kind is
        skipped (`skipped_rate`); one a newer frame replaced before this loop got to it was `dropped`."""
        watched = self._watched_topics()
        self.conv.topics = watched | {"/stats/*"}
        frames, small = self.rx.take(timeout)
        now = time.monotonic()
        todo = []
        for m in frames:
            if not watched & set(FRAME_TOPICS[m.kind]):
                self.frames[f"unwatched_{m.kind}"] += 1
            elif now - self.last_pub.get(m.kind, -1e9) < self.period:
                self.frames[f"skipped_rate_{m.kind}"] += 1
                continue
            else:
                self.frames[f"pictured_{m.kind}"] += 1
                self.last_pub[m.kind] = now
            todo.append(m)
        n = 0
        for m in todo + small:
            for out in self.conv.convert(m):
                ch = self._channel(out.topic, out.schema)
                ch.log(out.data, log_time=out.t_ns)
                self.published[out.topic] += 1
                n += 1
        return n

    def stats(self) -> dict:
        with self.rx.lock:
            c = dict(self.rx.counts)
        c.update(self.frames)  # received_<kind> = pictured + skipped_rate + unwatched + dropped (+ one waiting)
        sub = {n: s.stats.as_dict() for n, s in self.rx.subs.items()}
        return {"clients": len(self.listener.clients), "watched": sorted(self._watched_topics()),
                "received": sum(v for k, v in c.items() if k.startswith("received_")),
                "dropped": sum(v for k, v in c.items() if k.startswith("dropped_")),
                "skipped_rate": sum(v for k, v in c.items() if k.startswith("skipped_rate_")),
                "sent": sum(self.published.values()), "counts": c, "published": dict(self.published),
                "rejected": sum(sum(s["rejected"].values()) for s in sub.values()),
                "lost_upstream": {n: s["lost"] for n, s in sub.items() if s["lost"]},
                "convert_errors": self.conv.counts["errors"]}

    def close(self) -> None:
        self.rx.stop()
        for s in self.rx.subs.values():
            s.close()
        self.server.stop()


def view_main(cfg, host: str | None = None, port: int | None = None, duration_s: float = 0,
              logger: logging.Logger | None = None) -> int:
    import signal
    logger = logger or log
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    v = View(cfg, host, port)
    v.rx.start()
    from radvis.control import stats_publisher
    spub = stats_publisher(cfg)
    line = StatsLine(logger, cfg.rig.stats_interval_s, rates=("sent", "received"))
    h = host or cfg.view.host
    eps = {n: getattr(cfg.endpoints, "view_stats" if n == "stats" else n) for n in v.rx.subs}
    logger.info("view: serving ws://%s:%d (Foxglove: Open connection -> Foxglove WebSocket) from %s", h, v.port,
                ", ".join(f"{n}={e}" for n, e in eps.items()))
    print(json.dumps({"url": f"ws://{h}:{v.port}", "port": v.port}), flush=True)
    from radvis.control import announce_ready
    announce_ready(cfg, "view", url=f"ws://{h}:{v.port}")  # listening and subscribed: the rig goes on
    t_end = time.monotonic() + duration_s if duration_s else None
    try:
        while not stop.is_set() and not (t_end and time.monotonic() >= t_end):
            v.step(0.1)
            if line.due():
                st = v.stats()
                shown = line.tick({k: x for k, x in st.items() if k not in ("published", "counts")})
                body = {"stage": "view", **shown, "counts": st["counts"], "published": st["published"]}
                msg = Message(kind="stats", source="view", meta=body)
                msg.stamp()
                for out in v.conv.convert(msg):  # the view's own counters, in the view
                    v._channel(out.topic, out.schema).log(out.data, log_time=out.t_ns)
                if spub is not None:
                    spub.send(Message(kind="stats", source="view", meta=body))
    finally:
        st = v.stats()
        v.close()
        if spub is not None:
            spub.close()
    line.tick({k: x for k, x in st.items() if k not in ("published", "counts")}, force=True)
    print(json.dumps(st), flush=True)
    return 0

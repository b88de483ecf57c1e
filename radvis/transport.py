"""PUB/SUB helpers every stage uses: zero-copy send/receive of wire messages, validation,
sequence-gap accounting, the slow-joiner wait, per-socket stats and optional CURVE security.

Publisher uses an XPUB socket so it can *see* subscriptions arrive: `wait_for_subscribers()` solves
ZeroMQ's slow-joiner problem (messages sent before a SUB finished connecting are silently lost)
without sleeping a guessed amount. A full send queue (high-water mark) drops the message and counts
it; a publisher never blocks its device loop on a slow consumer.
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from radvis.sequence import SeqTracker
from radvis.wire import Limits, Message, WireError, decode, encode

log = logging.getLogger("radvis.transport")
ACK_PREFIX = b"ack."  # subscriptions that acknowledge (Subscriber.ack) rather than ask for messages


# ---------------------------------------------------------------------------------------------
# CURVE
# ---------------------------------------------------------------------------------------------

@dataclass
class CurveKeys:
    """Keys from a directory made by `make_keys()` / `radvis keys DIR`:
    server.key(_secret), client.key(_secret), and authorized_clients/ (public keys allowed in)."""
    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes
    authorized_dir: Path

    @classmethod
    def load(cls, directory: str | Path) -> "CurveKeys":
        import zmq.auth
        d = Path(directory)
        need = [d / "server.key", d / "client.key_secret"]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise FileNotFoundError(f"CURVE keys missing: {', '.join(missing)} (create them with `radvis keys {d}`)")
        spub, ssec = zmq.auth.load_certificate(d / ("server.key_secret" if (d / "server.key_secret").exists() else "server.key"))
        cpub, csec = zmq.auth.load_certificate(d / "client.key_secret")
        return cls(spub, ssec, cpub, csec, d / "authorized_clients")


def make_keys(directory: str | Path) -> Path:
    """Create a server and a client certificate; the client is authorised. Copy server.key (public)
    and client.key_secret to machines that subscribe; keep server.key_secret on the publisher."""
    import zmq.auth
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(d, "server")
    zmq.auth.create_certificates(d, "client")
    auth = d / "authorized_clients"
    auth.mkdir(exist_ok=True)
    (auth / "client.key").write_bytes((d / "client.key").read_bytes())
    for p in d.glob("*.key_secret"):
        os.chmod(p, 0o600)
    return d


_authenticators: dict[int, object] = {}


def _secure(sock: zmq.Socket, keys: CurveKeys | None, server: bool) -> None:
    if keys is None:
        return
    if server:
        if keys.server_secret is None:
            raise ValueError("CURVE server needs server.key_secret")
        ctx = sock.context
        if id(ctx) not in _authenticators:  # one ZAP handler per context: only authorised client keys get in
            from zmq.auth.thread import ThreadAuthenticator
            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=str(keys.authorized_dir))
            _authenticators[id(ctx)] = auth
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public
        sock.curve_server = True
    else:
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public


def stop_authenticator(ctx: zmq.Context | None = None) -> None:
    """Stop the ZAP handler thread of `ctx` (call before ctx.term(), which would otherwise wait on it)."""
    auth = _authenticators.pop(id(ctx or zmq.Context.instance()), None)
    if auth is not None:
        auth.stop()


def keys_from_config(cfg) -> CurveKeys | None:
    """CURVE keys if [transport] curve = true, else None."""
    t = cfg.transport
    return CurveKeys.load(t.curve_dir) if t.curve else None


# ---------------------------------------------------------------------------------------------
# Publisher
# ---------------------------------------------------------------------------------------------

@dataclass
class PubStats:
    sent: int = 0
    bytes: int = 0
    dropped_hwm: int = 0
    unencodable: int = 0  # messages this build's own encoder refused (a producer bug, logged)


class Publisher:
    def __init__(self, endpoint: str, *, bind: bool = True, hwm: int = 1000, curve: CurveKeys | None = None,
                 ctx: zmq.Context | None = None):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.sndhwm = hwm
        self.sock.linger = 1000
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # always learn about a full queue, so drops are counted
        # report every (un)subscription, not just the first/last per topic: without it a second subscriber to
        # a topic is invisible and wait_for_subscribers(2) never returns (issue #13). VERBOSER (libzmq >= 4.2)
        # also reports each unsubscription, including those of a subscriber that disconnects.
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        _secure(self.sock, curve, server=bind)
        (self.sock.bind if bind else self.sock.connect)(endpoint)
        self.endpoint = self.sock.last_endpoint.decode() if bind else endpoint
        self.epoch = random.getrandbits(62)  # lets subscribers tell a restart from a sequence gap
        # one counter per kind: a subscriber that filters topics (pairs but not events) sees no false gaps
        self.seqs: dict[str, int] = {}
        self.subscriptions: Counter = Counter()  # topic prefix -> live subscriptions to it
        # ack topic -> subscribers that will acknowledge on it / acknowledgements received (Subscriber.ack)
        self.ack_subs: Counter = Counter()
        self.acks: Counter = Counter()
        self.stats = PubStats()

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                ev = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic = bytes(ev[1:])
            # a promise to acknowledge is not a consumer: counted apart (Subscriber.ack)
            counts = self.ack_subs if topic.startswith(ACK_PREFIX) else self.subscriptions
            if ev[:1] == b"\x01":
                counts[topic] += 1
            elif ev[:1] == b"\x00" and counts[topic] > 0:
                counts[topic] -= 1
                if counts is self.ack_subs:
                    self.acks[topic] += 1  # a promise withdrawn is the acknowledgement

    @property
    def subscribers(self) -> int:
        """Subscriptions of any topic (a subscriber to two topics counts twice)."""
        return sum(self.subscriptions.values())

    def subscribers_for(self, topic: str | None) -> int:
        """Subscribers that receive messages of `topic` (their subscription is a prefix of it); None = any."""
        if topic is None:
            return self.subscribers
        t = topic.encode()
        return sum(n for p, n in self.subscriptions.items() if t.startswith(p))

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 2.0, topic: str | None = None) -> bool:
        """Block until n subscribers receive `topic` (None: until n subscriptions of any topic have arrived)
        (slow-joiner handling). False on timeout. Give the topic when several consumers subscribe: one
        subscriber to several topics (sync takes radar, camera, event and truth from each endpoint) would
        otherwise count several times."""
        return self._wait(lambda: self.subscribers_for(topic) >= n, timeout_s)

    def _wait(self, done, timeout_s: float, stop=None) -> bool:
        """Read (un)subscriptions until done(), at most `timeout_s`, or until `stop` is set (checked every
        100 ms). Returns done()."""
        deadline = time.monotonic() + timeout_s
        self._drain_subscriptions()
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if self.sock.poll(min(int(left * 1000) + 1, 100), zmq.POLLIN):
                self._drain_subscriptions()
        return True

    def ackers(self, topic: str) -> int:
        """Subscribers that will acknowledge on `topic` (they subscribe to it: Subscriber.ack)."""
        self._drain_subscriptions()
        return self.ack_subs[topic.encode()]

    def wait_for_acks(self, topic: str, n: int, timeout_s: float, stop=None) -> int:
        """Wait until `n` acknowledgements on `topic` have arrived in all (Subscriber.ack), at most
        `timeout_s`, or until `stop` (a threading.Event) is set. Returns how many arrived."""
        t = topic.encode()
        self._wait(lambda: self.acks[t] >= n, timeout_s, stop)
        return self.acks[t]

    def send(self, msg: Message, *, keep_seq: bool = False) -> bool:
        """Stamp (if needed), number and send. keep_seq=True (replay) keeps the message's seq/epoch.
        Returns False when the message was dropped at the high-water mark (counted)."""
        msg.stamp()
        if not keep_seq:
            msg.seq, msg.epoch = self.next_seq(msg.kind), self.epoch
        try:
            frames = encode(msg)
        except WireError as e:  # e.g. NaN in a header: never on the wire, never a crash of the stage
            self.stats.unencodable += 1
            _publog.warning("unencodable", f"not sent (every receiver would reject it): {e}")
            return False
        return self.send_frames(frames)

    def next_seq(self, kind: str) -> int:
        """Take the next sequence number of `kind` (for callers that encode messages themselves)."""
        n = self.seqs.get(kind, 0)
        self.seqs[kind] = n + 1
        return n

    def send_frames(self, frames: list) -> bool:
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.stats.dropped_hwm += 1
            return False
        self.stats.sent += 1
        self.stats.bytes += sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes for f in frames)
        return True

    def close(self) -> None:
        self.sock.close(linger=1000)


# ---------------------------------------------------------------------------------------------
# Subscriber
# ---------------------------------------------------------------------------------------------

class SubStats:
    """A Subscriber's counters. Every message that reaches the socket is either delivered (`received`)
    or dropped and counted in `rejected[reason]`: wire validation (radvis.wire) or sequence (stale,
    seq_jump; radvis.sequence)."""

    def __init__(self, tracker: SeqTracker):
        self.received = 0
        self.bytes = 0
        self.rejected: Counter = Counter()  # reason -> count
        self.reconnects = 0  # connections libzmq dropped for good (frame over the ceiling) that we re-made
        self.handshake_failures = 0  # connections the publisher refused (CURVE keys): nothing will arrive
        self.tracker = tracker

    @property
    def lost(self) -> int:  # messages missing from sequence gaps, all publishers
        return self.tracker.lost

    @property
    def restarts(self) -> int:  # publisher epochs that changed (publisher restarted), replay rewinds
        return self.tracker.restarts

    @property
    def per_source(self) -> dict:  # (source, epoch, kind) -> {"last": seq, "lost": n, ...}
        return self.tracker.streams

    def as_dict(self) -> dict:
        return {"received": self.received, "bytes": self.bytes, "rejected": dict(self.rejected),
                "lost": self.lost, "restarts": self.restarts, "reconnects": self.reconnects,
                "handshake_failures": self.handshake_failures}


class RateLimitedLog:
    """At most one log line per `interval_s` per key; suppressed lines are counted in the next one."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0):
        self.logger, self.interval, self.last, self.suppressed = logger, interval_s, {}, Counter()

    def warning(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self.last.get(key, -1e9) >= self.interval:
            extra = f" ({self.suppressed[key]} similar suppressed)" if self.suppressed[key] else ""
            self.logger.warning(text + extra)
            self.last[key], self.suppressed[key] = now, 0
        else:
            self.suppressed[key] += 1


_publog = RateLimitedLog(log)  # publishers' own errors, at most one line per 5 s per kind


# libzmq's own reconnect follows a normal disconnect within a millisecond (EVENT_CONNECT_RETRIED); a
# connection it drops for a protocol error (ZMQ_MAXMSGSIZE exceeded) gets no retry, ever.
_RETRY_MASK = zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
# a refused handshake (CURVE keys, or CURVE on one side only): libzmq does not retry either, and neither
# do we (hammering the server's authenticator would not fix a key); counted and logged instead
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class Subscriber:
    """SUB socket + validation + sequence accounting. One bad message costs that message: it is
    dropped and counted, and a frame so large that libzmq cuts the connection (above
    `Limits.socket_max_frame_bytes`) costs only the messages sent while the subscriber reconnects."""

    CUT_GRACE_S = 0.05  # a disconnect not followed by libzmq's own retry within this is a cut: reconnect

    def __init__(self, endpoints: str | list[str], topics: list[str] | None = None, *, bind: bool = False,
                 hwm: int = 1000, limits: Limits = Limits(), curve: CurveKeys | None = None,
                 ctx: zmq.Context | None = None, name: str = "sub"):
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.rcvhwm = hwm
        self.sock.linger = 0
        # frames up to the ceiling are received and dropped by decode() (`oversize`); libzmq drops the
        # connection on a larger one before allocating it, and watch() reconnects
        self.sock.maxmsgsize = limits.socket_max_frame_bytes
        _secure(self.sock, curve, server=bind)
        for t in topics if topics is not None else [""]:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.connected = [] if bind else eps  # endpoints this side re-connects after a cut
        # the monitor exists before the first connect, so no event is missed
        self.monitor = (self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | _RETRY_MASK | _HANDSHAKE_FAILED)
                        if self.connected else None)
        self._cut: dict[str, float] = {}
        self._refused: set[str] = set()
        for ep in eps:
            (self.sock.bind if bind else self.sock.connect)(ep)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        if self.monitor is not None:
            self.poller.register(self.monitor, zmq.POLLIN)
        self.limits = limits
        self.seq = SeqTracker()
        self.stats = SubStats(self.seq)
        self.ratelog = RateLimitedLog(logging.getLogger(f"radvis.{name}"))

    # -- connection watch ------------------------------------------------------------------------
    def watch(self) -> int:
        """Read connection events and re-connect any endpoint libzmq dropped for good (it does that,
        silently, to a connection that carried a frame above ZMQ_MAXMSGSIZE). Call it often: recv()
        does; a caller polling `sock` itself (the recorder) calls it once per loop. Returns the number
        of reconnects made."""
        if self.monitor is None:
            return 0
        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            ep = ev["endpoint"].decode("utf-8", "replace")
            if ev["event"] & _HANDSHAKE_FAILED:
                self._refused.add(ep)
                self.stats.handshake_failures += 1
                why = "not authorised (CURVE keys)" if ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH else \
                    "refused (a wrong server key, or CURVE on one side only?)"
                self.ratelog.warning("handshake", f"handshake with {ep} {why}: receiving nothing from it "
                                     f"({self.stats.handshake_failures} so far; docs/wire-format.md CURVE)")
            elif ev["event"] == zmq.EVENT_DISCONNECTED:
                if ep not in self._refused:
                    self._cut[ep] = time.monotonic()
            else:
                self._cut.pop(ep, None)  # libzmq is reconnecting by itself
                if ev["event"] == zmq.EVENT_CONNECTED:
                    self._refused.discard(ep)
        n = 0
        now = time.monotonic()
        for ep, t in list(self._cut.items()):
            if now - t < self.CUT_GRACE_S:
                continue
            del self._cut[ep]
            target = ep if ep in self.connected else (self.connected[0] if len(self.connected) == 1 else None)
            if target is None:
                log.error("connection to %s dropped for good; cannot tell which of %s to reconnect", ep, self.connected)
                continue
            try:
                self.sock.disconnect(target)
            except zmq.ZMQError:
                pass
            self.sock.connect(target)
            self.stats.reconnects += 1
            n += 1
            self.ratelog.warning("reconnect", f"connection to {target} was dropped by libzmq and not retried (a frame "
                                 f"over the {self.limits.socket_max_frame_bytes}-byte socket ceiling, or a protocol "
                                 f"error): reconnected ({self.stats.reconnects} so far); what the publisher sent "
                                 "meanwhile shows as sequence gaps")
        return n

    def ack(self, topic: str) -> None:
        """Acknowledge to the publisher(s) of this socket that everything they sent before the message just
        received has been read. A consumer that will acknowledge subscribes to `topic` (an `ack.` topic,
        never published: Publisher.ackers counts it); acknowledging withdraws that subscription, which
        travels upstream (Publisher.wait_for_acks counts it), and makes it again for the next time. A
        replayer waits for this before it closes, because libzmq drops what is still in a subscriber's
        socket buffer when the publisher's connection closes while that subscriber's receive queue is at
        its high-water mark (zeromq/libzmq#4660)."""
        self.sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
        self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    # -- receiving ---------------------------------------------------------------------------------
    def recv_frames(self, timeout_ms: int | None = None) -> list | None:
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            self.watch()
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if self._cut:  # wake up to decide on a disconnect that libzmq is not retrying
                left = int(self.CUT_GRACE_S * 1000) + 1 if left is None else min(left, int(self.CUT_GRACE_S * 1000) + 1)
            ready = dict(self.poller.poll(left))
            if self.sock in ready:
                return self.sock.recv_multipart(copy=False)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def accept(self, frames: list) -> Message | None:
        """Validate frames and account for the sequence; count and drop a bad or stale message (never
        raises)."""
        try:
            msg = decode(frames, self.limits)
        except WireError as e:
            return self._drop(e.reason, f"dropped malformed message: {e}")
        why, _ = self.seq.update(msg.source, msg.epoch, msg.kind, msg.seq, msg.replay)
        if why is not None:
            return self._drop(why, f"dropped {why} {msg.kind} message from {msg.source} (epoch {msg.epoch}, "
                                   f"seq {msg.seq})")
        self.stats.received += 1
        self.stats.bytes += sum(f.buffer.nbytes if hasattr(f, "buffer") else len(f) for f in frames)
        return msg

    def _drop(self, reason: str, text: str) -> None:
        self.stats.rejected[reason] += 1
        self.ratelog.warning(reason, text)
        return None

    def recv(self, timeout_ms: int | None = None) -> Message | None:
        """Next valid message, or None when `timeout_ms` passes without one. Malformed and stale
        messages are dropped and counted in stats.rejected; sequence gaps are counted in stats.lost."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            left = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            frames = self.recv_frames(left)
            if frames is None:
                return None
            msg = self.accept(frames)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close(linger=0)
        self.sock.close(linger=0)


def publisher_from_config(cfg, endpoint_name: str, **kw) -> Publisher:
    from radvis.config import bind_endpoint  # a list of several endpoints (one per rig) is refused, naming the key
    return Publisher(bind_endpoint(cfg, endpoint_name), hwm=cfg.transport.sndhwm,
                     curve=keys_from_config(cfg), **kw)


def subscriber_from_config(cfg, endpoint_names: list[str], topics: list[str] | None = None, **kw) -> Subscriber:
    from radvis.config import endpoint_list  # an endpoint may be a list (several rigs): connect to each
    return Subscriber([ep for n in endpoint_names for ep in endpoint_list(getattr(cfg.endpoints, n))], topics, hwm=cfg.transport.rcvhwm,
                      limits=Limits.from_config(cfg.transport), curve=keys_from_config(cfg), **kw)

"""The two ends of tests/test_two_hosts.py, each run in its own network namespace (`ip netns exec`).

    python -m tests.two_hosts_stage rig  --bind tcp://10.a.b.1:* --keys DIR [--hwm N] [--rate HZ]
    python -m tests.two_hosts_stage gpu  --connect tcp://10.a.b.1:PORT --keys DIR --other-keys DIR
    python -m tests.two_hosts_stage intruders --connect tcp://10.a.b.1:PORT --keys DIR --other-keys DIR

`rig` is a pair publisher (the rig's sync): it prints {"endpoint": ...}, waits for one pair subscriber,
then publishes numbered pairs at --rate until a line "stop" arrives on stdin, and prints its stats.
`gpu` is the learner's ingest (Receiver -> Ingest -> replay buffer, as `radvis learn online` runs it)
with the right keys, plus two intruders: a client that has the wrong server key and a client whose key is
not authorised. It prints a status line every 0.2 s and, after "stop" on stdin, a final line with every
sequence number it received. `intruders` is the two intruders alone (beside the real `radvis learn online`,
which is then the only client with the right keys). Lines are JSON; the test reads them with deadlines.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np


def _stdin_stop() -> threading.Event:
    ev = threading.Event()

    def read():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        ev.set()
    threading.Thread(target=read, daemon=True).start()
    return ev


def _say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def rig(a) -> None:
    from bench.online import pair_message
    from radvis.transport import CurveKeys, Publisher
    pub = Publisher(a.bind, hwm=a.hwm, curve=CurveKeys.load(a.keys))
    _say(endpoint=pub.endpoint)
    stop = _stdin_stop()
    if not pub.wait_for_subscribers(1, 60, topic="pair"):
        _say(error="no subscriber in 60 s")
        return
    ra = np.zeros((128, 128, 2), np.float32)
    img = np.zeros((8, 8, 3), np.uint8)
    period, t0, i = 1.0 / a.rate, time.monotonic(), 0
    while not stop.is_set():
        ra[0, 0, 0] = i  # every pair differs (no dedup question)
        pub.send(pair_message(ra, img, t_ns=i * int(period * 1e9), source="rig1", frame_number=i))
        i += 1
        stop.wait(max(0.0, t0 + i * period - time.monotonic()))
    _say(sent=pub.stats.sent, dropped_hwm=pub.stats.dropped_hwm, numbered=pub.seqs.get("pair", 0))
    pub.close()


class Intruders:
    """Two clients of the pair endpoint that must get nothing: one holds the wrong server key (the right
    client key), the other a client key that is not in the rig's authorized_clients/ (the right server key).
    `keys` needs server.key and client.key_secret only (what a GPU box holds, docs/deploy.md)."""

    def __init__(self, connect: str, keys, other):
        from radvis.transport import CurveKeys, Subscriber
        self.subs = {
            "wrong_server_key": Subscriber(connect, ["pair"], name="wrong-server-key",
                                           curve=CurveKeys(other.server_public, None, keys.client_public,
                                                           keys.client_secret, keys.authorized_dir)),
            "unauthorised_client": Subscriber(connect, ["pair"], name="unauthorised-client",
                                              curve=CurveKeys(keys.server_public, None, other.client_public,
                                                              other.client_secret, other.authorized_dir))}
        self.got = {n: 0 for n in self.subs}

    def poll(self) -> None:
        for n, s in self.subs.items():
            while s.recv(timeout_ms=0) is not None:
                self.got[n] += 1

    def status(self) -> dict:
        return {n: {"received": self.got[n], "handshake_failures": s.stats.handshake_failures}
                for n, s in self.subs.items()}

    def close(self) -> None:
        for s in self.subs.values():
            s.close()


def gpu(a) -> None:
    from learner.online.buffer import ReplayBuffer
    from learner.online.ingest import Ingest, Receiver
    from radvis.transport import CurveKeys, Subscriber
    keys, other = CurveKeys.load(a.keys), CurveKeys.load(a.other_keys)
    seqs: list[int] = []

    class Recorded(Ingest):
        def process(self, items):
            seqs.extend(m.seq for _, m in items if m.kind == "pair")
            super().process(items)

    def embed(images):  # a stand-in teacher: the ingest path is under test, not the keys
        x = np.asarray(images, np.float32).reshape(len(images), -1)[:, :4] + 1.0
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    rx = Receiver(lambda: Subscriber(a.connect, ["pair"], curve=keys, name="gpu"), maxsize=10000).start()
    ing = Recorded(rx, embed, ReplayBuffer(64, 4, policy="reservoir"), dedup_threshold=1.0)
    intruders = Intruders(a.connect, keys, other)
    stop = _stdin_stop()
    next_say = 0.0

    def status(final: bool = False):
        st = ing.stats()
        return dict(received=len(seqs), max_seq=max(seqs) if seqs else -1, pairs_in=st.get("pairs_in", 0),
                    dropped_by_reason=st["dropped_by_reason"], by_source=st["by_source"],
                    intruders=intruders.status(), **({"seqs": seqs} if final else {}))
    while not stop.is_set():
        ing.poll()
        intruders.poll()
        if time.monotonic() >= next_say:
            _say(**status())
            next_say = time.monotonic() + 0.2
        time.sleep(0.02)
    deadline = time.monotonic() + 2  # what the receiver already holds
    while (ing.poll() or not rx.q.empty()) and time.monotonic() < deadline:
        pass
    _say(final=True, **status(final=True))
    rx.stop()
    intruders.close()


def intruders(a) -> None:
    from radvis.transport import CurveKeys
    it = Intruders(a.connect, CurveKeys.load(a.keys), CurveKeys.load(a.other_keys))
    stop = _stdin_stop()
    while not stop.wait(0.2):
        it.poll()
        _say(intruders=it.status())
    it.poll()
    _say(final=True, intruders=it.status())
    it.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rig")
    r.add_argument("--bind", required=True)
    r.add_argument("--keys", required=True)
    r.add_argument("--hwm", type=int, default=20)
    r.add_argument("--rate", type=float, default=50.0)
    for name in ("gpu", "intruders"):
        g = sub.add_parser(name)
        g.add_argument("--connect", required=True)
        g.add_argument("--keys", required=True)
        g.add_argument("--other-keys", required=True)
    a = ap.parse_args()
    {"rig": rig, "gpu": gpu, "intruders": intruders}[a.cmd](a)


if __name__ == "__main__":
    main()

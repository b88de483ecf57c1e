"""Transport benchmark: pair-sized (~1 MiB) messages through radvis Publisher/Subscriber (zero-copy,
validated) against a pickle `send_pyobj` baseline over the same sockets, tcp loopback and ipc.

    .venv/bin/python -m bench.transport [--quick]

Throughput: a sender process pushes N messages as fast as the receiver takes them (XPUB_NODROP, so
nothing is dropped and the sender waits on a full queue). Latency: a paced run (200 msg/s) measures
send-stamp -> received-and-validated, p50/p99. The pickle baseline exists only here.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time

import numpy as np
import zmq

from radvis.transport import Publisher, Subscriber
from radvis.wire import Limits, Message, encode

PAIR_SHAPES = {"radar.ra": ((128, 128, 2), np.float32), "camera.image": ((480, 640, 3), np.uint8)}  # 128 KiB + 900 KiB


def pair_buffers():
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s).astype(d) if d == np.float32 else rng.integers(0, 255, s, dtype=d))
            for k, (s, d) in PAIR_SHAPES.items()}


def _sender(kind: str, endpoint: str, n: int, rate: float, ready, go):
    ctx = zmq.Context()
    bufs = pair_buffers()
    if kind == "radvis":
        pub = Publisher(endpoint, hwm=64, ctx=ctx)
        ready.set()
        pub.wait_for_subscribers(1, 10)
        go.wait()
        for i in range(n):
            if rate:
                time.sleep(1.0 / rate)
            # the same arrays every time are safe because nothing mutates a sent array (zero-copy rule)
            m = Message(kind="pair", source="bench", buffers=bufs, meta={"skew_ns": 0})
            m.stamp()
            m.seq, m.epoch = i, pub.epoch
            frames = encode(m)
            while not pub.send_frames(frames):
                time.sleep(0.0002)
        time.sleep(0.5)
        pub.close()
    else:
        sock = ctx.socket(zmq.XPUB)
        sock.sndhwm = 64
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.bind(endpoint)
        ready.set()
        sock.recv()  # first subscription
        go.wait()
        for i in range(n):
            if rate:
                time.sleep(1.0 / rate)
            sock.send_pyobj({"kind": "pair", "seq": i, "t_mono_ns": time.monotonic_ns(), "meta": {"skew_ns": 0},
                             "buffers": bufs})
        time.sleep(0.5)
        sock.close(1000)
    ctx.term()


def run_one(kind: str, endpoint: str, n: int, rate: float = 0.0) -> dict:
    ctx = zmq.Context()
    ready, go = mp.Event(), mp.Event()
    p = mp.Process(target=_sender, args=(kind, endpoint, n, rate, ready, go), daemon=True)
    p.start()
    ready.wait(10)
    lat, nbytes = [], 0
    if kind == "radvis":
        sub = Subscriber(endpoint, ctx=ctx, hwm=64, limits=Limits(max_message_bytes=8 << 20))
        time.sleep(0.2)
        go.set()
        t0 = None
        for _ in range(n):
            m = sub.recv(timeout_ms=20000)
            if m is None:
                break
            now = time.monotonic_ns()
            t0 = t0 or now
            lat.append(now - m.t_mono_ns)
            nbytes += sum(a.nbytes for a in m.buffers.values())
            _ = m.buffers["radar.ra"][0, 0, 0]  # touch the data through the zero-copy view
        got, lost = sub.stats.received, sub.stats.lost
        sub.close()
    else:
        sock = ctx.socket(zmq.SUB)
        sock.rcvhwm = 64
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        time.sleep(0.2)
        go.set()
        got, t0 = 0, None
        for _ in range(n):
            if not sock.poll(20000):
                break
            obj = sock.recv_pyobj()  # the thing radvis never does: unpickling network input
            now = time.monotonic_ns()
            t0 = t0 or now
            lat.append(now - obj["t_mono_ns"])
            nbytes += sum(a.nbytes for a in obj["buffers"].values())
            got += 1
        lost = n - got
        sock.close(0)
    t1 = time.monotonic_ns()
    p.join(10)
    ctx.term()
    dt = (t1 - t0) / 1e9 if t0 else float("nan")
    lat_ms = np.array(lat) / 1e6
    # the first message's interval starts at its arrival, so rate uses got - 1 intervals
    return {"msgs_per_s": (len(lat) - 1) / dt, "MB_per_s": nbytes * (len(lat) - 1) / len(lat) / dt / 1e6,
            "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "received": got, "lost": lost}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages (< 60 s)")
    args = ap.parse_args(argv)
    n = 400 if args.quick else 2000
    n_lat = 100 if args.quick else 400
    tmp = tempfile.mkdtemp(prefix="radvis-bench-")
    rows = []
    msg_mb = sum(np.prod(s) * np.dtype(d).itemsize for s, d in PAIR_SHAPES.values()) / 2**20
    print(f"pair-sized message: {msg_mb:.2f} MiB; {n} messages for throughput, {n_lat} at 200 msg/s for latency")
    print(f"{'transport':10} {'impl':8} {'msgs/s':>9} {'MB/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5}")
    for tname in ("tcp", "ipc"):
        res = {}
        for kind in ("pickle", "radvis"):
            ep = (f"tcp://127.0.0.1:{_free_port()}" if tname == "tcp" else f"ipc://{tmp}/{kind}.sock")
            thr = run_one(kind, ep, n)
            ep = (f"tcp://127.0.0.1:{_free_port()}" if tname == "tcp" else f"ipc://{tmp}/{kind}-lat.sock")
            lat = run_one(kind, ep, n_lat, rate=200)
            res[kind] = {**thr, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"]}
            r = res[kind]
            print(f"{tname:10} {kind:8} {r['msgs_per_s']:9.0f} {r['MB_per_s']:9.0f} {r['p50_ms']:8.3f} "
                  f"{r['p99_ms']:8.3f} {r['lost']:5d}")
        a, b = res["radvis"], res["pickle"]
        rows += [
            {"stage": f"transport {tname}", "metric": "pair msgs/s (1 MiB)", "value": round(a["msgs_per_s"]),
             "unit": "msg/s", "baseline": round(b["msgs_per_s"]), "ratio": round(a["msgs_per_s"] / b["msgs_per_s"], 2),
             "need": "10 pairs/s (radar 10 Hz)"},
            {"stage": f"transport {tname}", "metric": "throughput", "value": round(a["MB_per_s"]), "unit": "MB/s",
             "baseline": round(b["MB_per_s"]), "ratio": round(a["MB_per_s"] / b["MB_per_s"], 2), "need": ">= 1000 MB/s"},
            {"stage": f"transport {tname}", "metric": "latency p50 @200 msg/s", "value": round(a["p50_ms"], 3),
             "unit": "ms", "baseline": round(b["p50_ms"], 3), "ratio": round(b["p50_ms"] / a["p50_ms"], 2), "need": ""},
            {"stage": f"transport {tname}", "metric": "latency p99 @200 msg/s", "value": round(a["p99_ms"], 3),
             "unit": "ms", "baseline": round(b["p99_ms"], 3), "ratio": round(b["p99_ms"] / a["p99_ms"], 2), "need": ""},
        ]
    print()
    print_table(rows)
    return rows


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_table(rows: list[dict]) -> None:
    """The table every bench script prints: value, baseline in the same run, ratio (> 1 = radvis better)."""
    print(f"| stage | metric | value | unit | baseline | ratio | need |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['metric']} | {r['value']} | {r['unit']} | {r['baseline']} | {r['ratio']} | {r['need']} |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The radvis wire format, version 1 (docs/wire-format.md).

A message is a ZeroMQ multipart message

    [topic, header, buffer_0, buffer_1, ...]

- topic: ASCII bytes, used for SUB prefix filtering (by default the message kind).
- header: UTF-8 JSON object (schema below), at most `max_header_bytes`.
- buffer_i: the raw bytes of one C-contiguous numpy array, described by header["buffers"][i].

Header:
    {"v": 1, "kind": "radar", "source": "radar0", "seq": 17, "epoch": 5169..., "replay": false,
     "t": {"device_ns": 1700000 | null, "mono_ns": ..., "wall_ns": ...},
     "buffers": [{"name": "ra", "dtype": "<f4", "shape": [128, 128, 2], "nbytes": 131072}],
     "meta": {...kind-specific...}}

Decoding validates everything before touching a buffer (docs/wire-format.md is the contract): total
size under the limit, the header strictly UTF-8 then RFC 8259 JSON with every integer within 64 bits,
known version and kind, `source`/topic/buffer names from a fixed character set, every numeric field in
its documented range (u64 seq, u62 epoch, i64 times), dtype in an allow-list, prod(shape) * itemsize ==
nbytes == len(buffer). A failure raises WireError(reason), never anything else. It never allocates
memory sized by the header (arrays are zero-copy views of the received frames). No pickle.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

VERSION = 1
KINDS = ("radar", "camera", "pair", "truth", "stats", "event")
# A replayer's `event` {"event": END_OF_STREAM, "stream": endpoint} follows its last message on each frame
# endpoint. A consumer that decides on it (sync) subscribes to END_OF_STREAM_ACK too, a promise to
# acknowledge, and acknowledges by withdrawing and renewing that subscription (Subscriber.ack): it travels
# upstream, so the replayer learns that everything it sent before the event was read, and only then closes
# (docs/recording.md "Replaying into a multi-stream consumer").
END_OF_STREAM = "end_of_stream"
END_OF_STREAM_ACK = "ack.end_of_stream"

# Little-endian / byte-order-free dtypes only: a header cannot make us interpret bytes as objects.
DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    "u1", "i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8", "<c8", "<c16", "?")}


class WireError(ValueError):
    """A message that must be dropped. `reason` is a short stable key used in counters."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Limits:
    max_message_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 256 * 1024
    max_buffers: int = 16

    @classmethod
    def from_config(cls, t) -> "Limits":
        return cls(t.max_message_bytes, t.max_header_bytes, t.max_buffers)

    @property
    def socket_max_frame_bytes(self) -> int:
        """ZMQ_MAXMSGSIZE of a subscriber: the hard ceiling on one frame. libzmq drops the whole
        connection on a frame above it (before allocating it), so it sits well above the message limit:
        a frame up to twice the limit is received and dropped by `decode`, counted `oversize`, and costs
        that one message; only a frame above the ceiling costs the connection (the Subscriber then
        reconnects, counted and logged)."""
        return 2 * self.max_message_bytes


@dataclass
class Message:
    kind: str
    source: str
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    epoch: int = 0
    t_mono_ns: int = 0
    t_wall_ns: int = 0
    t_device_ns: int | None = None
    replay: bool = False
    topic: str = ""
    header: bytes = b""  # the raw header as received (kept so a recording can reproduce it exactly)

    def stamp(self) -> "Message":
        """Set host arrival times now (CLOCK_MONOTONIC and wall clock) if not already set."""
        if not self.t_mono_ns:
            self.t_mono_ns = time.monotonic_ns()
        if not self.t_wall_ns:
            self.t_wall_ns = time.time_ns()
        return self

    def header_dict(self) -> dict:
        bufs = []
        for name, a in self.buffers.items():
            bufs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "nbytes": int(a.nbytes)})
        return {"v": VERSION, "kind": self.kind, "source": self.source, "seq": int(self.seq),
                "epoch": int(self.epoch), "replay": bool(self.replay),
                "t": {"device_ns": None if self.t_device_ns is None else int(self.t_device_ns),
                      "mono_ns": int(self.t_mono_ns), "wall_ns": int(self.t_wall_ns)},
                "buffers": bufs, "meta": self.meta}


def encode(msg: Message) -> list:
    """Frames for `send_multipart(..., copy=False)`. Buffers are zero-copy views of the arrays:
    the caller must not modify an array after sending it (pyzmq may still be reading it)."""
    arrays = []
    for name, a in msg.buffers.items():
        if a.dtype.str not in DTYPES:
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.str not in DTYPES:
            raise WireError("dtype", f"buffer {name!r} has dtype {a.dtype} which is not on the wire allow-list")
        arrays.append(np.ascontiguousarray(a))
    msg.buffers = dict(zip(msg.buffers, arrays))
    topic = msg.topic or msg.kind
    if not valid_name(msg.source):
        raise WireError("source", f"source {msg.source!r} must be {NAME_RULE}")
    if not valid_name(topic) or not topic.startswith(msg.kind):
        raise WireError("topic", f"topic {topic!r} must start with the kind {msg.kind!r} and be {NAME_RULE}")
    try:  # receivers reject NaN/Infinity (not JSON): fail here, at the producer, not at every consumer
        header = json.dumps(msg.header_dict(), separators=(",", ":"), allow_nan=False).encode()
    except ValueError as e:
        raise WireError("range", f"{msg.kind} header from {msg.source}: {e}") from None
    topic = topic.encode()
    return [topic, header] + [memoryview(a).cast("B") if a.nbytes else b"" for a in arrays]


# ---------------------------------------------------------------------------------------------
# Decoding: the contract of docs/wire-format.md ("Validation on receipt"), checked in this order
# ---------------------------------------------------------------------------------------------

# Ranges of the numeric header fields (docs/wire-format.md "Header").
U64_MAX = 2**64 - 1
U62_MAX = 2**62 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_DIM = 2**40  # one array dimension (a size check against the frame follows anyway)
MAX_NAME = 64

# Publisher ids (`source`), topics and buffer names: short ASCII names, so they can be a file name, a
# log field, an MCAP channel and a SUB prefix without escaping, and a look-alike cannot hide in them.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
NAME_RULE = "1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def valid_name(s) -> bool:
    return isinstance(s, str) and NAME_RE.match(s) is not None


def _frame_bytes(f) -> memoryview:
    if hasattr(f, "buffer"):  # zmq.Frame from recv_multipart(copy=False)
        return f.buffer
    return memoryview(f)


def _json_int(text: str) -> int:
    v = int(text)
    if not I64_MIN <= v <= U64_MAX:  # not representable by any 64-bit consumer
        raise WireError("range", f"integer {text[:30]}{'...' if len(text) > 30 else ''} outside 64 bits")
    return v


def _json_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # 1e999 parses to inf
        raise WireError("range", f"number {text[:30]} is not a finite double")
    return v


def _json_constant(name: str):
    raise WireError("header_json", f"{name} is not JSON (RFC 8259)")


def _json_object(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise WireError("header_json", "duplicate key in a JSON object")
    return d


_json = json.JSONDecoder(parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant,
                         object_pairs_hook=_json_object)


def parse_header(raw) -> Any:
    """Header bytes -> JSON value, strictly: UTF-8 (no encoded surrogates such as ED A0 80, no
    overlongs), then RFC 8259 JSON (no NaN/Infinity, no duplicate keys), every integer within 64 bits,
    every number finite, and no lone surrogate escape (\\ud800) in any string."""
    try:
        text = bytes(raw).decode("utf-8")  # strict, unlike json.loads(bytes), which passes surrogates
    except UnicodeDecodeError as e:
        raise WireError("header_utf8", str(e)[:120]) from None
    try:
        h = _json.decode(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise WireError("header_json", str(e)[:120]) from None
    if _SURROGATE_ESCAPE.search(text):  # rare: only then pay for a walk (valid pairs were joined by the parser)
        try:
            json.dumps(h, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("header_utf8", "lone surrogate escape in a string") from None
    return h


def _int(h: dict, key: str, lo: int, hi: int) -> int:
    v = h.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise WireError("fields", f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise WireError("range", f"{key} must be in [{lo}, {hi}], got {v}")
    return v


def decode(frames: Sequence, limits: Limits = Limits()) -> Message:
    """Validate and decode one multipart message. Raises WireError (never anything else)."""
    try:
        return _decode(frames, limits)
    except WireError:
        raise
    except Exception as e:  # defensive: any surprise is a malformed message, not a crash
        raise WireError("malformed", repr(e)[:200]) from None


def _decode(frames: Sequence, limits: Limits) -> Message:
    if len(frames) < 2:
        raise WireError("frames", f"expected at least [topic, header], got {len(frames)} frame(s)")
    views = [_frame_bytes(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > limits.max_message_bytes:
        raise WireError("oversize", f"{total} bytes > limit {limits.max_message_bytes}")
    hb = views[1]
    if hb.nbytes > limits.max_header_bytes:
        raise WireError("header_size", f"{hb.nbytes} bytes > limit {limits.max_header_bytes}")
    h = parse_header(hb)
    if not isinstance(h, dict):
        raise WireError("header_json", "header is not a JSON object")
    v = h.get("v")
    if isinstance(v, bool) or v != VERSION:
        raise WireError("version", f"unknown schema version {v!r} (this build speaks {VERSION})")
    kind = h.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise WireError("kind", f"unknown kind {kind!r}")
    source = h.get("source")
    if not valid_name(source):
        raise WireError("source", f"source must be {NAME_RULE}, got {source!r:.80}")
    try:
        topic = bytes(views[0]).decode("ascii")
    except UnicodeDecodeError:
        topic = None
    if not valid_name(topic) or not topic.startswith(kind):
        raise WireError("topic", f"topic must start with the kind {kind!r} and be {NAME_RULE}, "
                                 f"got {bytes(views[0])[:80]!r}")
    seq, epoch = _int(h, "seq", 0, U64_MAX), _int(h, "epoch", 0, U62_MAX)
    replay = h.get("replay", False)
    if not isinstance(replay, bool):
        raise WireError("fields", f"replay must be true or false, got {replay!r:.40}")
    t = h.get("t")
    if not isinstance(t, dict):
        raise WireError("fields", "t must be an object")
    mono, wall = _int(t, "mono_ns", 0, I64_MAX), _int(t, "wall_ns", 0, I64_MAX)
    dev = t.get("device_ns")
    if dev is not None:
        dev = _int(t, "device_ns", I64_MIN, I64_MAX)
    meta = h.get("meta", {})
    if not isinstance(meta, dict):
        raise WireError("fields", "meta must be an object")
    descs = h.get("buffers")
    if not isinstance(descs, list):
        raise WireError("fields", "buffers must be a list")
    if len(descs) > limits.max_buffers:
        raise WireError("buffer_count", f"{len(descs)} buffers > limit {limits.max_buffers}")
    if len(descs) != len(views) - 2:
        raise WireError("buffer_count", f"header describes {len(descs)} buffers, message has {len(views) - 2}")
    buffers = {}
    for d, view in zip(descs, views[2:]):
        if not isinstance(d, dict) or not valid_name(d.get("name")) or d["name"] in buffers:
            raise WireError("fields", f"each buffer needs a unique name, {NAME_RULE}")
        dt = DTYPES.get(d.get("dtype")) if isinstance(d.get("dtype"), str) else None
        if dt is None:
            raise WireError("dtype", f"dtype {d.get('dtype')!r:.40} not allowed")
        shape = d.get("shape")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_DIM for s in shape)):
            raise WireError("shape", f"bad shape {shape!r:.80}")
        nb = d.get("nbytes")
        if isinstance(nb, bool) or not isinstance(nb, int):
            raise WireError("fields", f"{d['name']}: nbytes must be an integer")
        n = math.prod(shape) * dt.itemsize
        if n != nb or n != view.nbytes:
            raise WireError("size_mismatch",
                            f"{d['name']}: shape {shape} x {dt.itemsize} B = {n}, nbytes {nb}, frame {view.nbytes} B")
        buffers[d["name"]] = np.frombuffer(view, dtype=dt).reshape(shape) if n else np.zeros(shape, dt)
    return Message(kind=kind, source=source, buffers=buffers, meta=meta, seq=seq, epoch=epoch,
                   t_mono_ns=mono, t_wall_ns=wall, t_device_ns=dev, replay=replay, topic=topic, header=bytes(hb))

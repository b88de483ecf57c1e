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

Decoding validates everything before touching a buffer: known version and kind, dtype in an
allow-list, prod(shape) * itemsize == nbytes == len(buffer), total size under the limit. It never
allocates memory sized by the header (arrays are zero-copy views of the received frames). No pickle.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

VERSION = 1
KINDS = ("radar", "camera", "pair", "truth", "stats", "event")

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
    header = json.dumps(msg.header_dict(), separators=(",", ":")).encode()
    topic = (msg.topic or msg.kind).encode()
    return [topic, header] + [memoryview(a).cast("B") if a.nbytes else b"" for a in arrays]


def _frame_bytes(f) -> memoryview:
    if hasattr(f, "buffer"):  # zmq.Frame from recv_multipart(copy=False)
        return f.buffer
    return memoryview(f)


def _int(h: dict, key: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    v = h.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise WireError("fields", f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
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
        raise WireError("too_large", f"{total} bytes > limit {limits.max_message_bytes}")
    hb = views[1]
    if hb.nbytes > limits.max_header_bytes:
        raise WireError("header_size", f"{hb.nbytes} bytes > limit {limits.max_header_bytes}")
    try:
        h = json.loads(bytes(hb))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WireError("header_json", str(e)[:120]) from None
    if not isinstance(h, dict):
        raise WireError("header_json", "header is not a JSON object")
    if h.get("v") != VERSION:
        raise WireError("version", f"unknown schema version {h.get('v')!r} (this build speaks {VERSION})")
    kind = h.get("kind")
    if kind not in KINDS:
        raise WireError("kind", f"unknown kind {kind!r}")
    source = h.get("source")
    if not isinstance(source, str) or not source:
        raise WireError("fields", "source must be a non-empty string")
    seq, epoch = _int(h, "seq"), _int(h, "epoch")
    t = h.get("t")
    if not isinstance(t, dict):
        raise WireError("fields", "t must be an object")
    mono, wall = _int(t, "mono_ns", 0, 2**63 - 1), _int(t, "wall_ns", 0, 2**63 - 1)
    dev = t.get("device_ns")
    if dev is not None:
        dev = _int(t, "device_ns", -(2**63), 2**63 - 1)
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
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or d["name"] in buffers:
            raise WireError("fields", "each buffer needs a unique string name")
        dt = DTYPES.get(d.get("dtype")) if isinstance(d.get("dtype"), str) else None
        if dt is None:
            raise WireError("dtype", f"dtype {d.get('dtype')!r} not allowed")
        shape = d.get("shape")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 2**40 for s in shape)):
            raise WireError("shape", f"bad shape {shape!r}")
        n = math.prod(shape) * dt.itemsize
        if n != d.get("nbytes") or n != view.nbytes:
            raise WireError("size_mismatch",
                            f"{d['name']}: shape {shape} x {dt.itemsize} B = {n}, nbytes {d.get('nbytes')!r}, "
                            f"frame {view.nbytes} B")
        buffers[d["name"]] = np.frombuffer(view, dtype=dt).reshape(shape) if n else np.zeros(shape, dt)
    return Message(kind=kind, source=source, buffers=buffers, meta=meta, seq=seq, epoch=epoch,
                   t_mono_ns=mono, t_wall_ns=wall, t_device_ns=dev, replay=bool(h.get("replay", False)),
                   topic=bytes(views[0]).decode("ascii", "replace"), header=bytes(hb))

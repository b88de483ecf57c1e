"""Crash-safe session recording to MCAP, and recovery of a segment whose recorder was killed.

Each recorded endpoint is one MCAP channel (topic = the endpoint's name in [endpoints]). A message's data
is the exact ZeroMQ multipart message it arrived as, in a small self-describing framing
(message_encoding `radvis.multipart.v1`, docs/recording.md):

    u32 LE  n                 number of frames (>= 2: topic, header, buffers...)
    n x u64 LE               length of each frame
    frame bytes, concatenated

so `unframe(data)` gives back the frames byte for byte and `radvis.wire.decode` rebuilds the Message.
No pickle anywhere. MCAP fields: sequence = wire seq (mod 2^32), publish_time = header wall time,
log_time = recorder arrival on a monotonic timeline anchored to the wall clock at start (it never steps
backwards, so file order = log_time order = arrival order).

Loss bound on SIGKILL: every finished chunk is handed to the OS with an unbuffered write, and the open
chunk is finished at least every `fsync_s` (flush + fsync), so a killed recorder loses only the chunk
being built: at most `chunk_bytes` of message data (plus the message that overflowed it), and at most
`fsync_s` worth of messages. A power cut can additionally lose what was written since the last fsync.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import zmq
from mcap.records import Channel, Message as McapMessage, Metadata, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from radvis.log import StatsLine
from radvis.transport import Subscriber, keys_from_config
from radvis.wire import Limits, Message

log = logging.getLogger("radvis.record")

ENCODING = "radvis.multipart.v1"
PROFILE = "radvis"
LIBRARY = "radvis-record"
COMPRESSION = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------

def _nbytes(f) -> int:
    if hasattr(f, "buffer"):
        return f.buffer.nbytes
    return memoryview(f).nbytes


def frame(frames) -> bytes:
    """Multipart frames -> one MCAP message payload (see module docstring)."""
    views = [f.buffer if hasattr(f, "buffer") else memoryview(f) for f in frames]
    head = struct.pack(f"<I{len(views)}Q", len(views), *(v.nbytes for v in views))
    return b"".join([head, *views])


def unframe(data, max_frames: int = 1024) -> list[memoryview]:
    """Payload -> frames (zero-copy views). Raises ValueError on a payload that does not add up."""
    mv = memoryview(data)
    if mv.nbytes < 4:
        raise ValueError("payload shorter than its frame count")
    (n,) = struct.unpack_from("<I", mv, 0)
    if not 2 <= n <= max_frames or mv.nbytes < 4 + 8 * n:
        raise ValueError(f"bad frame count {n}")
    lengths = struct.unpack_from(f"<{n}Q", mv, 4)
    off = 4 + 8 * n
    if off + sum(lengths) != mv.nbytes:
        raise ValueError(f"frame lengths add up to {off + sum(lengths)} bytes, payload has {mv.nbytes}")
    out = []
    for ln in lengths:
        out.append(mv[off:off + ln])
        off += ln
    return out


# ---------------------------------------------------------------------------------------------
# Writing one segment
# ---------------------------------------------------------------------------------------------

class _Unbuffered:
    """File wrapper handing every write straight to the OS, so a finished chunk survives SIGKILL
    (mcap's Writer would otherwise wrap the file in an 8 KiB BufferedWriter)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.pos = 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        while mv.nbytes:
            n = os.write(self.fd, mv)
            mv = mv[n:]
            self.pos += n
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Segment:
    """One MCAP file: channels registered on first use, periodic flush+fsync, finish on close."""

    def __init__(self, path: Path, *, compression: str = "zstd", chunk_bytes: int = 1 << 20,
                 metadata: dict | None = None, channel_meta: dict | None = None):
        self.path = Path(path)
        self.file = _Unbuffered(self.path)
        self.writer = Writer(self.file, chunk_size=max(chunk_bytes, 1), compression=COMPRESSION[compression],
                             use_chunking=chunk_bytes > 0)
        self.writer.start(profile=PROFILE, library=LIBRARY)
        if metadata:
            self.writer.add_metadata("radvis.session", {k: str(v) for k, v in metadata.items()})
        self.channel_meta = channel_meta or {}
        self.channels: dict[str, int] = {}
        self.schemas: dict[str, int] = {}
        self.messages = 0
        self.t_open = time.monotonic()

    def channel(self, topic: str) -> int:
        cid = self.channels.get(topic)
        if cid is None:
            meta = {"framing": "u32 n, n x u64 lengths, frames: [wire topic, JSON header, buffers...]",
                    "wire_version": "1", "endpoint": topic, **self.channel_meta.get(topic, {})}
            cid = self.channels[topic] = self.writer.register_channel(topic, ENCODING, 0, meta)
        return cid

    def add(self, topic: str, data: bytes, *, log_time: int, publish_time: int, sequence: int) -> None:
        self.writer.add_message(self.channel(topic), log_time, data, publish_time, sequence & 0xFFFFFFFF)
        self.messages += 1

    def add_foxglove(self, out, *, log_time: int, sequence: int = 0) -> None:
        """A Foxglove well-known-schema record (capture.foxglove.Out) on its own channel, beside the exact ones."""
        cid = self.channels.get(out.topic)
        if cid is None:
            from capture.foxglove import schema
            name, enc, data, msg_enc = schema(out.schema)
            sid = self.schemas.get(name)
            if sid is None:
                sid = self.schemas[name] = self.writer.register_schema(name, enc, data)
            cid = self.channels[out.topic] = self.writer.register_channel(out.topic, msg_enc, sid, {"radvis": "foxglove"})
        self.writer.add_message(cid, log_time, out.data, out.t_ns, sequence & 0xFFFFFFFF)
        self.messages += 1

    @property
    def size(self) -> int:
        return self.file.tell()

    def sync(self) -> None:
        """Finish the open chunk and make everything so far durable."""
        self.writer.flush()
        self.file.fsync()

    def close(self, stats: dict | None = None) -> None:
        if stats:
            self.writer.add_metadata("radvis.record.stats", {k: json.dumps(v) for k, v in stats.items()})
        self.writer.finish()
        self.file.fsync()
        self.file.close()


# ---------------------------------------------------------------------------------------------
# Reading (finished or not)
# ---------------------------------------------------------------------------------------------

@dataclass
class ScanResult:
    messages: int = 0
    complete: bool = False  # the footer was reached
    error: str = ""  # why the scan stopped early (a truncated tail)
    channels: dict = field(default_factory=dict)
    schemas: dict = field(default_factory=dict)  # id -> Schema (the Foxglove channels'; multipart has none)
    metadata: list = field(default_factory=list)


def scan(path: str | Path, result: ScanResult | None = None, *,
         every_channel: bool = False) -> Iterator[tuple[Channel, McapMessage]]:
    """Every complete message of a segment's exact (`radvis.multipart.v1`) channels in file order, whether or
    not the recorder finished it; `every_channel=True` also yields the Foxglove channels written beside them.
    A truncated or corrupt tail ends the scan (reason in `result.error`); CRCs are checked so a chunk
    that was half-written is never returned. Also works for finished files (linear scan)."""
    res = result if result is not None else ScanResult()
    with open(path, "rb") as f:
        reader = StreamReader(f, validate_crcs=True, record_size_limit=1 << 31)
        try:
            for rec in reader.records:
                if isinstance(rec, Schema):
                    res.schemas[rec.id] = rec
                elif isinstance(rec, Channel):
                    res.channels[rec.id] = rec
                elif isinstance(rec, Metadata):
                    res.metadata.append(rec)
                elif isinstance(rec, McapMessage):
                    ch = res.channels.get(rec.channel_id)
                    if ch is None:
                        raise ValueError(f"message on unknown channel {rec.channel_id}")
                    if not every_channel and ch.message_encoding != ENCODING:
                        continue
                    res.messages += 1
                    yield ch, rec
            res.complete = True
        except Exception as e:  # EndOfFile, CRC or length errors: the unfinished tail
            res.error = f"{type(e).__name__}: {e}"[:300]


MCAP_MAGIC = b"\x89MCAP0\r\n"  # the first 8 bytes of every MCAP file, finished or not (mcap spec)


def check_mcap(path: str | Path) -> Path:
    """ValueError unless `path` starts with the MCAP magic: another file must not read as an empty session."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MCAP_MAGIC))
    if head != MCAP_MAGIC:
        what = "is empty" if not head else f"does not start with the MCAP magic ({MCAP_MAGIC.hex(' ')})"
        raise ValueError(f"{path}: not an MCAP recording: it {what}. Sessions are the .mcap segments `radvis "
                         f"record` writes (a directory of them, or one file)")
    return path


def segments(session: str | Path) -> list[Path]:
    """A session is a directory of segments (in name order = recording order) or a single file."""
    p = Path(session)
    if p.is_dir():
        files = sorted(x for x in p.glob("*.mcap") if not x.name.endswith(".recovered.mcap"))
        if not files:
            raise FileNotFoundError(f"{p}: no .mcap segments")
        return [check_mcap(f) for f in files]
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such session file or directory")
    return [check_mcap(p)]


def recover(path: str | Path, out: str | Path | None = None, compression: str = "zstd") -> dict:
    """Copy every complete message (and channel, metadata) of an unfinished segment into a new,
    finished and indexed MCAP file. Returns counts and the reason the original ended early."""
    path = check_mcap(path)  # nothing to salvage from a file that never was MCAP; write no empty output
    out = Path(out) if out else path.with_name(path.stem + ".recovered.mcap")
    if out.exists():
        out.unlink()
    res = ScanResult()
    seg = Segment(out, compression=compression)
    ids: dict[int, int] = {}
    sids: dict[int, int] = {0: 0}
    for ch, m in scan(path, res, every_channel=True):
        if ch.id not in ids:
            if ch.schema_id not in sids:
                sc = res.schemas[ch.schema_id]
                sids[ch.schema_id] = seg.writer.register_schema(sc.name, sc.encoding, sc.data)
            ids[ch.id] = seg.writer.register_channel(ch.topic, ch.message_encoding, sids[ch.schema_id], dict(ch.metadata))
        seg.writer.add_message(ids[ch.id], m.log_time, m.data, m.publish_time, m.sequence)
    for md in res.metadata:
        seg.writer.add_metadata(md.name, dict(md.metadata))
    seg.close({"recovered_from": str(path), "messages": res.messages, "tail": res.error or "complete"})
    return {"file": str(path), "out": str(out), "messages": res.messages, "complete": res.complete,
            "tail_error": res.error, "bytes_in": path.stat().st_size}


# ---------------------------------------------------------------------------------------------
# The recorder
# ---------------------------------------------------------------------------------------------

class Recorder:
    """Subscribe to endpoints (one SUB each, so a message's channel is known) and write segments."""

    def __init__(self, endpoints: dict[str, str], out: str | Path, *, compression: str = "zstd",
                 chunk_bytes: int = 1 << 20, rotate_s: float = 0, rotate_mb: float = 0, fsync_s: float = 1.0,
                 prefix: str = "radvis", hwm: int = 1000, limits: Limits = Limits(), curve=None,
                 metadata: dict | None = None, ctx: zmq.Context | None = None, foxglove=None):
        self.out = Path(out)
        self.fox = foxglove  # capture.foxglove.Converter: Foxglove channels beside the exact ones (None = off)
        self.fox_written = self.fox_bytes = 0
        self.out.mkdir(parents=True, exist_ok=True)
        self.opts = dict(compression=compression, chunk_bytes=chunk_bytes)
        self.rotate_s, self.rotate_bytes, self.fsync_s = rotate_s, rotate_mb * 1e6, fsync_s
        self.prefix, self.metadata = prefix, metadata or {}
        self.endpoints = dict(endpoints)
        self.subs = {name: Subscriber(ep, hwm=hwm, limits=limits, curve=curve, ctx=ctx, name=f"record.{name}")
                     for name, ep in self.endpoints.items()}
        self.poller = zmq.Poller()
        self.by_sock = {}
        for name, s in self.subs.items():
            self.poller.register(s.sock, zmq.POLLIN)
            self.by_sock[s.sock] = name
        # log_time: a monotonic timeline anchored to the wall clock once, so it never steps backwards
        self.wall0, self.mono0 = time.time_ns(), time.monotonic_ns()
        self.seg: Segment | None = None
        self.index = 0
        self.files: list[Path] = []
        self.written = 0
        self.synced = 0  # messages made durable (fsync) so far: a crash from now on loses none of them
        self.bytes = 0
        self.lag_ms = 0.0
        self.last_sync = time.monotonic()

    def _open(self) -> Segment:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        path = self.out / f"{self.prefix}-{stamp}-{self.index:04d}.mcap"
        self.index += 1
        meta = {**self.metadata, "segment": self.index - 1, "wall0_ns": self.wall0, "mono0_ns": self.mono0}
        chmeta = {n: {"endpoint_url": ep} for n, ep in self.endpoints.items()}
        self.seg = Segment(path, metadata=meta, channel_meta=chmeta, **self.opts)
        self.files.append(path)
        log.info("recording to %s", path)
        return self.seg

    def stats(self) -> dict:
        # one Subscriber per endpoint: its sequence tracker (radvis.sequence) counts that endpoint's gaps
        per = {n: s.stats.as_dict() for n, s in self.subs.items()}
        fox = {} if self.fox is None else {"foxglove": {"written": self.fox_written, "bytes": self.fox_bytes,
                                                        "errors": self.fox.counts["errors"]}}
        return {"written": self.written, "synced": self.synced, "bytes": self.bytes + self.fox_bytes,
                "segments": len(self.files), **fox,
                "lost": sum(p["lost"] for p in per.values()),
                "rejected": sum(sum(p["rejected"].values()) for p in per.values()),
                "lag_ms": round(self.lag_ms, 3), "per_endpoint": per}

    def _rotate_due(self) -> bool:
        s = self.seg
        return bool(s and ((self.rotate_s and time.monotonic() - s.t_open >= self.rotate_s)
                           or (self.rotate_bytes and s.size >= self.rotate_bytes)))

    def poll_once(self, timeout_ms: int = 100) -> int:
        """Receive and write whatever is ready (at most a burst); fsync/rotate when due. Returns count."""
        n = 0
        for sub in self.subs.values():
            sub.watch()  # re-connect an endpoint libzmq dropped (a frame over the socket ceiling)
        for sock, _ in self.poller.poll(timeout_ms):
            name = self.by_sock[sock]
            sub = self.subs[name]
            for _ in range(256):  # drain a burst per socket, then give the others a turn
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                msg = sub.accept(frames)  # validates, counts malformed + sequence gaps
                if msg is None:
                    continue
                self.write(name, frames, msg)
                n += 1
        now = time.monotonic()
        if self.seg and now - self.last_sync >= self.fsync_s:
            self.seg.sync()
            self.last_sync, self.synced = now, self.written
        self._rotate_if_due()
        return n

    def _rotate_if_due(self) -> None:
        if self._rotate_due():
            self.synced = self.written
            self.seg.close(self.stats())
            self.seg = None

    def drain(self, quiet_ms: int = 500, max_s: float = 3.0) -> int:
        """Before stopping: write what is still queued in the sockets (or on its way: a producer that
        stopped just before us), until they have been quiet for `quiet_ms`, at most `max_s` (a producer
        that keeps publishing cannot hold the stop forever). Returns the messages written."""
        n, end = 0, time.monotonic() + max_s
        while time.monotonic() < end:
            got = self.poll_once(quiet_ms)
            if not got:
                break
            n += got
        return n

    def write(self, name: str, frames, msg: Message) -> None:
        seg = self.seg or self._open()
        mono = time.monotonic_ns()
        data = frame(frames)
        seg.add(name, data, log_time=self.wall0 + (mono - self.mono0), publish_time=msg.t_wall_ns, sequence=msg.seq)
        self.written += 1
        self.bytes += len(data)
        if self.fox is not None:
            log_time = self.wall0 + (mono - self.mono0)
            for out in self.fox.convert(msg):
                seg.add_foxglove(out, log_time=log_time, sequence=msg.seq)
                self.fox_written += 1
                self.fox_bytes += len(out.data)
        self._rotate_if_due()  # per message: a burst must not grow a segment past record.rotate_mb
        if msg.t_mono_ns:
            lag = (mono - msg.t_mono_ns) / 1e6
            self.lag_ms = lag if self.written == 1 else 0.95 * self.lag_ms + 0.05 * lag

    def close(self) -> dict:
        st = self.stats()
        if self.seg:
            self.seg.close(st)
            self.seg = None
        for s in self.subs.values():
            s.close()
        return st


def _converter(cfg):
    """The Foxglove converter when record.foxglove is on (docs/recording.md, "Foxglove channels")."""
    if not cfg.record.foxglove:
        return None
    from capture.foxglove import Converter
    fc = cfg.foxglove
    if not fc.heatmap_db_max > fc.heatmap_db_min:
        from radvis.config import ConfigError
        raise ConfigError(f"{cfg.source}: foxglove.heatmap_db_max: expected a number above foxglove.heatmap_db_min "
                          f"({fc.heatmap_db_min}), got {fc.heatmap_db_max}")
    return Converter.from_config(fc)


def record_main(cfg, topics: list[str] | None = None, out: str | None = None, duration_s: float = 0,
                max_messages: int = 0, logger: logging.Logger | None = None) -> int:
    """`radvis record`: run until SIGINT/SIGTERM (or --duration / --max-messages), then finish the segment."""
    logger = logger or log
    rc = cfg.record
    names = topics or list(rc.topics)
    eps = {}
    for n in names:
        if not hasattr(cfg.endpoints, n):
            from radvis.config import ConfigError
            raise ConfigError(f"{cfg.source}: record.topics: expected endpoint names from [endpoints] "
                              f"({', '.join(vars(cfg.endpoints))}), got {n!r}")
        eps[n] = getattr(cfg.endpoints, n)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())  # finish the loop iteration, then close the file cleanly
    out = out or rc.out or str(Path(cfg.rig.run_dir) / "session")
    rec = Recorder(eps, out, compression=rc.compression, chunk_bytes=rc.chunk_bytes,
                   rotate_s=rc.rotate_s, rotate_mb=rc.rotate_mb, fsync_s=rc.fsync_s, prefix=rc.prefix,
                   hwm=cfg.transport.rcvhwm, limits=Limits.from_config(cfg.transport), curve=keys_from_config(cfg),
                   metadata={"rig": cfg.rig.name, "config": cfg.source, "topics": ",".join(names)},
                   foxglove=_converter(cfg))
    from radvis.control import announce_ready, stats_publisher
    spub = stats_publisher(cfg)
    line = StatsLine(logger, cfg.rig.stats_interval_s, rates=("written", "bytes"))
    logger.info("recording %s to %s", ", ".join(f"{n}={e}" for n, e in eps.items()), rec.out)
    announce_ready(cfg, "record", out=str(rec.out))  # subscribed: the rig starts the stages upstream of us
    t_end = time.monotonic() + duration_s if duration_s else None
    last_lost = 0
    try:
        while not stop.is_set():
            rec.poll_once(100)
            st = rec.stats()
            if line.due() and st["lost"] != last_lost:  # never silent: gaps are logged at the stats cadence
                logger.warning("sequence gaps: %d message(s) lost upstream so far", st["lost"])
                last_lost = st["lost"]
            shown = line.tick({k: v for k, v in st.items() if k != "per_endpoint"})
            if shown is not None and spub is not None:
                from radvis.wire import Message as WireMessage
                spub.send(WireMessage(kind="stats", source="record", meta={"stage": "record", **shown}))
            if (t_end and time.monotonic() >= t_end) or (max_messages and rec.written >= max_messages):
                break
        if stop.is_set():  # SIGINT/SIGTERM: everything published before it is recorded, within the
            rec.drain(max_s=0.8 * cfg.rig.stop_timeout_s)  # time the rig gives a stage to stop
    finally:
        st = rec.close()
        if spub is not None:
            spub.close()
    logger.info("recorded %d message(s) into %d segment(s); lost upstream %d, rejected %d; per endpoint %s",
                st["written"], st["segments"], st["lost"], st["rejected"], json.dumps(st["per_endpoint"]))
    print(json.dumps({"files": [str(f) for f in rec.files], **{k: v for k, v in st.items()}}))
    return 0

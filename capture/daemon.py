"""The capture loop both daemons share: open a frame source, stamp and publish every frame, reopen
the device with backoff when it vanishes, and never block on a slow subscriber.

A frame source is anything iterable that yields frames and has `.close()`:
  - radar (`drivers.ti.radar.open_radar(cfg.radar)`): RadarFrame(frame_number, t_device_ns, t_mono_ns,
    t_wall_ns, arrays: dict[str, ndarray], meta: dict)
  - camera (`drivers.camera.open_camera(cfg.camera)`): CameraFrame(image uint8 HxWx3 RGB, frame_number,
    t_device_ns, t_mono_ns, t_wall_ns, meta: dict)
The daemon does not know whether a real or an emulated device is behind the driver (sim/emulate.py serves
emulated ones at the same kind of address).
Opening raises, or iteration raises / ends, when the device is unplugged or stops streaming: both count as
a device error and lead to a reopen after `reconnect_backoff_s` (doubling up to `reconnect_max_s`).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from radvis.config import ConfigError
from radvis.control import announce_ready, control_publisher
from radvis.log import StatsLine
from radvis.transport import Publisher, publisher_from_config
from radvis.wire import Message

log = logging.getLogger("radvis.capture")


class Shutdown(Exception):
    """Raised from the SIGINT/SIGTERM handler so a source blocked in a device read stops at once."""


def load_factory(spec: str) -> Callable:
    """'package.module:function' -> the function (how a custom driver or a test fake is plugged in)."""
    mod, _, func = spec.partition(":")
    if not mod or not func:
        raise ValueError(f"expected MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(mod), func)


def radar_opener(cfg) -> Callable[[], object]:
    """open() -> radar frame source: capture.radar_open(cfg) if set, else the TI driver on [radar]."""
    if cfg.capture.radar_open:
        factory = load_factory(cfg.capture.radar_open)
        return lambda: factory(cfg)
    from drivers.ti.radar import open_radar
    return lambda: open_radar(cfg.radar, config_source=cfg.source)


def camera_opener(cfg) -> Callable[[], object]:
    """open() -> camera frame source: capture.camera_open(cfg) if set, else the driver camera.driver names."""
    if cfg.capture.camera_open:
        factory = load_factory(cfg.capture.camera_open)
        return lambda: factory(cfg)
    from drivers.camera import open_camera
    c = cfg.capture
    return lambda: open_camera(cfg.camera, reconnect_backoff_s=c.reconnect_backoff_s, reconnect_max_s=c.reconnect_max_s)


# ---------------------------------------------------------------------------------------------
# Frame -> wire message
# ---------------------------------------------------------------------------------------------

def radar_message(frame, source: str) -> Message:
    meta = dict(frame.meta or {})
    meta.setdefault("frame_number", int(frame.frame_number))
    return Message(kind="radar", source=source, buffers=dict(frame.arrays), meta=meta,
                   t_device_ns=frame.t_device_ns, t_mono_ns=int(frame.t_mono_ns or 0),
                   t_wall_ns=int(frame.t_wall_ns or 0))


def camera_message(frame, source: str, encoding: str = "raw", jpeg_quality: int = 90) -> Message:
    img = np.asarray(frame.image)
    h, w = img.shape[:2]
    meta = dict(frame.meta or {})
    meta.update(width=int(w), height=int(h), frame_number=int(frame.frame_number))
    if encoding == "jpeg":
        import cv2  # only needed when the wire carries JPEG
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise ValueError("JPEG encoding failed")
        image, meta["encoding"] = buf.reshape(-1), "jpeg"
    else:
        image, meta["encoding"] = img, "raw"
    return Message(kind="camera", source=source, buffers={"image": image}, meta=meta,
                   t_device_ns=frame.t_device_ns, t_mono_ns=int(frame.t_mono_ns or 0),
                   t_wall_ns=int(frame.t_wall_ns or 0))


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@dataclass
class CaptureStats:
    frames: int = 0  # read from the device
    sent: int = 0  # published
    bytes: int = 0
    dropped: int = 0  # refused at the publisher's high-water mark (a slow subscriber)
    device_errors: int = 0  # open failures, read errors, streams that ended
    reconnects: int = 0  # successful reopens after an error
    bad_frames: int = 0  # frames that could not be turned into a message (skipped)
    lag_ms: float = 0.0  # host arrival -> published, exponential average
    last_error: str = ""
    device: dict | None = None  # the open driver's own counters (parser rejects, lost bytes, ...)

    def as_dict(self) -> dict:
        d = {"frames": self.frames, "sent": self.sent, "bytes": self.bytes, "dropped": self.dropped,
             "device_errors": self.device_errors, "reconnects": self.reconnects,
             "bad_frames": self.bad_frames, "lag_ms": round(self.lag_ms, 3), "last_error": self.last_error}
        if self.device is not None:
            d["device"] = self.device
        return d


def _sleep(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


def run_capture(kind: str, open_source: Callable[[], object], to_message: Callable[[object], Message],
                pub: Publisher, *, backoff_s: float = 0.5, backoff_max_s: float = 10.0,
                stop: threading.Event | None = None, max_frames: int = 0,
                stats_line: StatsLine | None = None, stats_pub: Publisher | None = None,
                stage: str = "") -> CaptureStats:
    """Publish frames from `open_source()` until `stop` is set, `max_frames` are sent, or Shutdown.
    Device errors never end the loop: the source is closed and reopened after a doubling backoff."""
    stop = stop or threading.Event()
    st = CaptureStats()
    backoff = backoff_s
    had_error = False
    stage = stage or kind

    live = {"src": None}

    def report(force: bool = False) -> None:
        st.dropped = pub.stats.dropped_hwm
        if (force or (stats_line is not None and stats_line.due())) and live["src"] is not None:
            st.device = _device_stats(live["src"])
        d = st.as_dict()
        line = stats_line.tick(d, force=force) if stats_line else None
        if line is not None and stats_pub is not None:
            m = Message(kind="stats", source=stage, meta={"stage": stage, **line})
            stats_pub.send(m)  # never blocks; nobody listening is fine

    try:
        while not stop.is_set() and not (max_frames and st.frames >= max_frames):
            src = None
            try:
                src = open_source()
                live["src"] = src
                if had_error:
                    st.reconnects += 1
                    log.info("%s: device reopened after %d error(s)", kind, st.device_errors)
                for frame in src:
                    try:
                        msg = to_message(frame)
                    except Exception as e:  # a frame we cannot encode is skipped, not fatal
                        st.bad_frames += 1
                        log.warning("%s: skipped frame: %r", kind, e)
                        continue
                    nbytes = sum(a.nbytes for a in msg.buffers.values())
                    with signals_deferred():  # a frame handed to ZeroMQ is a frame counted as sent
                        st.frames += 1
                        if pub.send(msg):  # NOBLOCK: a full queue drops (counted), the device never waits
                            st.sent += 1
                            st.bytes += nbytes
                    lag = (time.monotonic_ns() - msg.t_mono_ns) / 1e6
                    st.lag_ms = lag if st.frames <= 1 else 0.95 * st.lag_ms + 0.05 * lag
                    backoff = backoff_s  # streaming again: next failure starts from the first delay
                    report()
                    if stop.is_set() or (max_frames and st.frames >= max_frames):
                        break
                else:
                    if not stop.is_set():
                        raise EOFError("stream ended")
            except (Shutdown, ConfigError):  # a configuration mistake does not heal by reopening
                raise
            except Exception as e:  # the device vanished or misbehaved: reopen, never die
                st.device_errors += 1
                st.last_error = repr(e)[:200]
                had_error = True
                log.warning("%s: device error (%s); reopening in %.2f s", kind, st.last_error, backoff)
                if src is not None:
                    st.device = _device_stats(src)
                    _close(src)
                    src = None
                    live["src"] = None
                report()
                _sleep(stop, backoff)
                backoff = min(max(backoff * 2, 0.01), backoff_max_s)
            finally:
                if src is not None:
                    _close(src)
    except Shutdown:
        log.info("%s: shutting down", kind)
    report(force=True)
    return st


def _device_stats(src) -> dict | None:
    """A JSON-safe copy of the driver's own counters."""
    try:
        dev = getattr(src, "stats", None)
        if dev is None:
            return None
        return json.loads(json.dumps(dev if isinstance(dev, dict) else vars(dev),
                                     default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    except Exception as e:  # counters are diagnostics: never let them break capture
        log.debug("device stats failed: %r", e)
        return None


def _close(src) -> None:
    try:
        src.close()
    except Exception as e:  # closing a vanished device may fail; that must not stop the reopen
        log.debug("close failed: %r", e)


class _Deferral:
    """While `depth` > 0 the stop handler only sets the stop event instead of raising Shutdown."""
    depth = 0


@contextlib.contextmanager
def signals_deferred():
    """A stop (SIGINT/SIGTERM) inside this block sets the stop event without raising Shutdown; the loop sees
    the event right after the block. The handler raises wherever the main thread is: between `pub.send`
    returning and `sent += 1` that delivered a frame nobody counted (the subscriber got it, the final stats
    line said one fewer). Blocking the signals would not do: a process-directed signal is taken by any
    thread that does not block it (ZeroMQ's I/O threads), and CPython then runs the handler in the main
    thread at its next bytecode, inside the block all the same."""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM: set `stop` and raise Shutdown in the main thread (interrupts blocking reads), except
    inside `signals_deferred()`, where setting `stop` is all."""
    def handler(signum, frame):
        if not stop.is_set():
            stop.set()
            if _Deferral.depth:
                return
            raise Shutdown(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def check_config(cfg, kind: str) -> None:
    """The built-in drivers' configuration checks (custom openers, capture.*_open, check their own)."""
    if kind == "radar" and not cfg.capture.radar_open:
        from drivers.ti.radar import check_config as check_radar
        check_radar(cfg.radar, cfg.source)
    elif kind == "camera" and not cfg.capture.camera_open:
        from drivers.camera import check_config as check_camera
        check_camera(cfg.camera, cfg.source)


def capture_main(cfg, kind: str, *, max_frames: int = 0, logger: logging.Logger | None = None) -> int:
    """`radvis capture radar|camera`."""
    logger = logger or log
    # per-frame numpy work is on small matrices, where BLAS thread pools only add contention with the
    # other stages on the same cores (measured 10-80x slower matmuls on a loaded 2-core machine)
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    check_config(cfg, kind)  # ConfigError: exit 2 naming the key, before anything is bound or retried
    if kind == "radar":
        opener = radar_opener(cfg)
        source = cfg.radar.source
        to_msg = lambda f: radar_message(f, source)  # noqa: E731
    else:
        opener = camera_opener(cfg)
        c = cfg.camera
        to_msg = lambda f: camera_message(f, c.source, c.encoding, c.jpeg_quality)  # noqa: E731
    stop = threading.Event()
    install_signal_handlers(stop)
    pub = publisher_from_config(cfg, kind)
    spub = control_publisher(cfg)
    try:
        announce_ready(cfg, f"capture-{kind}", endpoint=pub.endpoint)
        if cfg.capture.wait_subscribers:
            ok = pub.wait_for_subscribers(cfg.capture.wait_subscribers, cfg.transport.slow_joiner_s, topic=kind)
            logger.info("%s: publishing on %s (%s)", kind, pub.endpoint,
                        "subscribers ready" if ok else "no subscriber yet, sending anyway")
        st = run_capture(kind, opener, to_msg, pub,
                         backoff_s=cfg.capture.reconnect_backoff_s, backoff_max_s=cfg.capture.reconnect_max_s,
                         stop=stop, max_frames=max_frames,
                         stats_line=StatsLine(logger, cfg.rig.stats_interval_s, rates=("frames", "bytes")),
                         stats_pub=spub, stage=f"capture-{kind}")
    except Shutdown:
        st = None
    finally:
        pub.close()
        if spub is not None:
            spub.close()
    if st is not None:
        logger.info("%s: done: %s", kind, st.as_dict())
    return 0

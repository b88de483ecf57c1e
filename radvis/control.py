"""The control plane: what stages tell the rig, on `endpoints.control`.

The rig supervisor binds a SUB socket there; every stage connects a publisher (many to one, so any number of
stages share the endpoint) and sends
  - `stats`  its periodic counters (meta {"stage": ..., counters}), for the status table;
  - `event`  with meta {"event": "ready", "stage": ..., "pid": ...} once it is subscribed or listening: the
             supervisor starts the next stage only after this message (never by matching log text);
  - `truth`  (emulated devices) the scene's ground truth per frame, which the supervisor republishes on
             `endpoints.truth` (ZeroMQ has no broker: two emulator processes cannot both bind one endpoint,
             so the rig relays them, the zguide's forwarder pattern).
Everything here is best effort: a stage runs without a supervisor (the messages then go nowhere).
"""
from __future__ import annotations

import logging
import os
import threading

from radvis.transport import Publisher, keys_from_config
from radvis.wire import Message

log = logging.getLogger("radvis.control")

READY = "ready"


def control_publisher(cfg, hwm: int = 1000) -> Publisher | None:
    """A publisher connected to the control endpoint (which the supervisor binds), or None if it cannot be made."""
    try:
        return Publisher(cfg.endpoints.control, bind=False, hwm=hwm, curve=keys_from_config(cfg))
    except Exception as e:  # the control plane is best-effort; a stage must run without it
        log.warning("no control publisher on %s: %r", cfg.endpoints.control, e)
        return None


def stats_publisher(cfg) -> Publisher | None:
    """The control publisher a stage sends its stats on. It also connects to `endpoints.view_stats`, which
    `radvis view` binds (a PUB sends only to connected peers that subscribed, so a rig without a view loses
    nothing by it)."""
    pub = control_publisher(cfg, hwm=100)
    if pub is not None and getattr(cfg.endpoints, "view_stats", ""):
        try:
            pub.sock.connect(cfg.endpoints.view_stats)
        except Exception as e:  # best effort, like the control plane itself
            log.warning("stats not sent to the view at %s: %r", cfg.endpoints.view_stats, e)
    return pub


def ready_message(stage: str, **info) -> Message:
    return Message(kind="event", source=stage, meta={"event": READY, "stage": stage, "pid": os.getpid(), **info})


def is_ready(msg: Message) -> bool:
    return msg.kind == "event" and isinstance(msg.meta, dict) and msg.meta.get("event") == READY


def send_ready(pub: Publisher | None, stage: str, wait_s: float = 2.0, **info) -> bool:
    """Announce `stage` ready on an existing control publisher. Waits (at most `wait_s`) for the supervisor's
    subscription first: a PUB drops what it sends before a subscriber is connected."""
    if pub is None:
        return False
    if not pub.wait_for_subscribers(1, wait_s):
        log.debug("%s: nobody on the control endpoint; ready not announced", stage)
        return False
    return pub.send(ready_message(stage, **info))


def announce_ready(cfg, stage: str, **info) -> threading.Thread:
    """Announce `stage` ready from a short-lived publisher on a background thread, so the stage goes on at
    once (and one running without a supervisor never waits for one)."""
    def run():
        pub = control_publisher(cfg, hwm=10)
        try:
            send_ready(pub, stage, cfg.transport.slow_joiner_s, **info)
        except Exception as e:  # e.g. the process is exiting and its ZeroMQ context is gone
            log.debug("%s: ready not announced: %r", stage, e)
        finally:
            if pub is not None:
                try:
                    pub.close()
                except Exception:
                    pass
    t = threading.Thread(target=run, name=f"{stage}-ready", daemon=True)
    t.start()
    return t

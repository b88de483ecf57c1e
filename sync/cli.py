"""`radvis sync`: pair radar and camera frames from the capture daemons (see docs/sync.md)."""
from __future__ import annotations


def _sync(args) -> int:
    import signal
    import threading

    from radvis.log import setup
    from sync.daemon import run
    cfg = args.cfg
    setup(cfg.rig.log_level, "radvis.sync")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():  # the rig stops stages with SIGTERM
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return run(cfg, duration_s=args.duration, stop=stop)


def register(sub, common) -> None:
    p = sub.add_parser("sync", parents=[common],
                       help="pair radar and camera frames (clock models + matcher) and publish them on endpoints.pairs",
                       description="Subscribe to endpoints.radar and endpoints.camera, map each sensor's device clock to "
                                   "host time, pair each radar frame with the nearest camera frame within sync.max_skew_ms "
                                   "and publish `pair` messages on endpoints.pairs. Works the same on replayed sessions.")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.set_defaults(func=_sync)

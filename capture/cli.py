"""`radvis capture radar|camera`, `radvis record [recover]`, `radvis replay`, `radvis export`, `radvis view`."""
from __future__ import annotations

import json
import sys

from radvis import log as rlog


def _flush_zmq(fn):
    """Terminate the ZeroMQ context before the interpreter exits: zero-copy sends still queued would
    otherwise be freed by libzmq after Python has torn down (a crash at exit). Waits at most 5 s."""
    def run(args) -> int:
        import zmq
        try:
            return fn(args)
        except zmq.ZMQError as e:  # e.g. an endpoint already bound by a live daemon: say which, no traceback
            print(f"radvis {args.command}: ZeroMQ: {e} (check [endpoints] in {args.cfg.source})", file=sys.stderr)
            return 1
        finally:
            import zmq
            zmq.Context.instance().destroy(linger=5000)
    run.__name__ = fn.__name__
    return run


@_flush_zmq
def _capture(args) -> int:
    from capture.daemon import capture_main
    logger = rlog.setup(args.cfg.rig.log_level, f"capture-{args.kind}")
    try:
        opener_ok = True
        from capture.daemon import camera_opener, radar_opener
        (radar_opener if args.kind == "radar" else camera_opener)(args.cfg)
    except (ImportError, AttributeError, ValueError) as e:
        opener_ok = False
        print(f"radvis capture {args.kind}: no frame source: {e!r} (set capture.{args.kind}_open=MODULE:FUNCTION "
              f"or install the driver)", file=sys.stderr)
    if not opener_ok:
        return 2  # a configuration problem: the supervisor does not restart exit code 2
    return capture_main(args.cfg, args.kind, max_frames=args.frames, logger=logger)


@_flush_zmq
def _record(args) -> int:
    from capture.record import record_main
    logger = rlog.setup(args.cfg.rig.log_level, "record")
    return record_main(args.cfg, topics=args.topics, out=args.out, duration_s=args.duration,
                       max_messages=args.max_messages, logger=logger)


def _recover(args) -> int:
    from capture.record import recover
    rlog.setup(args.cfg.rig.log_level, "record")
    try:
        res = recover(args.file, args.out, compression=args.cfg.record.compression)
    except (OSError, ValueError) as e:
        print(f"radvis record recover: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res))
    return 0


@_flush_zmq
def _replay(args) -> int:
    from capture import replay
    logger = rlog.setup(args.cfg.rig.log_level, "replay")
    if args.rate <= 0:
        print("radvis replay: --rate must be > 0", file=sys.stderr)
        return 2
    if bool(args.cruw) == bool(args.session):
        print("radvis replay: give either SESSION or --cruw PATH --seq NAME", file=sys.stderr)
        return 2
    stop = replay.install_stop()
    kw = dict(rate=args.rate, as_fast=args.max, start_s=args.start, end_s=args.end, loop=args.loop,
              wait_subscribers=args.wait_subscribers, stop=stop)
    try:
        if args.cruw:
            if not args.seq:
                print("radvis replay: --cruw needs --seq NAME", file=sys.stderr)
                return 2
            st = replay.replay_cruw(args.cfg, args.cruw, args.seq, **kw)
        else:
            st = replay.replay_session(args.cfg, args.session, topics=args.topics, **kw)
    except (FileNotFoundError, ValueError) as e:
        print(f"radvis replay: {e}", file=sys.stderr)
        return 1
    logger.info("replay done: %s", st.as_dict())
    print(json.dumps(st.as_dict()))
    return 0


def _export(args) -> int:
    from capture.export import export_main
    rlog.setup(args.cfg.rig.log_level, "export")
    return export_main(args)


def _view(args) -> int:
    if args.layout:
        from capture.foxglove_layout import layout_json
        sys.stdout.write(layout_json())
        return 0
    return _serve_view(args)


@_flush_zmq
def _serve_view(args) -> int:
    from capture.view import view_main
    logger = rlog.setup(args.cfg.rig.log_level, "view")
    return view_main(args.cfg, host=args.host, port=args.port, duration_s=args.duration, logger=logger)


def register(sub, common) -> None:
    p = sub.add_parser("capture", help="run a capture daemon: publish stamped device frames")
    csub = p.add_subparsers(dest="capture_kind", metavar="DEVICE", required=True)
    for kind in ("radar", "camera"):
        c = csub.add_parser(kind, parents=[common], help=f"capture the configured {kind} (real or emulated)")
        c.add_argument("--frames", type=int, default=0, help="stop after this many frames (0 = run until signalled)")
        c.set_defaults(func=_capture, kind=kind)

    r = sub.add_parser("record", parents=[common], help="record endpoints to MCAP segments (crash-safe)")
    r.add_argument("--topics", nargs="+", default=None, metavar="NAME",
                   help="endpoint names to record (default: record.topics)")
    r.add_argument("--out", default=None, metavar="DIR", help="segment directory (default: record.out)")
    r.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0 = until signalled)")
    r.add_argument("--max-messages", type=int, default=0, help="stop after N messages (0 = no limit)")
    r.set_defaults(func=_record)
    rsub = r.add_subparsers(dest="record_command", metavar="ACTION")
    rc = rsub.add_parser("recover", parents=[common], help="salvage every complete message of an unfinished segment")
    rc.add_argument("file")
    rc.add_argument("--out", default=None, help="output file (default: FILE's name + .recovered.mcap)")
    rc.set_defaults(func=_recover)

    y = sub.add_parser("replay", parents=[common], help="republish a recorded session (or a CRUW sequence) as live")
    y.add_argument("session", nargs="?", default=None, help="session directory of .mcap segments, or one .mcap file")
    y.add_argument("--cruw", default=None, metavar="PATH", help="CRUW/ROD2021 data root instead of a recording")
    y.add_argument("--seq", default=None, metavar="NAME", help="CRUW sequence name, e.g. 2019_04_09_BMS1001")
    y.add_argument("--topics", nargs="+", default=None, metavar="NAME", help="recorded topics to replay (default: all)")
    y.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice real time)")
    y.add_argument("--max", action="store_true", help="as fast as subscribers take them (blocks, never drops)")
    y.add_argument("--start", type=float, default=0.0, help="skip the first S seconds")
    y.add_argument("--end", type=float, default=0.0, help="stop at S seconds from the start (0 = end)")
    y.add_argument("--loop", action="store_true", help="start again at the end until signalled")
    y.add_argument("--wait-subscribers", type=int, default=1, metavar="N",
                   help="wait (transport.slow_joiner_s at most) for N subscribers per endpoint first")
    y.set_defaults(func=_replay)

    x = sub.add_parser("export", parents=[common], help="write a recorded session's pairs as a CRUW (ROD2021) dataset",
                       description="One frame per recorded radar-camera pair: RADAR_RA_H/*.npy exactly as recorded, "
                                   "IMAGES_0/*.jpg, annotations from the emulator's ground truth when the session has "
                                   "it. The result trains with `radvis learn offline --data DIR` (docs/recording.md).")
    x.add_argument("session", help="session directory of .mcap segments, or one .mcap file")
    x.add_argument("--out", required=True, metavar="DIR", help="dataset root (created; another session exported into "
                                                               "the same DIR adds its sequences)")
    x.add_argument("--start", type=float, default=0.0, help="skip the first S seconds of the session")
    x.add_argument("--end", type=float, default=0.0, help="stop at S seconds from the session's start (0 = end)")
    x.add_argument("--stride", type=int, default=1, metavar="N", help="export every N-th pair (default 1: all)")
    x.add_argument("--seq-seconds", type=float, default=60.0, metavar="S",
                   help="start a new sequence after S seconds of radar time (default 60; also at radar restarts)")
    x.add_argument("--name", default="RIG", help="sequence code: sequences are named YYYY_MM_DD_<NAME>0000, ...")
    x.add_argument("--jpeg-quality", type=int, default=95, metavar="Q",
                   help="JPEG quality for camera frames recorded raw (JPEG frames are written as recorded)")
    x.set_defaults(func=_export)

    v = sub.add_parser("view", parents=[common], help="serve the live rig to the Foxglove app (WebSocket protocol)",
                       description="Camera, range-azimuth heatmap, radar points, pairs (sync skew), ground truth and "
                                   "every stage's stats (learner loss and probe accuracy) as Foxglove topics. Open "
                                   "Foxglove -> Open connection -> Foxglove WebSocket -> ws://HOST:PORT; layout in "
                                   "docs/foxglove-layout.json. Never slows capture: slow viewers lose frames.")
    v.add_argument("--host", default=None, help="bind address (default view.host, 127.0.0.1)")
    v.add_argument("--port", type=int, default=None, help="TCP port (default view.port, 8765; 0 = any free port)")
    v.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0 = until signalled)")
    v.add_argument("--layout", action="store_true",
                   help="print the Foxglove layout (docs/foxglove-layout.json: camera, heatmap, points, learner "
                        "loss and probe accuracy, sync skew) and exit")
    v.set_defaults(func=_view)

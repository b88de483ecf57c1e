"""`radvis synth`: write a CRUW ROD2021-layout synthetic dataset (sim/synth.py); `radvis emulate radar|camera`:
an emulated device as its own stage (sim/emulate.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _synth(args) -> int:
    from radvis.config import resolve_path
    from sim import synth
    from sim.worlds import get_world
    try:
        world = get_world(args.world or args.cfg.scene.world)
        size = synth.parse_size(args.image_size) if args.image_size else world.image_size
    except ValueError as e:
        print(f"radvis synth: {e}", file=sys.stderr)
        return 2
    try:
        chirps = [int(c) for c in args.chirps.split(",")] if args.chirps else list(synth.CHIRP_IDS)
    except ValueError:
        print(f"radvis synth: --chirps: expected comma-separated loop indices (e.g. 0,64,128,192), got {args.chirps!r}",
              file=sys.stderr)
        return 2
    if args.sequences < 1 or args.frames < 1:
        print(f"radvis synth: --sequences and --frames must be >= 1, got {args.sequences} and {args.frames}",
              file=sys.stderr)
        return 2
    from drivers.ti.cfg import CfgError
    try:
        summary = synth.synth(args.out, sequences=args.sequences, frames=args.frames, seed=args.seed, image_size=size,
                              workers=args.workers, cfg_path=resolve_path(args.radar_cfg or args.cfg.radar.cfg,
                                                                      args.cfg.source),
                              noise=args.cfg.scene.noise, world=world.name,
                              progress=not args.quiet, chirps=chirps, frame_step=args.frame_step,
                              radar_frame_of=args.radar_frame)
    except (CfgError, ValueError) as e:
        print(f"radvis synth: radar cfg: {e}", file=sys.stderr)
        return 2
    labels = ", ".join(f"{k} {v}" for k, v in sorted(summary["frame_labels"].items()))
    print(f"radvis synth: {len(summary['sequences'])} sequences, {summary['frames']} frames ({labels}), world "
          f"{world.name} at {size[0]}x{size[1]}, in {summary['elapsed_s']} s -> {args.out}")
    if not args.no_preview:
        print(f"radvis synth: preview {synth.preview(args.out)}")
    if args.probe:
        try:
            res = synth.probe(args.out, every=args.probe_every)
        except ValueError as e:
            print(f"radvis synth: {e}", file=sys.stderr)
            return 2
        summary["probe"] = res
        (Path(args.out) / "synth_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"radvis synth: radar-only probe accuracy {res['accuracy']:.3f} (folds "
              f"{', '.join(f'{a:.3f}' for a in res['folds'])}; majority baseline {res['majority_baseline']:.3f}; "
              f"{res['frames']} frames of {res['sequences']} sequences)")
    return 0


def _emulate(args) -> int:
    import zmq

    from radvis import log as rlog
    from sim import emulate
    logger = rlog.setup(args.cfg.rig.log_level, f"emulate-{args.device}")
    try:
        if args.device == "radar":
            return emulate.emulate_radar(args.cfg, logger)
        return emulate.emulate_camera(args.cfg, logger)
    finally:
        zmq.Context.instance().destroy(linger=2000)   # queued truth/stats go out before the interpreter exits


def register(sub, common) -> None:
    e = sub.add_parser("emulate", help="run an emulated device as its own stage, reached like hardware")
    esub = e.add_subparsers(dest="emulate_device", metavar="DEVICE", required=True)
    r = esub.add_parser("radar", parents=[common],
                        help="the TI board on radar.cli_port / data_port (+ the DCA1000 at radar.dca_board)")
    r.set_defaults(func=_emulate, device="radar")
    c = esub.add_parser("camera", parents=[common], help="an MJPEG camera (mjpg-streamer protocol) at camera.url")
    c.set_defaults(func=_emulate, device="camera")

    p = sub.add_parser("synth", parents=[common],
                       help="write a synthetic dataset in the CRUW ROD2021 layout (scene simulator)")
    p.add_argument("--out", required=True, help="dataset root to create")
    p.add_argument("--sequences", type=int, default=10,
                   help="number of sequences; kinds cycle pedestrian, cyclist, car, empty, mixed (default 10)")
    p.add_argument("--frames", type=int, default=300, help="frames per sequence at 30 fps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--image-size", default="", help="camera image WIDTHxHEIGHT (default: the world's, 320x192 for "
                                                     "the default world)")
    p.add_argument("--world", default="", help="named world (sim/worlds.py): default, dusk, snow, blocky; palette, "
                                               "light, object build and style, sensor mounting (default: scene.world "
                                               "of the config)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering sequences in parallel (default 1)")
    p.add_argument("--chirps", default="", help="comma-separated loops whose RA maps are written per frame (default "
                   "0,64,128,192 as ROD2021; a rig's held-out set uses its radar.ra_chirps)")
    p.add_argument("--radar-frame", choices=["rod2021", "cfg"], default="rod2021",
                   help="rod2021 (default): the cfg's chirp in ROD2021's 255-loop frame, raw chirps; cfg: what a rig "
                        "with that cfg streams (its loops and its clutterRemoval setting)")
    p.add_argument("--frame-step", type=int, default=1, help="keep every Nth frame of the 30 fps sequence (default 1); "
                   "file names keep the true frame index")
    p.add_argument("--radar-cfg", default="", help="TI .cfg of the chirp (default: radar.cfg of the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-preview", action="store_true", help="do not write DIR/preview.png")
    p.add_argument("--probe", action="store_true",
                   help="afterwards, train/test the radar-only logistic-regression probe (difficulty check); "
                        "its result goes into synth_summary.json")
    p.add_argument("--probe-every", type=int, default=3, help="probe every Nth frame (default 3)")
    p.set_defaults(func=_synth)

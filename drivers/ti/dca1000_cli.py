"""`radvis dca1000 parse FILE.pcap|.pcapng|.bin --cfg CFG [--json]`: frames and control traffic of a capture.

drivers/ti/cli.py calls `register(sub, common)`. With --json, one JSON object per line: command
replies/requests as they occur, one object per frame (number, completeness, lost bytes, shape, the first
complex samples and the mean power), then a final stats object."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _profile(args):
    from drivers.ti.cfg import CfgError, parse_cfg
    from radvis.config import resolve_path
    path = Path(args.chirp_cfg) if args.chirp_cfg else resolve_path(args.cfg.radar.cfg, args.cfg.source)
    try:
        return parse_cfg(path).profile
    except CfgError as e:
        print(f"radvis dca1000 parse: {e}", file=sys.stderr)
        return None


def frame_record(frame, profile, iq_order: str, n_first: int = 4) -> dict:
    from drivers.ti.dca1000_receiver import adc_from_raw
    adc = adc_from_raw(frame.data, profile, iq_order)
    flat = adc.reshape(-1)
    return {"type": "frame", "frame_number": frame.frame_number, "complete": frame.complete,
            "lost_bytes": frame.lost_bytes, "packets": frame.packets, "t_ns": frame.t_last_ns,
            "shape": list(adc.shape), "first_samples": [[float(z.real), float(z.imag)] for z in flat[:n_first]],
            "mean_power": float(np.mean(np.abs(flat) ** 2))}


def _parse(args) -> int:
    from drivers.ti.dca1000_files import CaptureError, CaptureParser, read_bin
    from drivers.ti.dca1000_receiver import raw_frame_bytes
    if not Path(args.file).is_file():  # the input's own error first, not a cfg error that hides it
        why = "is a directory" if Path(args.file).is_dir() else "no such file"
        print(f"radvis dca1000 parse: {args.file}: {why}", file=sys.stderr)
        return 2
    profile = _profile(args)
    if profile is None:
        return 2
    iq = args.iq_order or args.cfg.radar.iq_order
    iq = "qi" if iq == "auto" else iq
    try:
        frame_bytes = raw_frame_bytes(profile)
    except ValueError as e:
        print(f"radvis dca1000 parse: {e}", file=sys.stderr)
        return 2
    out = sys.stdout

    def emit(rec: dict) -> None:
        if args.json:
            out.write(json.dumps(rec) + "\n")
        elif rec["type"] == "frame":
            out.write(f"frame {rec['frame_number']}: {'complete' if rec['complete'] else 'INCOMPLETE'}, "
                      f"lost {rec['lost_bytes']} B, {rec['packets']} packets, shape {tuple(rec['shape'])}\n")
        elif rec["type"] == "stats":
            out.write("stats: " + ", ".join(f"{k}={v}" for k, v in rec["receiver"].items()) + "\n")
        else:
            extra = rec.get("version") or rec.get("flags") or rec.get("error", "")
            out.write(f"{rec['type']}: {rec.get('name', '')} status 0x{rec.get('status', 0):04X} {extra}\n")

    path = Path(args.file)
    try:
        if path.suffix.lower() == ".bin":
            frames, asm = read_bin(path, frame_bytes, args.bin_format)
            for f in frames:
                emit(frame_record(f, profile, iq))
            emit({"type": "stats", "frame_bytes": frame_bytes, "iq_order": iq, "receiver": asm.stats.to_dict()})
        else:
            parser = CaptureParser(frame_bytes, data_port=args.data_port, config_port=args.config_port)
            for ev in parser.events(path):
                if ev.kind == "frame":
                    emit(frame_record(ev.frame, profile, iq))
                else:
                    rec = ev.to_dict()
                    rec["type"] = rec.pop("kind")
                    emit(rec)
            emit({"type": "stats", "frame_bytes": frame_bytes, "iq_order": iq,
                  "receiver": parser.stats.to_dict(), "pcap": parser.pcap.to_dict()})
    except (OSError, CaptureError) as e:
        print(f"radvis dca1000 parse: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("dca1000", help="DCA1000EVM raw-ADC captures")
    dsub = p.add_subparsers(dest="dca_command", metavar="ACTION", required=True)
    q = dsub.add_parser("parse", parents=[common], help="decode a pcap/pcapng/.bin DCA1000 capture into frames")
    q.add_argument("file", help="capture: .pcap/.pcapng of the Ethernet link, or .bin payload stream")
    q.add_argument("--cfg", dest="chirp_cfg", metavar="CFG", default=None,
                   help="TI .cfg the radar ran (frame size, I/Q layout); default: radar.cfg from the config")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.add_argument("--iq-order", choices=["iq", "qi"], default=None,
                   help="I/Q order; default radar.iq_order (auto = Q first, the SDK demo's LVDS stream)")
    q.add_argument("--bin-format", choices=["raw", "records"], default="raw",
                   help=".bin layout: raw payload stream, or the DLL's per-packet records (14-byte headers)")
    q.add_argument("--data-port", type=int, default=4098, help="UDP data port in the pcap")
    q.add_argument("--config-port", type=int, default=4096, help="UDP config port in the pcap")
    q.set_defaults(func=_parse)

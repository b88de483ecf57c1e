"""`radvis radar cfg FILE` and `radvis radar parse FILE [--cfg CFG] --json` (+ `radvis dca1000 ...` when
the DCA1000 helper's CLI module is present)."""
from __future__ import annotations

import json
import sys


def _cfg(args) -> int:
    from drivers.ti.cfg import CfgError, parse_cfg
    try:
        rc = parse_cfg(args.file) if args.sdk is None else parse_cfg(args.file, sdk=tuple(map(int, args.sdk.split("."))))
    except CfgError as e:
        print(f"radvis: {e}", file=sys.stderr)
        return 2
    for w in rc.warnings:
        print(f"radvis: warning: {w}", file=sys.stderr)
    print(rc.to_json())
    return 0


def _parse(args) -> int:
    from drivers.ti.cfg import CfgError, parse_cfg
    from drivers.ti.uart import UartParser
    profile = None
    if args.cfg_file:
        try:
            profile = parse_cfg(args.cfg_file).profile
        except CfgError as e:
            print(f"radvis: {e}", file=sys.stderr)
            return 2
    try:
        f = open(args.file, "rb")
    except OSError as e:
        print(f"radvis: {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    p = UartParser(profile)
    out = sys.stdout
    with f:
        while True:
            chunk = f.read(1 << 16)
            frames = p.feed(chunk) if chunk else p.flush()
            for fr in frames:
                if args.json:
                    out.write(json.dumps(fr.to_json()) + "\n")
                else:
                    out.write(f"frame {fr.frame_number}: {fr.total_packet_len} B, SDK {fr.sdk}, "
                              f"{fr.num_detected_obj} points, TLVs {fr.tlv_types}\n")
            if not chunk:
                break
    st = {"stats": p.stats.to_dict()}
    out.write((json.dumps(st) if args.json else f"stats: {st['stats']}") + "\n")
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("radar", help="TI mmWave radar: check a .cfg, parse a UART data-port capture")
    rsub = p.add_subparsers(dest="radar_command", metavar="ACTION", required=True)
    c = rsub.add_parser("cfg", parents=[common], help="validate a TI .cfg and print the derived parameters as JSON")
    c.add_argument("file")
    c.add_argument("--sdk", default=None, help="firmware SDK MAJOR.MINOR (default: from the cfg header, else 3.5)")
    c.set_defaults(func=_cfg)
    r = rsub.add_parser("parse", parents=[common], help="decode a raw data-port capture (.dat); one JSON object per frame")
    r.add_argument("file")
    r.add_argument("--cfg", dest="cfg_file", default=None, help="the .cfg used (gives heatmap shapes, Doppler units)")
    r.add_argument("--json", action="store_true", help="JSON lines (frames, then a final stats object)")
    r.set_defaults(func=_parse)
    try:
        import drivers.ti.dca1000_cli as dca1000_cli
    except ModuleNotFoundError as e:
        if e.name != "drivers.ti.dca1000_cli":
            raise
    else:
        dca1000_cli.register(sub, common)

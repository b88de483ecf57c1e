"""`radvis radar cfg FILE` and `radvis radar parse FILE [--cfg CFG] --json` (+ `radvis dca1000 ...` when
the DCA1000 helper's CLI module is present)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def cfg_file(path: str, what: str) -> Path:
    """A .cfg argument is always a file (any name: a cfg saved as good.txt is still a cfg); a missing path or a
    directory is said as such instead of being parsed as cfg text."""
    from radvis.config import resolve_path
    p = resolve_path(path)  # as given, else a packaged cfg (drivers/ti/cfgs/...) from any directory
    if p.is_dir():
        raise ValueError(f"{what} {path}: is a directory, expected a TI .cfg file")
    if not p.exists():
        raise ValueError(f"{what} {path}: no such file")
    return p


def parse_sdk(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text)
    if m is None:
        raise ValueError(f"--sdk {text!r}: expected the firmware SDK as MAJOR.MINOR, e.g. 3.5 or 2.1")
    return int(m.group(1)), int(m.group(2))


def _cfg(args) -> int:
    from drivers.ti.cfg import CfgError, parse_cfg
    try:
        path, sdk = cfg_file(args.file, "radar cfg"), parse_sdk(args.sdk)
        rc = parse_cfg(path) if sdk is None else parse_cfg(path, sdk=sdk)
    except (CfgError, ValueError) as e:
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
    try:
        f = open(args.file, "rb")
    except OSError as e:
        print(f"radvis radar parse: {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    if args.cfg_file:
        try:
            profile = parse_cfg(cfg_file(args.cfg_file, "radar parse --cfg")).profile
        except (CfgError, ValueError) as e:
            f.close()
            print(f"radvis: {e}", file=sys.stderr)
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
    out.write((json.dumps(st) if args.json else f"stats: {json.dumps(st['stats'])}") + "\n")
    if p.stats.frames == 0:  # nothing decoded is not a success: say what the file should have been
        print(f"radvis radar parse: {args.file}: no frames in {p.stats.bytes_in} bytes (no valid TI packet: magic "
              f"word 02 01 04 03 06 05 08 07 + header + TLVs). Expected a raw capture of the radar's data port "
              f"(UART mode, e.g. /dev/ttyACM1 at 921600 baud); DCA1000 captures: `radvis dca1000 parse`",
              file=sys.stderr)
        return 1
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

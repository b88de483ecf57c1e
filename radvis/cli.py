"""The `radvis` command. Each package registers its own subcommands in a `cli` module with
`register(subparsers, common)`; modules that do not exist yet are simply not offered."""
from __future__ import annotations

import argparse
import importlib
import sys

from radvis import config as configmod

# (module, what it provides) — in data-flow order.
COMMAND_MODULES = [
    "radvis.cli_core",      # config show/check/docs, keys
    "drivers.ti.cli",       # radar cfg/parse, dca1000 parse
    "sim.cli",              # synth
    "capture.cli",          # capture radar/camera, record, replay
    "sync.cli",             # sync
    "learner.cli",          # learn offline / learn online, eval
    "rig.cli",              # rig: above every stage
]


def common_parser(top: bool = False) -> argparse.ArgumentParser:
    """--config/--set, accepted before or after the subcommand (subcommand copies default to
    SUPPRESS so they do not overwrite values given before the subcommand)."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--config", metavar="PATH", default=d(None),
                   help="config file (default: config.toml at the repository root)")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=d([]),
                   help="override one config key (TOML value syntax); repeatable")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="radvis", parents=[common_parser(top=True)],
        description="radvis: teach a radar to see by watching a camera (capture, sync, contrastive learning).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # that package has no CLI yet: offer nothing rather than a placeholder
            raise
        mod.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        args.cfg = configmod.load(args.config, args.set)
    except configmod.ConfigError as e:
        print(f"radvis: config error: {e}", file=sys.stderr)
        return 2
    try:
        rc = args.func(args)
    except configmod.ConfigError as e:
        print(f"radvis: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

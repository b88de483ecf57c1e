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
    """--config/--set, accepted before or after the subcommand. The subcommand's copies default to
    SUPPRESS (a --config before the subcommand survives), and its --set collects into `sub_set`:
    argparse copies a subcommand's namespace over the top one, which would drop the global --set values.
    `merge_sets` joins them: global --set first, then the subcommand's, so for one key the later wins."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--config", metavar="PATH", default=d(None),
                   help="config file (default: config.toml at the repository root)")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=d([]),
                   dest="set" if top else "sub_set",
                   help="override one config key (TOML value syntax); repeatable. Given before and after the "
                        "subcommand, both apply: the ones before first, then the ones after (the last value of a "
                        "key wins)")
    return p


def merge_sets(args: argparse.Namespace) -> list[str]:
    """Every --set of the command line in order (global ones, then the subcommand's); stored in args.set."""
    args.set = list(getattr(args, "set", None) or []) + list(getattr(args, "sub_set", None) or [])
    if hasattr(args, "sub_set"):
        del args.sub_set
    return args.set


def build_parser() -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="radvis", parents=[common_parser(top=True)],
        description="radvis: teach a radar to see by watching a camera (capture, sync, contrastive learning).")
    from radvis import __version__
    parser.add_argument("--version", action="version", version=f"radvis {__version__}")
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
    merge_sets(args)
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
    except Exception as e:
        # an endpoint already bound (another daemon, a second sync) or unusable: one line naming the config,
        # as `capture` and `replay` say it, instead of a traceback
        if type(e).__module__.startswith("zmq"):
            print(f"radvis {args.command}: ZeroMQ: {e} (check [endpoints] in {args.cfg.source})", file=sys.stderr)
            return 1
        raise
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

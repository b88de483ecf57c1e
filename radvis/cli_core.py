"""`radvis config ...` and `radvis keys`."""
from __future__ import annotations

import sys

from radvis import config as configmod


def _show(args) -> int:
    print(configmod.to_toml(args.cfg), end="")
    return 0


def _check(args) -> int:
    try:
        cfg = configmod.load(args.file, args.set)
    except configmod.ConfigError as e:
        print(f"radvis: config error: {e}", file=sys.stderr)
        return 2
    # rules between keys, which the rig and the radar would only refuse at start (no port or file is opened here)
    from radvis.chirps import learner_error, uart_error
    errors = [e for e in (uart_error(cfg.radar, f" ({cfg.source})"), learner_error(cfg, cfg.rig.stages)) if e]
    for e in errors:
        print(f"radvis: config error: {e}", file=sys.stderr)
    if errors:
        return 2
    print(f"{cfg.source}: OK")
    return 0


def _docs(args) -> int:
    sys.stdout.write(configmod.docs_markdown())
    return 0


def _keys(args) -> int:
    from radvis.transport import make_keys
    d = make_keys(args.dir)
    print(f"CURVE keys written to {d}: server.key(_secret), client.key(_secret), authorized_clients/client.key")
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("config", help="show, check or document the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    s = csub.add_parser("show", parents=[common], help="print the effective config (file + --set overrides)")
    s.set_defaults(func=_show)
    c = csub.add_parser("check", parents=[common], help="validate a config file; exit 2 with the error if bad")
    c.add_argument("file")
    c.set_defaults(func=_check)
    d = csub.add_parser("docs", parents=[common], help="print docs/config.md generated from the code")
    d.set_defaults(func=_docs)
    k = sub.add_parser("keys", parents=[common], help="create CURVE certificates for encrypted, authenticated sockets")
    k.add_argument("dir")
    k.set_defaults(func=_keys)

"""`radvis rig [--duration S]`: bring up every enabled stage as its own process and keep it up."""
from __future__ import annotations

from radvis import log as rlog


def stage_plan(cfg, parser) -> tuple[list[str], list[str]]:
    """(stages to start, stages skipped because this build has no subcommand for them)."""
    from capture.supervisor import STAGE_ARGV, has_command
    wanted = [s for s in cfg.rig.stages if s != "record" or cfg.record.enabled]
    run = [s for s in wanted if has_command(parser, STAGE_ARGV[s])]
    return run, [s for s in wanted if s not in run]


def _rig(args) -> int:
    from capture import supervisor
    from radvis.cli import build_parser
    cfg = args.cfg
    rlog.setup(cfg.rig.log_level, "rig")
    stages, missing = stage_plan(cfg, build_parser())
    common = []
    if getattr(args, "config", None):
        common += ["--config", args.config]
    for s in getattr(args, "set", None) or []:
        common += ["--set", s]
    sup = supervisor.Supervisor(stages, common_args=common, run_dir=cfg.rig.run_dir,
                                backoff_s=cfg.rig.restart_backoff_s, stop_timeout_s=cfg.rig.stop_timeout_s,
                                control_endpoint=cfg.endpoints.control)
    duration = cfg.rig.duration_s if args.duration is None else args.duration
    return supervisor.run(sup, duration_s=duration, interval_s=cfg.rig.stats_interval_s, unavailable=missing)


def register(sub, common) -> None:
    p = sub.add_parser("rig", parents=[common], help="run every enabled stage as a supervised process")
    p.add_argument("--duration", type=float, default=None,
                   help="stop cleanly after S seconds (default rig.duration_s; 0 = until Ctrl-C)")
    p.set_defaults(func=_rig)

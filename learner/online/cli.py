"""`radvis learn online`: continuous self-supervised training on the live pair stream (docs/online.md).

learner/cli.py calls `register(learn_subparsers, common)`. The module also runs on its own:
    python -m learner.online.cli online --out RUN [options]
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from radvis import config as configmod


def _handler(args) -> int:
    from radvis.log import setup
    cfg = args.cfg
    log = setup(cfg.rig.log_level, "radvis.learn.online")
    if args.eval_data is not None:
        cfg.learner.online_eval_data = args.eval_data
    if args.offline_data is not None:
        cfg.learner.online_offline_data = args.offline_data
        if cfg.learner.online_offline_mix == 0:
            cfg.learner.online_offline_mix = 0.25
            log.info("--offline-data without learner.online_offline_mix: mixing 25%% offline pairs per batch")
    import os

    import torch
    # the online learner shares the cores with capture, sync and record: with every core's worth of
    # OpenMP threads, a tiny-encoder step took 16x longer on 2 cores (threads spin waiting for each other)
    threads = cfg.learner.threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    from learner.online.trainer import OnlineLearner
    try:
        lrn = OnlineLearner(cfg, args.out, endpoint=args.endpoint, from_ckpt=args.from_ckpt, naive=args.naive,
                            device=args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"radvis learn online: {e}", file=sys.stderr)
        return 2
    stopping = {"now": False}

    def on_signal(signum, frame):  # finish the step, checkpoint, export, exit 0
        stopping["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    import time
    t0, wait_s = time.monotonic(), args.first_pair_timeout
    no_pairs = {"timed_out": False}

    def received() -> int:
        return int(lrn.ingest.counts.get("pairs_in", 0))

    def stop() -> bool:
        if wait_s and not received() and time.monotonic() - t0 > wait_s:
            no_pairs["timed_out"] = True  # nothing upstream: say where we listened instead of idling forever
            return True
        return stopping["now"]
    final = lrn.run(max_steps=args.max_steps, duration_s=args.duration, max_pairs=args.max_pairs,
                    idle_exit_s=args.exit_when_idle, stop=stop)
    if not received() and not stopping["now"]:
        endpoint = args.endpoint or cfg.endpoints.pairs
        waited = f" in {wait_s:g} s" if no_pairs["timed_out"] else ""
        print(f"radvis learn online: no pairs received{waited}: is sync running at {endpoint}? (`radvis sync`, "
              f"endpoints.pairs; nothing trained, no encoder.pt written)", file=sys.stderr)
        return 1
    keys = ("step", "pairs_in", "dropped", "duplicates_skipped", "buffer_fill", "updates_per_pair", "loss",
            "mi_bound", "knn_acc", "linear_acc")
    print(json.dumps({k: final[k] for k in keys if k in final} | {"out": str(args.out)}))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("online", parents=[common], help="train the radar encoder continuously on the live pair stream",
                       description="Subscribe to radar-camera pairs, keep a replay buffer and a negative queue, "
                                   "train with InfoNCE, checkpoint and export. Re-running with the same --out "
                                   "resumes from its checkpoint.")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (checkpoint, metrics, export)")
    p.add_argument("--from", dest="from_ckpt", metavar="CKPT",
                   help="start from an offline checkpoint/export's radar encoder (ignored when RUN has a checkpoint)")
    p.add_argument("--naive", action="store_true",
                   help="naive baseline: train on the latest pairs, FIFO queue, no buffer, no exclusion, no dedup")
    p.add_argument("--endpoint", metavar="URL", help="pair stream to subscribe to (default: [endpoints] pairs)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after this many seconds")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop at this total step count")
    p.add_argument("--max-pairs", type=int, metavar="N", help="stop after this many pairs received in this run")
    p.add_argument("--exit-when-idle", type=float, metavar="S", help="stop when no pair arrived for S seconds")
    p.add_argument("--first-pair-timeout", type=float, default=60.0, metavar="S",
                   help="exit 1 with 'no pairs received: is sync running at ENDPOINT?' when no pair arrived in the "
                        "first S seconds (default 60; 0 = wait forever, what `radvis rig` uses: its sync pairs only "
                        "after the clock warm-up)")
    p.add_argument("--eval-data", metavar="DIR", help="labelled probe set (sets learner.online_eval_data)")
    p.add_argument("--offline-data", metavar="DIR", help="offline dataset to mix in (sets learner.online_offline_data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides learner.device")
    p.set_defaults(func=_handler)


def main(argv: list[str] | None = None) -> int:
    from radvis.cli import common_parser, merge_sets
    parser = argparse.ArgumentParser(prog="radvis learn", parents=[common_parser(top=True)])
    sub = parser.add_subparsers(dest="learn_command", metavar="COMMAND", required=True)
    register(sub, common_parser())
    args = parser.parse_args(argv)
    merge_sets(args)
    try:
        args.cfg = configmod.load(args.config, args.set)
    except configmod.ConfigError as e:
        print(f"radvis: config error: {e}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except configmod.ConfigError as e:
        print(f"radvis: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

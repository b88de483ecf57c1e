"""The online learner against its baselines on a *recorded rig session* (issue #8's comparison): the pairs
the live `radvis sync` published, read back from the session's MCAP `pairs` channel in order, are fed to

- `online`: the learner exactly as configured (replay buffer, dedup, min separation, exclusion window);
- `naive`: `--naive` (latest batch of pairs, FIFO queue of the latest keys, no buffer, no exclusion);
- `offline`: every pair first, then shuffled batches with a MoCo FIFO queue of batch keys and no dedup
  (the paper's recipe: offline training on the same pairs);

each with the same number of optimizer steps (`--replay` x pairs / batch, spread over the stream as it
arrives, except offline which has it all first), probed every so often on a labelled held-out set
(`--eval-data`: the rig's `radvis synth` hold-out, its sequence-level test split). Step 0 is the random-init
encoder. Writes OUT/compare.json and OUT/probe_accuracy.png and prints the final table.

    .venv/bin/python -m bench.online_session runs/demo-X/session --eval-data runs/demo-X/heldout --out OUT

Not part of `make bench` (it is an experiment, minutes per variant on 2 cores, not a throughput number).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def session_pairs(session: str | Path) -> list:
    """(recv_ns, Message) of every `pair` in the session's `pairs` channel, in recorded order, decoded exactly
    as a subscriber decodes them."""
    from capture.record import scan, segments, unframe
    from radvis.wire import decode
    out = []
    for path in segments(session):
        for ch, m in scan(path):
            if ch.topic != "pairs":
                continue
            msg = decode(unframe(m.data))
            if msg.kind == "pair":
                out.append((time.monotonic_ns(), msg))
    return out


def run_variant(v: str, cfg, items: list, out: Path, probe, replay: float, points: int, eval_data: str) -> dict:
    import torch
    from bench.online import replay_stream
    from learner.online.trainer import OnlineLearner
    torch.manual_seed(cfg.learner.seed)
    lrn = OnlineLearner(cfg, out / v, naive=(v == "naive"), device="cpu",
                        queue_feed="batch" if v == "offline" else "stream")  # offline: MoCo queue of batch keys
    lrn.eval_set = probe
    chunks = (items[a:a + 10] for a in range(0, len(items), 10))  # 10 pairs = 1 s of a 10 Hz stream
    curve, wall_s = replay_stream(lrn, v, chunks, len(items), replay, points, offline=(v == "offline"))
    st = lrn.ingest.stats()
    lrn.export()
    from learner.online.probe import write_split_json
    write_split_json(eval_data, cfg.learner, out / v / "split.json")  # so `radvis eval` takes the export
    return {"curve": curve, "steps": lrn.step, "wall_s": wall_s, "pairs": len(items),
            "kept": st.get("kept", 0), "duplicates_skipped": st.get("duplicates_skipped", 0),
            "buffer": lrn.buffer.stats()}


def main(argv=None) -> dict:
    import torch
    from bench.online import _plot_compare
    from learner.online.probe import load_eval_set
    from radvis import config
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session", help="recorded session directory or .mcap (the rig's <run_dir>/session)")
    ap.add_argument("--eval-data", required=True, help="labelled held-out set (the rig's <run_dir>/heldout)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="config.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--replay", type=float, default=8.0, help="pairs trained per stream pair (equal steps for all)")
    ap.add_argument("--points", type=int, default=8, help="probes along the run")
    ap.add_argument("--variants", default="online,naive,offline")
    ap.add_argument("--max-pairs", type=int, default=0, help="use only the first N pairs (0 = all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    items = session_pairs(args.session)
    if args.max_pairs:
        items = items[:args.max_pairs]
    if not items:
        raise SystemExit(f"{args.session}: no pair messages in its `pairs` channel")
    base = args.set + ["learner.online_eval_every_steps=0", "learner.online_ckpt_every_steps=0",
                       "learner.online_ckpt_every_s=0", "learner.online_live_eval_fraction=0",
                       "learner.online_max_updates_per_pair=0"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    results: dict = {"session": str(args.session), "eval_data": str(args.eval_data), "replay": args.replay,
                     "sets": args.set}
    probe = None
    for v in variants:
        sets = list(base)
        if v == "offline":
            sets += [f"learner.online_buffer_size={max(2, len(items))}", 'learner.online_policy="reservoir"',
                     "learner.online_dedup_threshold=1.0", "learner.online_min_separation_s=0",
                     "learner.online_exclusion_s=0"]
        cfg = config.load(args.config, sets)
        if probe is None:
            probe = load_eval_set(args.eval_data, cfg)
        results[v] = run_variant(v, cfg, items, out, probe, args.replay, args.points, args.eval_data)
    results["random_init"] = {k: results[variants[0]]["curve"][0][k] for k in ("knn_acc", "linear_acc")}
    (out / "compare.json").write_text(json.dumps(results, indent=1, default=float))
    _plot_compare(results, variants, out / "probe_accuracy.png")
    print(f"\n{len(items)} pairs, {results[variants[0]]['steps']} steps each")
    print(f"{'variant':<12} {'kNN':>6} {'linear':>7} {'linear, mean last 3':>20}")
    for v in variants + ["random_init"]:
        r = results[v]
        c = r.get("curve", [r])
        print(f"{v:<12} {c[-1]['knn_acc']:>6.3f} {c[-1]['linear_acc']:>7.3f} "
              f"{np.mean([p['linear_acc'] for p in c[-3:]]):>20.3f}")
    return results


if __name__ == "__main__":
    main()

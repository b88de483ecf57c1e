"""`radvis rig [--duration S]`: the whole rig, then what it learnt.

1. (learner enabled) write a held-out `radvis synth` set the online learner probes on while it runs;
2. run every enabled stage as its own supervised process for the duration (live status table);
3. evaluate the online learner's exported encoder on the held-out set (`radvis eval`: linear probe on the
   learnt features vs random-init features vs a supervised baseline, per label fraction) and print the table;
4. replay the recorded session through a fresh `radvis sync` and check it yields the same pairs;
5. write RUN/rig-report.md and print its path.

Every step is a separate `radvis` process: the rig composes stages, it does not import them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from radvis.chirps import learner_error, online_chirps
from radvis import log as rlog

log = logging.getLogger("radvis.rig")
BUDGET_S = 600  # the README promises the main job finishes in under 10 minutes on 2 cores


def stage_plan(cfg, parser) -> tuple[list[str], list[str]]:
    """(stages to start, stages skipped because this build has no subcommand for them)."""
    from rig.supervisor import STAGE_ARGV, has_command
    wanted = [s for s in cfg.rig.stages if s != "record" or cfg.record.enabled]
    run = [s for s in wanted if has_command(parser, STAGE_ARGV[s])]
    return run, [s for s in wanted if s not in run]


def frame_consumers(cfg, stages: list[str], kind: str) -> int:
    """How many of the rig's stages subscribe to the `kind` ("radar" / "camera") frames: sync, the recorder
    (when it records that endpoint) and the live view (when it shows it). The capture stage waits for all of
    them (`capture.wait_subscribers`) before its first frame. Waiting for one let the recorder's subscription
    start the stream while sync's TCP connection was still being retried: sync missed the first 1-4 camera
    frames the recording has, its camera clock model fitted a different history from the replay's, and a
    near-tie pair could replay differently."""
    n = int("sync" in stages)
    n += int("record" in stages and kind in cfg.record.topics)
    n += int("view" in stages and kind in cfg.view.topics)
    return n


def _radvis(common: list[str], *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radvis", *common, *argv], **kw)


def make_heldout(cfg, out: Path, common: list[str]) -> Path | None:
    """A labelled held-out set from the same simulator but other seeds than the live rig's scenes."""
    if (out / "annotations").is_dir():
        return out
    r = cfg.rig
    print(f"rig: writing the held-out evaluation set ({r.heldout_sequences} sequences x {r.heldout_frames} frames) "
          f"to {out}", flush=True)
    # the radar input the learner reads online (learner.online_chirps of radar.ra_chirps) must be in the set too
    chirps = sorted({cfg.learner.chirp, *online_chirps(cfg.learner)})
    p = _radvis(common, "synth", "--out", str(out), "--sequences", str(r.heldout_sequences),
                "--frames", str(r.heldout_frames), "--frame-step", str(r.heldout_frame_step), "--radar-frame", "cfg",
                "--chirps", ",".join(map(str, chirps)), "--seed", str(cfg.scene.seed + 1_000_003),
                "--image-size", f"{cfg.camera.width}x{cfg.camera.height}", "--quiet", "--no-preview")
    if p.returncode != 0:
        print(f"rig: radvis synth failed (rc {p.returncode}); the learner runs without a held-out set", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        return None
    return out


def evaluate(cfg, learner_dir: Path, heldout: Path, common: list[str]) -> dict | None:
    enc = learner_dir / "encoder.pt"
    if not enc.exists():
        print(f"rig: no exported encoder at {enc}; nothing to evaluate", flush=True)
        return None
    print("rig: evaluating the learnt radar encoder on the held-out set (label-efficiency sweep)", flush=True)
    argv = ["eval", "--run", str(learner_dir), "--data", str(heldout), "--checkpoint", "encoder.pt", "--json",
            "--fractions", ",".join(f"{f:g}" for f in cfg.rig.eval_fractions), "--seeds", str(cfg.rig.eval_seeds),
            "--no-finetune", "--out", str(learner_dir.parent / "eval")]
    p = _radvis(common + ["--set", f"learner.supervised_epochs={cfg.rig.eval_supervised_epochs}"], *argv,
                stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        print(f"rig: radvis eval failed (rc {p.returncode})", flush=True)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def recorded_pairs(session: Path) -> tuple[list[tuple], set]:
    """(pair identities in the recording's pairs channel, identities of recorded radar/camera frames)."""
    from capture.record import scan, segments, unframe
    pairs, frames = [], set()
    for path in segments(session):
        for ch, m in scan(path):
            fr = unframe(m.data)
            h = json.loads(bytes(fr[1]))
            if ch.topic == "pairs" and h.get("kind") == "pair":
                pairs.append(_pair_id(h["meta"]))
            elif h.get("kind") in ("radar", "camera"):
                frames.add((h["kind"], h["source"], h["epoch"], h["seq"]))
    return pairs, frames


def _pair_id(meta: dict) -> tuple:
    r, c = meta["radar"], meta["camera"]
    return (r["source"], r["epoch"], r["seq"], c["source"], c["epoch"], c["seq"])


def verify_replay(cfg, session: Path, common: list[str], timeout_s: float = 300.0) -> dict:
    """Replay the session's radar and camera messages at `rig.replay_rate` x real time through a fresh
    `radvis sync` on private ipc endpoints; compare its pairs with the pairs the live sync recorded.
    (Not `--max`: radar and camera come from two sockets, which ZeroMQ fair-queues message by message,
    so at full speed the 10 Hz radar runs ahead of the 30 Hz camera until sync's buffers overflow.)"""
    from radvis.control import is_ready
    from radvis.transport import Subscriber, keys_from_config
    live, recorded = recorded_pairs(session)
    # only pairs whose two frames are both in the recording can be reproduced from it
    live = [p for p in live if ("radar", p[0], p[1], p[2]) in recorded and ("camera", p[3], p[4], p[5]) in recorded]
    tmp = Path(tempfile.mkdtemp(prefix="radvis-replay-"))
    sets = []
    for n in ("radar", "camera", "pairs", "control"):
        sets += ["--set", f"endpoints.{n}='ipc://{tmp}/{n}.sock'"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logf = open(tmp / "sync.log", "wb")
    # sync and replay run with the rig's config: with transport.curve on, their sockets speak CURVE, so ours must
    curve = keys_from_config(cfg)
    ctl = Subscriber(f"ipc://{tmp}/control.sock", bind=True, curve=curve)
    sync = subprocess.Popen([sys.executable, "-m", "radvis", *common, *sets, "sync"], stdout=logf,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    sub = Subscriber(f"ipc://{tmp}/pairs.sock", topics=["pair"], hwm=100000, curve=curve)
    replayed = []
    t0 = time.monotonic()
    try:
        while sync.poll() is None and time.monotonic() - t0 < 60:  # sync subscribed before anything is replayed
            m = ctl.recv(200)
            if m is not None and is_ready(m) and m.meta.get("pid") == sync.pid:
                break
        rep = subprocess.Popen([sys.executable, "-m", "radvis", *common, *sets, "replay", str(session),
                                "--rate", str(cfg.rig.replay_rate), "--topics", "radar", "camera"], stdout=logf, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
        quiet_since = None
        while time.monotonic() - t0 < timeout_s:
            m = sub.recv(timeout_ms=200)
            if m is not None:
                replayed.append(_pair_id(m.meta))
                quiet_since = None
                continue
            if rep.poll() is not None:  # replay finished: sync flushes its last pairs after ~1 s idle
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 3.0:
                    break
    finally:
        for p in [sync] + ([rep] if "rep" in locals() else []):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        sub.close()
        ctl.close()
        logf.close()
    same = len(set(live) & set(replayed))
    res = {"live_pairs": len(live), "replayed_pairs": len(replayed), "identical": same,
           "only_live": len(set(live) - set(replayed)), "only_replay": len(set(replayed) - set(live)),
           "seconds": round(time.monotonic() - t0, 1), "log": str(tmp / "sync.log")}
    res["same_pairs"] = res["only_live"] == 0 and res["only_replay"] == 0 and same > 0
    return res


def _fmt(ms) -> str:
    if ms is None:
        return "-"
    m, s = ms if isinstance(ms, (list, tuple)) else (ms, None)
    return f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if s else "")


def results_table(ev: dict) -> str:
    lines = ["| labels | n | learnt (SSL) | random-init | supervised |", "|---|---|---|---|---|"]
    for t in ev["table"]:
        lines.append(f"| {t['fraction']:g} % | {t['n_labels']} | {_fmt(t['ssl'])} | {_fmt(t['random_init'])} | "
                     f"{_fmt(t.get('supervised'))} |")
    return "\n".join(lines)


def plot_probe(metrics: Path, out: Path) -> Path | None:
    """The learner's held-out probe accuracy over the run (its `event: eval` rows), against minutes of the
    run when the rows carry `t` (steps come fast early, when batches are small, and slowly later)."""
    if not metrics.exists():
        return None
    evals = []
    for line in metrics.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("event") == "eval" and r.get("linear_acc") is not None:
            evals.append(r)
    if not evals:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_time = all(r.get("t") is not None for r in evals)
    x = [r["t"] / 60 if by_time else r["step"] for r in evals]
    ax.plot(x, [100 * r["linear_acc"] for r in evals], "o-", label="linear probe")
    if all(r.get("knn_acc") is not None for r in evals):
        ax.plot(x, [100 * r["knn_acc"] for r in evals], "s--", label="kNN")
    ax.axhline(25, color="grey", lw=0.8, ls=":", label="chance (4 classes)")
    ax.set_xlabel("minutes of the run (first point: the random-init encoder)" if by_time else "online training step")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("What the radar learns while the rig runs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(run_dir: Path, status: dict, ev: dict | None, rep: dict | None, elapsed_s: float,
                 heldout: Path | None, timing: list[str] | None = None) -> Path:
    from rig.supervisor import learner_cell
    L = ["# radvis rig run", "", f"Wall time {elapsed_s / 60:.1f} min (budget {BUDGET_S / 60:.0f} min).", "",
         "## Stages", "", "Totals over the run, and the mean rate from a stage's first to its last stats message "
         "(not the last, partial interval's rate).", "",
         "| stage | state | restarts | total | mean rate | drops | learner |", "|---|---|---|---|---|---|---|"]
    for n, s in status.get("stages", {}).items():
        unit = s.get("unit") or ""
        total = f"{s['total']:g} {unit}" if s.get("total") is not None else "-"
        mean = f"{s['mean_rate_per_s']:.2f} {unit}/s" if s.get("mean_rate_per_s") is not None else "-"
        L.append(f"| {n} | {s['state']} | {s['restarts']} | {total} | {mean} "
                 f"| {s['drops'] if s.get('drops') is not None else '-'} | {learner_cell(s.get('learner')) or '-'} |")
    L.append("")
    if ev is not None:
        L += ["## What the radar learnt from the camera", "",
              f"Linear-probe accuracy (%, 4 classes: empty / pedestrian / cyclist / car) on the held-out set "
              f"`{heldout}` ({ev['n_frames']} frames, test {ev['n_test']}, split {ev['split']}), mean ± std over "
              f"{ev['seeds']} label subsets. Teacher: {ev['teacher']}; radar encoder: {ev['radar_encoder']}.", "",
              results_table(ev), "", "Verdict (paired differences over the label seeds; a difference within 2 "
              "standard errors is called noise):", ""] + [f"- {v}" for v in ev.get("verdicts", [])] + [
              "", f"Full evaluation report with plots: [{Path(ev['plots']['confusion']).parent / 'report.md'}]"
              f"({Path(ev['plots']['confusion']).parent.relative_to(run_dir) / 'report.md'})", ""]
    lm = run_dir / "learner" / "metrics.jsonl"
    if lm.exists():
        png = plot_probe(lm, run_dir / "online_probe.png")
        L += [f"Online-learning metrics (JSON lines): `{lm}`; TensorBoard: `{run_dir / 'learner' / 'tb'}`.", ""]
        if png is not None:
            L += ["Held-out probe accuracy while the rig ran:", "", f"![online probe]({png.name})", ""]
    if rep is not None:
        L += ["## Replay", "", f"The recorded session replayed through a fresh `radvis sync`: {rep['identical']} of "
              f"{rep['live_pairs']} live pairs reproduced, {rep['only_live']} missing, {rep['only_replay']} extra "
              f"({'identical' if rep['same_pairs'] else 'DIFFERENT'}).", ""]
    L += timing or []  # rig/sync_report.py: latency and pairing error over the run
    path = run_dir / "rig-report.md"
    path.write_text("\n".join(L))
    return path


def _rig(args) -> int:
    from rig import supervisor
    from radvis.cli import build_parser
    t_start = time.monotonic()
    cfg = args.cfg
    rlog.setup(cfg.rig.log_level, "rig")
    run_dir = Path(cfg.rig.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages, missing = stage_plan(cfg, build_parser())
    common = []
    if getattr(args, "config", None):
        common += ["--config", args.config]
    for s in getattr(args, "set", None) or []:
        common += ["--set", s]
    extra, heldout = {}, None
    if (err := learner_error(cfg, stages)):
        print(f"radvis rig: {err}", file=sys.stderr)
        return 2
    session = Path(cfg.record.out or run_dir / "session")
    for kind in ("radar", "camera"):  # every consumer subscribed before the first frame: sync sees what is recorded
        n = max(cfg.capture.wait_subscribers, frame_consumers(cfg, stages, kind))
        if kind in stages and n != cfg.capture.wait_subscribers:
            extra[kind] = ["--set", f"capture.wait_subscribers={n}"]
    if "learner" in stages:
        # --first-pair-timeout 0: the rig's sync pairs only after its clock warm-up, and the rig stops the learner
        extra["learner"] = ["--out", str(run_dir / "learner"), "--first-pair-timeout", "0"]
        if cfg.rig.heldout_sequences and not args.no_eval:
            heldout = make_heldout(cfg, run_dir / "heldout", common)
            if heldout is not None:
                extra["learner"] += ["--eval-data", str(heldout)]
    from radvis.transport import keys_from_config
    sup = supervisor.Supervisor(stages, common_args=common, run_dir=run_dir,
                                backoff_s=cfg.rig.restart_backoff_s, stop_timeout_s=cfg.rig.stop_timeout_s,
                                control_endpoint=cfg.endpoints.control, truth_endpoint=cfg.endpoints.truth,
                                curve=keys_from_config(cfg), extra_args=extra)
    duration = cfg.rig.duration_s if args.duration is None else args.duration
    rc = supervisor.run(sup, duration_s=duration, interval_s=cfg.rig.stats_interval_s, unavailable=missing)
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}

    ev = rep = None
    if heldout is not None and not args.no_eval:
        ev = evaluate(cfg, run_dir / "learner", heldout, common)
        if ev is not None:
            print("\nWhat the radar learnt from the camera alone (linear-probe accuracy %, held-out synth set):")
            print(results_table(ev))
    if "record" in stages and "sync" in stages and cfg.rig.verify_replay and not args.no_eval:
        print("rig: replaying the recorded session through sync", flush=True)
        try:
            rep = verify_replay(cfg, session, common)
            print(f"replay: {rep['identical']}/{rep['live_pairs']} live pairs reproduced, {rep['only_live']} missing, "
                  f"{rep['only_replay']} extra -> {'same pairs' if rep['same_pairs'] else 'DIFFERENT pairs'}")
        except (OSError, ValueError) as e:
            print(f"rig: replay check failed: {e}", flush=True)
    timing = None
    if "record" in stages and session.exists():
        from rig.sync_report import sync_report
        timing = sync_report(session, run_dir)
        print(timing["line"], flush=True)
    elapsed = time.monotonic() - t_start
    report = write_report(run_dir, status, ev, rep, elapsed, heldout, timing["markdown"] if timing else None)
    print(f"\nreport: {report}")
    if ev is not None:
        print(f"evaluation report: {Path(ev['plots']['confusion']).parent / 'report.md'}")
    if elapsed > BUDGET_S:
        print(f"rig: note: this run took {elapsed / 60:.1f} min, over the {BUDGET_S / 60:.0f}-minute budget "
              f"(slow or busy machine?); shorten rig.duration_s or rig.heldout_sequences", flush=True)
    else:
        print(f"rig: finished in {elapsed / 60:.1f} min", flush=True)
    if rep is not None and not rep["same_pairs"]:
        return 1
    return rc


def register(sub, common) -> None:
    p = sub.add_parser("rig", parents=[common], help="run every enabled stage as a supervised process, "
                                                      "then evaluate what the learner learnt")
    p.add_argument("--duration", type=float, default=None,
                   help="stop cleanly after S seconds (default rig.duration_s; 0 = until Ctrl-C)")
    p.add_argument("--no-eval", action="store_true", help="only run the stages: no held-out set, eval or replay check")
    p.set_defaults(func=_rig)

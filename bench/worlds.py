"""Offline acceptance on `radvis synth` worlds (#14): for each world, render a set, pretrain with the default
config (`radvis learn offline`), then `radvis eval` on the run's held-out test sequences: linear probe of
the SSL features vs random-init features vs a supervised-from-scratch encoder, per label fraction, mean
± std over label seeds. Worlds used to choose parameters must not be the ones reported as acceptance.

    .venv/bin/python -m bench.worlds --worlds dusk snow --out /tmp/worlds --set learner.seed=S
        [--sequences 600 --frames 12] [--radar-frame cfg] [--chirps 0,1,2,3]
        [--epochs 25] [--fractions 1,5,100] [--seeds 3] [--supervised-fractions 1,5] [--set learner.KEY=VALUE ...]

The defaults are #14's acceptance protocol (docs/learner.md, "Offline acceptance at 600 sequences"): per
world 600 sequences x 12 frames on the rig's radar frame (5280 pretraining pairs, 120 test sequences), 25
epochs (2050 steps), label fractions 1 / 5 / 100 %, 3 label seeds; one pretraining seed per call
(learner.seed, which also draws the split). ~2 min to render a world, ~3-5 min to pretrain and ~1 min to
evaluate per world and seed on one core of the 2-core machine (2026-12-06; it has run up to ~5x slower on
busier days); ~1.2 GB per world.

The ImageNet-initialised radar encoder: add `--set 'learner.radar_encoder="effnet-lite0"' --epochs 5
--supervised-fractions 1,5` (410 steps, ~10 min of pretraining per world on one core; its supervised baseline
fine-tunes EfficientNet-Lite0 from ImageNet: ~8 min per world at 1 and 5 %, far longer at 100 %).

Per world: OUT/data-WORLD (the set and its key cache), OUT/run-WORLD (run, eval.json, times). Prints one
table per world, and the teacher's ceiling on the same split (the same linear probe on the teacher's keys).
Every teacher, 5-fold on a whole set: `python -m bench.learner --teacher-probe DIR`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _radvis(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "radvis", *args], cwd=ROOT, env=env, check=True, **kw)


def run_world(world: str, out: Path, sequences: int, frames: int, epochs: int, fractions: str, seeds: int,
              sets: list[str], seed: int = 7, radar_frame: str = "cfg", chirps: str = "0",
              supervised_fractions: str | None = None) -> dict:
    data, run = out / f"data-{world}", out / f"run-{world}"
    stack = [f"learner.chirps=[{chirps}]"] if "," in chirps else []   # several: the learner reads all of them
    over = [a for s in ["learner.threads=1", "learner.supervised_epochs=5", *stack, *sets] for a in ("--set", s)]
    t0 = time.time()
    if not (data / "annotations").is_dir():
        _radvis(["synth", "--out", str(data), "--world", world, "--sequences", str(sequences), "--frames",
                 str(frames), "--seed", str(seed), "--radar-frame", radar_frame, "--chirps", chirps, "--quiet",
                 "--no-preview"])
    t1 = time.time()
    _radvis(over + ["learn", "offline", "--data", str(data), "--out", str(run), "--epochs", str(epochs), "--quiet"])
    t2 = time.time()
    ev = over + ["eval", "--run", str(run), "--data", str(data), "--json", "--seeds", str(seeds), "--no-finetune"]
    if supervised_fractions is None:
        res = json.loads(_radvis(ev + ["--fractions", fractions], stdout=subprocess.PIPE, text=True).stdout)
    else:
        # the probes at every fraction, the supervised baseline only at these (an ImageNet-initialised
        # encoder's supervised run at 100 % costs more than its pretraining on a CPU)
        res = json.loads(_radvis(ev + ["--fractions", fractions, "--no-supervised"], stdout=subprocess.PIPE,
                                 text=True).stdout)
        sup = json.loads(_radvis(ev + ["--fractions", supervised_fractions, "--out", str(run / "eval-supervised")],
                                 stdout=subprocess.PIPE, text=True).stdout)
        by_fraction = {r["fraction"]: r["supervised"] for r in sup["table"]}
        for r in res["table"]:
            if r["fraction"] in by_fraction:
                r["supervised"] = by_fraction[r["fraction"]]
    t3 = time.time()
    res["teacher_probe"] = teacher_probe(run, data, [float(f) for f in fractions.split(",")], seeds,
                                         ["learner.threads=1", *stack, *sets])
    res["times_s"] = {"synth": round(t1 - t0), "pretrain": round(t2 - t1), "eval": round(t3 - t2),
                      "teacher_probe": round(time.time() - t3)}
    (run / "eval.json").write_text(json.dumps(res, indent=1))
    return res


def teacher_probe(run: Path, data: Path, fractions: list[float], seeds: int, sets: list[str]) -> list[dict]:
    """The teacher's ceiling on the run's own split: `radvis eval`'s linear probe (same balanced pool and test
    set, same label subsets) on the frozen teacher's keys instead of the radar encoder's features. Keys come
    from the run's key cache (the test frames' keys are added to it)."""
    import numpy as np
    import torch
    from learner.cache import build_key_cache, cache_dir_for
    from learner.data import learner_chirps
    from learner.evaluate import linear_probe, probe_labels, probe_sets
    from learner.multiroot import open_frames
    from learner.teachers import build_teacher
    from radvis import config
    cfg = config.load(overrides=sets).learner
    torch.set_num_threads(cfg.threads)
    teacher = build_teacher(cfg)
    frames = open_frames(data, ("train",), chirp=learner_chirps(cfg), clutter_removal=cfg.clutter_removal)
    pool, test = probe_sets(frames, json.loads((run / "split.json").read_text()))
    keys = build_key_cache(frames, np.concatenate([pool, test]), teacher,
                           cache_dir_for(data / ".radvis_cache", teacher), progress=False).astype(np.float32)
    kpool, ktest, ypool, ytest = keys[:len(pool)], keys[len(pool):], frames.label[pool], frames.label[test]
    rows = []
    for fr in fractions:
        acc = [linear_probe(kpool[sub], ypool[sub], ktest, ytest)[0]
               for sub in (probe_labels(ypool, fr, sd) for sd in range(seeds))]
        rows.append({"fraction": fr, "teacher": [float(np.mean(acc)), float(np.std(acc))]})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", nargs="+", default=["dusk", "snow"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sequences", type=int, default=600)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--fractions", default="1,5,100")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--radar-frame", choices=["rod2021", "cfg"], default="cfg",
                    help="radvis synth --radar-frame: ROD2021's raw chirps, or the rig cfg's frame and clutterRemoval")
    ap.add_argument("--chirps", default="0", help="radvis synth --chirps; several (e.g. 0,1,2,3 with --radar-frame "
                    "cfg: the rig's learner.online_chirps) become learner.chirps, the stacked input")
    ap.add_argument("--supervised-fractions", help="run the supervised baseline only at these label fractions "
                    "(e.g. 1,5; default: every --fractions); the probes still run at every fraction")
    ap.add_argument("--set", action="append", default=[], help="extra config override, SECTION.KEY=VALUE")
    a = ap.parse_args(argv)
    for w in a.worlds:
        res = run_world(w, Path(a.out), a.sequences, a.frames, a.epochs, a.fractions, a.seeds, a.set,
                        radar_frame=a.radar_frame, chirps=a.chirps, supervised_fractions=a.supervised_fractions)
        print(f"world {w} ({res['teacher']}, radar {res['radar_encoder']}; {res['n_test']} test frames; "
              f"times {res['times_s']})")
        print(table(res))
        print("teacher's own keys, same probe: " + " / ".join(
            f"{r['fraction']:g} % {100 * r['teacher'][0]:.1f} ± {100 * r['teacher'][1]:.1f}" for r in res["teacher_probe"]))


def table(res: dict) -> str:
    """Markdown rows: labels | SSL | random-init | supervised | SSL - supervised (mean ± std, %)."""
    f = lambda m: f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}"  # noqa: E731
    out = ["| labels (n) | SSL | random-init | supervised | SSL − supervised |", "|---|---|---|---|---|"]
    for r in res["table"]:
        sup, diff = ((f(r["supervised"]), f"{100 * (r['ssl'][0] - r['supervised'][0]):+.1f}") if "supervised" in r
                     else ("not run", ""))
        out.append(f"| {r['fraction']:g} % ({r['n_labels']}) | {f(r['ssl'])} | {f(r['random_init'])} | {sup} | {diff} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

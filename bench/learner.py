"""Offline pretraining throughput: pairs/s of `radvis learn offline` steps with the frozen-teacher key
cache vs without it (every step decodes the JPEGs and runs the teacher), target >= 2x; on a CUDA device
also the paper's VGG-16 radar encoder at 224x224, bf16 autocast + channels_last, with cached keys
(target >= 1000 pairs/s on one H100, ~10x the paper's ~109 pairs/s per GPU).

    .venv/bin/python -m bench.learner [--quick]

Data: a small `radvis synth` tree (320x192 JPEGs, CRUW layout) written to a temp dir. Timed steps exclude
the one-off cache build (reported in the metric name) and the first 2 warm-up steps.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

PAPER_PAIRS_PER_S_PER_GPU = 47_000 * 400 / (12 * 3600) / 4   # ~109 (learner.md §4.4)


def _pairs_per_s(cfg, data, out, cache_dir, steps) -> tuple[float, float]:
    from learner.train_offline import train
    warm = train(dataclasses.replace(cfg, teacher_cache=cfg.teacher_cache), data, out / "warm", progress=False,
                 cache_dir=cache_dir, max_steps=2, log=lambda *a: None)
    s = train(cfg, data, out / "timed", progress=False, cache_dir=cache_dir, max_steps=steps, log=lambda *a: None)
    return s["pairs_per_s"], warm["cache_build_s"]


def bench_cache(teacher: str, data: Path, tmp: Path, steps: int, batch: int) -> dict:
    cfg = dataclasses.replace(teacher_config(teacher), radar_encoder="tiny", batch_size=batch, queue_size=256, epochs=1,
                              device="cpu", log_every=1000, val_fraction=0.0)
    cached, build_s = _pairs_per_s(cfg, data, tmp / f"{teacher}-cache", tmp / "cache", steps)
    live, _ = _pairs_per_s(dataclasses.replace(cfg, teacher_cache=False), data, tmp / f"{teacher}-live", tmp / "cache", steps)
    return dict(stage="learn offline", metric=f"pairs/s tiny radar enc, {teacher} teacher, key cache "
                f"(built once in {build_s:.1f} s) vs live teacher, cpu", value=round(cached, 1), unit="pairs/s",
                baseline=round(live, 1), ratio=round(cached / live, 2), need=">= 2x")


def _step_rate(model, in_ch: int, dim: int, queue_size: int, batch: int, steps: int, device: str = "cpu") -> float:
    """Pairs/s of the learners' own `contrastive_step` (bf16 autocast + channels_last on CUDA, enqueue after
    the step) on random radar maps and keys, after 2 warm-up steps."""
    import torch

    from learner.queue import NegativeQueue
    from learner.step import contrastive_step
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    queue = NegativeQueue(dim, queue_size).to(device)
    x = torch.randn(batch, in_ch, 128, 128, device=device)
    k = torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=1)
    t = torch.arange(batch, dtype=torch.int64, device=device) * 10**8
    seq = torch.zeros(batch, dtype=torch.int64, device=device)

    def run(n):
        for _ in range(n):
            contrastive_step(model, opt, queue, x, k, t, seq, temperature=0.07)
        if device == "cuda":
            torch.cuda.synchronize()
    run(2)
    t0 = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t0)


def bench_vgg16_cuda(steps: int, batch: int = 128) -> dict:
    """VGG-16 radar encoder training step on random RA maps + cached 4096-d keys, all on the GPU."""
    import torch

    from learner.models import build_radar_encoder
    model = build_radar_encoder("vgg16", 4096).to("cuda").to(memory_format=torch.channels_last)
    rate = _step_rate(model, 2, 4096, 320, batch, steps, "cuda")
    return dict(stage="learn offline", metric=f"pairs/s VGG-16 radar enc 224x224 B={batch} bf16+channels_last, "
                f"cached keys, {torch.cuda.get_device_name()}", value=round(rate, 1), unit="pairs/s",
                baseline=round(PAPER_PAIRS_PER_S_PER_GPU, 1), ratio=round(rate / PAPER_PAIRS_PER_S_PER_GPU, 2),
                need=">= 1000 pairs/s (H100)")


def bench_encoder_rate(encoders=("tiny", "effnet-lite0"), chirps=(1, 4), steps: int = 20, batch: int = 64) -> list[dict]:
    """Radar-encoder training steps (the learners' `contrastive_step`, 1280-d keys, queue 4096) in pairs/s on
    CPU, 1 thread, against `tiny` at the same chirp count, measured in the same run on the same batch."""
    import torch

    from learner.models import build_radar_encoder

    def rate(name, c):
        torch.manual_seed(0)
        return _step_rate(build_radar_encoder(name, 1280, chirps=c), 2 * c, 1280, 4096, batch, steps)
    rows = []
    for c in chirps:
        base = rate("tiny", c)
        for name in encoders:
            r = base if name == "tiny" else rate(name, c)
            rows.append(dict(stage="radar encoder", metric=f"pairs/s {name}, {c} chirp(s), batch {batch}, cpu 1 thread, "
                             f"vs tiny", value=round(r, 1), unit="pairs/s", baseline=round(base, 1),
                             ratio=round(r / base, 3), need="> 10 pairs/s (the rig's pair rate)"))
    return rows


def bench_online_step(chirps=(1, 4), steps: int = 20, batch: int = 64, fill: int = 512) -> list[dict]:
    """The online learner's whole step as `OnlineLearner.train_step` runs it - replay-buffer batch (float16
    maps rescaled), radar augmentation (mirror + range jitter), `contrastive_step` of `tiny` (1280-d keys,
    queue 4096) - in pairs/s on CPU, 1 thread, for each chirp count against one chirp, in the same run.
    Several chirps are worth having only if this stays close to one chirp's rate: the rig's learner spends
    a fixed time, so a slower step is fewer steps."""
    import numpy as np
    import torch

    from learner.augment import RadarAugment
    from learner.models import build_radar_encoder
    from learner.online.buffer import ReplayBuffer
    from learner.queue import NegativeQueue
    from learner.step import contrastive_step

    def rate(c: int) -> float:
        torch.manual_seed(0)
        g = np.random.default_rng(0)
        buf = ReplayBuffer(fill, 1280, (2 * c, 128, 128))
        for i in range(fill):
            buf.add(g.standard_normal((2 * c, 128, 128), np.float32), g.standard_normal(1280).astype(np.float32),
                    i * 10**8, 0, -1)
        model = build_radar_encoder("tiny", 1280, chirps=c)
        opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
        queue, aug = NegativeQueue(1280, 4096), RadarAugment(0.5, 4)

        def run(n):
            for _ in range(n):
                b = buf.batch(g.choice(fill, batch, replace=False))
                keys = torch.nn.functional.normalize(b["keys"], dim=1)
                contrastive_step(model, opt, queue, aug(b["radar"]), keys, b["t_ns"], b["seq"], temperature=0.07)
        run(2)
        t0 = time.perf_counter()
        run(steps)
        return steps * batch / (time.perf_counter() - t0)
    base = rate(chirps[0])
    rows = []
    for c in chirps:
        r = base if c == chirps[0] else rate(c)
        rows.append(dict(stage="online step", metric=f"pairs/s buffer batch + augment + tiny step, {c} chirp(s), "
                         f"batch {batch}, cpu 1 thread, vs {chirps[0]} chirp(s)", value=round(r, 1), unit="pairs/s",
                         baseline=round(base, 1), ratio=round(r / base, 3), need="> 10 pairs/s; the ratio is the share of steps kept in a fixed time"))
    return rows


def bench_teacher_rate(specs: list[str], n: int = 64, size=(320, 240), batch: int = 16) -> list[dict]:
    """Frozen-teacher images/s on CPU (1 thread) against fg-descriptor's, measured in the same run on the
    same frames: `n` renders of the rig's fixed place with traffic (sim.scene, world default) at `size`,
    keyed with their median background (what the offline cache and the online learner do per frame;
    the median itself is not timed)."""
    import numpy as np
    import torch

    from learner.teachers import build_teacher, median_background, takes_background
    from sim.render_camera import PinholeCamera, frame_rng, render
    from sim.scene import Scene
    sc, cam = Scene(seed=5, place="fixed"), PinholeCamera(*size)
    ims = np.stack([render(sc.state(0.5 * i), cam, rng=frame_rng(5, i)) for i in range(n)])
    bg = median_background(ims)

    def rate(spec):
        t = build_teacher(teacher_config(spec))
        run = (lambda x: t.embed(x, background=bg)) if takes_background(t) else t.embed
        run(ims[:batch])                                                    # warm-up
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, n, batch):
                run(ims[s:s + batch])
        return n / (time.perf_counter() - t0), t.name
    base, base_name = rate("fg-descriptor")
    rows = []
    for spec in specs:
        r, name = rate(spec)
        rows.append(dict(stage="teacher", metric=f"images/s {name} on {size[0]}x{size[1]} rig frames, cpu 1 thread, "
                         f"vs fg-descriptor", value=round(r, 1), unit="img/s", baseline=round(base, 1),
                         ratio=round(r / base, 3), need="> 10 img/s (the rig's pair rate)"))
    return rows


def compare_teachers(data: str, out: str, teachers: list[str], seeds: int, epochs: int, fractions=(1, 10, 100)) -> list[dict]:
    """Weight-free teacher comparison (how AUTO_FALLBACK was chosen): pretrain the tiny radar encoder
    against each teacher for several seeds, pick each run's epoch by held-out InfoNCE (label-free), and
    linear-probe it on the sequence-level test split. Writes OUT/teachers.json."""
    import json

    import numpy as np

    from learner.evaluate import evaluate
    from learner.train_offline import train
    from radvis.config import LearnerConfig
    res = []
    for spec in teachers:
        name, _, centre = spec.partition(":")
        for seed in range(seeds):
            cfg = LearnerConfig(radar_encoder="tiny", vision_encoder=name, weights="none", batch_size=64,
                                queue_size=1024, epochs=epochs, device="cpu", seed=seed, log_every=20,
                                teacher_center=centre or "auto")
            run = Path(out) / f"{spec.replace(':', '-')}-s{seed}"
            s = train(cfg, data, run, progress=False, cache_dir=Path(out) / "cache", log=lambda *a: None)
            r = evaluate(cfg, run, data, fractions=list(fractions), seeds=3, supervised=False, finetune=False,
                         progress=False, tsne=False)
            row = {"teacher": spec, "seed": seed, "key_cos_raw": s["key_cos_raw"], "key_cos_used": s["key_cos_used"],
                   "best_epoch": s["best"]["epoch"], "val_top5": s["best"].get("val_top5"),
                   **{f"ssl@{t['fraction']:g}%": t["ssl"][0] for t in r["table"]},
                   **{f"random@{t['fraction']:g}%": t["random_init"][0] for t in r["table"]}}
            res.append(row)
            print(json.dumps(row), flush=True)
    Path(out, "teachers.json").write_text(json.dumps(res, indent=1))
    print(f"{'teacher':<16} " + " ".join(f"{'ssl@' + str(f) + '%':>14}" for f in fractions) + f" {'key cos':>8}")
    for spec in teachers:
        rs = [r for r in res if r["teacher"] == spec]
        cells = [f"{100 * np.mean([r[f'ssl@{f:g}%'] for r in rs]):6.1f}±{100 * np.std([r[f'ssl@{f:g}%'] for r in rs]):4.1f}"
                 for f in fractions]
        print(f"{spec:<16} " + " ".join(f"{c:>14}" for c in cells) + f" {np.mean([r['key_cos_raw'] for r in rs]):8.3f}")
    return res


def teacher_config(spec: str, base: list[str] | None = None):
    """LearnerConfig of a teacher spec `name[,key=value...]` (values in TOML syntax, bare words taken as
    strings): `effnet-lite0,teacher_region=foreground,teacher_size=128`."""
    from radvis import config
    name, *sets = spec.split(",")
    weights = "imagenet" if name in ("effnet-lite0", "vgg16", "resnet18", "auto") else "none"
    over = [f'learner.vision_encoder="{name}"', f'learner.weights="{weights}"'] + list(base or [])
    for a in sets:
        k, v = a.split("=", 1)
        if k.startswith("region."):          # set_region() settings, for the teacher probe only
            continue
        try:
            float(v)
        except ValueError:
            v = v if v in ("true", "false") or v.startswith(('"', "[")) else f'"{v}"'
        over.append(f"learner.{k}={v}")
    return config.load(None, over).learner


def _num(v: str):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def teacher_probe(data: str, specs: list[str], every: int = 2, folds: int = 5, cache_dir: str | None = None,
                  log=print, fold_seeds: int = 1) -> list[dict]:
    """How much of the 4-class task each teacher's own keys carry: a linear model (standardised logistic
    regression) on the image keys, sequence-level `folds`-fold cross-validation (no sequence on both sides,
    folds stratified by class), balanced accuracy (mean per-class recall; chance 25 %) per fold. Every
    `every`-th frame of every sequence, mixed frames dropped. Keys go through the same key cache as
    `radvis learn offline` (DATA/.radvis_cache), so a later pretraining reuses them.

    A spec is a teacher name with optional `key=value` settings of `learner`, joined by `,`:
    `effnet-lite0,teacher_region=foreground,teacher_size=128`.

    `fold_seeds` > 1 repeats the cross-validation with that many fold shuffles (seeds 0..n-1; which sequences
    share a test fold moves the result by tens of points on small sets); mean ± std are then over all
    folds x seeds."""
    import time

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from learner.cache import KeyCache, build_key_cache, cache_dir_for
    from learner.data import CRUWFrames
    from learner.teachers import build_teacher
    frames = CRUWFrames(data, ("train",))
    idx = np.flatnonzero((frames.label >= 0) & (frames.frame % every == 0))
    y, groups = frames.label[idx], frames.seq[idx]
    base = Path(cache_dir) if cache_dir else Path(data) / ".radvis_cache"
    rows = []
    for spec in specs:
        t = build_teacher(teacher_config(spec))
        extra = {k[7:]: _num(v) for k, v in (a.split("=", 1) for a in spec.split(",")[1:]) if k.startswith("region.")}
        if extra:
            t.set_region(t.region, **extra)
        cdir = cache_dir_for(base, t)
        todo = len(KeyCache(cdir, t.name, t.dim).missing([frames.key(int(i)) for i in idx]))
        t0 = time.perf_counter()
        X = build_key_cache(frames, idx, t, cdir, progress=False).astype(np.float32)
        dt = time.perf_counter() - t0
        accs = []
        for fs in range(fold_seeds):
            for tr, te in StratifiedGroupKFold(folds, shuffle=True, random_state=fs).split(X, y, groups):
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(X[tr], y[tr])
                accs.append(balanced_accuracy_score(y[te], clf.predict(X[te])))
        row = {"teacher": spec, "name": t.name, "data": str(data), "frames": int(len(idx)),
               "sequences": int(len(np.unique(groups))), "fold_seeds": fold_seeds, "folds": [round(float(a), 4) for a in accs],
               "mean": float(np.mean(accs)), "std": float(np.std(accs, ddof=1)),
               "images_per_s": round(todo / dt, 1) if todo else None}
        rows.append(row)
        log(f"{spec:<55} {100 * row['mean']:5.1f} ± {100 * row['std']:4.1f}  (folds "
            f"{', '.join(f'{100 * a:.1f}' for a in accs)}; {row['frames']} frames"
            + (f"; teacher {row['images_per_s']} images/s" if todo else "") + ")")
    return rows


def main(argv=None) -> list[dict]:
    import torch
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 60 s on 2 CPU cores)")
    ap.add_argument("--compare-teachers", nargs=2, metavar=("DATA", "OUT"),
                    help="instead of timing: compare weight-free teachers by probe accuracy on a synth dataset")
    ap.add_argument("--teachers", default="descriptor,random-cnn,tiny",
                    help="for --compare-teachers: names, optionally name:on|off for key centring")
    ap.add_argument("--teacher-probe", metavar="DATA", action="append",
                    help="instead of timing: linear probe on each teacher's own keys (sequence-level 5-fold) on "
                         "this CRUW-layout dataset (repeatable); teachers from --teachers, ';'-separated specs")
    ap.add_argument("--out", help="for --teacher-probe: write the rows as JSON lines here")
    ap.add_argument("--fold-seeds", type=int, default=1,
                    help="for --teacher-probe: repeat the 5-fold split with this many shuffles (mean ± std over all)")
    ap.add_argument("--encoder-rate", action="store_true",
                    help="only the radar encoders' training pairs/s on CPU (tiny vs effnet-lite0, 1 and 4 chirps) and the "
                         "online learner's whole step at 1 vs 4 chirps")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    if args.teacher_probe:
        import json
        torch.set_num_threads(1)
        rows = []
        for d in args.teacher_probe:
            rows += teacher_probe(d, args.teachers.split(";"), fold_seeds=args.fold_seeds)
        if args.out:
            Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows
    if args.compare_teachers:
        torch.set_num_threads(1)
        compare_teachers(*args.compare_teachers, args.teachers.split(","), args.seeds, args.epochs)
        return []
    torch.set_num_threads(1)     # shared 2-core machines: one thread measures steadier than two fighting others
    if args.encoder_rate:
        rows = bench_encoder_rate(steps=5 if args.quick else 20) + bench_online_step(steps=5 if args.quick else 20)
        _print(rows)
        return rows
    from sim.synth import synth
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        seqs, frames = (3, 24) if args.quick else (4, 80)
        synth(tmp / "data", sequences=seqs, frames=frames, seed=0, progress=False)
        steps, batch = (12, 16) if args.quick else (30, 32)
        # random-cnn (ResNet-18 at 128^2) stands for any CNN teacher; descriptor is the cheapest teacher there
        # is, so its ratio is the floor; fg-descriptor is the CPU default. VGG-16 (the paper's teacher) runs
        # ~1 image/s on a 2-core CPU, so it is only measured on a GPU (below).
        teachers = ["random-cnn"] if args.quick else ["fg-descriptor", "descriptor", "random-cnn", "effnet-lite0"]
        for t in teachers:
            rows.append(bench_cache(t, tmp / "data", tmp, steps, batch))
    specs = (["effnet-lite0,teacher_region=foreground,teacher_size=128"] if args.quick else
             ["effnet-lite0,teacher_region=frame", "effnet-lite0,teacher_region=frame,teacher_size=128", "effnet-lite0,teacher_region=foreground",
              "effnet-lite0,teacher_region=foreground,teacher_size=128"])
    rows += bench_teacher_rate(specs, n=32 if args.quick else 64)
    if torch.cuda.is_available():
        rows.append(bench_vgg16_cuda(10 if args.quick else 50))
    rows += bench_encoder_rate(chirps=(1,), steps=5 if args.quick else 20)
    rows += bench_online_step(steps=5 if args.quick else 20)
    _print(rows)
    return rows


def _print(rows: list[dict]) -> None:
    print(f"{'stage':<14} {'metric':<100} {'value':>9} {'unit':<8} {'baseline':>9} {'ratio':>6}  need")
    for r in rows:
        print(f"{r['stage']:<14} {r['metric']:<100} {r['value']:>9} {r['unit']:<8} {r['baseline']:>9} {r['ratio']:>6}  {r['need']}")


if __name__ == "__main__":
    main()

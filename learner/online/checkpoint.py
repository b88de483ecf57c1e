"""The online learner's checkpoint I/O: `RUN/ckpt.pt` (everything needed to continue), `RUN/encoder.pt`
(the radar encoder alone, in the offline learner's layout) and starting from an offline checkpoint.

`RUN/ckpt.pt` is written atomically (`learner.checkpoint.atomic_save`: temp file, fsync, rename, fsync
of the directory) and holds tensors and primitives only, so it loads with `torch.load(weights_only=True)`:
model, optimizer, step counters, negative queue (keys, times, sequence ids, pointer) and the stream keys
waiting to join it, teacher key centre, replay-buffer contents, live held-out set, stream position (last
message seq per publisher epoch), dedup state, every RNG, probe history, config, and the weight average
(`learner/ema.py`) that `encoder.pt` exports (`encoder-last.pt`: the last iterate). A learner killed at any
moment restarts from the last checkpoint (`radvis learn online --out RUN` again) and continues the step
count, queue and buffer.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from learner.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state

log = logging.getLogger("radvis.learn.online")

CKPT = "ckpt.pt"
EXPORT = "encoder.pt"
EXPORT_LAST = "encoder-last.pt"  # the last iterate, when encoder.pt holds the weight average
CKPT_FORMAT = "radvis-online-1"


def state_dict(lrn) -> dict:
    return {"format": CKPT_FORMAT, "step": lrn.step, "samples": lrn.samples, "naive": lrn.naive,
            "radar_encoder": lrn.lc.radar_encoder, "key_dim": lrn.dim, "teacher": lrn.teacher.name,
            "model": lrn.model.state_dict(), "optimizer": lrn.opt.state_dict(),
            "queue": lrn.queue.state_dict(), "queue_pending": lrn.pending.state_dict(),
            "teacher_center": {"center": lrn.teacher.center.cpu(), "centered": bool(lrn.teacher.centered)},
            "buffer": lrn.buffer.state_dict(), "ingest": lrn.ingest.state_dict(),
            "heldout": lrn.heldout.state_dict() if lrn.heldout is not None else None,
            "rng": rng_state(lrn.np_rng), "augment": lrn.augment.state_dict(), "eval_history": lrn.eval_history,
            "weight_average": lrn.average.state_dict() if lrn.average is not None else None,
            "config": dataclasses.asdict(lrn.lc), "saved_wall_ns": time.time_ns()}


def load_state(lrn, sd: dict) -> None:
    path = lrn.out / CKPT
    if sd.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path}: not an online-learner checkpoint (format {sd.get('format')!r})")
    if sd["key_dim"] != lrn.dim or sd["radar_encoder"] != lrn.lc.radar_encoder:
        raise ValueError(f"{path}: saved with radar encoder {sd['radar_encoder']!r} and key dim {sd['key_dim']}, "
                         f"this run has {lrn.lc.radar_encoder!r} and {lrn.dim}: use another --out")
    saved = list((sd.get("config") or {}).get("chirps") or [])
    if saved != list(lrn.chirps):   # the buffer and the first conv are shaped by them
        raise ValueError(f"{path}: saved reading radar chirps {saved or 'the one map radar.ra'}, this run reads "
                         f"{list(lrn.chirps) or 'the one map radar.ra'} (learner.online_chirps): use another --out, "
                         f"or the run's own learner.online_chirps")
    lrn.model.load_state_dict(sd["model"])
    lrn.opt.load_state_dict(sd["optimizer"])
    lrn.queue.load_state_dict(sd["queue"])
    if sd.get("queue_pending") is not None:  # absent in checkpoints written before enqueue-after-step
        lrn.pending.load_state_dict(sd["queue_pending"])
    tc = sd["teacher_center"]
    lrn.teacher.set_center(tc["center"] if tc["centered"] else None)
    if tc["centered"]:
        lrn.ingest.center_pairs = 0  # keys in the saved buffer/queue are in this centre's space
    lrn.buffer.load_state_dict(sd["buffer"])
    lrn.ingest.load_state_dict(sd["ingest"])
    if lrn.heldout is not None and sd.get("heldout"):
        lrn.heldout.load_state_dict(sd["heldout"])
    set_rng_state(sd["rng"], lrn.np_rng)
    if sd.get("augment") is not None:  # absent in checkpoints written before learner/augment.py
        lrn.augment.load_state_dict(sd["augment"])
    if lrn.average is not None:
        if sd.get("weight_average") is not None:
            lrn.average.load_state_dict(sd["weight_average"])
        else:  # a checkpoint written without the average: it starts from the saved weights
            lrn.average.model.load_state_dict(sd["model"])
    lrn.step, lrn.samples = int(sd["step"]), int(sd["samples"])
    lrn.eval_history = list(sd.get("eval_history", []))
    log.info("resumed from %s: step %d, queue %d keys, buffer %d pairs", path, lrn.step, len(lrn.queue),
             len(lrn.buffer))


def init_from_offline(lrn, path: str) -> None:
    """Start from an offline `radvis learn offline` checkpoint or export: its radar encoder weights (and
    its teacher centre, so keys live in the same space), fresh optimizer/queue/buffer."""
    sd = load_checkpoint(Path(path))
    state = None
    for key in ("model", "radar_encoder", "encoder", "state_dict"):
        if isinstance(sd.get(key), dict) and any(torch.is_tensor(v) for v in sd[key].values()):
            state = sd[key]
            break
    if state is None and all(torch.is_tensor(v) for v in sd.values()):
        state = sd
    if state is None:
        raise ValueError(f"{path}: no radar encoder state dict found (keys: {sorted(sd)})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = lrn.model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path}: radar encoder {lrn.lc.radar_encoder!r} with key dim {lrn.dim} does not match "
                         f"the checkpoint (missing {missing[:4]}...); use the same learner settings as the offline run")
    if lrn.average is not None:  # the average starts from the weights it continues from
        lrn.average.model.load_state_dict(lrn.model.state_dict())
    for key in ("teacher", "teacher_center"):
        c = sd.get(key)
        if isinstance(c, dict):
            c = c.get("center") if c.get("centered", True) else None
        if torch.is_tensor(c) and c.numel() == lrn.dim:
            lrn.teacher.set_center(c)
            lrn.ingest.center_pairs = 0
            break
    log.info("initialised radar encoder from %s", path)


def save(lrn) -> Path:
    p = lrn.out / CKPT
    atomic_save(state_dict(lrn), p)
    return p


def export(lrn) -> Path:
    """RUN/encoder.pt: radar encoder weights + the learner config and teacher that rebuild it, in the
    layout of the offline learner's checkpoints, so `radvis eval --run RUN --data DIR --checkpoint
    encoder.pt` evaluates it (and `--from RUN/encoder.pt` continues from it). With a probe directory
    configured, RUN/split.json is written for it the way `radvis learn offline` writes its own."""
    from learner.online.probe import write_split_json
    p = lrn.out / EXPORT
    exports = [(p, lrn.published(), lrn.average is not None)]
    if lrn.average is not None:
        exports.append((lrn.out / EXPORT_LAST, lrn.model, False))
    for path, model, averaged in exports:
        atomic_save({"format": "radvis-encoder-1", "source": "online", "model": model.state_dict(),
                     "weight_average": lrn.average.momentum if averaged else 0.0,
                     "config": dataclasses.asdict(lrn.lc), "step": lrn.step, "samples": lrn.samples,
                     "epoch": 0,  # a stream has no epochs; `radvis eval` reports this field
                     "feat_dim": int(getattr(lrn.model, "feat_dim", lrn.dim)),
                     "teacher": {"name": lrn.teacher.name, "dim": lrn.dim, "center": lrn.teacher.center.cpu(),
                                 "centered": bool(lrn.teacher.centered)}}, path)
    if lrn.lc.online_eval_data and not (lrn.out / "split.json").exists():
        write_split_json(lrn.lc.online_eval_data, lrn.lc, lrn.out / "split.json")
    return p



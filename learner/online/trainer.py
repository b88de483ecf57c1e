"""The online learner's loop: ingest → sample a decorrelated batch from the replay buffer → InfoNCE of
radar embeddings against their frozen image keys and a queue of past keys fed continuously from the
stream (temporal exclusion masks near-identical neighbours) → SGD step. Checkpoints, metrics and the
periodic probe are all in this loop, flat and in one place (nanoGPT style).

Checkpoint (`RUN/ckpt.pt`, written atomically: temp file + fsync + os.replace) holds tensors and
primitives only, so it loads with `torch.load(weights_only=True)`: model, optimizer, step counters,
negative queue (keys, times, sequence ids, pointer), teacher key centre, replay-buffer contents, live
held-out set, stream position (last message seq per publisher epoch), dedup state, every RNG, eval
history. A learner killed at any moment restarts from the last checkpoint (`radvis learn online --out
RUN` again) and continues the step count, queue and buffer.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from learner.loss import effective_negatives, info_nce, mi_bound
from learner.models import build_radar_encoder
from learner.online.buffer import ReplayBuffer
from learner.online.ingest import CLASSES, Ingest, LiveHoldout, Receiver
from learner.queue import NegativeQueue
from learner.teachers import build_teacher, wants_centering
from radvis.log import StatsLine

log = logging.getLogger("radvis.learn.online")

CKPT_FORMAT = "radvis-online-1"


# ---------------------------------------------------------------------------------------------
# Checkpoint I/O
# ---------------------------------------------------------------------------------------------

def atomic_save(obj, path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target: a kill at any
    point leaves either the old or the new checkpoint, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    st = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _param_groups(model: nn.Module, wd: float):
    """Weight decay on weights only, not on BN/bias (as lightly's MoCo benchmark)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Probe: kNN + linear on frozen radar features
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def radar_features(model: nn.Module, radar: np.ndarray, device, batch: int = 128) -> np.ndarray:
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(radar), batch):
        x = torch.from_numpy(np.ascontiguousarray(radar[i:i + batch])).to(device)
        f = model.features(x) if hasattr(model, "features") else model(x)
        out.append(torch.nn.functional.normalize(f.float(), dim=1).cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)


def knn_accuracy(ftr, ytr, fte, yte, k: int = 20, t: float = 0.07, n_classes: int = len(CLASSES)) -> float:
    """Weighted kNN (InstDisc / solo-learn: k=20, T=0.07, cosine) accuracy."""
    sims = torch.from_numpy(fte) @ torch.from_numpy(ftr).T
    k = min(k, len(ytr))
    w, idx = sims.topk(k, dim=1)
    votes = torch.zeros(len(fte), n_classes)
    votes.scatter_add_(1, torch.from_numpy(ytr)[idx], (w / t).exp())
    return float((votes.argmax(1).numpy() == yte).mean())


def linear_probe_accuracy(ftr, ytr, fte, yte, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(max_iter=500, C=1.0, random_state=seed)
    clf.fit(ftr, ytr)
    return float((clf.predict(fte) == yte).mean())


def split_by_scene(scene: np.ndarray, label: np.ndarray, frac: float = 0.5) -> np.ndarray:
    """Boolean 'probe-train' mask splitting whole scenes (no neighbouring frames on both sides), per
    class, so both sides see every class that has at least two scenes."""
    rng = np.random.default_rng(0)
    train_scenes = set()
    for c in np.unique(label):
        uniq = rng.permutation(np.unique(scene[label == c]))
        k = int(round(len(uniq) * frac)) if len(uniq) > 1 else 1
        train_scenes.update(uniq[: max(1, min(k, len(uniq) - 1 if len(uniq) > 1 else 1))].tolist())
    return np.isin(scene, list(train_scenes))


# ---------------------------------------------------------------------------------------------
# The learner
# ---------------------------------------------------------------------------------------------

class OnlineLearner:
    def __init__(self, cfg, out_dir, *, endpoint: str | None = None, from_ckpt: str | None = None,
                 naive: bool = False, device: str | None = None):
        self.cfg, self.lc = cfg, cfg.learner
        lc = self.lc
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(".*.pt.tmp-*"):  # a temp file left by a learner killed mid-write
            stale.unlink(missing_ok=True)
        self.endpoint = endpoint
        self.naive = naive
        self.device = _resolve_device(device or lc.device)
        torch.manual_seed(lc.seed)
        random.seed(lc.seed)
        self.np_rng = np.random.default_rng(lc.seed)

        # the naive streaming baseline: train on the latest B pairs, FIFO queue, no exclusion, no dedup
        self.batch_size = lc.batch_size
        self.exclusion_s = 0.0 if naive else lc.online_exclusion_s
        self.min_sep_ns = 0 if naive else int(lc.online_min_separation_s * 1e9)
        capacity = lc.batch_size if naive else lc.online_buffer_size
        policy = "fifo" if naive else lc.online_policy
        dedup = 1.0 if naive else lc.online_dedup_threshold
        self.min_fill = min(lc.online_min_fill, capacity)

        self.teacher = build_teacher(lc).to(self.device)
        log.info("teacher %s (key dim %d), radar encoder %s", self.teacher.name, self.teacher.dim, lc.radar_encoder)
        self.dim = self.teacher.dim
        self.model = build_radar_encoder(lc.radar_encoder, self.dim).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(_param_groups(self.model, lc.weight_decay), lr=lc.lr, momentum=lc.momentum)
        self.queue = NegativeQueue(self.dim, lc.queue_size).to(self.device)
        self.buffer = ReplayBuffer(capacity, self.dim, policy=policy, seed=lc.seed)
        self.heldout = None
        if lc.online_live_eval_fraction > 0 and not lc.online_eval_data:
            self.heldout = LiveHoldout(lc.online_live_eval_fraction, lc.online_live_eval_size, lc.seed)
        center_pairs = lc.online_center_pairs if wants_centering(lc, self.teacher) else 0
        self.ingest = Ingest(None, self.teacher.embed, self.buffer, self.queue, dedup_threshold=dedup,
                             keep_interval_s=lc.online_keep_interval_s, heldout=self.heldout,
                             center_pairs=center_pairs, set_center=self._set_center,
                             finish=self.teacher.finish,
                             clutter_tau_s=lc.online_clutter_tau_s if lc.clutter_removal else 0.0)
        self.offline = None
        if lc.online_offline_mix > 0 and lc.online_offline_data:
            self.offline = OfflineMix(lc.online_offline_data, self.teacher, self.out, lc)
        self.step = 0
        self.samples = 0  # pairs trained on (sum of batch sizes)
        self.eval_history: list[dict] = []
        self.eval_set = None  # (radar, label, probe-train mask): online_eval_data, or set by the caller
        self.enqueue_batch_keys = False  # True only to emulate offline (MoCo) training in bench.online --compare
        self.resumed_from = None

        ckpt = self.out / "ckpt.pt"
        if ckpt.exists():
            self._resume(load_checkpoint(ckpt))
            self.resumed_from = str(ckpt)
        elif from_ckpt:
            self._init_from_offline(from_ckpt)
        (self.out / "config.json").write_text(json.dumps({"learner": vars_of(lc), "naive": naive,
                                                          "teacher": self.teacher.name, "key_dim": self.dim}, indent=1))

    # ---------------------------------------------------------------- state

    def _set_center(self, mean: np.ndarray) -> None:
        self.teacher.set_center(torch.from_numpy(np.asarray(mean, np.float32)))
        log.info("teacher key centre fitted on %d pairs", self.ingest.center_pairs)

    def state_dict(self) -> dict:
        return {"format": CKPT_FORMAT, "step": self.step, "samples": self.samples, "naive": self.naive,
                "radar_encoder": self.lc.radar_encoder, "key_dim": self.dim, "teacher": self.teacher.name,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "queue": self.queue.state_dict(),
                "teacher_center": {"center": self.teacher.center.cpu(), "centered": bool(self.teacher.centered)},
                "buffer": self.buffer.state_dict(), "ingest": self.ingest.state_dict(),
                "heldout": self.heldout.state_dict() if self.heldout is not None else None,
                "rng": {**rng_state(), "numpy": self.np_rng.bit_generator.state},
                "eval_history": self.eval_history, "config": vars_of(self.lc), "saved_wall_ns": time.time_ns()}

    def _resume(self, sd: dict) -> None:
        if sd.get("format") != CKPT_FORMAT:
            raise ValueError(f"{self.out / 'ckpt.pt'}: not an online-learner checkpoint (format {sd.get('format')!r})")
        if sd["key_dim"] != self.dim or sd["radar_encoder"] != self.lc.radar_encoder:
            raise ValueError(f"{self.out / 'ckpt.pt'}: saved with radar encoder {sd['radar_encoder']!r} and key dim "
                             f"{sd['key_dim']}, this run has {self.lc.radar_encoder!r} and {self.dim}: use another --out")
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["optimizer"])
        self.queue.load_state_dict(sd["queue"])
        tc = sd["teacher_center"]
        self.teacher.set_center(tc["center"] if tc["centered"] else None)
        if tc["centered"]:
            self.ingest.center_pairs = 0  # keys in the saved buffer/queue are in this centre's space
        self.buffer.load_state_dict(sd["buffer"])
        self.ingest.load_state_dict(sd["ingest"])
        if self.heldout is not None and sd.get("heldout"):
            self.heldout.load_state_dict(sd["heldout"])
        set_rng_state(sd["rng"])
        self.np_rng.bit_generator.state = sd["rng"]["numpy"]
        self.step, self.samples = int(sd["step"]), int(sd["samples"])
        self.eval_history = list(sd.get("eval_history", []))
        log.info("resumed from %s: step %d, queue %d keys, buffer %d pairs", self.out / "ckpt.pt", self.step,
                 len(self.queue), len(self.buffer))

    def _init_from_offline(self, path: str) -> None:
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
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path}: radar encoder {self.lc.radar_encoder!r} with key dim {self.dim} does not match "
                             f"the checkpoint (missing {missing[:4]}...); use the same learner settings as the offline run")
        for key in ("teacher", "teacher_center"):
            c = sd.get(key)
            if isinstance(c, dict):
                c = c.get("center") if c.get("centered", True) else None
            if torch.is_tensor(c) and c.numel() == self.dim:
                self.teacher.set_center(c)
                self.ingest.center_pairs = 0
                break
        log.info("initialised radar encoder from %s", path)

    def save(self) -> Path:
        p = self.out / "ckpt.pt"
        atomic_save(self.state_dict(), p)
        release_freed_memory()  # the state dict's copies of the buffer were a few hundred MB of temporaries
        self.last_ckpt_t = time.monotonic()
        self.last_ckpt_step = self.step
        return p

    def export(self) -> Path:
        """RUN/encoder.pt: radar encoder weights + the learner config and teacher that rebuild it, in the
        layout of the offline learner's checkpoints, so `radvis eval --run RUN --data DIR --checkpoint
        encoder.pt` evaluates it (and `--from RUN/encoder.pt` continues from it). With a probe directory
        configured, RUN/split.json is written for it the way `radvis learn offline` writes its own."""
        p = self.out / "encoder.pt"
        atomic_save({"format": "radvis-encoder-1", "source": "online", "model": self.model.state_dict(),
                     "config": vars_of(self.lc), "step": self.step, "samples": self.samples,
                     "epoch": 0,  # a stream has no epochs; `radvis eval` reports this field
                     "feat_dim": int(getattr(self.model, "feat_dim", self.dim)),
                     "teacher": {"name": self.teacher.name, "dim": self.dim, "center": self.teacher.center.cpu(),
                                 "centered": bool(self.teacher.centered)}}, p)
        if self.lc.online_eval_data and not (self.out / "split.json").exists():
            write_split_json(self.lc.online_eval_data, self.lc, self.out / "split.json")
        return p

    # ---------------------------------------------------------------- training

    def lr_now(self) -> float:
        w = self.lc.online_warmup_steps
        return self.lc.lr * min(1.0, (self.step + 1) / w) if w else self.lc.lr

    def train_step(self) -> dict | None:
        m = int(round(self.lc.online_offline_mix * self.batch_size)) if self.offline is not None else 0
        idx = self.buffer.sample(self.batch_size - m, self.min_sep_ns, self.np_rng)
        if len(idx) < 2:  # BatchNorm needs two; the buffer spans too little time yet
            return None
        b = self.buffer.batch(idx)
        if m:
            o = self.offline.sample(m, self.np_rng)
            b = {k: torch.cat([b[k], o[k]]) for k in ("radar", "keys", "t_ns", "seq")}
        radar = b["radar"].to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            radar = radar.contiguous(memory_format=torch.channels_last)
        k = b["keys"].to(self.device)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            q = self.model(radar)
        mask = self.queue.mask(b["t_ns"], b["seq"], self.exclusion_s)
        loss, logits = info_nce(q.float(), k, self.queue, mask, self.lc.temperature)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.enqueue_batch_keys:  # offline/MoCo order: this batch's keys become negatives for later steps
            self.queue.enqueue(k, b["t_ns"], b["seq"])
        self.step += 1
        self.samples += len(idx)  # stream pairs only: updates_per_pair is the stream's replay ratio
        valid = self.queue.valid
        n_valid = int(valid.sum())
        excluded = (mask & valid.unsqueeze(0)).sum().item()
        k_eff = effective_negatives(mask, self.queue.K)
        lv = float(loss.detach())
        return {"loss": lv, "mi_bound": mi_bound(lv, k_eff), "k_eff": k_eff, "batch": len(idx) + m,
                "masked_frac": excluded / max(1, n_valid * len(idx)),
                "acc1": float((logits.argmax(1) == 0).float().mean())}

    # ---------------------------------------------------------------- evaluation

    def _eval_arrays(self):
        if self.eval_set is not None:
            return self.eval_set
        if self.lc.online_eval_data:
            if self.eval_set is None:
                self.eval_set = load_eval_set(self.lc.online_eval_data, self.cfg)
            return self.eval_set
        if self.heldout is None or self.heldout.size < 20:
            return None
        radar, label, scene = self.heldout.arrays()
        return radar, label, split_by_scene(scene, label)

    def evaluate(self) -> dict | None:
        data = self._eval_arrays()
        if data is None:
            return None
        radar, label, is_train = data
        if len(np.unique(label[is_train])) < 2 or (~is_train).sum() == 0:
            log.info("probe skipped at step %d: %d held-out pairs, %d classes on the probe-train side, %d test "
                     "pairs (live labels need >= 2 held-out scenes of a class)", self.step, len(label),
                     len(np.unique(label[is_train])), int((~is_train).sum()))
            return None
        f = radar_features(self.model, radar, self.device)
        ftr, ytr, fte, yte = f[is_train], label[is_train], f[~is_train], label[~is_train]
        r = {"step": self.step, "samples": self.samples, "n_train": int(len(ytr)), "n_test": int(len(yte)),
             "knn_acc": knn_accuracy(ftr, ytr, fte, yte), "linear_acc": linear_probe_accuracy(ftr, ytr, fte, yte)}
        self.eval_history.append(r)
        return r

    # ---------------------------------------------------------------- the loop

    def run(self, *, max_steps: int | None = None, duration_s: float | None = None, max_pairs: int | None = None,
            idle_exit_s: float | None = None, stop=None, make_subscriber=None) -> dict:
        """Train on the stream until a limit is hit (or `stop()` returns True). Returns the final metrics."""
        lc = self.lc
        if make_subscriber is None:
            make_subscriber = self._default_subscriber
        self.ingest.rx = Receiver(make_subscriber, lc.online_rx_queue).start()
        log.info("ready: subscribed to the pair stream")  # `radvis rig` starts sync after this line
        writer = _tb_writer(self.out / "tb")
        mf = open(self.out / "metrics.jsonl", "a")
        status = StatsLine(log, self.cfg.rig.stats_interval_s)
        t0 = time.monotonic()
        self.last_ckpt_t, self.last_ckpt_step = t0, self.step
        last_pair_t = t0
        last_rate_t, last_rate = t0, (self.step, 0)
        rates = {"steps_per_s": 0.0, "pairs_in_per_s": 0.0}
        step0, in0 = self.step, self.ingest.counts["pairs_in"]
        train_stats: dict = {}
        row = {}
        self._write(mf, writer, {"event": "start", "step": self.step, "resumed_from": self.resumed_from,
                                 "naive": self.naive, "teacher": self.teacher.name, "buffer_policy": self.buffer.policy})
        try:
            if self.step == 0 and lc.online_eval_every_steps and (lc.online_eval_data or self.eval_set is not None):
                self._probe(mf, writer, 0.0)  # the random-init encoder: where the probe curve starts
            while True:
                now = time.monotonic()
                pairs_now = self.ingest.counts["pairs_in"] - in0
                if ((max_steps is not None and self.step >= max_steps) or (duration_s and now - t0 >= duration_s)
                        or (max_pairs is not None and pairs_now >= max_pairs and self.ingest.rx.q.empty())
                        or (idle_exit_s and now - last_pair_t > idle_exit_s) or (stop is not None and stop())):
                    break
                # ingest first: drain the backlog (at most one queue's worth) before taking a step, so a
                # slow step costs training throughput (counted in updates_per_pair), never pairs
                taken = 0
                while taken < lc.online_rx_queue:
                    n = self.ingest.poll()
                    if not n:
                        break
                    taken += n
                    last_pair_t = time.monotonic()
                admitted = max(1, self.ingest.counts["kept"] - self.ingest.counts["heldout"])
                capped = lc.online_max_updates_per_pair and self.samples / admitted >= lc.online_max_updates_per_pair
                out = None
                if len(self.buffer) >= self.min_fill and not capped and not self.ingest.center_pending:
                    out = self.train_step()
                if out is None:
                    time.sleep(0.005)  # nothing to do: wait for pairs without spinning a core
                    if not self.ingest.rx.q.empty() or not status.due():
                        continue
                else:
                    train_stats = out
                now = time.monotonic()
                if now - last_rate_t >= 2.0:
                    ds, dp = self.step - last_rate[0], self.ingest.counts["pairs_in"] - last_rate[1]
                    rates = {"steps_per_s": ds / (now - last_rate_t), "pairs_in_per_s": dp / (now - last_rate_t)}
                    last_rate_t, last_rate = now, (self.step, self.ingest.counts["pairs_in"])
                if out is not None and self.step % lc.log_every == 0:
                    row = self._metrics_row(train_stats, rates, now - t0)
                    self._write(mf, writer, row)
                if status.due():
                    row = self._metrics_row(train_stats, rates, now - t0)
                    shown = status.tick(_status_fields(row))
                    if shown is not None:
                        self._publish_stats(shown, row)
                if out is not None and lc.online_eval_every_steps and self.step % lc.online_eval_every_steps == 0:
                    self._probe(mf, writer, now - t0)
                if out is not None and ((lc.online_ckpt_every_steps and self.step - self.last_ckpt_step
                                         >= lc.online_ckpt_every_steps)
                                        or (lc.online_ckpt_every_s and now - self.last_ckpt_t >= lc.online_ckpt_every_s)):
                    self.save()
                    self._write(mf, writer, {"event": "checkpoint", "step": self.step})
        finally:
            if getattr(self, "_spub", None):
                self._spub.close()
                self._spub = None
            self.ingest.rx.stop()
            # whatever was received before the stop is processed, so a stop loses no pair it acknowledged
            while self.ingest.poll():
                pass
            final = self._metrics_row(train_stats, rates, time.monotonic() - t0)
            final.update(event="stop", steps_this_run=self.step - step0)
            if self.step > 0 or len(self.buffer):
                self.save()
                self.export()
            self._write(mf, writer, final)
            mf.close()
            if writer is not None:
                writer.close()
        return final

    def _publish_stats(self, shown: dict, row: dict) -> None:
        """The status line as a `stats` message on the control bus: the rig's table and `radvis view` (the
        loss and probe-accuracy curves live) read it."""
        if getattr(self, "_spub", None) is None:
            from capture.daemon import stats_publisher
            self._spub = stats_publisher(self.cfg) or False
        if self._spub:
            from radvis.wire import Message
            probe = {k: row[k] for k in ("knn_acc", "linear_acc") if k in row}
            self._spub.send(Message(kind="stats", source="learner", meta={"stage": "learner", **shown, **probe}))

    def _probe(self, mf, writer, t: float) -> None:
        r = self.evaluate()
        release_freed_memory()
        if r:
            self._write(mf, writer, {"event": "eval", "t": round(t, 3), **r})
            log.info("eval step %d: kNN %.3f linear %.3f (%d/%d)", self.step, r["knn_acc"], r["linear_acc"],
                     r["n_train"], r["n_test"])

    def _default_subscriber(self):
        from radvis.transport import Subscriber, subscriber_from_config
        from radvis.wire import Limits
        if self.endpoint:
            from radvis.transport import keys_from_config
            t = self.cfg.transport
            return Subscriber(self.endpoint, ["pair"], hwm=t.rcvhwm, limits=Limits.from_config(t),
                              curve=keys_from_config(self.cfg), name="learn-online")
        return subscriber_from_config(self.cfg, ["pairs"], ["pair"], name="learn-online")

    def _metrics_row(self, train: dict, rates: dict, elapsed: float) -> dict:
        ing = self.ingest.stats()
        admitted = max(1, ing.get("kept", 0) - ing.get("heldout", 0))
        row = {"t": round(elapsed, 3), "step": self.step, "samples": self.samples,
               "pairs_in": ing.get("pairs_in", 0), "pairs_in_per_s": round(rates["pairs_in_per_s"], 3),
               "received": ing["received"], "dropped": ing["dropped"], "dropped_by_reason": ing["dropped_by_reason"],
               "duplicates_skipped": ing.get("duplicates_skipped", 0), "kept": ing.get("kept", 0),
               "heldout": ing.get("heldout", 0), "reservoir_discarded": ing["reservoir_discarded"],
               "buffer_fill": len(self.buffer), "buffer_capacity": self.buffer.capacity,
               "queue_fill": len(self.queue), "steps_per_s": round(rates["steps_per_s"], 3),
               "updates_per_pair": round(self.samples / admitted, 3), "lag_s": ing["lag_s"],
               "rx_queue": ing["rx_queue"], "lr": self.lr_now(), "rss_mb": round(rss_mb(), 1)}
        for k in ("loss", "mi_bound", "k_eff", "masked_frac", "acc1", "batch"):
            if k in train:
                row[k] = round(train[k], 5) if isinstance(train[k], float) else train[k]
        bs = self.buffer.stats()
        if "nn_sim_mean" in bs:
            row["buffer_nn_sim"] = round(bs["nn_sim_mean"], 4)
        if "span_s" in bs:
            row["buffer_span_s"] = round(bs["span_s"], 2)
        if self.eval_history:
            row["knn_acc"], row["linear_acc"] = self.eval_history[-1]["knn_acc"], self.eval_history[-1]["linear_acc"]
        return row

    def _write(self, mf, writer, row: dict) -> None:
        mf.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")
        mf.flush()
        if writer is not None and "step" in row:
            prefix = "eval/" if row.get("event") == "eval" else "online/"
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v):
                    writer.add_scalar(prefix + k, v, row["step"])


def _status_fields(row: dict) -> dict:
    keys = ("step", "pairs_in", "pairs_in_per_s", "dropped", "duplicates_skipped", "buffer_fill", "steps_per_s",
            "updates_per_pair", "lag_s", "loss", "mi_bound", "masked_frac", "linear_acc", "rss_mb")
    return {k: row[k] for k in keys if k in row}


def _tb_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; tolerate its absence rather than losing the run
        log.warning("tensorboard not importable; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(path))


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc malloc_trim) after the big temporaries of a checkpoint or
    a probe. Without it RSS climbed ~10-20 MB at each of them in a 10-minute rig run after the buffer was
    full: memory that was free but never returned, which made a bounded learner look like it leaked."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def vars_of(dc) -> dict:
    import dataclasses
    return dataclasses.asdict(dc)


class OfflineMix:
    """Frames of an offline CRUW-layout dataset mixed into each batch (e.g. to keep what offline
    pretraining learnt while adapting to the rig). Image keys come from the offline learner's frozen-teacher
    cache (computed once, float16 memmap), finished with this run's key centre."""

    def __init__(self, path: str, teacher, out: Path, lc):
        from learner import data as ldata
        from learner.cache import build_key_cache, cache_dir_for
        self.frames = ldata.CRUWFrames(path, chirp=lc.chirp, clutter_removal=lc.clutter_removal)
        self.idx = ldata.split_frames(self.frames, lc.split, lc.test_fraction, lc.seed)["train"]
        self.keys = build_key_cache(self.frames, self.idx, teacher, cache_dir_for(out / "key_cache", teacher))
        self.teacher = teacher
        log.info("mixing %d offline frames from %s", len(self.idx), path)

    def sample(self, m: int, rng: np.random.Generator) -> dict:
        j = rng.integers(0, len(self.idx), size=m)
        fi = self.idx[j]
        keys = self.teacher.finish(torch.from_numpy(np.asarray(self.keys[j], np.float32))).cpu()
        # offline sequences get negative ids so they never collide with a live stream's sequence ids
        return {"radar": torch.from_numpy(self.frames.radar_batch(fi)), "keys": keys,
                "t_ns": torch.from_numpy(self.frames.t_ns[fi]), "seq": torch.from_numpy(-1 - self.frames.seq[fi])}


def write_split_json(path: str, lc, dest: Path) -> None:
    """The split `radvis eval` expects beside a checkpoint (same rule and fields as the offline learner)."""
    from learner import data as ldata
    frames = ldata.CRUWFrames(path, ("train",), chirp=lc.chirp)
    split = ldata.split_frames(frames, lc.split, lc.test_fraction, lc.seed, lc.val_fraction)
    dest.write_text(json.dumps({
        "data": str(Path(path).resolve()), "n_frames": len(frames), "mode": lc.split, "seed": lc.seed,
        "test_sequences": sorted({frames.sequences[s].name for s in np.unique(frames.seq[split["test"]])}),
        **{k: v.tolist() for k, v in split.items()}}))


def load_eval_set(path: str, cfg, max_per_side: int = 1500):
    """Labelled radar maps of a CRUW-layout / `radvis synth` directory for the probe, with the offline
    learner's sequence-level split and class balancing: (radar float32 (N, 2, 128, 128), label (N,),
    probe-train mask). Loaded once; at most `max_per_side` frames per side keep it bounded."""
    from learner import data as ldata
    lc = cfg.learner
    frames = ldata.CRUWFrames(path, chirp=lc.chirp, clutter_removal=lc.clutter_removal)
    sp = ldata.split_frames(frames, lc.split, lc.test_fraction, lc.seed)
    rng = np.random.default_rng(lc.seed)
    tr = ldata.balanced(np.concatenate([sp["train"], sp["val"]]), frames.label, lc.seed)
    te = ldata.balanced(sp["test"], frames.label, lc.seed)
    tr = np.sort(rng.choice(tr, min(len(tr), max_per_side), replace=False))
    te = np.sort(rng.choice(te, min(len(te), max_per_side), replace=False))
    idx = np.concatenate([tr, te])
    log.info("probe set %s: %d train / %d test frames", path, len(tr), len(te))
    return frames.radar_batch(idx), frames.label[idx], np.arange(len(idx)) < len(tr)

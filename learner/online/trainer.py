"""`radvis learn online`: the online learner's loop, flat and in one place (nanoGPT style).

    ingest        socket -> bounded queue -> decode -> frozen teacher -> dedup -> replay buffer (ingest.py)
    sample        a decorrelated batch from the replay buffer (buffer.py)
    step          InfoNCE of radar embeddings against their image keys and a queue of past keys, SGD
                  (learner/step.py, shared with the offline learner); the stream keys that arrived since
                  the last step join the queue after it (MoCo's order)
    every N       metrics (metrics.py), probe (probe.py), checkpoint (checkpoint.py)

A learner killed at any moment restarts from its last checkpoint with `radvis learn online --out RUN`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from learner import augment
from learner.checkpoint import load_checkpoint, remove_stale_temps
from learner.device import resolve_device
from learner.evaluate import front
from learner.ema import WeightAverage
from learner.models import build_radar_encoder
from learner.online import checkpoint, probe
from learner.online.buffer import ReplayBuffer
from learner.online.ingest import Ingest, LiveHoldout, Receiver
from learner.online.metrics import release_freed_memory, rss_mb, status_fields, tb_writer
from learner.online.mix import OfflineMix
from learner.queue import NegativeQueue, PendingKeys
from learner.step import contrastive_step, step_stats
from learner.teachers import build_teacher, wants_centering
from radvis.chirps import online_chirps
from radvis.control import announce_ready
from radvis.log import StatsLine

log = logging.getLogger("radvis.learn.online")

QUEUE_FEEDS = ("stream", "batch")


def _param_groups(model: nn.Module, wd: float):
    """Weight decay on weights only, not on BN/bias (as lightly's MoCo benchmark)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class OnlineLearner:
    """naive: the naive streaming baseline (train on the latest B pairs, FIFO queue of the latest keys, no
    exclusion window, no dedup). queue_feed: what becomes a negative, always after the step:
    "stream" (default) the key of every pair admitted from the stream, once, so the queue is the recent
    stream whatever the replay ratio; "batch" the keys of each trained batch (MoCo over a pair set, as
    the offline variant of `bench.online --compare` and `bench.online_session` trains)."""

    def __init__(self, cfg, out_dir, *, endpoint: str | list[str] | None = None, from_ckpt: str | None = None,
                 naive: bool = False, device: str | None = None, queue_feed: str = "stream"):
        if queue_feed not in QUEUE_FEEDS:
            raise ValueError(f"queue_feed must be one of {QUEUE_FEEDS}, got {queue_feed!r}")
        self.chirps = online_chirps(cfg.learner)   # () = the frame's one map (radar.ra)
        if self.chirps:
            # the run's record of its input is `chirps`: its checkpoints, export, probe set, offline mix and
            # `radvis eval` then read the same chirps as the stream (learner.online_chirps or learner.chirps)
            cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, chirps=list(self.chirps)))
        self.cfg, self.lc = cfg, cfg.learner
        lc = self.lc
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out)  # temp files left by a learner killed mid-write
        self.endpoint, self.naive, self.queue_feed = endpoint, naive, queue_feed
        self.device = resolve_device(device or lc.device)
        torch.manual_seed(lc.seed)
        random.seed(lc.seed)
        self.np_rng = np.random.default_rng(lc.seed)
        self.augment = augment.from_config(lc, lc.seed)

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
        channels = 2 * max(1, len(self.chirps))
        self.model = build_radar_encoder(lc.radar_encoder, self.dim, chirps=channels // 2).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(_param_groups(self.model, lc.weight_decay), lr=lc.lr, momentum=lc.momentum)
        # the weights encoder.pt exports and the probe reads: an average of the last ~1 / (1 - m) iterates
        self.average = WeightAverage(self.model, lc.online_weight_average) if lc.online_weight_average else None
        self.queue = NegativeQueue(self.dim, lc.queue_size).to(self.device)
        self.pending = PendingKeys(self.queue)  # stream keys waiting for the next step to be taken
        self.buffer = ReplayBuffer(capacity, self.dim, (channels, 128, 128), policy=policy, seed=lc.seed)
        self.heldout = None
        if lc.online_live_eval_fraction > 0 and not lc.online_eval_data:
            self.heldout = LiveHoldout(lc.online_live_eval_fraction, lc.online_live_eval_size, lc.seed, channels)
        center_pairs = lc.online_center_pairs if wants_centering(lc, self.teacher) else 0
        self.ingest = Ingest(None, self.teacher.embed, self.buffer, self.pending if queue_feed == "stream" else None,
                             dedup_threshold=dedup, keep_interval_s=lc.online_keep_interval_s, heldout=self.heldout,
                             center_pairs=center_pairs, set_center=self._set_center, finish=self.teacher.finish,
                             clutter_tau_s=lc.online_clutter_tau_s if lc.clutter_removal else 0.0, chirps=self.chirps)
        self.offline = None
        if lc.online_offline_mix > 0 and lc.online_offline_data:
            self.offline = OfflineMix(lc.online_offline_data, self.teacher, self.out, lc)
        self.step = 0
        self.samples = 0  # pairs trained on (sum of batch sizes)
        self.eval_history: list[dict] = []
        self.eval_set = None  # (radar, label, probe-train mask): online_eval_data, or set by the caller
        self.resumed_from = None

        ckpt = self.out / checkpoint.CKPT
        if ckpt.exists():
            checkpoint.load_state(self, load_checkpoint(ckpt))
            self.resumed_from = str(ckpt)
        elif from_ckpt:
            checkpoint.init_from_offline(self, from_ckpt)
        (self.out / "config.json").write_text(json.dumps({"learner": dataclasses.asdict(lc), "naive": naive,
                                                          "queue_feed": queue_feed, "teacher": self.teacher.name,
                                                          "key_dim": self.dim}, indent=1))

    def _set_center(self, mean: np.ndarray) -> None:
        self.teacher.set_center(torch.from_numpy(np.asarray(mean, np.float32)))
        log.info("teacher key centre fitted on %d pairs", self.ingest.center_pairs)

    def save(self) -> Path:
        p = checkpoint.save(self)
        release_freed_memory()  # the state dict's copies of the buffer were a few hundred MB of temporaries
        self.last_ckpt_t, self.last_ckpt_step = time.monotonic(), self.step
        return p

    def published(self):
        """The encoder that is exported and probed: the weight average when on, else the last iterate."""
        return self.average.model if self.average is not None else self.model

    def export(self) -> Path:
        return checkpoint.export(self)

    # ---------------------------------------------------------------- training

    def lr_now(self) -> float:
        """Linear warm-up over online_warmup_steps, then constant learner.lr: a stream has no end for a
        cosine schedule to decay towards."""
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
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        enqueue = self.pending.take() if self.queue_feed == "stream" else None  # None: this batch's keys
        radar = self.augment(b["radar"]).to(self.device, non_blocking=True)  # mirrored / moved: learner/augment.py
        res = contrastive_step(self.model, self.opt, self.queue, radar,
                               b["keys"].to(self.device), b["t_ns"], b["seq"], temperature=self.lc.temperature,
                               exclusion_s=self.exclusion_s, enqueue=enqueue)
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        self.samples += len(idx)  # stream pairs only: updates_per_pair is the stream's replay ratio
        return {**step_stats(res), "batch": len(idx) + m}

    # ---------------------------------------------------------------- evaluation

    @property
    def eval_set(self):
        """(radar, label, probe-train mask) of a fixed probe set: online_eval_data, or set by the caller."""
        return self._eval_set

    @eval_set.setter
    def eval_set(self, value) -> None:
        self._eval_set, self._eval_fronted = value, False

    def _eval_arrays(self):
        """(radar, label, probe-train mask, fronted) for the probe, or None while there is nothing to probe."""
        if self.eval_set is None and self.lc.online_eval_data:
            self.eval_set = probe.load_eval_set(self.lc.online_eval_data, self.cfg)
        if self.eval_set is not None:
            if not self._eval_fronted:
                # a fixed set: the encoder's parameter-free front end once, not at every probe (a 4-chirp
                # map is 8x smaller after it, and that part was most of a 4-chirp probe's time)
                radar, label, is_train = self.eval_set
                radar = front(self.model, torch.from_numpy(radar)).numpy()
                self._eval_set, self._eval_fronted = (radar, label, is_train), True
            return (*self.eval_set, True)
        if self.heldout is None or self.heldout.size < 20:
            return None
        radar, label, scene = self.heldout.arrays()
        return radar, label, probe.split_by_scene(scene, label), False

    def evaluate(self) -> dict | None:
        data = self._eval_arrays()
        if data is None:
            return None
        radar, label, is_train, fronted = data
        if len(np.unique(label[is_train])) < 2 or (~is_train).sum() == 0:
            log.info("probe skipped at step %d: %d held-out pairs, %d classes on the probe-train side, %d test "
                     "pairs (live labels need >= 2 held-out scenes of a class)", self.step, len(label),
                     len(np.unique(label[is_train])), int((~is_train).sum()))
            return None
        r = {"step": self.step, "samples": self.samples,
             **probe.probe(self.published(), radar, label, is_train, self.device, fronted=fronted)}
        self.eval_history.append(r)
        return r

    # ---------------------------------------------------------------- the loop

    def _warm_up(self) -> None:
        """On CUDA, before subscribing: the first call of every shape costs seconds (context, kernel
        loading, cuDNN plans). Done while pairs arrive, that stalled a GPU box's first ~25 s and filled the
        receive queue (`queue_full`). The encoder's pass runs in eval mode and its gradients are dropped,
        so no weight, optimiser state or BatchNorm statistic changes."""
        if self.device.type != "cuda":
            return
        t = time.monotonic()
        self.teacher.warm_up(self.ingest.max_batch * getattr(self.teacher, "max_regions", 1))
        self._encoder_pass()
        torch.cuda.synchronize(self.device)
        log.info("warmed up the teacher and the radar encoder on %s in %.1f s", self.device, time.monotonic() - t)

    def _encoder_pass(self) -> None:
        """One forward and backward pass of the radar encoder as a training step runs it (autocast, channels
        last), in eval mode, gradients dropped: it leaves no trace in the model or the optimiser."""
        was = self.model.training
        self.model.eval()
        x = torch.zeros((self.batch_size, *self.buffer.radar_shape), device=self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            self.model(x.contiguous(memory_format=torch.channels_last)).float().sum().backward()
        self.model.zero_grad(set_to_none=True)
        self.model.train(was)

    def run(self, *, max_steps: int | None = None, duration_s: float | None = None, max_pairs: int | None = None,
            idle_exit_s: float | None = None, stop=None, make_subscriber=None) -> dict:
        """Train on the stream until a limit is hit (or `stop()` returns True). Returns the final metrics."""
        lc = self.lc
        if make_subscriber is None:
            make_subscriber = self._default_subscriber
        self._warm_up()
        self.ingest.rx = Receiver(make_subscriber, lc.online_rx_queue).start()
        log.info("ready: subscribed to the pair stream")
        announce_ready(self.cfg, "learner")  # `radvis rig` starts the stages upstream of us after this message
        writer = tb_writer(self.out / "tb")
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
                    shown = status.tick(status_fields(row))
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
            from radvis.control import stats_publisher
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
        if self.endpoint:  # one URL or several (one per rig): one SUB socket connected to each
            from radvis.transport import keys_from_config
            t = self.cfg.transport
            return Subscriber(self.endpoint, ["pair"], hwm=t.rcvhwm, limits=Limits.from_config(t),
                              curve=keys_from_config(self.cfg), name="learn-online")
        # pairs, and the scene's ground truth of emulated rigs (labels of the live hold-out; none from hardware)
        return subscriber_from_config(self.cfg, ["pairs", "truth"], ["pair", "truth"], name="learn-online")

    def _metrics_row(self, train: dict, rates: dict, elapsed: float) -> dict:
        ing = self.ingest.stats()
        admitted = max(1, ing.get("kept", 0) - ing.get("heldout", 0))
        row = {"t": round(elapsed, 3), "step": self.step, "samples": self.samples,
               "pairs_in": ing.get("pairs_in", 0), "pairs_in_per_s": round(rates["pairs_in_per_s"], 3),
               "by_source": ing["by_source"],
               "received": ing["received"], "dropped": ing["dropped"], "dropped_by_reason": ing["dropped_by_reason"],
               "duplicates_skipped": ing.get("duplicates_skipped", 0), "kept": ing.get("kept", 0),
               "heldout": ing.get("heldout", 0), "reservoir_discarded": ing["reservoir_discarded"],
               "buffer_fill": len(self.buffer), "buffer_capacity": self.buffer.capacity,
               "queue_fill": len(self.queue), "steps_per_s": round(rates["steps_per_s"], 3),
               "updates_per_pair": round(self.samples / admitted, 3), "lag_s": ing["lag_s"],
               "rx_queue": ing["rx_queue"], "truth": ing["truth"], "lr": self.lr_now(), "rss_mb": round(rss_mb(), 1)}
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

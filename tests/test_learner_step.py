"""The one contrastive step both learners share (learner/step.py), its queue order and mask, and the
plumbing around it (atomic checkpoint writer, device resolver, held-back stream keys).

The fairness tests (#14 item 4) spy on the step each learner really takes and check, against the queue's
contents at that moment, that no anchor ever contrasts with its own key, with the exclusion window off
(exclusion 0: the naive streaming baseline and the paper's offline setting)."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from bench.online import SyntheticStream, _stream_items
from learner import step as step_mod
from learner.checkpoint import atomic_save, atomic_write, load_checkpoint, remove_stale_temps
from learner.device import resolve_device
from learner.queue import NegativeQueue, PendingKeys
from radvis import config


class OwnKeySpy:
    """Wraps contrastive_step: before each real step, records for every anchor whether a queue entry that
    holds the anchor's own key (the frozen teacher's key of the same pair: equal up to the replay buffer's
    float16 storage, cosine > 1 - 1e-5) is left unmasked, i.e. used as a negative."""

    def __init__(self, monkeypatch, module):
        self.steps = self.own_in_queue = self.own_as_negative = 0
        self.max_other = -1.0  # the most similar other key: far from the own-key threshold
        real = step_mod.contrastive_step

        def spy(encoder, opt, queue, radar, keys, t_ns, seq, **kw):
            cos = F.normalize(keys.detach().float(), dim=1) @ F.normalize(queue.keys.float(), dim=1).t()
            same = (cos > 1 - 1e-5) & queue.valid[None, :]   # (B, K)
            self.max_other = max(self.max_other, float(cos.masked_fill(same | ~queue.valid, -1).max()))
            res = real(encoder, opt, queue, radar, keys, t_ns, seq, **kw)
            self.steps += 1
            self.own_in_queue += int(same.any(1).sum())
            self.own_as_negative += int((same & ~res.mask).sum())
            return res
        monkeypatch.setattr(module, "contrastive_step", spy)


def _tiny_online(tmp_path, *extra):
    return config.load(None, ['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"',
                              'learner.weights="none"', "learner.batch_size=8", "learner.queue_size=512",
                              "learner.online_buffer_size=64", "learner.online_min_fill=8",
                              "learner.online_center_pairs=8", "learner.online_max_updates_per_pair=0",
                              "learner.online_live_eval_fraction=0", "learner.online_eval_every_steps=0",
                              "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0",
                              "learner.online_chirps=[]", *extra])  # synthetic pairs: one map


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_naive_online_anchor_never_contrasts_with_its_own_key(tmp_path, monkeypatch):
    """--naive (exclusion 0) trains on the latest B pairs again and again; before the fix every pair's key
    was enqueued at ingest, so each anchor met its own key as a negative."""
    from learner.online import trainer
    spy = OwnKeySpy(monkeypatch, trainer)
    lrn = trainer.OnlineLearner(_tiny_online(tmp_path), tmp_path / "naive", naive=True, device="cpu")
    assert lrn.exclusion_s == 0
    stream = SyntheticStream(seed=3)
    for start in range(0, 64, 4):       # 4 new pairs per round, 3 steps each: pairs are trained several times
        lrn.ingest.process(_stream_items(stream, start, 4))
        for _ in range(3):
            lrn.train_step()
    assert spy.steps >= 40
    assert spy.own_in_queue > 0          # the situation arises (re-trained pairs' keys are in the queue) ...
    assert spy.own_as_negative == 0      # ... and the anchor's own key is always masked
    assert spy.max_other < 0.9999        # no other pair's key could pass for the anchor's own


def test_stream_keys_join_the_queue_only_after_the_step(tmp_path):
    """MoCo's order: keys admitted since the last step are negatives only from the step after it."""
    from learner.online.trainer import OnlineLearner
    lrn = OnlineLearner(_tiny_online(tmp_path), tmp_path / "run", naive=True, device="cpu")
    stream = SyntheticStream(seed=4)
    lrn.ingest.process(_stream_items(stream, 0, 12))
    assert lrn.ingest.counts["kept"] == 12 and len(lrn.queue) == 0 and len(lrn.pending) == 12
    assert lrn.train_step() is not None
    assert len(lrn.queue) == 12 and len(lrn.pending) == 0
    lrn.ingest.process(_stream_items(stream, 12, 5))
    before = set(lrn.queue.t_ns[lrn.queue.valid].tolist())
    lrn.train_step()                      # trains on the 5 new pairs (the latest 8) against the old queue
    assert len(lrn.queue) == 17
    new = set(lrn.queue.t_ns[lrn.queue.valid].tolist()) - before
    assert sorted(new) == [int(n * 1e8) for n in range(12, 17)]
    # a checkpoint keeps the held-back keys and does not change what the next step enqueues
    lrn.ingest.process(_stream_items(stream, 17, 3))
    sd = lrn.pending.state_dict()
    assert len(lrn.pending) == 3 and sd["t_ns"].tolist() == [int(n * 1e8) for n in range(17, 20)]


def test_batch_feed_enqueues_each_trained_batch_after_its_step(tmp_path):
    """queue_feed="batch" (bench's offline variant, MoCo over a pair set): ingest leaves the queue alone and
    every step enqueues exactly its own batch afterwards."""
    from learner.online.trainer import OnlineLearner
    lrn = OnlineLearner(_tiny_online(tmp_path), tmp_path / "b", device="cpu", queue_feed="batch")
    lrn.ingest.process(_stream_items(SyntheticStream(seed=5), 0, 40))
    assert len(lrn.queue) == 0 and len(lrn.pending) == 0
    out = lrn.train_step()
    assert len(lrn.queue) == out["batch"] and out["k_eff"] == 0
    with pytest.raises(ValueError, match="queue_feed"):
        OnlineLearner(_tiny_online(tmp_path), tmp_path / "c", device="cpu", queue_feed="ingest")


def test_offline_epochs_never_contrast_an_anchor_with_its_own_key(tmp_path, monkeypatch):
    """Offline at exclusion 0 with K larger than the pair set: from epoch 2 every anchor's key from epoch 1
    is in the queue (MoCo lets it be a negative; here it is masked)."""
    from learner import train_offline
    from radvis.config import LearnerConfig
    from tests.test_learner_data import make_tiny_cruw
    spy = OwnKeySpy(monkeypatch, train_offline)
    data = make_tiny_cruw(tmp_path / "cruw", n_frames=8)
    cfg = LearnerConfig(radar_encoder="tiny", vision_encoder="tiny", batch_size=8, queue_size=256, epochs=3,
                        device="cpu", val_fraction=0.25, exclusion_s=0.0)
    train_offline.train(cfg, data, tmp_path / "run", progress=False, cache_dir=tmp_path / "cache")
    assert spy.steps > 0 and spy.own_in_queue > 0 and spy.own_as_negative == 0 and spy.max_other < 0.9999


def test_contrastive_step_is_infonce_then_sgd_then_enqueue():
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 6))
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    q = NegativeQueue(6, 10)
    q.enqueue(F.normalize(torch.randn(3, 6), dim=1), [0, 100, 200], [1, 1, 2])
    x, k = torch.randn(4, 2, 4, 4), F.normalize(torch.randn(4, 6), dim=1)
    t, s = torch.tensor([100, 300, 400, 500]), torch.tensor([1, 1, 1, 3])   # anchor 0 = queue entry 1's pair
    w0 = [p.detach().clone() for p in enc.parameters()]
    negs = q.keys.clone()
    with torch.no_grad():
        z = F.normalize(enc(x), dim=1)
    logits = torch.cat([(z * k).sum(1, keepdim=True), z @ negs.t()], 1) / 0.1
    logits[:, 4:] = -math.inf                                 # 7 empty slots
    logits[0, 2] = -math.inf                                  # anchor 0's own pair (seq 1, t 100)
    expect = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    res = step_mod.contrastive_step(enc, opt, q, x, k, t, s, temperature=0.1)
    torch.testing.assert_close(res.loss, expect)
    assert res.mask[0].tolist() == [False, True, False] + [True] * 7 and not res.mask[1:, :3].any()
    assert all(not torch.equal(a, b) for a, b in zip(w0, enc.parameters()))   # one SGD step was taken
    assert len(q) == 7 and torch.equal(q.keys[3:7], k) and q.t_ns[3:7].tolist() == t.tolist()
    st = step_mod.step_stats(res)
    assert st["k_eff"] == 2.75 and abs(st["masked_frac"] - 1 / 12) < 1e-9
    assert st["mi_bound"] == pytest.approx(math.log(3.75) - st["loss"])
    # an explicit enqueue pushes those keys instead of the batch's; an empty one pushes nothing
    step_mod.contrastive_step(enc, opt, q, x, k, t, s, temperature=0.1, enqueue=PendingKeys(q).take())
    assert len(q) == 7


def test_pending_keys_hold_at_most_K_newest():
    q = NegativeQueue(2, 5)
    p = PendingKeys(q)
    for i in range(4):
        p.enqueue(torch.full((3, 2), float(i)), [i * 10 + j for j in range(3)], [i] * 3)
    keys, t, s = p.take()
    assert t.tolist() == [21, 22, 30, 31, 32] and s.tolist() == [2, 2, 3, 3, 3] and len(p) == 0
    assert keys[:, 0].tolist() == [2, 2, 3, 3, 3]


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    p = tmp_path / "ckpt.pt"
    atomic_save({"step": torch.tensor(1)}, p)

    def dies(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, dies)
    assert int(load_checkpoint(p)["step"]) == 1 and os.listdir(tmp_path) == ["ckpt.pt"]
    (tmp_path / f".ckpt.pt.tmp-{os.getpid() + 1}").write_bytes(b"left by a kill -9")
    assert remove_stale_temps(tmp_path) == 1 and os.listdir(tmp_path) == ["ckpt.pt"]


def test_device_resolver():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_the_cuda_warm_up_pass_leaves_no_trace_in_the_encoder_or_optimiser(tmp_path):
    """On CUDA the learner runs one encoder pass before it subscribes (docs/deploy.md): the same pass on CPU
    must change no weight, BatchNorm statistic, gradient or optimiser state, and keep the training mode."""
    from learner.online.trainer import OnlineLearner
    lrn = OnlineLearner(_tiny_online(tmp_path), tmp_path / "run", device="cpu")
    before = {k: v.clone() for k, v in lrn.model.state_dict().items()}
    opt_before = repr(lrn.opt.state_dict())
    assert lrn.model.training
    lrn._encoder_pass()
    after = lrn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in lrn.model.parameters())
    assert repr(lrn.opt.state_dict()) == opt_before and lrn.model.training
    lrn._warm_up()   # on CPU a no-op
    assert all(torch.equal(before[k], lrn.model.state_dict()[k]) for k in before)

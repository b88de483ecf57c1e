"""Pretraining has to teach the radar encoder something: a short, fully seeded offline run on a small
`radvis synth` set, with the weight-free `fg-descriptor` teacher, must beat random-init features on a
linear probe over held-out sequences, and its InfoNCE loss must fall.

Protocol (what `radvis eval` does, on fewer labels and with a steadier baseline):
- data: `radvis synth`, 120 sequences x 8 frames (24 per kind), 128x96 images, noise 0.5, seed 0;
- split: sequence level, half of the sequences held out for the probe's test side (balanced, 384 frames),
  the other half pretrained on (tails held out for the label-free val_nce);
- pretraining: tiny radar encoder, batch 32, K 256, SGD lr 0.1 cosine, 8 epochs (~110 steps), seed 0;
- probe: standardised logistic regression on frozen penultimate features, trained on the labelled pool of
  the pretraining sequences at 5 % labels (mean of 3 stratified subsets) and at 100 %; baseline: the mean
  of 5 random-init encoders of the same architecture (one random init alone varies by +-5 points here).

Margins measured with these settings, SSL minus the random-init mean, in points of accuracy, over 15
data/pretraining seeds (each seed draws its own synth set, split, init and batch order). Seeds 0-9 were
looked at while choosing the settings above; seeds 10-14 were run only afterwards:
- 5 % labels:   9.0 +- 4.2 (mean +- sd), min 2.1 (seed 11), 15/15 positive  -> asserted: >= 2 points
  (seeds 10-14 alone: 13.1, 2.1, 10.0, 3.8, 5.5)
- 100 % labels: 6.4 +- 4.6, min -3.1 (seed 11), 14/15 positive             -> not asserted
The loss fell in every seed (held-out InfoNCE from 3.5-4.4 nats after epoch 1 to 1.3-1.9).
Seed 0 (this test): 8.3 points at 5 % labels (41.6 vs 33.3 %), 6.1 at 100 % (49.7 vs 43.6 %).
The margin is small because the teacher is: a linear probe on the `fg-descriptor` keys of the images
themselves (same split, 100 % labels) reaches only 60.2 / 54.7 / 49.7 % for seeds 0 / 1 / 11; and a
held-out sequence tends to be classified right or wrong as a whole, so the test side's ~48 single-class
sequences leave ~+-5 points of noise. The ImageNet
teacher (#14) is expected to widen it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from learner.checkpoint import load_checkpoint
from learner.data import CRUWFrames, balanced, label_subset
from learner.evaluate import extract, linear_probe
from learner.models import build_radar_encoder
from learner.train_offline import train
from radvis.config import LearnerConfig
from sim import synth

SEED = 0
PRETRAIN = dict(radar_encoder="tiny", vision_encoder="fg-descriptor", weights="none", batch_size=32, queue_size=256,
                lr=0.1, epochs=8, test_fraction=0.5, seed=SEED, device="cpu", log_every=5,
                radar_flip=0.0, radar_shift_bins=0)   # the margins below were measured without augmentation
MARGIN_FEW_LABELS = 0.02


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _probe(model, X, pool_y, test_y, n_pool):
    """(accuracy at 100 % labels, mean accuracy at 5 % labels over 3 stratified subsets)."""
    f = extract(model, X)
    fp, ft = f[:n_pool], f[n_pool:]
    full = linear_probe(fp, pool_y, ft, test_y)[0]
    few = [linear_probe(fp[s], pool_y[s], ft, test_y)[0]
           for s in (label_subset(np.arange(n_pool), pool_y, 0.05, seed) for seed in range(3))]
    return full, float(np.mean(few))


def test_pretraining_beats_random_init_features_and_its_loss_falls(tmp_path):
    data, run = tmp_path / "synth", tmp_path / "run"
    synth.synth(data, sequences=120, frames=8, seed=SEED, image_size=(128, 96), noise=0.5, progress=False)
    cfg = LearnerConfig(**PRETRAIN)
    train(cfg, data, run, progress=False, cache_dir=tmp_path / "cache", log=lambda *a: None)

    # the loss falls: training InfoNCE once the queue is full (epoch 2) vs the last epoch, and the
    # label-free held-out InfoNCE (fixed K: all held-out keys) from epoch 1 to the best epoch
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    loss = {e: [r["loss"] for r in rows if r.get("epoch") == e and "loss" in r] for e in (1, cfg.epochs - 1)}
    val = [r["val_nce"] for r in rows if "val_nce" in r]
    assert loss[1] and loss[cfg.epochs - 1] and len(val) == cfg.epochs
    assert np.mean(loss[cfg.epochs - 1]) < np.mean(loss[1]) - 1.0, loss
    assert min(val) < val[0] - 1.0, val

    # the probe, on sequences pretraining never saw
    split = json.loads((run / "split.json").read_text())
    frames = CRUWFrames(data, clutter_removal=cfg.clutter_removal)
    pool = balanced(np.array(split["train"] + split["val"], np.int64), frames.label, seed=0)
    test = balanced(np.array(split["test"], np.int64), frames.label, seed=0)
    assert not set(frames.seq[test]) & set(frames.seq[pool]) and len(test) >= 300
    X = torch.from_numpy(frames.radar_batch(np.concatenate([pool, test])))
    y_pool, y_test = frames.label[pool], frames.label[test]
    state = load_checkpoint(run / "best.pt")
    ssl = build_radar_encoder("tiny", state["teacher"]["dim"])
    ssl.load_state_dict(state["model"])
    ssl_full, ssl_few = _probe(ssl, X, y_pool, y_test, len(pool))
    rnd = []
    for r in range(5):
        torch.manual_seed(1000 + r)
        rnd.append(_probe(build_radar_encoder("tiny", state["teacher"]["dim"]), X, y_pool, y_test, len(pool)))
    rnd_full, rnd_few = np.mean(rnd, axis=0)
    report = (f"SSL {ssl_full:.3f} / {ssl_few:.3f} vs random-init {rnd_full:.3f} / {rnd_few:.3f} "
              f"(100 % / 5 % labels, {len(test)} test frames)")
    assert ssl_few - rnd_few >= MARGIN_FEW_LABELS, report

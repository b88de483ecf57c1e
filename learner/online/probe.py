"""The online learner's probe: how good are the radar features right now? Penultimate radar features of a
labelled held-out set, L2-normalised, scored by a weighted kNN (k = 20, T = 0.07, cosine: InstDisc /
solo-learn) and a logistic-regression linear probe, on the 4-class task (`radvis.cruw.LABELS`).

The held-out set is either a CRUW-layout directory (`learner.online_eval_data`, with the offline learner's
sequence-level split and class balancing) or the live labels of held-out scenes (`ingest.LiveHoldout`),
split into probe-train / probe-test by scene.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radvis.cruw import LABELS

log = logging.getLogger("radvis.learn.online")


@torch.no_grad()
def radar_features(model: nn.Module, radar: np.ndarray, device, batch: int = 128, fronted: bool = False) -> np.ndarray:
    """L2-normalised penultimate features; `fronted`: `radar` is already `model.front` of the maps."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(radar), batch):
        x = torch.from_numpy(np.ascontiguousarray(radar[i:i + batch])).to(device)
        f = model.features(x, fronted=fronted) if fronted else model.features(x) if hasattr(model, "features") else model(x)
        out.append(torch.nn.functional.normalize(f.float(), dim=1).cpu())
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, 1), np.float32)


def knn_accuracy(ftr, ytr, fte, yte, k: int = 20, t: float = 0.07, n_classes: int = len(LABELS)) -> float:
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


def probe(model: nn.Module, radar: np.ndarray, label: np.ndarray, is_train: np.ndarray, device,
          fronted: bool = False) -> dict:
    """kNN and linear probe accuracy of `model`'s features: train on `is_train`, test on the rest."""
    f = radar_features(model, radar, device, fronted=fronted)
    ftr, ytr, fte, yte = f[is_train], label[is_train], f[~is_train], label[~is_train]
    return {"n_train": int(len(ytr)), "n_test": int(len(yte)), "knn_acc": knn_accuracy(ftr, ytr, fte, yte),
            "linear_acc": linear_probe_accuracy(ftr, ytr, fte, yte)}


def data_split(path: str, lc):
    """(frames, split) of a CRUW-layout directory exactly as `radvis learn offline` splits it."""
    from learner import data as ldata
    frames = ldata.CRUWFrames(path, ("train",), chirp=ldata.learner_chirps(lc), clutter_removal=lc.clutter_removal)
    return frames, ldata.split_frames(frames, lc.split, lc.test_fraction, lc.seed, lc.val_fraction)


def write_split_json(path: str, lc, dest: Path) -> None:
    """The split.json `radvis eval` expects beside a checkpoint, for the probe directory `path`."""
    from learner.data import write_split
    frames, split = data_split(path, lc)
    write_split(dest, frames, split, lc.split, lc.seed)


def load_eval_set(path: str, cfg, max_per_side: int = 1500):
    """Labelled radar maps of a CRUW-layout / `radvis synth` directory for the probe, with the offline
    learner's sequence-level split and class balancing: (radar float32 (N, 2, 128, 128), label (N,),
    probe-train mask). Loaded once; at most `max_per_side` frames per side keep it bounded."""
    from learner import data as ldata
    lc = cfg.learner
    frames, sp = data_split(path, lc)
    rng = np.random.default_rng(lc.seed)
    tr = ldata.balanced(np.concatenate([sp["train"], sp["val"]]), frames.label, lc.seed)
    te = ldata.balanced(sp["test"], frames.label, lc.seed)
    tr = np.sort(rng.choice(tr, min(len(tr), max_per_side), replace=False))
    te = np.sort(rng.choice(te, min(len(te), max_per_side), replace=False))
    idx = np.concatenate([tr, te])
    log.info("probe set %s: %d train / %d test frames", path, len(tr), len(te))
    return frames.radar_batch(idx), frames.label[idx], np.arange(len(idx)) < len(tr)

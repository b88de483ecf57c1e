"""`radvis eval --run RUN --data DIR [--json]`: the paper's evaluation protocol (§V-C, §VI) on a run.

- Linear probe (linear layer + softmax = multinomial logistic regression) on frozen backbone features of
  the pretrained encoder, and of the same architecture at random init (is it the pretraining or the
  architecture?), test split = the run's held-out sequences (no labels ever touched during pretraining).
- Label efficiency: 1, 5, 10, 25, 50, 100 % of the balanced labelled training pool (stratified, >= 1
  per class), several seeds, vs a supervised-from-scratch encoder trained on the same labels.
- Fine-tuning curve: test loss per epoch, SSL-initialised vs from scratch (paper Fig. 6).
- t-SNE of penultimate features, random-init vs trained (Fig. 7); confusion matrix of the 100 % probe.
- Optional queue-size sweep (Fig. 4): short pretraining runs at several K, each probed at 100 %.
Writes RUN/eval/report.md, PNGs and results.json; `--json` prints the results.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from radvis.log import progress as tqdm  # a bar on a terminal, plain lines in logs

from learner.checkpoint import load_checkpoint
from learner.data import DataError, balanced, label_subset, learner_chirps, split_frames
from learner.multiroot import describe, open_frames
from learner.models import build_radar_encoder
from radvis.cruw import LABELS

CHANCE = 1.0 / len(LABELS)


# evaluation settings come from the current config; everything else from the run's checkpoint
EVAL_KEYS = ("label_fractions", "eval_seeds", "supervised_epochs", "supervised_lr", "supervised_min_steps", "device")


def cfg_from_checkpoint(state: dict, base):
    """LearnerConfig as the run was trained, with the current config's evaluation settings."""
    known = {f.name for f in dataclasses.fields(base)}
    return dataclasses.replace(base, **{k: v for k, v in state["config"].items() if k in known and k not in EVAL_KEYS})


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, batch: int = 256, fronted: bool = False) -> np.ndarray:
    """Penultimate features of x; `fronted`: x is already `model.front(x)` (see `front`)."""
    model.eval()
    return torch.cat([model.features(x[s:s + batch], fronted=fronted).float() for s in range(0, len(x), batch)]).numpy()


@torch.no_grad()
def front(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """`model.front` of every frame, once: the probe, the random-init encoder and every supervised and
    fine-tuning epoch then start from it (no augmentation here, so it never changes)."""
    return torch.cat([model.front(x[s:s + batch]) for s in range(0, len(x), batch)])


def probe_sets(frames, split: dict) -> tuple[np.ndarray, np.ndarray]:
    """The label-efficiency sweep's balanced labelled pool (train + val) and balanced test set of a run's split."""
    pool = balanced(np.array(split["train"] + split["val"], np.int64), frames.label, seed=0)
    return pool, balanced(np.array(split["test"], np.int64), frames.label, seed=0)


def probe_labels(ypool: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions in the pool of `fraction` % of its labels (stratified), label seed `seed`."""
    return label_subset(np.arange(len(ypool)), ypool, fraction / 100.0, seed=1000 * seed + int(fraction * 10))


def linear_probe(ftr: np.ndarray, ytr: np.ndarray, fte: np.ndarray, yte: np.ndarray) -> tuple[float, np.ndarray]:
    """Multinomial logistic regression (= linear FC + softmax) on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    if len(np.unique(ytr)) < 2:
        pred = np.full(len(yte), ytr[0])
    else:
        sc = StandardScaler().fit(ftr)
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(sc.transform(ftr), ytr)
        pred = clf.predict(sc.transform(fte))
    return float((pred == yte).mean()), pred


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int = len(LABELS), fronted: bool = False):
        super().__init__()
        self.encoder, self.fc, self.fronted = encoder, nn.Linear(encoder.feat_dim, n_classes), fronted

    def forward(self, x):
        return self.fc(self.encoder.features(x, fronted=self.fronted))


def train_classifier(model: Classifier, xtr, ytr, xte, yte, epochs: int, lr: float, seed: int,
                     batch: int = 32, min_steps: int = 60, every_epoch: bool = True) -> dict:
    """End-to-end training (supervised baseline or fine-tuning) with Adam; records test loss/acc per epoch
    (`every_epoch`; else only after the last, which is all the sweep needs: a 1 % run has ~60 one-step epochs,
    and testing after each cost more than the training). Small label sets get more epochs so every run
    takes at least `min_steps` optimiser steps."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)
    per_epoch = max(1, int(np.ceil(len(xtr) / batch)))
    epochs = max(epochs, int(np.ceil(min_steps / per_epoch)))
    curve = []
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for s in range(per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            if len(idx) < 2 and len(xtr) >= 2:     # BatchNorm needs 2+ samples
                continue
            loss = F.cross_entropy(model(xtr[idx]), ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not every_epoch and ep < epochs - 1:
            continue
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(xte[s:s + 256]) for s in range(0, len(xte), 256)])
            curve.append({"epoch": ep + 1, "test_loss": float(F.cross_entropy(logits, yte_t)),
                          "test_acc": float((logits.argmax(1) == yte_t).float().mean())})
    return {"acc": curve[-1]["test_acc"], "curve": curve}


def _mean_std(v):
    v = np.asarray(v, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


OFFLINE_CKPT, ONLINE_EXPORT, ONLINE_CKPT = "best.pt", "encoder.pt", "ckpt.pt"


def find_checkpoint(run: Path, checkpoint: str | None) -> Path:
    """The checkpoint to evaluate: --checkpoint (in RUN, or a path), else best.pt (offline run), else
    encoder.pt (online run). FileNotFoundError says which of RUN and the file is missing."""
    if not run.is_dir():
        raise FileNotFoundError(f"--run {run}: no such run directory (the --out of `radvis learn offline` or "
                                f"`radvis learn online`)")
    if checkpoint is None:
        for name in (OFFLINE_CKPT, ONLINE_EXPORT):
            if (run / name).is_file():
                return run / name
        raise FileNotFoundError(f"{run}: neither {OFFLINE_CKPT} (`radvis learn offline`) nor {ONLINE_EXPORT} "
                                f"(`radvis learn online`, written at its first checkpoint or when it stops): not a "
                                f"finished run? (--checkpoint FILE names another)")
    for p in (run / checkpoint, Path(checkpoint)):
        if p.is_file():
            return p
    have = ", ".join(sorted(p.name for p in run.glob("*.pt"))) or "none"
    raise FileNotFoundError(f"--checkpoint {checkpoint}: not in {run} (checkpoints there: {have})")


def load_encoder_state(path: Path) -> dict:
    """A checkpoint of either learner as one layout: model, config, teacher {name, dim}, and `kind`
    (offline | online), `epoch` (offline) or `step`/`samples` (online). ValueError for anything else."""
    try:
        sd = load_checkpoint(path)
    except Exception as e:  # a file that is not a weights-only torch checkpoint: say so in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a radvis checkpoint ({first[:160]})") from None
    if not isinstance(sd, dict) or not isinstance(sd.get("model"), dict) or not isinstance(sd.get("config"), dict):
        raise ValueError(f"{path}: not a radvis checkpoint (no model weights and learner config); use best.pt of "
                         f"`radvis learn offline` or encoder.pt / ckpt.pt of `radvis learn online`")
    teacher = sd.get("teacher")
    if isinstance(teacher, str):  # the online learner's full checkpoint: teacher name, key dimension beside it
        teacher = {"name": teacher, "dim": int(sd["key_dim"])}
    if not isinstance(teacher, dict) or "dim" not in teacher:
        raise ValueError(f"{path}: checkpoint names no teacher key dimension")
    online = sd.get("format") == "radvis-online-1" or sd.get("source") == "online"
    return {**sd, "teacher": teacher, "kind": "online" if online else "offline",
            "epoch": None if online else sd.get("epoch"), "step": sd.get("step"), "samples": sd.get("samples")}


def evaluate(cfg_l, run: str | Path, data: str | Path, *, checkpoint: str | None = None, fractions=None, seeds=None,
             supervised: bool = True, finetune: bool = True, queue_sweep=None, out: str | Path | None = None,
             progress: bool = True, tsne: bool = True, log=print) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run = Path(run)
    ckpt_path = find_checkpoint(run, checkpoint)
    state = load_encoder_state(ckpt_path)
    checkpoint = ckpt_path.name if ckpt_path.parent == run else str(ckpt_path)
    cfg_l = cfg_from_checkpoint(state, cfg_l)
    fractions = [float(f) for f in (fractions or cfg_l.label_fractions)]
    seeds = int(seeds or cfg_l.eval_seeds)
    if (run / "split.json").exists():
        split = json.loads((run / "split.json").read_text())
    elif state["kind"] == "online":  # learnt from the live stream, never from a directory: split --data by its rule
        split = {"data": [], "n_frames": 0}
    else:
        raise FileNotFoundError(f"{run / 'split.json'}: missing. It records which frames of the data directory were "
                                f"train/test; `radvis learn offline` writes it, and `radvis learn online` does when "
                                f"it probes a labelled set (--eval-data / learner.online_eval_data)")
    out = Path(out) if out else run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    frames = open_frames(data, ("train",), chirp=learner_chirps(cfg_l), clutter_removal=cfg_l.clutter_removal)
    if not (frames.label >= 0).any():
        raise DataError(f"{', '.join(map(str, [data] if isinstance(data, (str, Path)) else data))}: no labels "
                        f"(no annotations/train/*.txt, or only mixed frames). `radvis eval` needs labels: pretraining "
                        f"is label-free, evaluation is not. A `radvis export` of a session without the emulator's "
                        f"ground truth has none; evaluate on a labelled set instead (`radvis synth`, CRUW, or an "
                        f"export of an emulated session): --data LABELLED_DIR")
    trained_on = split["data"] if isinstance(split["data"], list) else [split["data"]]
    if trained_on != describe(data):
        # a labelled set the encoder never saw (e.g. pretrained on unlabelled exports): split it by its own rule
        if state["kind"] == "offline" or trained_on:
            log(f"radvis eval: {', '.join(describe(data))} is not the pretraining data ({', '.join(trained_on)}); probing on a "
                f"{cfg_l.split} split of it (seed {cfg_l.seed}, test fraction {cfg_l.test_fraction})")
        seen = sorted(set(describe(data)) & set(trained_on))
        if seen:
            log(f"radvis eval: warning: {', '.join(seen)} was part of the pretraining data: its test frames were seen "
                f"(without labels) in pretraining; pass the run's exact --data to use its held-out sequences")
        own = split_frames(frames, cfg_l.split, cfg_l.test_fraction, cfg_l.seed, 0.0)
        split = {**split, "data": describe(data), "n_frames": len(frames), "mode": cfg_l.split,
                 "train": own["train"].tolist(), "val": own["val"].tolist(), "test": own["test"].tolist(),
                 "test_sequences": sorted({frames.sequences[s].name for s in np.unique(frames.seq[own["test"]])})}
    elif len(frames) != split["n_frames"]:
        raise ValueError(f"{data}: has {len(frames)} frames but the run was trained on {split['n_frames']} "
                         f"({split['data']}); the data directory changed since pretraining")
    pool, test = probe_sets(frames, split)
    if len(pool) == 0 or len(test) == 0:
        raise ValueError("no labelled frames in the train pool or the test split (annotations missing?)")
    t0 = time.time()
    ypool, ytest = frames.label[pool], frames.label[test]
    arch, dim = cfg_l.radar_encoder, int(state["teacher"]["dim"])

    def fresh(seed):
        torch.manual_seed(seed)
        return build_radar_encoder(arch, dim, vgg_layer=cfg_l.vgg_layer, chirps=len(learner_chirps(cfg_l)))

    ssl = fresh(0)
    ssl.load_state_dict(state["model"])
    rnd = fresh(cfg_l.seed + 12345)
    X = front(ssl, torch.from_numpy(frames.radar_batch(np.concatenate([pool, test]))))
    xpool, xtest = X[:len(pool)], X[len(pool):]
    f_ssl, f_rnd = extract(ssl, X, fronted=True), extract(rnd, X, fronted=True)
    fs_pool, fs_test, fr_pool, fr_test = f_ssl[:len(pool)], f_ssl[len(pool):], f_rnd[:len(pool)], f_rnd[len(pool):]

    rows = []
    curves_sup = None
    jobs = [(fr, sd) for fr in fractions for sd in range(seeds)]
    bar = tqdm(jobs, desc="label-efficiency sweep", disable=not progress)
    for fr, sd in bar:
        sub = probe_labels(ypool, fr, sd)
        acc_ssl, pred_ssl = linear_probe(fs_pool[sub], ypool[sub], fs_test, ytest)
        acc_rnd, _ = linear_probe(fr_pool[sub], ypool[sub], fr_test, ytest)
        row = {"fraction": fr, "seed": sd, "n_labels": int(len(sub)), "ssl": acc_ssl, "random_init": acc_rnd}
        if supervised:
            res = train_classifier(Classifier(fresh(100 + sd), fronted=True), xpool[sub], ypool[sub], xtest, ytest,
                                   cfg_l.supervised_epochs, cfg_l.supervised_lr, seed=sd,
                                   min_steps=cfg_l.supervised_min_steps,
                                   every_epoch=fr == max(fractions) and sd == 0)  # the plotted curve
            row["supervised"] = res["acc"]
            if fr == max(fractions) and sd == 0:
                curves_sup = res["curve"]
        if fr == max(fractions) and sd == 0:
            confusion = _confusion(ytest, pred_ssl)
        rows.append(row)
        bar.set_postfix(frac=fr, ssl=f"{acc_ssl:.2f}", sup=f"{row.get('supervised', float('nan')):.2f}")
    table = []
    for fr in fractions:
        rs = [r for r in rows if r["fraction"] == fr]
        entry = {"fraction": fr, "n_labels": int(np.mean([r["n_labels"] for r in rs]))}
        for key in ("ssl", "random_init", "supervised"):
            if key in rs[0]:
                entry[key] = _mean_std([r[key] for r in rs])
        table.append(entry)

    ft = None
    if finetune:
        cls = Classifier(copy.deepcopy(ssl), fronted=True)
        full = np.arange(len(pool))
        ft = train_classifier(cls, xpool[full], ypool, xtest, ytest, cfg_l.supervised_epochs, cfg_l.supervised_lr,
                              seed=0, min_steps=cfg_l.supervised_min_steps)

    sweep = []
    if queue_sweep:
        sweep = _queue_sweep(cfg_l, run, data, queue_sweep, pool, test, frames, log)

    plots = {"label_efficiency": _plot_efficiency(table, out / "label_efficiency.png"),
             "confusion": _plot_confusion(confusion, out / "confusion.png")}
    if tsne:
        plots["tsne"] = _plot_tsne(fr_test, fs_test, ytest, out / "tsne.png")
    if ft is not None:
        plots["finetune"] = _plot_finetune(ft["curve"], curves_sup, out / "finetune.png")
    if sweep:
        plots["queue_sweep"] = _plot_sweep(sweep, out / "queue_sweep.png")
    results = {"run": str(run), "checkpoint": checkpoint, "run_kind": state["kind"],
               "epoch": None if state["epoch"] is None else int(state["epoch"]),
               "step": state["step"], "samples": state["samples"], "teacher": state["teacher"]["name"],
               "radar_encoder": arch, "data": ", ".join(describe(data)), "n_frames": len(frames),
               "n_pretrain_pairs": len(split["train"]), "n_probe_pool": int(len(pool)), "n_test": int(len(test)),
               "test_sequences": split["test_sequences"], "split": split["mode"], "seeds": seeds,
               "table": table, "rows": rows, "confusion": confusion.tolist(),
               "finetune_curve": ft["curve"] if ft else None, "supervised_curve": curves_sup,
               "queue_sweep": sweep, "plots": {k: str(v) for k, v in plots.items()}, "eval_s": time.time() - t0,
               "best": state.get("best"), "verdicts": verdicts(rows, fractions),
               # what `fresh` builds: effnet-lite0 starts from ImageNet, so its "random-init" column is not random
               "init": "imagenet" if arch == "effnet-lite0" else "random"}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(_report(results))
    return results


MIN_VERDICT_SEEDS = 3


def verdicts(rows: list[dict], fractions, min_seeds: int = MIN_VERDICT_SEEDS) -> list[str]:
    """One sentence per label fraction and baseline: the SSL probe's accuracy minus the baseline's, mean ± std
    of the paired per-seed differences (same label subset), and whether it is more than noise: |mean| > 2
    standard errors, with at least `min_seeds` label seeds (fewer: no verdict)."""
    out = []
    for key, name in (("random_init", "random-init features"), ("supervised", "supervised from scratch")):
        for fr in fractions:
            d = np.array([r["ssl"] - r[key] for r in rows if r["fraction"] == fr and key in r], float)
            if len(d) == 0:
                continue
            head = f"{fr:g} % labels, self-supervised − {name}: {100 * d.mean():+.1f}"
            if len(d) < min_seeds:
                out.append(f"{head} points from {len(d)} label seed(s): no verdict (needs >= {min_seeds} seeds)")
                continue
            sd = d.std(ddof=1)
            se = sd / np.sqrt(len(d))
            if abs(d.mean()) <= 2 * se:
                v = "within noise (the difference is not larger than 2 standard errors)"
            else:
                v = "self-supervised better" if d.mean() > 0 else f"{name} better"
            out.append(f"{head} ± {100 * sd:.1f} points (mean ± std over {len(d)} label seeds): {v}")
    return out


def _confusion(y, pred) -> np.ndarray:
    m = np.zeros((len(LABELS), len(LABELS)), np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def _queue_sweep(cfg_l, run, data, ks, pool, test, frames, log) -> list[dict]:
    from learner.train_offline import train
    out = []
    for K in ks:
        d = Path(run) / "eval" / f"queue_{K}"
        s = train(dataclasses.replace(cfg_l, queue_size=int(K)), data, d, progress=False, log=lambda *a: None)
        st = load_checkpoint(d / "best.pt")
        torch.manual_seed(0)
        m = build_radar_encoder(cfg_l.radar_encoder, int(st["teacher"]["dim"]), vgg_layer=cfg_l.vgg_layer,
                                chirps=len(learner_chirps(cfg_l)))
        m.load_state_dict(st["model"])
        f = extract(m, torch.from_numpy(frames.radar_batch(np.concatenate([pool, test]))))
        acc, _ = linear_probe(f[:len(pool)], frames.label[pool], f[len(pool):], frames.label[test])
        out.append({"K": int(K), "linear_acc": acc, "val_nce": s["best"].get("val_nce")})
        log(f"queue sweep: K={K} linear probe {acc:.3f}")
    return out


# ---- plots and report ---------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


TSNE_CAPTION = ("Held-out test frames, coloured by class. Frames of one sequence are near-duplicates, so tight "
                "clusters are mostly single sequences; read class structure across clusters, not within one.")


def _plot_tsne(f_rnd, f_ssl, y, path):
    from sklearn.manifold import TSNE
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, f, title in ((axes[0], f_rnd, "random-init encoder"), (axes[1], f_ssl, "self-supervised encoder")):
        z = TSNE(n_components=2, perplexity=min(30, max(2, len(f) // 4)), init="pca", random_state=0).fit_transform(f)
        for c, name in enumerate(LABELS):
            ax.scatter(z[y == c, 0], z[y == c, 1], s=6, label=name)
        ax.set_title(f"t-SNE of penultimate features: {title}")
        ax.set_xticks([]), ax.set_yticks([])
    axes[1].legend(markerscale=3)
    fig.text(0.5, 0.01, TSNE_CAPTION, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_efficiency(table, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [t["fraction"] for t in table]
    for key, label in (("ssl", "self-supervised (linear probe)"), ("supervised", "supervised from scratch"),
                       ("random_init", "random-init features (linear probe)")):
        if key in table[0]:
            m = [100 * t[key][0] for t in table]
            s = [100 * t[key][1] for t in table]
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=label)
    ax.axhline(100 * CHANCE, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{f:g} %" for f in x])  # the fractions evaluated, not log-axis powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labels used (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_confusion(m, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center")
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=30)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("linear probe, 100 % labels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_finetune(ft, sup, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["epoch"] for c in ft], [c["test_loss"] for c in ft], label="fine-tuned (SSL init)")
    if sup:
        ax.plot([c["epoch"] for c in sup], [c["test_loss"] for c in sup], label="supervised from scratch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_sweep(sweep, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([s["K"] for s in sweep], [100 * s["linear_acc"] for s in sweep], marker="o")
    ax.set_xlabel("queue size K")
    ax.set_ylabel("linear probe accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(ms):
    return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"


def _report(r: dict) -> str:
    if r.get("run_kind") == "online":
        what = (f"- online run (`radvis learn online`): checkpoint `{r['checkpoint']}`, step {r['step']}, "
                f"{r['samples']} samples trained on the live pair stream (the latest export, not chosen by any "
                f"score); teacher `{r['teacher']}`; radar encoder `{r['radar_encoder']}`")
        data = (f"- probe data `{r['data']}`: {r['n_frames']} frames (never trained on: the encoder learnt from the "
                f"stream); {r['split']} split, {r['n_pretrain_pairs']} frames on the probe's training side, test "
                f"sequences: {', '.join(r['test_sequences'])}")
    else:
        what = (f"- offline run (`radvis learn offline`): checkpoint `{r['checkpoint']}` (epoch {r['epoch']}, "
                f"chosen by held-out radar→image InfoNCE, label-free); teacher `{r['teacher']}`; radar encoder "
                f"`{r['radar_encoder']}`")
        data = (f"- data `{r['data']}`: {r['n_frames']} frames, {r['n_pretrain_pairs']} pretraining pairs; "
                f"{r['split']} split, test sequences: {', '.join(r['test_sequences'])}")
    L = [f"# Evaluation of {r['run']}", "", what, data,
         f"- balanced labelled pool {r['n_probe_pool']} frames, balanced test set {r['n_test']} frames; "
         f"{r['seeds']} seed(s) per fraction (mean ± std); chance = {100 * CHANCE:.0f} %", "",
         "## Label efficiency (test accuracy, %)", "",
         "| labels | n | self-supervised (linear) | random-init (linear) | supervised from scratch | SSL − supervised |",
         "|---|---|---|---|---|---|"]
    for t in r["table"]:
        sup = t.get("supervised")
        gap = f"{100 * (t['ssl'][0] - sup[0]):+.1f}" if sup else "–"
        L.append(f"| {t['fraction']:g} % | {t['n_labels']} | {_fmt(t['ssl'])} | {_fmt(t['random_init'])} | "
                 f"{_fmt(sup) if sup else '–'} | {gap} |")
    if r.get("init") == "imagenet":
        L += ["", f"Radar encoder `{r['radar_encoder']}` starts from ImageNet weights: the random-init column is that "
                  f"ImageNet initialisation (no radar training), and supervised from scratch trains from it."]
    L += ["", "### Verdict", ""] + [f"- {v}" for v in r.get("verdicts", [])]
    L += ["", "![label efficiency](label_efficiency.png)", "", "## Confusion matrix (linear probe, 100 % labels, seed 0)", "",
          "| true \\ predicted | " + " | ".join(LABELS) + " |", "|---" * (len(LABELS) + 1) + "|"]
    for i, c in enumerate(LABELS):
        L.append(f"| {c} | " + " | ".join(str(v) for v in r["confusion"][i]) + " |")
    L += ["", "![confusion](confusion.png)", ""]
    if r["finetune_curve"]:
        ft, sup = r["finetune_curve"], r["supervised_curve"]
        L += ["## Fine-tuning (100 % labels)", "",
              f"Final test accuracy: fine-tuned {100 * ft[-1]['test_acc']:.1f} %"
              + (f", supervised from scratch {100 * sup[-1]['test_acc']:.1f} %" if sup else "")
              + f"; lowest test loss: fine-tuned {min(c['test_loss'] for c in ft):.3f}"
              + (f", supervised {min(c['test_loss'] for c in sup):.3f}" if sup else "") + ".", "",
              "![fine-tuning](finetune.png)", ""]
    if r["queue_sweep"]:
        L += ["## Queue size sweep", "", "| K | linear probe (%) | held-out InfoNCE |", "|---|---|---|"]
        L += [f"| {s['K']} | {100 * s['linear_acc']:.1f} | {s['val_nce']:.3f} |" for s in r["queue_sweep"]]
        L += ["", "![queue sweep](queue_sweep.png)", ""]
    if "tsne" in r["plots"]:
        L += ["## t-SNE", "", "![t-SNE](tsne.png)", "", TSNE_CAPTION, ""]
    return "\n".join(L)


def run(args) -> int:
    fr = [float(x) for x in args.fractions.split(",")] if args.fractions else None
    ks = [int(x) for x in args.queue_sweep.split(",")] if args.queue_sweep else None
    from learner.cli import remove_if_empty
    from learner.data import DataError
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    new_out = not out.exists()
    try:
        res = evaluate(args.cfg.learner, args.run, args.data, checkpoint=args.checkpoint, fractions=fr,
                       seeds=args.seeds, supervised=not args.no_supervised, finetune=not args.no_finetune,
                       queue_sweep=ks, out=args.out, progress=not args.json,
                       log=(lambda *a: print(*a, file=sys.stderr)) if args.json else print)
    except (FileNotFoundError, DataError, ValueError) as e:
        if new_out:
            remove_if_empty(out)  # a failed eval leaves no empty report directory behind
        print(f"radvis eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in res.items() if k != "rows"} | {"rows": res["rows"]}))
    else:
        for t in res["table"]:
            sup = f", supervised {_fmt(t['supervised'])}" if "supervised" in t else ""
            print(f"{t['fraction']:g} % labels: SSL {_fmt(t['ssl'])}, random-init {_fmt(t['random_init'])}{sup}")
        for v in res["verdicts"]:
            print(f"verdict: {v}")
        print(f"report: {Path(res['plots']['confusion']).parent / 'report.md'}")
    return 0

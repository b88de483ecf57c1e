"""Offline pretraining and evaluation end to end on a tiny CRUW-layout tree: CLI run, exact resume,
2-process gloo DDP equivalence, offline-weights failure before training."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learner.train_offline import CKPT, load_checkpoint, train
from radvis import cli
from radvis.config import LearnerConfig
from tests.test_learner_data import make_tiny_cruw

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", 'learner.radar_encoder="tiny"', "--set", 'learner.vision_encoder="tiny"',
        "--set", "learner.batch_size=8", "--set", "learner.queue_size=20", "--set", "learner.log_every=2"]


def tiny_cfg(**kw) -> LearnerConfig:
    base = dict(radar_encoder="tiny", vision_encoder="tiny", batch_size=8, queue_size=20, epochs=2, log_every=2,
                device="cpu", val_fraction=0.25)
    base.update(kw)
    return LearnerConfig(**base)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_cruw(tmp_path_factory.mktemp("cruw"), n_frames=16)


def test_pretrain_then_eval_end_to_end(data, tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli.main(["learn", "offline", "--data", str(data), "--out", str(run), "--epochs", "2", "--quiet",
                   "--cache-dir", str(tmp_path / "cache"), *TINY])
    assert rc == 0
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)   # no pickle needed
    assert state["teacher"]["name"] == "tiny" and state["epoch"] in (1, 2)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("mi_bound" in x for x in lines) and any("val_top1" in x for x in lines)
    assert any((run / "tb").iterdir())
    capsys.readouterr()
    rc = cli.main(["eval", "--run", str(run), "--data", str(data), "--json", "--seeds", "1", "--fractions", "50,100",
                   "--set", "learner.supervised_epochs=1", "--set", "learner.supervised_min_steps=3"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["fraction"] for t in res["table"]] == [50.0, 100.0]
    for t in res["table"]:
        for key in ("ssl", "random_init", "supervised"):
            assert 0.0 <= t[key][0] <= 1.0
    assert sum(map(sum, res["confusion"])) == res["n_test"]
    ev = run / "eval"
    report = (ev / "report.md").read_text()
    assert "| 100 % |" in report and "random-init" in report
    for png in ("tsne.png", "label_efficiency.png", "confusion.png", "finetune.png"):
        assert (ev / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("aug", [dict(radar_flip=0.0, radar_shift_bins=0), dict(radar_flip=0.5, radar_shift_bins=3)],
                         ids=["plain", "augmented"])
def test_resume_reproduces_the_uninterrupted_run_exactly(data, tmp_path, aug):
    cfg = tiny_cfg(**aug)
    full = train(cfg, data, tmp_path / "full", progress=False, cache_dir=tmp_path / "cache")
    train(cfg, data, tmp_path / "cut", progress=False, cache_dir=tmp_path / "cache", max_epochs=1)   # "killed" after epoch 1
    assert load_checkpoint(tmp_path / "cut" / CKPT)["epoch"] == 1
    resumed = train(cfg, data, tmp_path / "cut", progress=False, cache_dir=tmp_path / "cache")
    assert resumed["steps"] == full["steps"]
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    qa, qb = full["queue"].state_dict(), resumed["queue"].state_dict()
    assert all(torch.equal(qa[k], qb[k]) for k in qa)
    assert full["last"]["loss"] == resumed["last"]["loss"]


def _rank_logs(log_dir) -> str:
    """Every rank's own stdout/stderr file that torchrun's --redirects wrote, for a failure message."""
    return "\n".join(f"--- {f.relative_to(log_dir)}\n{f.read_text(errors='replace')[-6000:]}"
                     for f in sorted(Path(log_dir).rglob("*.log")))


def test_two_gloo_ranks_fill_the_queue_like_one_process_with_the_doubled_batch(data, tmp_path):
    # PYTHONFAULTHANDLER: a rank that aborts (SIGABRT in gloo, seen twice on busy CI runs) dumps every thread's
    # Python stack into its own log; the failure message shows each rank's log, not only torchrun's tail
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    common = ["--data", str(data), "--epochs", "1", "--quiet", "--cache-dir", str(tmp_path / "cache"), *TINY,
              "--set", "learner.queue_size=28", "--set", 'learner.device="cpu"']
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "--log-dir", str(tmp_path / "ranks"), "--redirects", "3",
                          "-m", "learner.train_offline", "--out", str(tmp_path / "ddp"), *common,
                          "--set", "learner.batch_size=4"], env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:] + "\n" + _rank_logs(tmp_path / "ranks")
    one = subprocess.run([sys.executable, "-m", "learner.train_offline", "--out", str(tmp_path / "one"), *common,
                          "--set", "learner.batch_size=8"], env=env, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "ddp" / CKPT), load_checkpoint(tmp_path / "one" / CKPT)
    assert a["world_size"] == 2 and b["world_size"] == 1 and a["step"] == b["step"] > 1
    for k in ("keys", "t_ns", "seq_id", "valid", "ptr"):
        assert torch.equal(a["queue"][k], b["queue"][k]), k
    assert bool(a["queue"]["valid"].all())      # the ring wrapped (28 slots, 8 keys per global step)


def test_offline_without_weights_fails_before_training_with_instructions(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    run = tmp_path / "run"
    rc = cli.main(["learn", "offline", "--data", str(data), "--out", str(run), "--quiet",
                   "--set", 'learner.vision_encoder="vgg16"', "--set", 'learner.weights="imagenet"'])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vgg16-397923af.pth" in err and str(tmp_path / "torch_home" / "hub" / "checkpoints") in err
    assert "copy the file" in err
    assert not (run / CKPT).exists() and not (run / "split.json").exists()


def test_cache_is_computed_once_and_matches_the_live_teacher(data, tmp_path):
    from learner.cache import KeyCache, build_key_cache, cache_dir_for
    from learner.data import CRUWFrames
    from learner.teachers import build_teacher
    frames = CRUWFrames(data)
    t = build_teacher(tiny_cfg())
    d = cache_dir_for(tmp_path, t)
    idx = list(range(0, 40, 3))
    k1 = build_key_cache(frames, idx, t, d, progress=False)
    mtime = (d / "keys.f16").stat().st_mtime_ns
    k2 = build_key_cache(frames, idx, t, d, progress=False)              # all cached: nothing recomputed
    assert (d / "keys.f16").stat().st_mtime_ns == mtime and (k1 == k2).all()
    live = t.embed_uncentered(frames.images(idx, min_side=t.input_size)).numpy()
    assert abs(k1.astype("float32") - live).max() < 2e-3                  # float16 storage
    assert KeyCache(d, t.name, t.dim).frames[0] == frames.key(0)
    with pytest.raises(ValueError, match="belongs to teacher"):
        KeyCache(d, "other", t.dim)


def test_two_writers_of_one_cache_never_put_a_row_under_another_frames_name(tmp_path):
    """Two processes building keys for one data set (a teacher probe and a pretraining run): each opened
    the cache before the other appended. Every key must still read back as its own row."""
    import numpy as np
    from learner.cache import KeyCache
    a, b = KeyCache(tmp_path, "t", 4), KeyCache(tmp_path, "t", 4)
    va, vb = np.full((2, 4), 1.0), np.full((3, 4), 2.0)
    a.append(["s/x/0", "s/x/1"], va)
    b.append(["s/y/0", "s/x/1", "s/y/1"], vb)          # s/x/1 is already there: not appended twice
    fresh = KeyCache(tmp_path, "t", 4)
    assert fresh.frames == ["s/x/0", "s/x/1", "s/y/0", "s/y/1"]
    assert (fresh.lookup(["s/x/0", "s/x/1"]) == 1).all() and (fresh.lookup(["s/y/0", "s/y/1"]) == 2).all()
    assert (b.lookup(["s/x/0", "s/y/1"])[:, 0] == [1, 2]).all()
    assert (tmp_path / "keys.f16").stat().st_size == 4 * 4 * 2


def test_foreground_teacher_cache_uses_each_sequences_median_background(data, tmp_path):
    """fg-descriptor keys in the cache = the live teacher given the per-sequence median image; the
    no-cache training path (teacher run every step) gets the same backgrounds."""
    import numpy as np
    from learner.cache import build_key_cache, cache_dir_for
    from learner.data import CRUWFrames
    from learner.teachers import build_teacher, median_background
    from learner.train_offline import PairSource
    frames = CRUWFrames(data)
    t = build_teacher(tiny_cfg(vision_encoder="fg-descriptor"))
    idx = np.array([0, 5, 17, 30, 31, 47])                   # frames of three sequences
    k = build_key_cache(frames, idx, t, cache_dir_for(tmp_path, t), progress=False).astype("float32")
    for row, i in enumerate(idx):
        seq_frames = np.flatnonzero(frames.seq == frames.seq[i])
        bg = median_background(frames.images(seq_frames, min_side=t.input_size))
        live = t.embed_uncentered(frames.images([i], min_side=t.input_size), background=bg).numpy()
        assert abs(k[row] - live[0]).max() < 2e-3
    src = PairSource(frames, t, False, tmp_path, idx, "cpu", shuffle_bn=True, progress=False)
    assert abs(src.uncentred_keys(idx).numpy() - k).max() < 2e-3

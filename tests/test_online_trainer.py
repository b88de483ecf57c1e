"""`radvis learn online` end to end on real sockets: pairs in -> steps -> checkpoint + metrics + export;
kill -9 and restart resumes the step count, queue and buffer; the naive baseline; RSS stays flat."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.online import SyntheticStream, publish
from learner.checkpoint import load_checkpoint
from learner.models import build_radar_encoder
from learner.online.metrics import rss_mb
from learner.online.trainer import OnlineLearner
from radvis import config
from radvis.transport import Publisher

REPO = Path(__file__).resolve().parent.parent

TINY = ['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"', 'learner.weights="none"',
        'learner.batch_size=8', 'learner.queue_size=512', 'learner.online_buffer_size=128',
        'learner.online_min_fill=16', 'learner.online_center_pairs=16', 'learner.online_min_separation_s=0.3',
        'learner.online_exclusion_s=0.5', 'learner.online_max_updates_per_pair=0', 'learner.log_every=5',
        'learner.online_dedup_threshold=1.0', 'learner.online_chirps=[]',  # synthetic pairs: one map
        'learner.online_weight_average=0.99',  # opt-in: these tests cover its export, checkpoint and resume
        'rig.stats_interval_s=1']

# fields docs/online.md promises in every training row of metrics.jsonl
TRAIN_FIELDS = {"t", "step", "pairs_in", "pairs_in_per_s", "dropped", "dropped_by_reason", "duplicates_skipped",
                "buffer_fill", "steps_per_s", "updates_per_pair", "lag_s", "loss", "mi_bound", "masked_frac",
                "k_eff", "queue_fill", "rss_mb"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Feeder:
    """Publishes the synthetic stream on its own thread until stopped."""

    def __init__(self, ep: str, rate_hz: float, count: int, scene_s: float = 1.0, start: int = 0):
        self.pub = Publisher(ep, hwm=10000)
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._run, args=(rate_hz, count, scene_s, start), daemon=True)
        self.th.start()

    def _run(self, rate_hz, count, scene_s, start):
        self.pub.wait_for_subscribers(1, 20)
        publish(self.pub, SyntheticStream(seed=5, scene_s=scene_s), start, count, rate_hz=rate_hz, stop=self.stop)

    def close(self):
        self.stop.set()
        self.th.join(10)
        self.pub.close()


def test_pairs_in_steps_checkpoint_metrics_export(tmp_path):
    ep = f"ipc://{tmp_path}/pairs.sock"
    cfg = config.load(None, TINY + ["learner.online_ckpt_every_steps=10", "learner.online_eval_every_steps=10",
                                    "learner.online_live_eval_fraction=0.3"])
    lrn = OnlineLearner(cfg, tmp_path / "run", endpoint=ep, device="cpu")
    feed = Feeder(ep, rate_hz=300, count=400)
    try:
        final = lrn.run(max_steps=20, duration_s=90)
    finally:
        feed.close()
    run = tmp_path / "run"
    assert final["step"] == 20 and final["dropped"] == 0 and final["pairs_in"] > 0
    ck = load_checkpoint(run / "ckpt.pt")  # weights_only=True
    assert ck["step"] == 20 and ck["samples"] > 20 * 2
    assert int(ck["queue"]["valid"].sum()) > 0 and ck["buffer"]["size"] > 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "event" not in r]
    assert train and all(TRAIN_FIELDS <= set(r) for r in train)
    assert [r["step"] for r in train] == list(range(5, 21, 5))
    assert all(r["mi_bound"] <= math.log(r["k_eff"] + 1) + 1e-6 for r in train)
    assert any(r["masked_frac"] > 0 for r in train)  # the exclusion window is doing something
    assert {r["event"] for r in rows if "event" in r} >= {"start", "checkpoint", "stop"}
    evals = [r for r in rows if r.get("event") == "eval"]
    assert evals and all(0 <= r["knn_acc"] <= 1 and 0 <= r["linear_acc"] <= 1 for r in evals)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # encoder.pt is the weight average (learner.online_weight_average), encoder-last.pt the last iterate
    x = torch.randn(3, 2, 128, 128)
    lrn.model.eval()
    outs = {}
    for name, model in (("encoder.pt", lrn.average.model), ("encoder-last.pt", lrn.model)):
        exp = torch.load(run / name, weights_only=True)
        enc = build_radar_encoder(exp["config"]["radar_encoder"], exp["teacher"]["dim"])
        enc.load_state_dict(exp["model"])
        enc.eval()
        with torch.no_grad():
            outs[name] = enc(x)
            torch.testing.assert_close(outs[name], model(x))
    assert not torch.allclose(outs["encoder.pt"], outs["encoder-last.pt"])  # 20 steps apart from each other
    assert lrn.average.updates == lrn.step == 20


def test_naive_variant_trains_on_latest_pairs_without_exclusion(tmp_path):
    ep = f"ipc://{tmp_path}/pairs.sock"
    cfg = config.load(None, TINY)
    lrn = OnlineLearner(cfg, tmp_path / "naive", endpoint=ep, device="cpu", naive=True)
    assert lrn.buffer.capacity == 8 and lrn.buffer.policy == "fifo" and lrn.exclusion_s == 0
    feed = Feeder(ep, rate_hz=300, count=120)
    try:
        final = lrn.run(max_pairs=120, duration_s=60)
    finally:
        feed.close()
    assert final["step"] > 0 and final["duplicates_skipped"] == 0
    # no exclusion window: an anchor's only masked entry is its own key (the latest pairs train again and
    # again, so it is in the queue); masked_frac * valid = masked entries per anchor, valid = k_eff + that
    per_anchor = final["masked_frac"] * final["k_eff"] / (1 - final["masked_frac"])
    assert per_anchor <= 1 + 1e-6
    # the "buffer" is just the latest B pairs of the stream
    t = sorted(lrn.buffer.t_ns.tolist())
    assert t == [int(n * 1e8) for n in range(120 - 8, 120)]


def _cli(out, ep, *extra, sets=()):
    cmd = [sys.executable, "-m", "learner.online.cli", "online", "--out", str(out), "--endpoint", ep,
           "--device", "cpu", *extra]
    for s in TINY + ["learner.online_ckpt_every_steps=5", "learner.online_eval_every_steps=0",
                     "learner.queue_size=4096", *sets]:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_step(path: Path, step: int, proc, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            ck = load_checkpoint(path)
            if ck["step"] >= step:
                return ck
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step >= {step} within {timeout}s")


def test_kill_9_then_restart_resumes_steps_queue_and_buffer(tmp_path):
    ep = f"ipc://{tmp_path}/pairs.sock"
    run = tmp_path / "run"
    feed = Feeder(ep, rate_hz=60, count=100000)
    try:
        p1 = _cli(run, ep)
        _wait_for_step(run / "ckpt.pt", 10, p1)
        os.kill(p1.pid, signal.SIGKILL)
        p1.wait(10)
        ck1 = load_checkpoint(run / "ckpt.pt")
        s1 = ck1["step"]
        q1 = set(ck1["queue"]["t_ns"][ck1["queue"]["valid"]].tolist())
        # the resumed run may replay at most the replay ratio it had at the kill: its 10 steps then need new
        # pairs from the stream (whose keys join the queue after those steps), however the machine schedules it
        admitted = ck1["ingest"]["counts"]["kept"] - ck1["ingest"]["counts"].get("heldout", 0)
        ratio = ck1["samples"] / admitted
        p2 = _cli(run, ep, "--max-steps", str(s1 + 10), sets=[f"learner.online_max_updates_per_pair={ratio:.6f}"])
        out, err = p2.communicate(timeout=120)
    finally:
        feed.close()
    assert p2.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == s1 + 10
    ck2 = load_checkpoint(run / "ckpt.pt")
    assert ck2["step"] == s1 + 10
    assert ck2["weight_average"]["updates"] == s1 + 10  # the average continues, not restarted from the weights
    starts = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"event":"start"' in line]
    assert starts[-1]["step"] == s1 and starts[-1]["resumed_from"].endswith("ckpt.pt")
    # the queue (K=4096, far from full) still holds every key it had before the kill, plus new ones
    q2 = set(ck2["queue"]["t_ns"][ck2["queue"]["valid"]].tolist())
    assert q1 < q2 and max(q2) > max(q1)
    # counters and stream position continue from the checkpoint instead of starting over
    assert ck2["buffer"]["offered"] > ck1["buffer"]["offered"] >= ck1["buffer"]["size"] > 0
    assert ck2["ingest"]["counts"]["pairs_in"] > ck1["ingest"]["counts"]["pairs_in"]
    (src, last1), = ck1["ingest"]["position"]
    assert dict(ck2["ingest"]["position"])[src] > last1
    assert not list(run.glob(".*.tmp-*"))


@pytest.mark.slow
def test_rss_stays_flat_over_a_long_stream(tmp_path):
    ep = f"ipc://{tmp_path}/pairs.sock"
    cfg = config.load(None, TINY + ["learner.online_buffer_size=64", "learner.queue_size=256",
                                    "learner.online_live_eval_size=40", "learner.online_rx_queue=128",
                                    "learner.online_eval_every_steps=0", "learner.online_ckpt_every_steps=0",
                                    "learner.online_ckpt_every_s=0"])
    lrn = OnlineLearner(cfg, tmp_path / "rss", endpoint=ep, device="cpu")
    samples = {}

    def probe():
        n = lrn.ingest.counts["pairs_in"]
        for mark in (400, 800, 1200):
            if n >= mark and mark not in samples:
                samples[mark] = rss_mb()
        return False

    feed = Feeder(ep, rate_hz=100, count=1200, scene_s=2.0)
    try:
        final = lrn.run(max_pairs=1200, duration_s=90, stop=probe)
    finally:
        feed.close()
    samples.setdefault(1200, rss_mb())
    assert final["dropped"] == 0 and final["step"] > 20
    assert len(lrn.buffer) == 64 and len(lrn.queue) == 256 and lrn.heldout.size == 40
    # after the fixed-size stores filled (400 pairs), 800 more pairs change RSS by noise only
    assert samples[1200] - samples[400] < 20, samples


def test_from_offline_checkpoint_loads_encoder_and_teacher_centre(tmp_path):
    cfg = config.load(None, TINY)
    probe = OnlineLearner(cfg, tmp_path / "probe", device="cpu")
    dim = probe.dim
    torch.manual_seed(123)
    enc = build_radar_encoder("tiny", dim)
    centre = torch.randn(dim)
    # the offline learner's checkpoint layout (learner/train_offline.py)
    torch.save({"model": enc.state_dict(), "config": {"radar_encoder": "tiny"}, "step": 7,
                "teacher": {"name": "tiny", "dim": dim, "center": centre, "centered": True}}, tmp_path / "best.pt")
    lrn = OnlineLearner(cfg, tmp_path / "run", device="cpu", from_ckpt=str(tmp_path / "best.pt"))
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(lrn.model.state_dict()[k], v)
        torch.testing.assert_close(lrn.average.model.state_dict()[k], v)  # the average starts there too
    torch.testing.assert_close(lrn.teacher.center, centre)
    assert not lrn.ingest.center_pending and lrn.step == 0
    # an encoder of another size is refused with a clear message
    torch.save({"model": build_radar_encoder("tiny", dim + 1).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(Exception, match="size mismatch|does not match"):
        OnlineLearner(cfg, tmp_path / "run2", device="cpu", from_ckpt=str(tmp_path / "other.pt"))


def test_radvis_learn_online_is_registered():
    from radvis.cli import build_parser
    from learner.online import cli as online_cli
    args = build_parser().parse_args(["learn", "online", "--out", "x", "--naive", "--max-steps", "3"])
    assert args.func is online_cli._handler and args.naive and args.max_steps == 3


def test_export_is_accepted_by_radvis_eval(tmp_path):
    from bench.online import _stream_items
    from learner.evaluate import evaluate
    data = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "radvis", "synth", "--out", str(data), "--sequences", "8", "--frames", "20",
                    "--quiet", "--no-preview", "--workers", "1"], cwd=REPO, check=True, capture_output=True)
    cfg = config.load(None, TINY + [f'learner.online_eval_data="{data}"'])
    lrn = OnlineLearner(cfg, tmp_path / "run", device="cpu")
    lrn.ingest.process(_stream_items(SyntheticStream(seed=9), 0, 64))
    for _ in range(3):
        lrn.train_step()
    assert lrn.evaluate() is not None  # the probe reads the same directory
    # it keeps the encoder's front end of that fixed set, computed once: the same features as the raw maps
    import numpy as np

    from learner.online import probe
    radar, _, _ = probe.load_eval_set(str(data), cfg)
    kept = lrn.eval_set[0]
    assert kept.shape[1:] == (1, 64, 64) and len(kept) == len(radar)
    assert np.allclose(probe.radar_features(lrn.published(), kept, lrn.device, fronted=True),
                       probe.radar_features(lrn.published(), radar, lrn.device), atol=1e-5)
    lrn.export()
    r = evaluate(cfg.learner, tmp_path / "run", data, checkpoint="encoder.pt", fractions=[100], seeds=1,
                 supervised=False, finetune=False, progress=False, log=lambda *a: None)
    assert r["checkpoint"] == "encoder.pt" and r["radar_encoder"] == "tiny" and r["n_test"] > 0
    assert 0 <= r["table"][0]["ssl"][0] <= 1


def test_default_exports_the_last_iterate(tmp_path):
    """learner.online_weight_average = 0 (the default): no average is kept, encoder.pt is the last iterate."""
    cfg = config.load(None, [s for s in TINY if "weight_average" not in s])
    lrn = OnlineLearner(cfg, tmp_path / "run", device="cpu")
    assert lrn.average is None and lrn.published() is lrn.model
    exp = torch.load(lrn.export(), weights_only=True)
    assert exp["weight_average"] == 0.0 and not (tmp_path / "run" / "encoder-last.pt").exists()
    for k, v in lrn.model.state_dict().items():
        torch.testing.assert_close(exp["model"][k], v)

"""Several rigs, one learner (issue #19): two pair publishers (one sync per rig) on two endpoints, one
learner subscribed to both. Pairs of both rigs reach the buffer, nothing is dropped, and the counts per
rig equal what each rig sent. Sequences are keyed by (source, epoch), so two rigs whose publishers share an
epoch (two replays of one session keep its epochs) are still two sequences to dedup and exclusion."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.online import SyntheticStream
from learner.online.buffer import ReplayBuffer
from learner.online.ingest import Ingest, Receiver, seq_key
from radvis import config
from radvis.transport import Publisher, Subscriber

REPO = Path(__file__).resolve().parent.parent
TINY = ['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"', 'learner.weights="none"',
        'learner.batch_size=8', 'learner.queue_size=512', 'learner.online_buffer_size=256',
        'learner.online_min_fill=16', 'learner.online_center_pairs=16', 'learner.online_min_separation_s=0.3',
        'learner.online_exclusion_s=0.5', 'learner.online_max_updates_per_pair=0', 'learner.log_every=5',
        'learner.online_dedup_threshold=1.0', 'learner.online_live_eval_fraction=0', 'learner.online_chirps=[]',
        'learner.online_eval_every_steps=0', 'learner.online_ckpt_every_steps=0', 'learner.online_ckpt_every_s=0',
        'rig.stats_interval_s=1']


def _messages(seed: int, source: str, n: int):
    s = SyntheticStream(seed=seed)
    out = []
    for i in range(n):
        m = s.message(i)
        m.source = source
        out.append(m)
    return out


def mean_colour_embed(images):
    import torch
    x = torch.as_tensor(np.asarray(images)).float()
    f = torch.nn.functional.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 2).flatten(1) - 100
    return torch.nn.functional.normalize(f, dim=1)


def test_two_rigs_with_one_epoch_stay_two_sequences(tmp_path):
    """Both rigs send the very same frames with the same epoch (as two replays of one session would):
    keyed by epoch alone they were one sequence, and every rigB frame was a near-duplicate of rigA's."""
    eps = [f"ipc://{tmp_path}/rigA.sock", f"ipc://{tmp_path}/rigB.sock"]
    pubs = [Publisher(ep, hwm=10000) for ep in eps]
    pubs[1].epoch = pubs[0].epoch
    rx = Receiver(lambda: Subscriber(eps, ["pair"], hwm=10000), maxsize=1000).start()
    try:
        assert all(p.wait_for_subscribers(1, 10) for p in pubs)
        ing = Ingest(rx, mean_colour_embed, ReplayBuffer(200, 12, policy="reservoir"), dedup_threshold=0.98,
                     keep_interval_s=1.0)
        n = 20
        for src, pub in zip(("rigA", "rigB"), pubs):
            for m in _messages(7, src, n):  # same seed: identical content
                pub.send(m)
        deadline = time.monotonic() + 10
        while rx.received < 2 * n and time.monotonic() < deadline:
            time.sleep(0.01)
        while ing.poll():
            pass
        st = ing.stats()
    finally:
        rx.stop()
        for p in pubs:
            p.close()
    assert rx.received == 2 * n
    assert st["dropped"] == 0 and st["pairs_in"] == 2 * n
    a, b = st["by_source"]["rigA"], st["by_source"]["rigB"]
    assert a["pairs_in"] == b["pairs_in"] == n
    # whatever dedup does inside one rig's stream, it does the same to the other's: never across them
    assert a.get("duplicates_skipped", 0) == b.get("duplicates_skipped", 0)
    assert a["inserted"] == b["inserted"] == n - a.get("duplicates_skipped", 0) > 0
    ids = set(ing.buffer.seq[: len(ing.buffer)].tolist())
    assert ids == {seq_key("rigA", pubs[0].epoch), seq_key("rigB", pubs[0].epoch)} and len(ids) == 2


def test_learn_online_subscribes_to_two_rigs(tmp_path):
    """`radvis learn online` with two --endpoint: pairs of both rigs (different seeds) reach the buffer,
    0 dropped, per-rig counts in metrics.jsonl equal what each rig sent."""
    eps = {"rigA": f"ipc://{tmp_path}/rigA.sock", "rigB": f"ipc://{tmp_path}/rigB.sock"}
    pubs = {src: Publisher(ep, hwm=10000) for src, ep in eps.items()}
    n = 40
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "learner.online.cli", "online", "--out", str(run), "--device", "cpu",
           "--endpoint", eps["rigA"], "--endpoint", eps["rigB"], "--max-pairs", str(2 * n),
           "--first-pair-timeout", "120"]
    for s in TINY:
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    try:
        for pub in pubs.values():  # the learner connected to both before anything is sent
            assert pub.wait_for_subscribers(1, 120, topic="pair"), proc.poll() is None or proc.communicate()
        for seed, (src, pub) in enumerate(pubs.items()):
            for m in _messages(seed, src, n):
                assert pub.send(m)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for p in pubs.values():
            p.close()
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["pairs_in"] == 2 * n
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r.get("event") == "stop"][-1]
    assert final["dropped"] == 0 and final["dropped_by_reason"] == {}
    assert {s: c["pairs_in"] for s, c in final["by_source"].items()} == {"rigA": n, "rigB": n}
    assert {s: c.get("inserted", 0) for s, c in final["by_source"].items()} == {"rigA": n, "rigB": n}
    assert all(c.get("lost_in_transport", 0) == 0 for c in final["by_source"].values())
    assert final["buffer_fill"] == 2 * n


def test_pairs_endpoint_list_config():
    cfg = config.load(None, ['endpoints.pairs=["tcp://rig1:5552", "tcp://rig2:5552"]'])
    assert config.endpoint_list(cfg.endpoints.pairs) == ["tcp://rig1:5552", "tcp://rig2:5552"]
    # sync and replay publish one rig's pairs: a list of several is refused, naming the key
    try:
        config.bind_endpoint(cfg, "pairs")
    except config.ConfigError as e:
        assert "endpoints.pairs" in str(e) and "tcp://rig2:5552" in str(e)
    else:
        raise AssertionError("a publisher accepted a list of two endpoints")
    assert config.bind_endpoint(config.load(None, ['endpoints.pairs=["ipc:///x"]']), "pairs") == "ipc:///x"
    for bad in ('endpoints.pairs=[1]', 'endpoints.pairs=[]', 'endpoints.pairs=3'):
        try:
            config.load(None, [bad])
        except config.ConfigError as e:
            assert "endpoints.pairs" in str(e)
        else:
            raise AssertionError(f"{bad} loaded")

"""Several rigs, one learner (#19): `endpoints.pairs` as a list; `radvis learn online` subscribes to all
of them; sequences are keyed by (source, epoch). Two emulated rigs are two `radvis replay` processes of
recorded pair sessions with different scene seeds and sources but the *same* publisher epoch (as two
rigs replaying recordings can have), so keying by epoch alone would merge them into one sequence."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.pair_session import write_pair_session
from learner.online.ingest import stream_id
from radvis import config as configmod

REPO = Path(__file__).resolve().parent.parent
N = 48  # pairs per rig (4.8 s at 10 Hz, replayed at 4x)

LEARNER = ['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"', 'learner.device="cpu"',
           "learner.batch_size=8", "learner.queue_size=256", "learner.online_buffer_size=256",
           "learner.online_min_fill=8", "learner.online_center_pairs=8", "learner.online_live_eval_fraction=0",
           "learner.online_eval_every_steps=0", "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0",
           "learner.log_every=1", "learner.threads=1", "transport.slow_joiner_s=60", "rig.stats_interval_s=0.5"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_config_takes_one_pairs_endpoint_or_a_list():
    assert configmod.load(None, ['endpoints.pairs="ipc:///tmp/a"']).endpoints.pairs == "ipc:///tmp/a"
    two = configmod.load(None, ["endpoints.pairs=['ipc:///tmp/a', 'tcp://10.0.0.2:5552']"])
    assert two.endpoints.pairs == ["ipc:///tmp/a", "tcp://10.0.0.2:5552"]
    for bad in ("endpoints.pairs=[]", "endpoints.pairs=[1, 2]", "endpoints.pairs=3"):
        with pytest.raises(configmod.ConfigError, match="endpoints.pairs: expected a string or a non-empty list"):
            configmod.load(None, [bad])
    from radvis.transport import bind_endpoint
    with pytest.raises(configmod.ConfigError, match="a publisher binds one endpoint"):
        bind_endpoint(two, "pairs")   # sync/replay on a config that lists several rigs: told, not a crash
    docs = (REPO / "docs" / "config.md").read_text()
    assert docs == configmod.docs_markdown() and "| `pairs` | str or list |" in docs


def test_stream_id_keys_source_and_epoch():
    assert stream_id("rig-a", 7) != stream_id("rig-b", 7) != stream_id("rig-a", 8)
    assert stream_id("rig-a", 7) == stream_id("rig-a", 7) and 0 <= stream_id("x", 2**62 - 1) < 2**62


def test_two_rigs_fan_into_one_learner(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    eps = {r: f"ipc://{tmp_path}/pairs-{r}.sock" for r in ("a", "b")}
    for r, seed in (("a", 1), ("b", 2)):
        write_pair_session(tmp_path / f"rig-{r}.mcap", N, seed=seed, source=f"rig-{r}", epoch=7)
    run = tmp_path / "run"
    lrn = subprocess.Popen(
        [sys.executable, "-m", "radvis", "learn", "online", "--out", str(run), "--max-pairs", str(2 * N),
         "--exit-when-idle", "60", *_sets(LEARNER),
         "--set", f"endpoints.pairs=['{eps['a']}', '{eps['b']}']",
         "--set", f'endpoints.truth="ipc://{tmp_path}/truth.sock"',
         "--set", f'endpoints.control="ipc://{tmp_path}/control.sock"', "--set", 'endpoints.view_stats=""'],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reps = [subprocess.Popen([sys.executable, "-m", "radvis", "replay", str(tmp_path / f"rig-{r}.mcap"), "--rate", "4",
                              "--set", f'endpoints.pairs="{eps[r]}"', "--set", "transport.slow_joiner_s=60"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in ("a", "b")]
    try:
        for p in reps:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err[-2000:]
            st = json.loads(out.strip().splitlines()[-1])
            assert st["sent"] == N and st["dropped"] == 0
        out, err = lrn.communicate(timeout=180)
        assert lrn.returncode == 0, err[-3000:]
    finally:
        for p in [*reps, lrn]:
            if p.poll() is None:
                p.kill()
                p.wait()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    final = rows[-1]
    assert final["event"] == "stop" and final["pairs_in"] == 2 * N
    assert final["dropped"] == 0, final["dropped_by_reason"]
    per = final["per_source"]
    assert set(per) == {"rig-a", "rig-b"}
    for r in ("rig-a", "rig-b"):
        assert per[r]["pairs_in"] == N and per[r]["lost_in_transport"] == 0
        assert per[r]["buffer"] > 0 and per[r]["kept"] + per[r]["duplicates_skipped"] == N
    assert sum(v["buffer"] for v in per.values()) == final["buffer_fill"]
    # the buffer and the queue hold two sequences, one per (source, epoch), though both epochs are 7
    state = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    want = {stream_id("rig-a", 7), stream_id("rig-b", 7)}
    buf = state["buffer"]
    assert set(buf["seq"][: int(buf["size"])].tolist()) == want
    q = state["queue"]
    assert set(q["seq_id"][q["valid"]].tolist()) == want
    # frames of the two rigs recorded at the same instant are never each other's "own pair" or within the
    # exclusion window: the mask of an anchor of rig a leaves rig b's entries as negatives
    from learner.queue import NegativeQueue
    nq = NegativeQueue(q["keys"].shape[1], q["keys"].shape[0])
    nq.load_state_dict(q)
    a, b = stream_id("rig-a", 7), stream_id("rig-b", 7)
    t_b = nq.t_ns[nq.valid & (nq.seq_id == b)][:1]
    m = nq.mask(t_b, torch.tensor([a]), exclusion_s=2.0)[0]
    assert not bool(m[nq.valid & (nq.seq_id == b)].any())
    assert bool(m[nq.valid & (nq.seq_id == a) & ((nq.t_ns - t_b).abs() < 2_000_000_000)].all())

"""Several rigs, one learner (#19), through the config and real processes (tests/test_fanin.py has the
in-process and `--endpoint` versions): `endpoints.pairs` as a list of two ipc endpoints; two emulated rigs
are two `radvis replay` processes of recorded pair sessions (`bench.pair_session`) with different scene
seeds and sources but the *same* publisher epoch, so keying sequences by epoch alone would merge them. The
checkpoint's buffer and queue hold both rigs' sequences, and the exclusion mask keeps them apart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from bench.pair_session import write_pair_session
from learner.online.ingest import seq_key

REPO = Path(__file__).resolve().parent.parent
N = 48  # pairs per rig (4.8 s at 10 Hz, replayed at 4x)

LEARNER = ['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"', 'learner.device="cpu"',
           "learner.batch_size=8", "learner.queue_size=256", "learner.online_buffer_size=256",
           "learner.online_min_fill=8", "learner.online_center_pairs=8", "learner.online_live_eval_fraction=0",
           "learner.online_eval_every_steps=0", "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0",
           "learner.log_every=1", "learner.threads=1", "transport.slow_joiner_s=60", "rig.stats_interval_s=0.5",
           "learner.online_chirps=[]"]  # synthetic pairs: one map


def _sets(items):
    return [a for s in items for a in ("--set", s)]


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
    per = final["by_source"]
    assert set(per) == {"rig-a", "rig-b"}
    for r in ("rig-a", "rig-b"):
        assert per[r]["pairs_in"] == N and per[r].get("lost_in_transport", 0) == 0 and per[r]["inserted"] > 0
    # the buffer and the queue hold two sequences, one per (source, epoch), though both epochs are 7
    state = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    want = {seq_key("rig-a", 7), seq_key("rig-b", 7)}
    buf = state["buffer"]
    assert set(buf["seq"][: int(buf["size"])].tolist()) == want
    q = state["queue"]
    assert set(q["seq_id"][q["valid"]].tolist()) == want
    # frames of the two rigs recorded at the same instant are never each other's "own pair" or within the
    # exclusion window: the mask of an anchor of rig a leaves rig b's entries as negatives
    from learner.queue import NegativeQueue
    nq = NegativeQueue(q["keys"].shape[1], q["keys"].shape[0])
    nq.load_state_dict(q)
    a, b = seq_key("rig-a", 7), seq_key("rig-b", 7)
    t_b = nq.t_ns[nq.valid & (nq.seq_id == b)][:1]
    m = nq.mask(t_b, torch.tensor([a]), exclusion_s=2.0)[0]
    assert not bool(m[nq.valid & (nq.seq_id == b)].any())
    assert bool(m[nq.valid & (nq.seq_id == a) & ((nq.t_ns - t_b).abs() < 2_000_000_000)].all())

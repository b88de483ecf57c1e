"""Replay buffer policies, batch time separation and checkpoint round trip (learner/online/buffer.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from learner.online.buffer import ReplayBuffer

R = np.zeros((2, 4, 4), np.float32)  # small radar maps keep these tests fast


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
    # each of M offered items should end up in the buffer with probability N/M, early or late alike
    N, M, trials = 20, 200, 300
    hits = np.zeros(M)
    for s in range(trials):
        b = ReplayBuffer(N, 4, R.shape, policy="reservoir", seed=s)
        for i in range(M):
            b.add(R, unit([1, 0, 0, 0]), t_ns=i, seq_id=0)
        assert len(b) == N
        hits[b.t_ns[:N]] += 1
        assert b.counts["evicted"] + b.counts["discarded"] == M - N
    p = hits / trials
    # first/second half of the stream equally represented; overall mean exactly N/M
    assert abs(p.mean() - N / M) < 1e-9
    assert abs(p[: M // 2].mean() - p[M // 2:].mean()) < 0.02
    assert p[:20].mean() == pytest.approx(N / M, abs=0.03)  # items that filled the buffer are not favoured


def test_fifo_evicts_oldest():
    b = ReplayBuffer(5, 4, R.shape, policy="fifo")
    for i in range(12):
        b.add(R, unit([1, i, 0, 0]), t_ns=i, seq_id=0)
    assert sorted(b.t_ns[:5].tolist()) == [7, 8, 9, 10, 11]


def _neighbour_table_ok(b: ReplayBuffer):
    n = b.size
    S = b.sim_keys[:n] @ b.sim_keys[:n].T
    np.fill_diagonal(S, -np.inf)
    np.testing.assert_allclose(b.nn_sim[:n], S.max(1), atol=1e-5)


def test_redundancy_evicts_near_duplicates_and_keeps_distinct_frames():
    rng = np.random.default_rng(0)
    D, N = 32, 16
    b = ReplayBuffer(N, D, R.shape, policy="redundancy", sim_dim=256)
    distinct = [unit(rng.standard_normal(D)) for _ in range(8)]
    base = unit(rng.standard_normal(D))
    t = 0
    for k in distinct:  # 8 diverse frames
        b.add(R, k, t, 0)
        t += 1
    for _ in range(40):  # a static scene: 40 near-identical frames
        b.add(R, unit(base + 0.01 * rng.standard_normal(D)), t, 0)
        t += 1
        _neighbour_table_ok(b)
    kept = b.keys[: b.size].astype(np.float32)
    # every distinct frame survived; the static scene occupies the rest
    for k in distinct:
        assert (kept @ k).max() > 0.999
    assert b.size == N and b.counts["evicted"] == 48 - N


def test_redundancy_prefers_entries_already_trained_on():
    D = 8
    b = ReplayBuffer(4, D, R.shape, policy="redundancy")
    e = np.eye(D, dtype=np.float32)
    for i, k in enumerate([e[0], unit(e[0] + 0.05 * e[1]), e[2], e[3]]):
        b.add(R, k, i, 0)
    b.seen[:] = [0, 0, 1, 1]  # the near-duplicate pair (slots 0, 1) has never been trained on
    slot = b.add(R, unit(e[4]), 10, 0)
    assert slot in (2, 3)
    b.seen[:] = 1
    slot = b.add(R, unit(e[5]), 11, 0)
    assert slot in (0, 1)  # now the most redundant entry goes


def test_redundancy_neighbour_table_stays_exact_with_projection():
    rng = np.random.default_rng(1)
    b = ReplayBuffer(30, 300, R.shape, policy="redundancy", sim_dim=64)  # 300-d keys projected to 64
    for i in range(200):
        c = i % 5
        b.add(R, unit(np.eye(300)[c] + 0.3 * rng.standard_normal(300)), i, 0)
        if i % 17 == 0:
            b.seen[: b.size] += 1
    _neighbour_table_ok(b)


def test_batches_respect_minimum_time_separation():
    b = ReplayBuffer(200, 4, R.shape, policy="reservoir")
    for i in range(100):  # two sequences, 10 Hz, 10 s each
        b.add(R, unit([1, 0, 0, 0]), t_ns=i * 100_000_000, seq_id=1)
        b.add(R, unit([0, 1, 0, 0]), t_ns=i * 100_000_000, seq_id=2)
    g = np.random.default_rng(0)
    for _ in range(20):
        idx = b.sample(16, 2_000_000_000, g)
        assert len(set(idx.tolist())) == len(idx)
        t, s = b.t_ns[idx], b.seq[idx]
        for i in range(len(idx)):
            for j in range(i + 1, len(idx)):
                if s[i] == s[j]:
                    assert abs(int(t[i]) - int(t[j])) >= 2_000_000_000
        assert len(idx) <= 10  # at most 5 per 10-s sequence at >= 2 s apart
    # without the constraint the batch fills
    assert len(b.sample(16, 0, g)) == 16
    assert b.seen.sum() > 0


def test_radar_storage_keeps_relative_precision_at_any_scale():
    b = ReplayBuffer(2, 4, (2, 128, 128))
    rng = np.random.default_rng(0)
    big = (rng.standard_normal((2, 128, 128)) * 1e6).astype(np.float32)  # beyond float16's range
    small = (rng.standard_normal((2, 128, 128)) * 1e-4).astype(np.float32)
    b.add(big, unit([1, 0, 0, 0]), 0, 0)
    b.add(small, unit([1, 0, 0, 0]), 1, 0)
    out = b.batch(np.array([0, 1]))["radar"].numpy()
    for got, want in zip(out, (big, small)):
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("policy", ["reservoir", "redundancy", "fifo"])
def test_state_dict_round_trip_through_weights_only_load(policy):
    rng = np.random.default_rng(2)
    a = ReplayBuffer(10, 16, R.shape, policy=policy, seed=3)
    for i in range(25):
        a.add(rng.standard_normal(R.shape).astype(np.float32), unit(rng.standard_normal(16)), i, i % 2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ReplayBuffer(10, 16, R.shape, policy=policy, seed=99)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for name in ("radar", "scale", "keys", "t_ns", "seq", "order"):
        np.testing.assert_array_equal(getattr(a, name)[: a.size], getattr(b, name)[: b.size])
    # the restored RNG and neighbour table make the next decisions identical
    for i in range(25, 40):
        k = unit(rng.standard_normal(16))
        assert a.add(R, k, i, 0) == b.add(R, k, i, 0)
    np.testing.assert_array_equal(a.t_ns, b.t_ns)

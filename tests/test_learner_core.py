"""Queue, InfoNCE, encoders and teachers."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learner.loss import effective_negatives, info_nce, mi_bound
from learner.models import build_radar_encoder
from learner.queue import NegativeQueue
from learner.teachers import (DescriptorTeacher, ResNet18Teacher, TinyTeacher, WeightsNotFoundError, auto_teacher,
                              build_teacher, find_imagenet_weights, mean_pairwise_cosine, wants_centering)
from radvis.config import LearnerConfig


# ---- queue -------------------------------------------------------------------------------------

def _keys(vals, dim=3):
    return torch.tensor([[float(v)] * dim for v in vals])


def test_queue_wraps_when_K_is_not_a_multiple_of_the_batch():
    q = NegativeQueue(3, 5)
    q.enqueue(_keys([1, 2, 3]), [10, 20, 30], [0, 0, 0])
    assert len(q) == 3 and int(q.ptr) == 3
    q.enqueue(_keys([4, 5, 6]), [40, 50, 60], [0, 0, 1])    # 4,5 fill the end, 6 wraps to slot 0
    assert q.keys[:, 0].tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1
    assert q.t_ns.tolist() == [60, 20, 30, 40, 50] and q.seq_id.tolist() == [1, 0, 0, 0, 0]
    q.enqueue(_keys([7]), [70], [2])
    assert q.keys[:, 0].tolist() == [6, 7, 3, 4, 5] and int(q.ptr) == 2


def test_queue_batch_larger_than_K_keeps_the_newest_K():
    q = NegativeQueue(3, 4)
    q.enqueue(_keys([1]), [1], [0])                              # ptr 1
    q.enqueue(_keys(range(10, 20)), list(range(10, 20)), [0] * 10)
    assert sorted(q.keys[:, 0].tolist()) == [16, 17, 18, 19] and len(q) == 4
    # ring order continues: the oldest survivor sits at ptr
    order = [(int(q.ptr) + i) % 4 for i in range(4)]
    assert q.keys[order, 0].tolist() == [16, 17, 18, 19]


def test_queue_mask_empty_slots_and_temporal_exclusion():
    q = NegativeQueue(3, 6)
    sec = 1_000_000_000
    q.enqueue(_keys([1, 2, 3, 4]), [0, 1 * sec, 5 * sec, 1 * sec], [7, 7, 7, 8])
    anchor_t, anchor_s = torch.tensor([1 * sec + sec // 2]), torch.tensor([7])
    # paper setting (dt = 0): only the two empty slots are masked
    assert q.mask(anchor_t, anchor_s, 0.0).tolist() == [[False, False, False, False, True, True]]
    # dt = 2 s: same-sequence entries within 2 s of t=1.5 s are masked; the other sequence (8) is not
    assert q.mask(anchor_t, anchor_s, 2.0).tolist() == [[True, True, False, False, True, True]]


def test_queue_state_is_in_the_checkpoint():
    q = NegativeQueue(3, 5)
    q.enqueue(_keys([1, 2, 3]), [10, 20, 30], [4, 5, 6])
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    r = NegativeQueue(3, 5)
    r.load_state_dict(torch.load(buf, weights_only=True))
    for name in ("keys", "t_ns", "seq_id", "valid", "ptr"):
        assert torch.equal(getattr(r, name), getattr(q, name))


# ---- InfoNCE -----------------------------------------------------------------------------------

def test_info_nce_equals_an_independent_reference():
    rng = np.random.default_rng(0)
    B, K, D, T = 4, 7, 5, 0.1
    q, k, negs = rng.normal(size=(B, D)), rng.normal(size=(B, D)), rng.normal(size=(K, D))
    negs /= np.linalg.norm(negs, axis=1, keepdims=True)
    mask = rng.random((B, K)) < 0.3
    ref = []
    for i in range(B):      # Eq. 1 written out: -log( e^{q.k+/T} / (e^{q.k+/T} + sum_unmasked e^{q.k-/T}) )
        qi = q[i] / np.linalg.norm(q[i])
        ki = k[i] / np.linalg.norm(k[i])
        pos = math.exp(qi @ ki / T)
        neg = sum(math.exp(qi @ negs[j] / T) for j in range(K) if not mask[i, j])
        ref.append(-math.log(pos / (pos + neg)))
    loss, logits = info_nce(torch.tensor(q), torch.tensor(k), torch.tensor(negs), torch.tensor(mask), T)
    assert loss.item() == pytest.approx(np.mean(ref), rel=1e-5)
    assert logits.shape == (B, K + 1) and torch.isinf(logits[:, 1:][torch.tensor(mask)]).all()
    # the same through a NegativeQueue
    nq = NegativeQueue(D, K)
    nq.enqueue(torch.tensor(negs, dtype=torch.float32), torch.zeros(K), torch.zeros(K))
    loss2, _ = info_nce(torch.tensor(q), torch.tensor(k), nq, torch.tensor(mask), T)
    assert loss2.item() == pytest.approx(np.mean(ref), rel=1e-4)
    assert effective_negatives(torch.tensor(mask), K) == pytest.approx(float((~mask).sum(1).mean()))


def test_mi_bound_is_log_k_plus_1_minus_loss():
    assert mi_bound(1.0, 63) == pytest.approx(math.log(64) - 1.0)
    # a perfect encoder (positive far above every negative) approaches the cap log(K+1)
    basis = torch.eye(16)
    q, negs = basis[:8], basis[8:]          # every negative orthogonal to every positive
    loss, _ = info_nce(q, q, negs, None, 0.01)
    assert mi_bound(loss.item(), 8) == pytest.approx(math.log(9), abs=1e-3)


# ---- encoders ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,feat", [("tiny", 64), ("resnet18", 512)])
def test_radar_encoders_map_ra_maps_to_embeddings(name, feat):
    m = build_radar_encoder(name, 32)
    x = torch.randn(2, 2, 128, 128)
    assert m(x).shape == (2, 32) and m.features(x).shape == (2, feat)
    # scale-free input: the same map at another gain gives the same features (eval-mode BN)
    m.eval()
    assert torch.allclose(m.features(x), m.features(1000 * x), atol=1e-4)


def test_vgg16_radar_encoder_is_paper_shaped():
    m = build_radar_encoder("vgg16", 4096, vgg_layer=5).eval()
    with torch.no_grad():
        f = m(torch.randn(1, 2, 128, 128))
    assert f.shape == (1, 4096) and (f >= 0).all()   # layer 5 = after fc7's ReLU
    assert isinstance(m.head, torch.nn.Identity)


def test_supervised_baseline_tested_only_after_the_last_epoch_reaches_the_same_model():
    """The label sweep tests its supervised runs once, at the end (every_epoch=False): testing is eval-mode
    and gradient-free, so the trained model and its accuracy are those of the run with the full curve."""
    from learner.evaluate import Classifier, train_classifier
    g = torch.Generator().manual_seed(0)
    x, xte = torch.randn(24, 2, 128, 128, generator=g), torch.randn(12, 2, 128, 128, generator=g)
    y, yte = np.arange(24) % 4, np.arange(12) % 4
    runs = []
    for every in (True, False):
        torch.manual_seed(0)
        runs.append(train_classifier(Classifier(build_radar_encoder("tiny", 8)), x, y, xte, yte, epochs=3, lr=1e-3,
                                     seed=0, batch=8, min_steps=1, every_epoch=every))
    assert [len(r["curve"]) for r in runs] == [3, 1] and runs[1]["curve"][0]["epoch"] == 3
    assert runs[0]["curve"][-1] == runs[1]["curve"][0] and runs[0]["acc"] == runs[1]["acc"]


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="tiny"):
        build_radar_encoder("vgg19", 8)


# ---- teachers ----------------------------------------------------------------------------------

def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ims = np.full((n, 60, 90, 3), 100, np.uint8)
    for i in range(n):
        x = 10 + 12 * i
        ims[i, 20:40, x:x + 12] = rng.integers(0, 255, 3)
    return ims


def test_descriptor_teacher_is_deterministic_normalised_and_position_sensitive():
    t = DescriptorTeacher()
    a, b = t.embed(_images()), t.embed(_images())
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=1), torch.ones(len(a)))
    # boxes at different places -> different keys; identical images -> identical keys
    assert (a @ a.t()).fill_diagonal_(0).max() < 0.999


def test_teacher_stays_in_eval_and_centering_lowers_key_similarity():
    t = TinyTeacher()
    t.train()
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    raw = t.embed(_images(16))
    t.set_center(t.embed_uncentered(_images(16)).mean(0))
    centred = t.embed(_images(16))
    assert mean_pairwise_cosine(centred) < mean_pairwise_cosine(raw)
    assert torch.allclose(centred.norm(dim=1), torch.ones(16))


def test_mean_pairwise_cosine_matches_brute_force():
    k = torch.randn(9, 4)
    n = F.normalize(k, dim=1)
    brute = np.mean([float(n[i] @ n[j]) for i in range(9) for j in range(9) if i != j])
    assert mean_pairwise_cosine(k) == pytest.approx(brute, abs=1e-5)


def test_missing_imagenet_weights_fail_with_an_actionable_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cfg = LearnerConfig(vision_encoder="vgg16", weights="imagenet")
    with pytest.raises(WeightsNotFoundError) as e:
        build_teacher(cfg)
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg                                   # the expected file
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg           # where it looked
    assert "curl -LO https://download.pytorch.org/models/vgg16-397923af.pth" in msg   # how to get it
    assert "learner.weights" in msg


def test_auto_teacher_without_vgg16_weights_uses_imagenet_effnet_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    t = build_teacher(LearnerConfig(vision_encoder="auto"))
    # the default keys: object crops at 128 px (docs/learner.md, chosen by the teacher probe)
    assert t.name.startswith("effnet-lite0[imagenet]@128/fg3") and t.dim == 1280 and t.uses_background
    assert "vgg16-397923af.pth" in t.announcement and "EfficientNet-Lite0" in t.announcement
    # the lookup does find a file in the torchvision hub cache, and then auto takes VGG-16 (paper setting)
    ck = tmp_path / "th" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "vgg16-397923af.pth").touch()
    assert find_imagenet_weights("vgg16") == ck / "vgg16-397923af.pth"
    assert auto_teacher("imagenet")[0] == "vgg16"
    # auto never falls back to a hand-made descriptor
    with pytest.raises(WeightsNotFoundError, match="name a teacher"):
        build_teacher(LearnerConfig(vision_encoder="auto", weights="none"))


def test_teacher_weights_from_a_local_file(tmp_path):
    import torchvision
    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    t = ResNet18Teacher(str(tmp_path / "r18.pth"), input_size=64)
    assert torch.equal(t.net.conv1.weight, ref.conv1.weight)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        ResNet18Teacher(str(tmp_path / "nope.pth"))

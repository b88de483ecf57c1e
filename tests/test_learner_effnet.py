"""The ImageNet EfficientNet-Lite0 teacher: real weights (the grace_hopper photo is a military uniform),
strict and hashed loading, frozen eval mode, and its object-centric keys on renders of the simulated rig
(boxes on the objects, one fixed key for empty frames, the same keys offline and online)."""
from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learner import effnet
from learner.regions import foreground_boxes, square_boxes
from learner.teachers import (Background, EffNetTeacher, WeightsNotFoundError, build_teacher, call_padded,
                              median_background, padded_rows, takes_background, to_float_images)
from radvis.config import LearnerConfig
from sim.render_camera import PinholeCamera, render
from tests.conftest import episode_frames
from sim.scene import Scene, place

CAM = PinholeCamera(192, 144)
SCENE = Scene(seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher():
    return EffNetTeacher("imagenet")


def test_real_imagenet_weights_grace_hopper_is_a_military_uniform(teacher):
    import matplotlib
    img = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))[..., ::-1]
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        p = teacher.net((x - 0.5) / 0.5).softmax(1)[0]
    assert int(p.argmax()) == 652                  # ImageNet "military uniform"
    assert 0.4 < float(p[652]) < 0.6               # p = 0.49 with these weights (random weights: ~0.001)
    # the teacher's own path (antialiased resize of the whole frame) agrees on the class
    k = teacher.embed(img[None])
    assert k.shape == (1, 1280) and torch.allclose(k.norm(dim=1), torch.ones(1))
    logits = teacher.net._fc(teacher.raw(to_float_images(img[None], 224)))     # (img is a flipped view: strides < 0)
    assert int(logits.argmax()) == 652


def test_teacher_is_frozen_in_eval_mode(teacher):
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert teacher.name == "effnet-lite0[imagenet]" and not takes_background(teacher)


def test_padded_batches_give_the_same_keys_with_few_shapes(teacher):
    """On CUDA the teacher runs each batch padded to a power of two (cuDNN plans are per shape, and object
    counts differ every call): the padding must not change any row's features (eval mode, rows independent),
    and 1..200 rows must map to a handful of sizes."""
    assert sorted({padded_rows(n) for n in range(1, 201)}) == [8, 16, 32, 64, 128, 256]
    assert padded_rows(0) == 0 and padded_rows(8) == 8 and padded_rows(9) == 16
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = []

    def raw(t):
        seen.append(t.shape[0])
        return teacher.raw(t)
    with torch.no_grad():
        a, b = teacher.raw(x), call_padded(raw, x)
    assert seen == [8] and b.shape == a.shape
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert teacher.pads_batches and teacher.padded_raw(x).shape[0] == 5   # CPU: no padding, same rows


def test_weights_load_strictly_with_the_hash_checked(tmp_path):
    sd = effnet.load_state("imagenet")
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")) > 4_600_000
    # a file with a missing layer does not load (strict), whatever its name
    broken = {k: v for k, v in sd.items() if not k.startswith("_fc")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="_fc"):
        effnet.build(str(tmp_path / "broken.pth"))
    # a file carrying the release's name but other bytes is refused
    other = dict(sd)
    other["_fc.bias"] = torch.zeros_like(sd["_fc.bias"])
    torch.save(other, tmp_path / effnet.FILENAME)
    with pytest.raises(effnet.EffNetWeightsError, match="sha256"):
        effnet.build(str(tmp_path / effnet.FILENAME))
    # a local copy under another name loads (the hash is only checked against the release name)
    torch.save(other, tmp_path / "mine.pth")
    assert torch.equal(effnet.build(str(tmp_path / "mine.pth"))._fc.bias, torch.zeros(1000))
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        build_teacher(LearnerConfig(vision_encoder="effnet-lite0", weights=str(tmp_path / "nope.pth")))


def _frames(episode: int, kind: str, n: int = 16, dt: float = 0.4, objects_of: int | None = None) -> np.ndarray:
    return episode_frames(SCENE, CAM, episode, kind, n, dt, objects_of)


def _mask_of(images, bg):
    from learner.regions import foreground_mask
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.asarray(bg)).permute(2, 0, 1).float()[None].expand_as(x) / 255
    return foreground_mask(x, b)[0]


def test_foreground_boxes_sit_on_the_objects():
    """Two still objects rendered into an empty place: one box per object, each around the object's
    projected column; nothing against itself."""
    st = place([("pedestrian", 6.0, -0.35), ("car", 12.0, 0.3)], clutter=True, seed=4)
    bg = render(dataclasses.replace(st, objects=[]), CAM)
    im = render(st, CAM, rng=np.random.default_rng(0))
    boxes = foreground_boxes(_mask_of(im[None], bg))[0]
    assert len(boxes) == 2
    cols = sorted(CAM.column(o.azimuth_rad) for o in st.objects)
    centres = sorted((b[0] + b[2]) / 2 for b in boxes)
    assert np.allclose(centres, cols, atol=6)
    # the car (longer) gives the wider box; boxes lie inside the frame
    assert all(0 <= b[0] < b[2] <= CAM.width and 0 <= b[1] < b[3] <= CAM.height for b in boxes)
    assert len(foreground_boxes(_mask_of(bg[None], bg))[0]) == 0
    sq = square_boxes(boxes, CAM.height, CAM.width, margin=0.25, min_side=0.15)
    assert np.allclose(sq[:, 2] - sq[:, 0], sq[:, 3] - sq[:, 1])
    assert (sq[:, 0] >= 0).all() and (sq[:, 2] <= CAM.width + 1e-3).all() and (sq[:, 3] <= CAM.height + 1e-3).all()


def test_foreground_keys_empty_frames_get_the_blank_key_and_objects_do_not():
    t = EffNetTeacher("imagenet", input_size=64).set_region("foreground")
    assert takes_background(t) and t.name.startswith("effnet-lite0[imagenet]@64/fg3m0.25s0.15")
    frames = _frames(4, "pedestrian", n=8)
    bg = median_background(frames)
    with pytest.raises(ValueError, match="background="):
        t.embed(frames)
    k = t.embed_uncentered(frames, background=bg)
    blank = t.blank_key()
    assert torch.allclose(k.norm(dim=1), torch.ones(8), atol=1e-5)
    assert (k @ blank < 0.99).all()                         # every frame shows a walker
    empty = t.embed_uncentered(np.repeat(bg[None], 3, 0), background=bg)
    assert torch.allclose(empty, blank.expand(3, -1), atol=1e-6)
    # one background for all == one per frame
    assert torch.allclose(k, t.embed_uncentered(frames, background=np.repeat(bg[None], 8, 0)), atol=1e-5)


@pytest.mark.parametrize("place_a, place_b", [(0, 1), (2, 5)])
def test_object_keys_follow_the_objects_not_the_place(teacher, place_a, place_b):
    """The same cars in two places vs pedestrians in the second place: on the object crops the same cars
    are the nearer key, clearly more so than with whole-frame keys (which see mostly the place)."""
    fg = EffNetTeacher("imagenet", input_size=128).set_region("foreground")
    a = _frames(place_a, "car", n=12)
    b_same = _frames(place_b, "car", n=12, objects_of=place_a)
    b_other = _frames(place_b, "pedestrian", n=12)
    i = 6
    margins = {}
    for name, t in (("fg", fg), ("frame", teacher)):
        def key(x):
            return t.embed_uncentered(x[i:i + 1], background=median_background(x))
        ka, kb, kc = key(a), key(b_same), key(b_other)
        margins[name] = float(ka @ kb.t()) - float(kb @ kc.t())
    assert margins["fg"] > 0.05 and margins["fg"] > margins["frame"] + 0.05, margins


def test_online_ingest_uses_the_streams_running_background_for_object_keys():
    """Online, the object-centric teacher is called with each stream's running `Background`: the queue
    holds the keys the teacher gives with the median of the frames seen so far."""
    from bench.online import pair_message
    from learner.online.buffer import ReplayBuffer
    from learner.online.ingest import Ingest
    from learner.queue import NegativeQueue
    from radvis.wire import decode, encode
    t = build_teacher(LearnerConfig(vision_encoder="effnet-lite0", teacher_region="foreground", teacher_size=64))
    q = NegativeQueue(t.dim, 32)
    ing = Ingest(None, t.embed, ReplayBuffer(32, t.dim, policy="reservoir"), q, dedup_threshold=1.0)
    frames = _frames(2, "car", n=10)
    ra = np.zeros((128, 128, 2), np.float32)
    msgs = []
    for i, im in enumerate(frames):
        m = pair_message(ra, im, 10**8 * (i + 1), frame_number=i, source="sync0")
        m.seq, m.epoch = i + 1, 1
        msgs.append((0, decode(encode(m))))
    ing.process(msgs)
    exp = t.embed(frames, background=Background().update(frames))
    assert torch.allclose(q.keys[:10].float(), exp, atol=1e-5)


# ---- the radar branch pretrained too -------------------------------------------------------------

def test_effnet_radar_encoder_starts_from_imagenet_with_a_one_channel_stem():
    from learner.models import adapt_stem, build_radar_encoder
    sd = effnet.load_state("imagenet")
    enc = build_radar_encoder("effnet-lite0", 32)
    stem = enc.backbone.net._conv_stem.weight
    assert stem.shape == (32, 1, 3, 3) and torch.allclose(stem, sd["_conv_stem.weight"].sum(1, keepdim=True))
    # every other layer is ImageNet's
    own = enc.backbone.net.state_dict()
    assert torch.equal(own["_blocks.7._depthwise_conv.weight"], sd["_blocks.7._depthwise_conv.weight"])
    # the adapted stem answers a grey image as the RGB stem answers it replicated x3
    rgb = torch.nn.Conv2d(3, 8, 3, bias=False)
    one = torch.nn.Conv2d(3, 8, 3, bias=False)
    one.load_state_dict(rgb.state_dict())
    adapt_stem(one, 1)
    g = torch.rand(2, 1, 9, 9)
    assert torch.allclose(one(g), rgb(g.expand(-1, 3, -1, -1)), atol=1e-5)
    two = torch.nn.Conv2d(3, 8, 3, bias=False)
    two.load_state_dict(rgb.state_dict())
    adapt_stem(two, 2)
    assert two.weight.shape[1] == 2 and two.in_channels == 2
    # (several channels: repeated and scaled by 3 / C, so the response keeps its magnitude on average)
    assert torch.allclose(two.weight.sum(), rgb.weight[:, :2].sum() * 1.5)
    x = torch.randn(3, 2, 128, 128)
    assert enc(x).shape == (3, 32) and enc.features(x).shape == (3, 1280) and enc.feat_dim == 1280
    # it trains: one SGD step moves the stem
    before = stem.detach().clone()
    enc.train()
    enc(x).pow(2).mean().backward()
    torch.optim.SGD(enc.parameters(), lr=0.1).step()
    assert not torch.equal(before, enc.backbone.net._conv_stem.weight)
    assert build_radar_encoder("effnet-lite0", 8, weights="none").backbone.net._conv_stem.weight.shape == (32, 1, 3, 3)

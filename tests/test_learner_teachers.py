"""Background subtraction for the weight-free teacher: the median background, the foreground descriptor
on real renders of the simulated rig scene, and the offline (per-sequence median) and online (running
`Background` per stream) paths computing the same thing."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sim.render_camera import PinholeCamera, render
from tests.conftest import episode_frames
from sim.scene import Scene
from learner.teachers import (Background, DescriptorTeacher, ForegroundDescriptorTeacher, build_teacher,
                              median_background, takes_background)
from radvis.config import LearnerConfig

CAM = PinholeCamera()          # the rig default, 128 x 96
SCENE = Scene(seed=3)
DT = 0.4                       # s between rendered frames: objects move, the place does not


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames(episode: int, kind: str, objects_of: int | None = None, n: int = 24) -> np.ndarray:
    return episode_frames(SCENE, CAM, episode, kind, n, DT, objects_of)


def test_median_background_is_the_static_scene():
    frames = _frames(2, "car")
    bg = median_background(frames)
    empty = render(dataclasses.replace(SCENE.state(2 * SCENE.scene_s, "car"), objects=[]), CAM)   # no objects, no noise
    assert bg.shape == frames.shape[1:] and bg.dtype == np.uint8
    err_bg = np.abs(bg.astype(int) - empty).mean()
    err_frame = np.abs(frames[12].astype(int) - empty).mean()
    assert err_bg < 0.5 * err_frame          # noise and the moving car are gone
    with pytest.raises(ValueError, match="N,H,W,3"):
        median_background(frames[0])


@pytest.mark.parametrize("place_a, place_b", [(0, 1), (2, 5), (4, 7)])
def test_foreground_keys_follow_the_objects_not_the_place(place_a, place_b):
    """Same cars in two different places vs other objects (pedestrians) in the same place: with background
    subtraction the same objects are the nearer key; the whole-image descriptor cannot tell them apart
    (its keys are dominated by the place)."""
    a = _frames(place_a, "car")                           # cars X at place A
    b_same = _frames(place_b, "car", objects_of=place_a)   # the same cars X at place B
    b_other = _frames(place_b, "pedestrian")               # pedestrians at place B
    i = 12
    margins = {}
    for t in (ForegroundDescriptorTeacher(), DescriptorTeacher()):
        def key(x):
            if takes_background(t):
                return t.embed_uncentered(x[i:i + 1], background=median_background(x))
            return t.embed_uncentered(x[i:i + 1])
        ka, kb, kc = key(a), key(b_same), key(b_other)
        margins[t.name] = float(ka @ kb.t()) - float(kb @ kc.t())   # >0: objects matter more than the place
    assert margins["fg-descriptor"] > 0.05
    assert margins["fg-descriptor"] > margins["descriptor"] + 0.05


def test_foreground_teacher_needs_a_background_and_ignores_a_static_frame():
    t = ForegroundDescriptorTeacher()
    frames = _frames(4, "pedestrian", n=8)
    with pytest.raises(ValueError, match="background="):
        t.embed(frames)
    bg = median_background(frames)
    k = t.embed_uncentered(frames, background=bg)
    assert k.shape == (8, t.dim) and torch.allclose(k.norm(dim=1), torch.ones(8))
    # one background for all frames == the same background given per frame
    k2 = t.embed_uncentered(frames, background=np.repeat(bg[None], 8, 0))
    assert torch.allclose(k, k2, atol=1e-6)
    # a frame identical to its background has no foreground: almost no key energy before normalisation
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(bg).permute(2, 0, 1).float()[None].expand_as(x) / 255
    assert t.raw(b, b).abs().sum(1).max() < 0.05 * t.raw(x, b).abs().sum(1).min()
    with pytest.raises(ValueError, match="expected 1 or 8"):
        t.embed(frames, background=np.repeat(bg[None], 3, 0))


def test_running_background_is_the_same_median_and_restarts_on_a_new_size():
    frames = _frames(0, "cyclist", n=12)
    bgr = Background(window=12, every=1)
    assert not bgr.ready
    out = bgr.update(frames[:6])
    out = bgr.update(frames[6:])
    assert bgr.ready and np.array_equal(out, median_background(frames))
    # a window keeps the newest frames only; every-th sampling
    w = Background(window=4, every=2, refresh=1)
    for f in frames:
        out = w.update(f)
    assert np.array_equal(out, median_background(frames[[4, 6, 8, 10]]))
    # once the window is full, the median is refreshed every `refresh` sampled frames only
    r = Background(window=4, every=1, refresh=3)
    outs = [r.update(f).copy() for f in frames[:9]]
    assert np.array_equal(outs[3], median_background(frames[0:4]))      # filling: always fresh
    assert np.array_equal(outs[5], outs[3])                              # 2 new frames < refresh
    assert np.array_equal(outs[6], median_background(frames[3:7]))      # 3rd new frame: recomputed
    small = np.zeros((10, 12, 3), np.uint8)
    assert w.update(small).shape == (10, 12, 3) and len(w.frames) == 1


def test_hand_made_descriptors_by_name_only():
    t = build_teacher(LearnerConfig(vision_encoder="fg-descriptor"))
    assert t.name == "fg-descriptor" and takes_background(t.embed)
    assert not takes_background(build_teacher(LearnerConfig(vision_encoder="descriptor")))
    # teacher_region is for the networks: the descriptors keep their own region
    assert build_teacher(LearnerConfig(vision_encoder="descriptor", teacher_region="foreground")).name == "descriptor"


def test_online_ingest_embeds_with_the_streams_running_background():
    """The online path (Ingest) calls the teacher with `Background` of its stream: same keys as calling
    the teacher with the median of the frames seen so far; two streams keep separate backgrounds."""
    from bench.online import pair_message
    from learner.online.buffer import ReplayBuffer
    from learner.online.ingest import Ingest
    from learner.queue import NegativeQueue
    from radvis.wire import decode, encode
    t = ForegroundDescriptorTeacher()
    q = NegativeQueue(t.dim, 64)
    ing = Ingest(None, t.embed, ReplayBuffer(64, t.dim, policy="reservoir"), q, dedup_threshold=1.0)
    frames = _frames(2, "car", n=10)
    other = _frames(5, "pedestrian", n=10)
    ra = np.zeros((128, 128, 2), np.float32)

    def wire(im, i, source, epoch):
        m = pair_message(ra, im, 10**8 * (i + 1), frame_number=i, source=source)
        m.seq, m.epoch = i + 1, epoch             # what the sync publisher stamps
        return 0, decode(encode(m))
    msgs = [wire(im, i, "sync0", 1) for i, im in enumerate(frames)] + [wire(im, i, "sync1", 2) for i, im in enumerate(other)]
    ing.process(msgs)
    assert set(ing.backgrounds) == {"sync0", "sync1"}
    keys = q.keys[:20].float()
    exp0 = t.embed(frames, background=Background().update(frames))
    exp1 = t.embed(other, background=Background().update(other))
    assert torch.allclose(keys, torch.cat([exp0, exp1]), atol=1e-5)

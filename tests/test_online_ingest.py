"""Online ingest over real ZeroMQ sockets: pair decoding (raw and JPEG), malformed pairs counted by
reason, near-duplicate gate, the receiver thread never backing up into the socket, and the temporal
exclusion mask on the queue fed from the stream."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bench.online import SyntheticStream, pair_message
from learner.online.buffer import ReplayBuffer
from learner.online.ingest import Ingest, PairError, Receiver, decode_pair
from learner.queue import NegativeQueue
from radvis.cruw import LABELS
from radvis.transport import Publisher, Subscriber
from radvis.wire import Limits, decode, encode


def roundtrip(msg):
    return decode(encode(msg))


def mean_colour_embed(images):
    """A deterministic stand-in teacher: normalised mean colour + a coarse layout (keys differ when the
    image does, identical images give identical keys)."""
    x = torch.as_tensor(np.asarray(images)).float()
    f = torch.nn.functional.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 2).flatten(1) - 100
    return torch.nn.functional.normalize(f, dim=1)


def test_decode_pair_raw_and_jpeg_agree():
    s = SyntheticStream(seed=3)
    raw = decode_pair(roundtrip(s.message(5)))
    jpg = decode_pair(roundtrip(s.message(5, jpeg=True)))
    ra, img, t_ns, truth = s.frame(5)
    assert raw.radar.shape == (2, 128, 128) and raw.radar.dtype == np.float32
    np.testing.assert_array_equal(raw.radar, ra.transpose(2, 0, 1))
    np.testing.assert_array_equal(raw.image, img)
    assert jpg.image.shape == img.shape and np.abs(jpg.image.astype(int) - img).mean() < 4  # JPEG q90
    assert raw.t_ns == t_ns and raw.label == LABELS.index(truth["label"]) and raw.scene_id == truth["scene_id"]


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m.buffers.pop("camera.image"), "missing_buffer"),
    (lambda m: m.buffers.__setitem__("radar.ra", np.zeros((64, 128, 2), np.float32)), "radar"),
    (lambda m: m.buffers.__setitem__("radar.ra", np.full((128, 128, 2), np.nan, np.float32)), "radar_nonfinite"),
    (lambda m: m.buffers.__setitem__("camera.image", np.zeros((4, 4), np.uint8)), "image"),
    (lambda m: (m.buffers.__setitem__("camera.image", np.arange(100, dtype=np.uint8)),
                m.meta["camera"]["meta"].__setitem__("encoding", "jpeg")), "jpeg"),
])
def test_bad_pairs_raise_with_a_reason(mutate, reason):
    m = SyntheticStream().message(0)
    mutate(m)
    with pytest.raises(PairError) as e:
        decode_pair(roundtrip(m))
    assert e.value.reason == reason


def _pipeline(tmp_path, name, *, maxsize=1000, dedup=0.98, keep_s=1.0, queue=None, capacity=500, limits=Limits()):
    ep = f"ipc://{tmp_path}/{name}.sock"
    pub = Publisher(ep, hwm=10000)
    rx = Receiver(lambda: Subscriber(ep, ["pair"], hwm=10000, limits=limits), maxsize=maxsize).start()
    assert pub.wait_for_subscribers(1, 5)
    buf = ReplayBuffer(capacity, 12, policy="reservoir")
    ing = Ingest(rx, mean_colour_embed, buf, queue, dedup_threshold=dedup, keep_interval_s=keep_s)
    return pub, rx, ing


def _drain(ing, n, timeout=10.0, rejected=0):
    """Wait (with a deadline) until the receiver has delivered n pairs and its subscriber rejected
    `rejected` messages, then process everything queued."""
    deadline = time.monotonic() + timeout
    while ((ing.rx.received < n or sum(ing.rx.sub_stats()["rejected"].values()) < rejected)
           and time.monotonic() < deadline):
        time.sleep(0.01)
    while ing.poll():
        pass


def test_socket_to_buffer_counts_every_pair(tmp_path):
    pub, rx, ing = _pipeline(tmp_path, "count", dedup=1.0)
    s = SyntheticStream(seed=1)
    good = [s.message(i) for i in range(30)]
    bad = s.message(30)
    bad.buffers["radar.ra"] = np.zeros((3,), np.float32)
    for m in good[:15] + [bad] + good[15:]:
        pub.send(m)
    pub.send_frames([b"pair", b"{not json"])  # malformed on the wire: rejected by the subscriber
    _drain(ing, 31, rejected=1)
    st = ing.stats()
    rx.stop()
    pub.close()
    assert st["pairs_in"] == 30 and st["inserted"] == 30 and len(ing.buffer) == 30
    assert st["dropped_by_reason"] == {"bad_pair_radar": 1, "malformed_header_json": 1}
    assert st["dropped"] == 2


def _raw_pair(msg, **meta) -> list[bytes]:
    """A pair's frames with meta values put straight into the JSON (as a foreign publisher could)."""
    frames = [bytes(f) for f in encode(msg)]
    h = json.loads(frames[1])
    h["meta"].update(meta)
    return [frames[0], json.dumps(h).encode()] + frames[2:]


def test_out_of_range_pair_time_is_counted_and_the_learner_goes_on(tmp_path):
    """#15 finding 2: meta.t_pair_ns = 2**70 crashed the learner (OverflowError in the replay buffer).
    Beyond 64 bits the wire rejects it (`range`); within u64 but outside int64, or not an integer, the
    learner's pair decoder does (`bad_pair_t_pair`); the pairs after it are all stored."""
    pub, rx, ing = _pipeline(tmp_path, "tpair", dedup=1.0)
    s = SyntheticStream(seed=5)
    msgs = [s.message(i) for i in range(12)]
    for m in msgs[:6]:
        pub.send(m)
    for bad in (2**70, 2**64 - 1, 2**63, "soon", 1.5):
        m = s.message(99)
        m.seq, m.epoch = pub.next_seq("pair"), pub.epoch
        m.stamp()
        pub.send_frames(_raw_pair(m, t_pair_ns=bad))
    for m in msgs[6:]:
        pub.send(m)
    _drain(ing, 12 + 4, rejected=1)
    st = ing.stats()
    rx.stop()
    pub.close()
    assert st["inserted"] == 12 and len(ing.buffer) == 12 and rx.thread is not None
    # the rejected message's number is also missing from what was delivered (lost counts numbers)
    assert st["dropped_by_reason"] == {"malformed_range": 1, "bad_pair_t_pair": 4, "lost_in_transport": 1}
    assert sorted(ing.buffer.t_ns[:12].tolist()) == [s.frame(i)[2] for i in range(12)]


def test_oversize_pair_costs_one_pair_not_the_stream(tmp_path):
    """#15 finding 1 at the learner's subscriber: a pair over transport.max_message_bytes is counted
    (`malformed_oversize`) and every pair after it still arrives."""
    pub, rx, ing = _pipeline(tmp_path, "big", dedup=1.0, limits=Limits(max_message_bytes=1 << 20))
    s = SyntheticStream(seed=6)
    for i in range(5):
        pub.send(s.message(i))
    big = s.message(5)
    big.buffers["camera.image"] = np.zeros((800, 700, 3), np.uint8)  # 1.7 MB: over the limit, under the ceiling
    pub.send(big)
    for i in range(6, 20):
        pub.send(s.message(i))
    _drain(ing, 19, rejected=1)
    st = ing.stats()
    rx.stop()
    pub.close()
    assert st["inserted"] == 19 and st["dropped_by_reason"] == {"malformed_oversize": 1, "lost_in_transport": 1}
    assert rx.sub_stats()["lost"] == 1  # its sequence number is missing from what was delivered


def test_near_duplicates_skipped_but_one_kept_per_interval(tmp_path):
    pub, rx, ing = _pipeline(tmp_path, "dedup", dedup=0.98, keep_s=1.0)
    s = SyntheticStream(seed=0)
    _, img, _, _ = s.frame(0)
    ra = np.zeros((128, 128, 2), np.float32)
    other = np.zeros_like(img)
    other[:, :64] = 255  # a clearly different frame
    # 10 Hz: 30 identical frames (3 s), then one different frame
    for i in range(30):
        pub.send(pair_message(ra, img, t_ns=i * 100_000_000))
    pub.send(pair_message(ra, other, t_ns=30 * 100_000_000))
    _drain(ing, 31)
    rx.stop()
    pub.close()
    kept_t = sorted(ing.buffer.t_ns[: len(ing.buffer)].tolist())
    # t = 0, 1.0, 2.0 s (keep interval) and the changed frame at 3.0 s
    assert kept_t == [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]
    assert ing.counts["duplicates_skipped"] == 27


def test_receiver_never_blocks_the_socket(tmp_path):
    # nobody polls: the bounded queue fills, the receiver keeps draining the socket and counts what it
    # had to drop, and the transport itself loses nothing (no silent high-water-mark drop upstream)
    pub, rx, ing = _pipeline(tmp_path, "full", maxsize=20)
    s = SyntheticStream(seed=2)
    for i in range(120):
        pub.send(s.message(i))
    deadline = time.monotonic() + 10
    while rx.received < 120 and time.monotonic() < deadline:
        time.sleep(0.01)
    st = ing.stats()
    rx.stop()
    pub.close()
    assert rx.received == 120
    assert st["dropped_by_reason"] == {"queue_full": 100}
    assert rx.sub_stats()["lost"] == 0 and pub.stats.dropped_hwm == 0
    assert rx.q.qsize() == 20


def test_queue_fed_from_stream_and_exclusion_mask(tmp_path):
    q = NegativeQueue(12, 64)
    pub, rx, ing = _pipeline(tmp_path, "mask", dedup=1.0, queue=q)
    s = SyntheticStream(seed=4)
    for i in range(40):  # 4 s at 10 Hz from one publisher = one sequence
        pub.send(s.message(i))
    _drain(ing, 40)
    rx.stop()
    pub.close()
    assert len(q) == 40
    np.testing.assert_array_equal(np.sort(q.t_ns[q.valid].numpy()), np.arange(40) * 100_000_000)
    seq = int(ing.buffer.seq[0])
    assert (q.seq_id[q.valid] == seq).all()
    anchor_t = torch.tensor([2_000_000_000, 2_000_000_000])
    anchor_s = torch.tensor([seq, seq + 1])  # same sequence / another sequence
    m = q.mask(anchor_t, anchor_s, exclusion_s=0.5)
    dt = (q.t_ns - 2_000_000_000).abs()
    expect_same = ~q.valid | (dt < 500_000_000)
    assert torch.equal(m[0], expect_same) and int((m[0] & q.valid).sum()) == 9  # 1.6 .. 2.4 s masked
    assert torch.equal(m[1], ~q.valid)  # other sequences are never excluded by time
    # naive / paper (no exclusion): only the anchor's own pair (same sequence, same time) besides empty slots
    assert torch.equal(q.mask(anchor_t, anchor_s, 0.0)[0], ~q.valid | (q.t_ns == 2_000_000_000))
    assert torch.equal(q.mask(anchor_t, anchor_s, 0.0)[1], ~q.valid)


def test_running_clutter_map_removes_static_returns_and_keeps_movers():
    from learner.online.ingest import RunningClutter
    rng = np.random.default_rng(0)
    static = rng.normal(0, 5, (2, 128, 128)).astype(np.float32)  # walls, poles: the same every frame
    c = RunningClutter(tau_s=2.0)
    for i in range(60):  # 6 s at 10 Hz: the map converges to the static scene
        x = static.copy()
        r = 10 + i  # a point target moving one range bin per frame
        x[:, r, 64] += 50.0
        out = c.remove(x, i * 100_000_000)
    # the static part is (nearly) gone, the mover stays (only its ~3 % share of the mean is subtracted)
    rest = out.copy()
    rest[:, 69, 64] = 0
    assert np.abs(rest).mean() < 0.1 * np.abs(static).mean()
    assert abs(out[0, 69, 64] - 50.0) < 3.0
    # the first frame is its own mean (a plain mean until tau's worth is in): all of it is clutter
    c0 = RunningClutter(2.0)
    assert np.abs(c0.remove(static.copy(), 0)).max() == 0.0
    # a new place (the rig moved, or the emulator's next episode): the map forgets in a few tau
    c2 = RunningClutter(tau_s=1.0)
    for i in range(30):
        c2.remove(static, i * 100_000_000)
    new = -static
    for i in range(30, 90):
        out = c2.remove(new, i * 100_000_000)
    assert np.abs(out).mean() < 0.01 * np.abs(new).mean()


def test_ingest_applies_clutter_removal_per_stream(tmp_path):
    ep = f"ipc://{tmp_path}/clutter.sock"
    pub = Publisher(ep, hwm=10000)
    rx = Receiver(lambda: Subscriber(ep, ["pair"], hwm=10000)).start()
    assert pub.wait_for_subscribers(1, 5)
    buf = ReplayBuffer(100, 12, policy="reservoir")
    ing = Ingest(rx, mean_colour_embed, buf, None, dedup_threshold=1.0, clutter_tau_s=2.0)
    img = SyntheticStream(seed=0).frame(0)[1]
    wall = np.full((128, 128, 2), 3.0, np.float32)
    for i in range(20):
        pub.send(pair_message(wall, img, t_ns=i * 100_000_000, frame_number=i))
    _drain(ing, 20)
    rx.stop()
    pub.close()
    assert len(buf) == 20 and ing.counts["inserted"] == 20
    # every stored map is the wall minus the running mean of the wall: zero
    stored = np.stack([buf.batch(np.array([i]))["radar"].numpy() for i in range(20)])
    assert np.abs(stored).max() < 1e-5
    assert len(ing.clutter) == 1


# ---------------------------------------------------------------------------------------------
# Scene truth from the truth topic (emulated rigs), joined to pairs by frame

def _live_pair(fn: int, t_arrival_ns: int, img, *, camera_fn: int | None = None) -> "Message":
    """A pair as sync publishes it live: frame headers with source, arrival stamps and frame numbers."""
    m = pair_message(np.zeros((128, 128, 2), np.float32), img, t_ns=t_arrival_ns, frame_number=fn)
    m.meta["radar"]["t"] = {"mono_ns": t_arrival_ns}
    m.meta["camera"]["t"] = {"mono_ns": t_arrival_ns}
    if camera_fn is not None:
        m.meta["camera"]["meta"]["frame_number"] = camera_fn
    m.seq = fn                                    # sync numbers its pairs
    return roundtrip(m)


def _truth(stream: str, fn: int, t_capture_ns: int, label: str, scene: int):
    from radvis.truth import truth_message
    return roundtrip(truth_message(stream, f"{stream}0", fn, t_capture_ns, {"label": label, "scene_id": scene}))


class _Rx:
    """What Ingest needs of a receiver, for feeding it by hand."""
    def __init__(self):
        import queue
        self.q, self.received, self.truth_received, self.dropped_full, self.truth_dropped_full = queue.Queue(), 0, 0, 0, 0
        self.stopped = False

    def sub_stats(self):
        return {"lost": 0, "rejected": {}, "restarts": 0}


def _ingest(wait_s: float = 5.0):
    rx = _Rx()
    return rx, Ingest(rx, mean_colour_embed, ReplayBuffer(100, 12, policy="reservoir"), None, dedup_threshold=1.0,
                      truth_wait_s=wait_s)


def test_truth_before_or_after_its_pair_labels_it_and_order_is_kept():
    img = SyntheticStream(seed=0).frame(0)[1]
    now = time.monotonic_ns()
    rx, ing = _ingest()
    # frame 1's truth arrives first; frame 2's pair arrives before its truth; frame 3 is labelled by its
    # camera frame's truth (no radar truth); order in the buffer must stay 1, 2, 3
    ing.process([(now, _truth("radar", 1, now - 50_000_000, "car", 7)),
                  (now, _live_pair(1, now, img)),
                  (now, _live_pair(2, now + 1, img)),
                  (now, _live_pair(3, now + 2, img, camera_fn=30))])
    assert ing.counts["pairs_in"] == 1 and len(ing.waiting) == 2          # 2 waits for its truth, 3 behind it
    ing.process([(now, _truth("radar", 2, now - 40_000_000, "pedestrian", 8)),
                 (now, _truth("camera", 30, now - 30_000_000, "cyclist", 9))])
    assert ing.counts["pairs_in"] == 3 and not ing.waiting
    labels = ing.buffer.label[:3].tolist()
    assert labels == [LABELS.index("car"), LABELS.index("pedestrian"), LABELS.index("cyclist")]
    st = ing.stats()
    assert st["truth"] == {"in": 2 + 1, "joined": 3, "missing": 0, "bad": 0, "queue_full": 0}


def test_no_truth_at_all_nothing_waits_and_missing_truth_is_bounded():
    img = SyntheticStream(seed=0).frame(0)[1]
    now = time.monotonic_ns()
    rx, ing = _ingest(wait_s=0.2)
    ing.process([(now, _live_pair(1, now, img))])                         # real devices: no truth, no wait
    assert ing.counts["pairs_in"] == 1 and ing.buffer.label[0] == -1 and not ing.waiting
    # an emulated rig whose truth for frame 2 never comes: the pair waits, then goes on unlabelled, counted
    ing.process([(now, _truth("radar", 5, now, "car", 1)), (now, _live_pair(2, now, img))])
    assert len(ing.waiting) == 1
    deadline = time.monotonic() + 10
    while ing.waiting and time.monotonic() < deadline:
        ing.poll()
        time.sleep(0.01)
    assert not ing.waiting and ing.counts["pairs_in"] == 2 and ing.stats()["truth"]["missing"] == 1
    # a stopping learner does not wait: what it received is processed
    ing.process([(time.monotonic_ns(), _live_pair(3, time.monotonic_ns(), img))])
    assert len(ing.waiting) == 1
    rx.stopped = True
    ing.poll()
    assert not ing.waiting and ing.counts["pairs_in"] == 3


def test_stale_truth_of_a_restarted_device_is_not_joined():
    """Frame numbers start again when a device restarts: truth sampled long before the frame arrived (or
    after it) belongs to another frame with the same number."""
    img = SyntheticStream(seed=0).frame(0)[1]
    now = time.monotonic_ns()
    rx, ing = _ingest(wait_s=0.0)
    ing.process([(now, _truth("radar", 4, now - 60_000_000_000, "car", 1)),   # a minute old
                 (now, _truth("radar", 5, now + 5_000_000_000, "car", 2)),    # from the future
                 (now, _live_pair(4, now, img)), (now, _live_pair(5, now + 1, img))])
    assert ing.buffer.label[:2].tolist() == [-1, -1] and ing.stats()["truth"]["joined"] == 0


def test_live_holdout_takes_held_out_scenes_by_their_truth(tmp_path):
    """End to end over a socket: pairs and truth on two endpoints, one subscriber (as the learner has); the
    pairs of held-out scenes go to the live hold-out with their labels, the others are trained on."""
    from learner.online.ingest import LiveHoldout
    pub = Publisher(f"ipc://{tmp_path}/pairs.sock", hwm=10000)
    tpub = Publisher(f"ipc://{tmp_path}/truth.sock", hwm=10000)
    rx = Receiver(lambda: Subscriber([f"ipc://{tmp_path}/pairs.sock", f"ipc://{tmp_path}/truth.sock"],
                                     ["pair", "truth"], hwm=10000)).start()
    assert pub.wait_for_subscribers(1, 5) and tpub.wait_for_subscribers(1, 5)
    hold = LiveHoldout(fraction=0.5, capacity=100)
    ing = Ingest(rx, mean_colour_embed, ReplayBuffer(200, 12, policy="reservoir"), None, dedup_threshold=1.0,
                 heldout=hold)
    s = SyntheticStream(seed=1)
    from radvis.truth import truth_message
    n = 40
    for i in range(n):
        _, img, _, _ = s.frame(i)
        t = time.monotonic_ns()
        tpub.send(truth_message("radar", "radar0", i, t - 1000, {"label": LABELS[i % 4], "scene_id": i // 4}))
        m = pair_message(np.zeros((128, 128, 2), np.float32), img, t_ns=t, frame_number=i)
        m.meta["radar"]["t"] = {"mono_ns": t}
        pub.send(m)
    deadline = time.monotonic() + 20
    while (rx.received < n or rx.truth_received < n) and time.monotonic() < deadline:
        time.sleep(0.01)
    while ing.poll() or ing.waiting:
        if time.monotonic() > deadline:
            break
    rx.stop()
    pub.close(), tpub.close()
    st = ing.stats()
    assert st["pairs_in"] == n and st["truth"]["joined"] == n and st["truth"]["missing"] == 0
    held = {i // 4 for i in range(n) if hold.is_heldout(i // 4)}
    assert st["heldout"] == sum(1 for i in range(n) if i // 4 in held) > 0
    radar, label, scene = hold.arrays()
    assert set(scene.tolist()) == held
    assert sorted(label.tolist()) == sorted(i % 4 for i in range(n) if i // 4 in held)   # each with its own label
    assert len(ing.buffer) == n - st["heldout"]

"""Wire format v1: round trips through real PUB/SUB sockets, validation, fuzzing, sequence gaps, CURVE."""
import json
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radvis.transport import CurveKeys, Publisher, Subscriber, make_keys, stop_authenticator
from radvis.wire import DTYPES, KINDS, Limits, Message, WireError, decode, encode


def sample(kind: str) -> Message:
    rng = np.random.default_rng(0)
    bufs = {
        "radar": {"ra": rng.standard_normal((128, 128, 2)).astype(np.float32),
                  "points": rng.standard_normal((7, 4)).astype(np.float32)},
        "camera": {"image": rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)},
        "pair": {"radar.ra": rng.standard_normal((128, 128, 2)).astype(np.float32),
                 "camera.image": rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)},
        "truth": {},
        "stats": {},
        "event": {"empty": np.zeros((0, 4), np.float32)},
    }[kind]
    meta = {"radar": {"frame_number": 7, "cfg_digest": "abc", "units": {"ra": "linear"}},
            "camera": {"width": 128, "height": 96, "encoding": "raw", "intrinsics": [100.0, 100.0, 64.0, 48.0]},
            "pair": {"skew_ns": 1234},
            "truth": {"stream": "radar", "frame_number": 7, "t_capture_ns": 5_000_000_000, "label": "car"},
            "stats": {"fps": 9.9}, "event": {"what": "dropped"}}[kind]
    return Message(kind=kind, source=f"{kind}0", buffers=bufs, meta=meta, t_device_ns=123456789)


def assert_same(a: Message, b: Message):
    assert (a.kind, a.source, a.seq, a.epoch, a.t_device_ns, a.t_mono_ns, a.t_wall_ns, a.meta) == \
           (b.kind, b.source, b.seq, b.epoch, b.t_device_ns, b.t_mono_ns, b.t_wall_ns, b.meta)
    assert list(a.buffers) == list(b.buffers)
    for k in a.buffers:
        assert a.buffers[k].dtype == b.buffers[k].dtype and a.buffers[k].shape == b.buffers[k].shape
        np.testing.assert_array_equal(a.buffers[k], b.buffers[k])


@pytest.fixture(params=["tcp", "ipc"])
def endpoint(request, tmp_path):
    if request.param == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{tmp_path}/wire.sock"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_roundtrips_over_real_sockets(endpoint, kind):
    pub = Publisher(endpoint)
    sub = Subscriber(pub.endpoint)
    try:
        assert pub.wait_for_subscribers(1, 5.0), "slow-joiner wait timed out"
        sent = [sample(kind) for _ in range(3)]
        for m in sent:
            assert pub.send(m)
        got = [sub.recv(timeout_ms=5000) for _ in sent]
        for a, b in zip(sent, got):
            assert b is not None
            assert_same(a, b)
        assert [m.seq for m in got] == [0, 1, 2]
        assert sub.stats.received == 3 and sub.stats.lost == 0 and not sub.stats.rejected
        # zero-copy: the received array is a view on the ZeroMQ frame, not a copy
        for a in got[0].buffers.values():
            assert not a.flags.owndata or a.size == 0
    finally:
        sub.close()
        pub.close()


def test_topic_filtering(tmp_path):
    pub = Publisher(f"ipc://{tmp_path}/t.sock")
    sub = Subscriber(pub.endpoint, topics=["camera"])
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        pub.send(sample("radar"))
        pub.send(sample("camera"))
        m = sub.recv(timeout_ms=3000)
        assert m.kind == "camera"
        assert sub.recv(timeout_ms=200) is None
    finally:
        sub.close()
        pub.close()


def test_sequence_gaps_are_counted_exactly(tmp_path):
    pub = Publisher(f"ipc://{tmp_path}/g.sock")
    sub = Subscriber(pub.endpoint)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        skipped = {3, 4, 9, 15, 16, 17}
        for i in range(20):
            m = sample("stats")
            if i in skipped:  # numbered but never sent: what a lossy link looks like
                pub.next_seq(m.kind)
                continue
            pub.send(m)
        got = [sub.recv(timeout_ms=3000) for _ in range(20 - len(skipped))]
        assert [m.seq for m in got] == [i for i in range(20) if i not in skipped]
        assert sub.stats.lost == len(skipped)
        # a publisher restart (new epoch) is not a gap
        pub2_epoch = pub.epoch + 1
        m = sample("stats")
        m.seq, m.epoch = 0, pub2_epoch
        pub.send(m, keep_seq=True)
        assert sub.recv(timeout_ms=3000).epoch == pub2_epoch
        assert sub.stats.lost == len(skipped) and sub.stats.restarts == 1
    finally:
        sub.close()
        pub.close()


def test_one_publisher_many_kinds_filtered_by_topic_is_not_a_gap(tmp_path):
    """sync publishes pairs and drop events from one socket; a learner subscribed to pairs only must
    not count the events it filtered out as lost pairs."""
    pub = Publisher(f"ipc://{tmp_path}/k.sock")
    everything = Subscriber(pub.endpoint)
    pairs_only = Subscriber(pub.endpoint, topics=["pair"])
    try:
        assert pub.wait_for_subscribers(2, 5.0)
        kinds = ["pair", "event", "pair", "stats", "event", "event", "pair"] * 3
        for k in kinds:
            m = sample(k)
            m.source = "sync0"
            pub.send(m)
        got = [everything.recv(timeout_ms=3000) for _ in kinds]
        pairs = [pairs_only.recv(timeout_ms=3000) for _ in range(kinds.count("pair"))]
        assert [m.seq for m in pairs] == list(range(kinds.count("pair")))
        assert [m.kind for m in got] == kinds
        for sub in (everything, pairs_only):
            assert sub.stats.lost == 0 and sub.stats.restarts == 0 and sub.stats.out_of_order == 0
    finally:
        everything.close()
        pairs_only.close()
        pub.close()


# ------------------------------------------------------------------------------------------
# Validation: each malformed message is rejected with its reason, never an exception
# ------------------------------------------------------------------------------------------

def frames_of(m: Message) -> list[bytes]:
    return [bytes(f) for f in encode(m)]


def with_header(frames, **changes):
    h = json.loads(frames[1])
    for k, v in changes.items():
        h[k] = v
    return [frames[0], json.dumps(h).encode()] + frames[2:]


def test_rejections_have_reasons():
    good = frames_of(sample("radar"))
    h = json.loads(good[1])
    bad_dtype = dict(h["buffers"][0], dtype="|O")
    huge = dict(h["buffers"][0], shape=[-1, 2], nbytes=8)
    cases = {
        "frames": [good[0]],
        "header_json": [good[0], b"{not json"] + good[2:],
        "version": with_header(good, v=99),
        "kind": with_header(good, kind="lidar"),
        "fields": with_header(good, seq=-1),
        "dtype": with_header(good, buffers=[bad_dtype, h["buffers"][1]]),
        "shape": with_header(good, buffers=[huge, h["buffers"][1]]),
        "size_mismatch": good[:2] + [good[2][:-4], good[3]],
        "buffer_count": good[:3],
    }
    for reason, frames in cases.items():
        with pytest.raises(WireError) as e:
            decode(frames)
        assert e.value.reason == reason, (reason, str(e.value))
    with pytest.raises(WireError) as e:
        decode(good, Limits(max_message_bytes=1000))
    assert e.value.reason == "too_large"
    with pytest.raises(WireError) as e:
        decode(good, Limits(max_header_bytes=300))
    assert e.value.reason == "header_size"


def test_dtype_allow_list_has_no_objects():
    assert all(dt.kind in "uifcb" for dt in DTYPES.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=5))
def test_fuzz_random_frames_never_raise_anything_but_wireerror(frames):
    try:
        decode(frames)
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_headers_and_buffers(data):
    frames = frames_of(sample(data.draw(st.sampled_from(["radar", "camera", "event"]))))
    i = data.draw(st.integers(0, len(frames) - 1))
    b = bytearray(frames[i])
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "json"]))
    if op == "flip" and b:
        j = data.draw(st.integers(0, len(b) - 1))
        b[j] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        b = b[: data.draw(st.integers(0, len(b)))]
    elif op == "insert":
        j = data.draw(st.integers(0, len(b)))
        b[j:j] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        h = json.loads(frames[1])
        key = data.draw(st.sampled_from(["v", "kind", "source", "seq", "epoch", "t", "buffers", "meta"]))
        h[key] = data.draw(st.one_of(st.none(), st.integers(-2**70, 2**70), st.text(max_size=5),
                                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
        i, b = 1, bytearray(json.dumps(h).encode())
    frames[i] = bytes(b)
    try:
        m = decode(frames)
    except WireError:
        return
    # anything accepted must be self-consistent
    for d, a in zip(json.loads(frames[1])["buffers"], m.buffers.values()):
        assert a.nbytes == d["nbytes"]


def test_subscriber_counts_every_rejection_over_a_real_socket(tmp_path):
    """A rogue publisher sends garbage; the subscriber drops and counts each, then still gets good messages."""
    ep = f"ipc://{tmp_path}/rogue.sock"
    sub = Subscriber(ep, bind=True, limits=Limits(max_message_bytes=1 << 20))
    ctx = zmq.Context.instance()
    rogue, huge = ctx.socket(zmq.PUB), ctx.socket(zmq.PUB)
    rogue.connect(ep)
    huge.connect(ep)
    try:
        good = frames_of(sample("camera"))
        # a plain PUB only processes the SUB's subscription on its next send: prime until one arrives
        for s in (rogue, huge):
            for _ in range(50):
                s.send_multipart(good)
                if sub.recv(timeout_ms=100) is not None:
                    break
        while sub.recv(timeout_ms=200) is not None:
            pass
        base = sub.stats.received
        # an oversize frame makes libzmq (maxmsgsize) cut that peer off before anything is allocated
        huge.send_multipart([b"big", b"{}", b"\0" * (2 << 20)])
        bad = [[b"x"], [b"radar", b"\xff\xfe"], with_header(good, v=2),
               with_header(good, buffers=[{"name": "image", "dtype": "<f8", "shape": [96, 128, 3], "nbytes": 96 * 128 * 24}])]
        for f in bad:
            rogue.send_multipart(f)
        rogue.send_multipart(good)
        m = sub.recv(timeout_ms=5000)
        assert m is not None and m.kind == "camera"
        assert sub.stats.rejected == {"frames": 1, "header_json": 1, "version": 1, "size_mismatch": 1}
        assert sub.stats.received == base + 1
    finally:
        rogue.close(0)
        huge.close(0)
        sub.close()


def test_publisher_counts_hwm_drops_and_never_blocks(tmp_path):
    pub = Publisher(f"ipc://{tmp_path}/hwm.sock", hwm=5)
    sub = Subscriber(pub.endpoint, hwm=5)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        big = Message(kind="event", source="x", buffers={"b": np.zeros(1 << 20, np.uint8)})
        t0 = time.monotonic()
        for _ in range(200):
            pub.send(big)
        assert time.monotonic() - t0 < 30  # sanity only: it returned (it never blocks on a full queue)
        assert pub.stats.sent + pub.stats.dropped_hwm == 200
        assert pub.stats.dropped_hwm > 0
        n = 0
        while sub.recv(timeout_ms=500) is not None:
            n += 1
        assert n == pub.stats.sent
        assert sub.stats.lost == pub.stats.dropped_hwm - (200 - 1 - max(v["last"] for v in sub.stats.per_source.values()))
    finally:
        sub.close()
        pub.close()


def test_curve_subscriber_without_key_gets_nothing(tmp_path):
    keys = CurveKeys.load(make_keys(tmp_path / "keys"))
    other = CurveKeys.load(make_keys(tmp_path / "other"))  # a valid keypair, but not authorised
    ctx = zmq.Context()
    ep = f"ipc://{tmp_path}/curve.sock"
    pub = Publisher(ep, curve=keys, ctx=ctx)
    good = Subscriber(ep, curve=keys, ctx=ctx)
    plain = Subscriber(ep, ctx=ctx)
    intruder = Subscriber(ep, curve=CurveKeys(keys.server_public, None, other.client_public,
                                               other.client_secret, other.authorized_dir), ctx=ctx)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        time.sleep(0.5)
        for _ in range(5):
            pub.send(sample("camera"))
        assert good.recv(timeout_ms=3000) is not None
        assert plain.recv(timeout_ms=500) is None
        assert intruder.recv(timeout_ms=500) is None
        assert pub.subscribers == 1  # only the authorised client completed the handshake
    finally:
        for s in (good, plain, intruder, pub):
            s.close()
        stop_authenticator(ctx)
        ctx.term()

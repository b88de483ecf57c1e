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
            assert sub.stats.lost == 0 and sub.stats.restarts == 0 and not sub.stats.rejected
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
        "fields": with_header(good, seq="1"),
        "range": with_header(good, seq=-1),
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
    assert e.value.reason == "oversize"
    with pytest.raises(WireError) as e:
        decode(good, Limits(max_header_bytes=300))
    assert e.value.reason == "header_size"


def _reason(frames, limits=Limits()):
    try:
        decode(frames, limits)
    except WireError as e:
        return e.reason
    return None


def test_header_is_strict_utf8_then_strict_json():
    """#15 finding 4: the header must be UTF-8 (strictly) and RFC 8259 JSON. json.loads(bytes) lets
    ED A0 80 (an encoded surrogate) through: `radar:\ud800radar0` became a phantom source."""
    good = frames_of(sample("radar"))
    hdr = good[1]
    assert b'"source":"radar0"' in hdr

    def with_raw(text: bytes):
        return [good[0], text] + good[2:]
    cases = {
        b'"source":"radar:\xed\xa0\x80radar0"': "header_utf8",  # encoded surrogate U+D800
        b'"source":"\xc0\xafradar0"': "header_utf8",  # overlong "/"
        b'"source":"radar0\xff"': "header_utf8",
        b'"source":"radar:\\ud800radar0"': "header_utf8",  # lone surrogate as a JSON escape
        b'"source":"radar0","source":"radar1"': "header_json",  # duplicate key: which one is it?
        b'"source":"radar0","meta2":NaN': "header_json",
        b'"source":"radar0","meta2":-Infinity': "header_json",
        b'"source":"radar0","meta2":1e999': "range",  # parses to inf
    }
    for repl, reason in cases.items():
        assert _reason(with_raw(hdr.replace(b'"source":"radar0"', repl))) == reason, repl
    # what is fine stays fine: non-ASCII text in meta, a surrogate *pair* escape (one code point)
    ok = hdr.replace(b'"cfg_digest":"abc"', '"cfg_digest":"café 😀 \\ud83d\\ude00"'.encode())
    m = decode(with_raw(ok))
    assert m.meta["cfg_digest"] == "café 😀 😀"


def _set(frames, path, value):
    h = json.loads(frames[1])
    node = h
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return [frames[0], json.dumps(h).encode()] + frames[2:]


@pytest.mark.parametrize("path,value,reason", [
    (("seq",), 2**64 - 1, None), (("seq",), 2**64, "range"), (("seq",), -1, "range"),
    (("epoch",), 2**62 - 1, None), (("epoch",), 2**62, "range"), (("epoch",), 2**64 - 1, "range"),
    (("t", "mono_ns"), 2**63 - 1, None), (("t", "mono_ns"), 2**63, "range"), (("t", "mono_ns"), -1, "range"),
    (("t", "wall_ns"), 2**63, "range"),
    (("t", "device_ns"), -(2**63), None), (("t", "device_ns"), -(2**63) - 1, "range"),
    (("t", "device_ns"), 2**63, "range"),
    (("meta", "t_pair_ns"), 2**70, "range"),  # #15 finding 2: crashed the learner
    (("meta", "frame_number"), 2**64, "range"), (("meta", "nested"), {"a": [1, -(2**63) - 1]}, "range"),
    (("meta", "frame_number"), 2**64 - 1, None),
    (("v",), True, "version"), (("v",), 1.0, None),  # 1.0 == 1 in JSON's number model
    (("seq",), True, "fields"), (("seq",), 3.0, "fields"), (("seq",), "3", "fields"),
    (("replay",), 1, "fields"), (("replay",), None, "fields"),
    (("buffers", 0, "nbytes"), True, "fields"), (("buffers", 0, "shape"), [2**41, 0, 2], "shape"),
])
def test_every_numeric_header_field_is_range_checked(path, value, reason):
    """#15 finding 2: the docs' ranges are the contract (u64 seq, u62 epoch, i64 times, every integer
    within 64 bits); a value outside is rejected at decode with reason `range`."""
    assert _reason(_set(frames_of(sample("radar")), path, value)) == reason


@pytest.mark.parametrize("source,reason", [
    ("radar0", None), ("cam-1.left_2", None), ("a" * 64, None), ("a" * 65, "source"), ("", "source"),
    ("radar 0", "source"), ("radar:0", "source"), ("-radar", "source"), ("radär0", "source"), (7, "source"),
    ("radar\n0", "source")])
def test_source_has_a_documented_character_set(source, reason):
    assert _reason(with_header(frames_of(sample("radar")), source=source)) == reason


def test_topic_and_buffer_names_are_checked():
    good = frames_of(sample("radar"))
    assert _reason([b"radar.debug"] + good[1:]) is None  # a topic may extend the kind
    for topic in (b"camera", b"", b"radar\xff", b"radar 0", b"r"):
        assert _reason([topic] + good[1:]) == "topic", topic
    h = json.loads(good[1])
    bad_name = dict(h["buffers"][0], name="ra/../x")
    assert _reason(with_header(good, buffers=[bad_name, h["buffers"][1]])) == "fields"
    with pytest.raises(WireError):  # a producer cannot send what every receiver would reject
        encode(Message(kind="radar", source="radar 0"))
    with pytest.raises(WireError):
        encode(Message(kind="radar", source="radar0", meta={"x": float("nan")}))


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
    rogue = ctx.socket(zmq.PUB)
    rogue.connect(ep)
    try:
        good = frames_of(sample("camera"))
        # a plain PUB only processes the SUB's subscription on its next send: prime until one arrives
        for _ in range(50):
            rogue.send_multipart(good)
            if sub.recv(timeout_ms=100) is not None:
                break
        while sub.recv(timeout_ms=200) is not None:
            pass
        base, before = sub.stats.received, dict(sub.stats.rejected)  # priming repeats are stale
        bad = [[b"x"], [b"camera", b"\xff\xfe"], with_header(good, v=2),
               with_header(good, buffers=[{"name": "image", "dtype": "<f8", "shape": [96, 128, 3], "nbytes": 96 * 128 * 24}]),
               [b"camera", b"{}", b"\0" * (2 << 20)],  # over max_message_bytes, within the socket ceiling
               good]  # stale: the same epoch and seq as a message already delivered
        for f in bad:
            rogue.send_multipart(f)
        fresh = sample("camera")
        fresh.seq, fresh.epoch = json.loads(good[1])["seq"] + 1, json.loads(good[1])["epoch"]
        rogue.send_multipart(frames_of(fresh))
        m = sub.recv(timeout_ms=5000)
        assert m is not None and m.kind == "camera" and m.seq == fresh.seq
        new = {k: v - before.get(k, 0) for k, v in sub.stats.rejected.items() if v - before.get(k, 0)}
        assert new == {"frames": 1, "header_utf8": 1, "version": 1, "size_mismatch": 1, "oversize": 1, "stale": 1}
        assert sub.stats.received == base + 1
    finally:
        rogue.close(0)
        sub.close()


def _radar_of(n: int) -> Message:
    return Message(kind="radar", source="radar0", buffers={"ra": np.zeros(n, np.uint8)})


def _recv_until(sub, pred, timeout_s=20.0, send=None):
    """Receive until pred(got) holds (a deadline, not a sleep); `send()` is called between receives."""
    got, deadline = [], time.monotonic() + timeout_s
    while not pred(got) and time.monotonic() < deadline:
        if send is not None:
            send()
        m = sub.recv(timeout_ms=20)
        if m is not None:
            got.append(m)
    return got


def test_oversize_frame_costs_that_message_not_the_stream(endpoint):
    """#15 finding 1: 5 valid frames, one over max_message_bytes, 20 valid: all 25 valid arrive, the
    oversize one is counted. (libzmq used to drop the connection on it for good, silently.)"""
    limits = Limits(max_message_bytes=1 << 20)
    pub = Publisher(endpoint)
    sub = Subscriber(pub.endpoint, limits=limits)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        for _ in range(5):
            assert pub.send(_radar_of(100))
        assert pub.send(_radar_of(2 << 20))  # 2 MiB with a 1 MiB limit: the reproduction
        for _ in range(20):
            assert pub.send(_radar_of(100))
        got = _recv_until(sub, lambda g: len(g) == 25)
        assert [m.seq for m in got] == [0, 1, 2, 3, 4] + list(range(6, 26))
        assert sub.stats.rejected == {"oversize": 1} and sub.stats.reconnects == 0
        assert sub.stats.lost == 1  # the oversize message's number is a gap in what was delivered
    finally:
        sub.close()
        pub.close()


def test_frame_over_the_socket_ceiling_reconnects_loudly(endpoint, caplog):
    """Above the hard ceiling (Limits.socket_max_frame_bytes) libzmq drops the connection before
    allocating the frame; the subscriber sees that no retry follows, reconnects, counts and logs it, and
    valid frames flow again. What was sent while it reconnected is counted as lost, exactly."""
    limits = Limits(max_message_bytes=1 << 20)
    pub = Publisher(endpoint)
    sub = Subscriber(pub.endpoint, limits=limits, name="ceiling")
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        for _ in range(5):
            assert pub.send(_radar_of(100))
        before = _recv_until(sub, lambda g: len(g) == 5)
        assert pub.send(_radar_of(limits.socket_max_frame_bytes + 1))
        after = _recv_until(sub, lambda g: len(g) >= 10, 30, send=lambda: pub.send(_radar_of(100)))
        assert len(before) == 5 and len(after) >= 10, sub.stats.as_dict()
        assert sub.stats.reconnects == 1 and not sub.stats.rejected
        seqs = [m.seq for m in before + after]
        assert seqs == sorted(seqs) and seqs[5] > 6
        assert sub.stats.lost == seqs[5] - 5  # the cut frame and what was sent during the reconnect
        assert any("reconnected" in r.getMessage() for r in caplog.records if r.name == "radvis.ceiling")
    finally:
        sub.close()
        pub.close()


def test_stale_duplicate_is_dropped_and_counted(tmp_path):
    """#15 finding 3, at the subscriber: a message re-sent with the same epoch and seq, or an older one,
    is stale — dropped and counted, never delivered twice — and the stream goes on."""
    pub = Publisher(f"ipc://{tmp_path}/dup.sock")
    sub = Subscriber(pub.endpoint)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        sent = []
        for _ in range(12):
            m = sample("radar")
            pub.send(m)
            sent.append(frames_of(m))
        pub.send_frames(sent[10])  # the same message again
        pub.send_frames(sent[3])  # an old one
        pub.send(sample("radar"))
        got = _recv_until(sub, lambda g: len(g) == 13)
        assert [m.seq for m in got] == list(range(13))
        assert sub.recv(timeout_ms=100) is None
        assert sub.stats.rejected == {"stale": 2} and sub.stats.lost == 0 and sub.stats.received == 13
    finally:
        sub.close()
        pub.close()


def test_publisher_counts_hwm_drops_and_never_blocks(tmp_path):
    pub = Publisher(f"ipc://{tmp_path}/hwm.sock", hwm=5)
    sub = Subscriber(pub.endpoint, hwm=5)
    try:
        assert pub.wait_for_subscribers(1, 5.0)
        big = Message(kind="event", source="x", buffers={"b": np.zeros(1 << 20, np.uint8)})
        for _ in range(200):  # NOBLOCK: a full queue makes send return False, counted
            pub.send(big)
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
        # both others tried and were refused (their own counters), so what follows can only reach `good`
        deadline = time.monotonic() + 10
        while min(plain.stats.handshake_failures, intruder.stats.handshake_failures) < 1:
            assert time.monotonic() < deadline, (plain.stats.as_dict(), intruder.stats.as_dict())
            plain.watch(), intruder.watch(), time.sleep(0.01)
        for _ in range(5):
            pub.send(sample("camera"))
        assert good.recv(timeout_ms=3000) is not None
        assert plain.recv(timeout_ms=500) is None
        assert intruder.recv(timeout_ms=500) is None
        assert pub.subscribers == 1  # only the authorised client completed the handshake
        assert good.stats.handshake_failures == 0
        assert plain.stats.reconnects == intruder.stats.reconnects == 0  # a refusal is not retried
    finally:
        for s in (good, plain, intruder, pub):
            s.close()
        stop_authenticator(ctx)
        ctx.term()


def test_config_source_ids_follow_the_wire_name_rule():
    """A source the config accepts is one every receiver accepts (else every message would be dropped)."""
    from radvis.config import SOURCE_ID, ConfigError, load
    from radvis.wire import NAME_RE
    assert NAME_RE.pattern == SOURCE_ID + r"\Z"
    for key in ("radar.source", "camera.source", "sync.source"):
        assert load(None, [f"{key}=left-radar_2.a"])
        with pytest.raises(ConfigError, match=key):
            load(None, [f"{key}='radar 0'"])

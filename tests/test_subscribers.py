"""XPUB subscriber counting (issue #13 item 4): `capture.wait_subscribers = N` and `replay --wait-subscribers N`
wait for N consumers of the endpoint's messages. Without XPUB_VERBOSE a second subscription to the same
topic is never reported, so N = 2 waited out its whole timeout while both consumers were connected."""
from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from capture.record import Recorder
from capture.replay import replay_session
from radvis.config import load
from radvis.transport import Publisher, Subscriber
from radvis.wire import Message
from tests.test_capture import collect, fake_sets, ipc_sets, radvis_proc


def _wait(cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("n", [2, 3])
def test_n_subscribers_to_one_topic_are_n(tmp_path, n):
    pub = Publisher(f"ipc://{tmp_path}/c.sock")
    subs = [Subscriber(pub.endpoint, topics=["camera"]) for _ in range(n)]
    # a consumer of other topics on the same endpoint (sync takes radar/camera/event/truth everywhere)
    other = Subscriber(pub.endpoint, topics=["radar", "truth"])
    try:
        assert pub.wait_for_subscribers(n, 10, topic="camera") and pub.wait_for_subscribers(1, 10, topic="truth")
        assert pub.subscribers_for("camera") == n and pub.subscribers_for("radar") == 1
        assert not pub.wait_for_subscribers(n + 1, 0.3, topic="camera")  # there are exactly n
        # one that subscribes to everything ("" is a prefix of every topic) counts for every topic
        everything = Subscriber(pub.endpoint)
        assert pub.wait_for_subscribers(n + 1, 10, topic="camera") and pub.subscribers_for("radar") == 2
        # a consumer that goes away is no longer counted (XPUB_VERBOSER reports its unsubscription)
        everything.close()
        subs.pop().close()
        assert _wait(lambda: (pub._drain_subscriptions(), pub.subscribers_for("camera"))[1] == n - 1, 10)
        assert pub.send(Message(kind="camera", source="c", meta={"frame_number": 1}))
        assert all(s.recv(timeout_ms=5000) is not None for s in subs)
    finally:
        for s in subs + [other]:
            s.close()
        pub.close()


def test_capture_waits_for_two_recorders(tmp_path):
    """The issue's reproduction: two `radvis record --topics camera` on one endpoint (and this test's own
    subscriber), then a capture with capture.wait_subscribers=3 and a long slow-joiner wait: it sees all three
    ("subscribers ready", not "sending anyway" after the wait), and every consumer gets every frame."""
    sets = ipc_sets(tmp_path) + fake_sets() + ["--set", "transport.slow_joiner_s=60"]
    recs = [radvis_proc(["record", "--topics", "camera", "--out", str(tmp_path / f"s{i}"), *sets]) for i in range(2)]
    cap = None
    try:
        watch = Subscriber(f"ipc://{tmp_path}/camera.sock", topics=["camera"])  # the third consumer
        cap = radvis_proc(["capture", "camera", "--frames", "3", *sets, "--set", "capture.wait_subscribers=3"],
                          {"RADVIS_FAKE_FPS": "30"})
        got = collect(watch, 3, 60)
        assert cap.wait(60) == 0, cap.stderr.read()
        err = cap.stderr.read()
        assert "subscribers ready" in err and "sending anyway" not in err, err
        assert len(got) == 3
        for r in recs:
            r.send_signal(signal.SIGINT)
        reports = []
        for r in recs:
            assert r.wait(30) == 0, r.stderr.read()
            reports.append(json.loads(r.stdout.read().strip().splitlines()[-1]))
        assert [rep["written"] for rep in reports] == [3, 3], reports
        watch.close()
    finally:
        for p in recs + ([cap] if cap is not None else []):
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("n", [2, 3])
def test_replay_waits_for_n_subscribers(tmp_path, n):
    """`replay --wait-subscribers N` (replay_session(wait_subscribers=N)) starts once N consumers of each
    endpoint's messages are connected, however many topics each subscribes to; all N get every message."""
    cfg = load(None, [f"endpoints.radar=ipc://{tmp_path}/radar", f"endpoints.camera=ipc://{tmp_path}/camera",
                      "transport.slow_joiner_s=30"])
    live = Publisher(f"ipc://{tmp_path}/live-radar")
    rec = Recorder({"radar": live.endpoint}, tmp_path / "session", fsync_s=0.2)
    assert live.wait_for_subscribers(1, 10)
    for k in range(5):
        assert live.send(Message(kind="radar", source="radar0", meta={"frame_number": k}))
    assert _wait(lambda: (rec.poll_once(20), rec.written)[1] >= 5, 20)
    rec.close()
    live.close()
    # n - 1 consumers that subscribe to four topics each (as sync does) before the replay starts, the last
    # one after: counting subscriptions instead of consumers, the replay would start without it, and the
    # slow joiner would miss the first messages
    subs = [Subscriber(cfg.endpoints.radar, topics=["radar", "camera", "event", "truth"]) for _ in range(n - 1)]
    result = {}
    th = threading.Thread(target=lambda: result.update(st=replay_session(cfg, str(tmp_path / "session"),
                                                                          as_fast=True, wait_subscribers=n)))
    th.start()
    try:
        subs.append(Subscriber(cfg.endpoints.radar, topics=["radar", "event"]))
        th.join(60)
        assert not th.is_alive() and result["st"].sent == 5
        for s in subs:
            got = collect(s, 6, 10)
            assert [m.meta.get("frame_number") for m in got[:5]] == list(range(5))
            assert got[5].kind == "event" and got[5].meta == {"event": "end_of_stream", "stream": "radar"}
    finally:
        for s in subs:
            s.close()

"""capture -> record -> replay reproduces the live messages (headers except the replay flag, and bytes) in
order; timed replay paces every message (never early: asserted on the replayer's own counters; its
accuracy is measured in bench/record.py); rate, window, loop; CRUW streaming."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from capture.record import Segment, frame
from capture.replay import mark_replay, replay_session
from radvis import config as configmod
from radvis.transport import Subscriber
from radvis.wire import Message, encode
from tests.test_capture import collect, fake_image, fake_ra, fake_sets, ipc_sets, radvis_proc

def _flat(m: Message) -> tuple:
    h = json.loads(m.header)
    return h, {k: bytes(v.tobytes()) for k, v in m.buffers.items()}


def test_capture_record_replay_reproduces_messages(tmp_path):
    sets = ipc_sets(tmp_path) + fake_sets() + ["--set", "capture.wait_subscribers=2"]
    out = tmp_path / "session"
    rec = radvis_proc(["record", "--topics", "radar", "camera", "--out", str(out), *sets])
    live = Subscriber([f"ipc://{tmp_path}/radar.sock", f"ipc://{tmp_path}/camera.sock"])
    caps = [radvis_proc(["capture", k, "--frames", "25", *sets], {"RADVIS_FAKE_FPS": "40"}) for k in ("radar", "camera")]
    try:
        got_live = collect(live, 50, 40)
        for c in caps:
            assert c.wait(30) == 0, c.stderr.read()
        rec.send_signal(signal.SIGINT)  # it drains what is still on its way before it stops
        assert rec.wait(20) == 0, rec.stderr.read()
    finally:
        live.close()
        for p in caps + [rec]:
            if p.poll() is None:
                p.kill()
    assert len(got_live) == 50 and live.stats.lost == 0
    report = json.loads(rec.stdout.read().strip().splitlines()[-1])
    assert report["written"] == 50 and report["lost"] == 0

    # replay into a fresh subscriber, as fast as it takes them
    # the frames only: after them the replayer also sends an end-of-stream `event` per endpoint (docs/recording.md)
    sub = Subscriber([f"ipc://{tmp_path}/radar.sock", f"ipc://{tmp_path}/camera.sock"], topics=["radar", "camera"])
    rp = radvis_proc(["replay", str(out), "--max", *ipc_sets(tmp_path), "--set", "transport.slow_joiner_s=10"])
    try:
        replayed = collect(sub, 50, 40)
        assert rp.wait(30) == 0, rp.stderr.read()
    finally:
        sub.close()
        if rp.poll() is None:
            rp.kill()
    assert len(replayed) == 50 and sub.stats.lost == 0 and sub.stats.rejected == {}
    for kind in ("radar", "camera"):
        a = [m for m in got_live if m.kind == kind]
        b = [m for m in replayed if m.kind == kind]
        assert [m.seq for m in a] == [m.seq for m in b] == list(range(25))
        for x, y in zip(a, b):
            assert y.replay and not x.replay
            assert y.header == mark_replay(x.header)  # byte-identical header apart from the flag
            hx, bx = _flat(x)
            hy, by = _flat(y)
            hx["replay"] = True
            assert hx == hy and bx == by
    np.testing.assert_array_equal([m for m in replayed if m.kind == "radar"][3].buffers["ra"], fake_ra(3))


def _synthetic_session(path: Path, times_s: list[float], ra: bool = True) -> list[bytes]:
    """A recorded session with messages at known (irregular) log times (ra=False: headers only)."""
    seg = Segment(path, compression="zstd", chunk_bytes=1 << 20)
    out = []
    for k, t in enumerate(times_s):
        m = Message(kind="radar", source="radar0", buffers={"ra": fake_ra(k % 4)} if ra else {},
                    meta={"frame_number": k}, seq=k, epoch=7, t_mono_ns=1 + k, t_wall_ns=2 + k)
        d = frame(encode(m))
        seg.add("radar", d, log_time=int(1_700_000_000e9 + t * 1e9), publish_time=0, sequence=k)
        out.append(d)
    seg.close()
    return out


def _replay(tmp_path, session, args, n, timeout=40):
    """Replay into a subscriber; (messages received, the replayer's final report)."""
    sub = Subscriber(f"ipc://{tmp_path}/radar.sock")
    rp = radvis_proc(["replay", str(session), *args, *ipc_sets(tmp_path), "--set", "transport.slow_joiner_s=10"])
    try:
        msgs = collect(sub, n, timeout)
        assert rp.wait(30) == 0, rp.stderr.read()
    finally:
        sub.close()
        if rp.poll() is None:
            rp.kill()
    return msgs, json.loads(rp.stdout.read().strip().splitlines()[-1])


def test_replay_at_real_time_paces_every_message(tmp_path):
    """60 irregularly spaced messages at 1x: all arrive, in order, none dropped, and the replayer took at
    least the recording's span to send them (it never sends a message early; how close to schedule it
    stays is a speed figure: bench/record.py, "replay timing")."""
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.005, 0.06, 60)).tolist()  # irregular gaps, ~2 s in all
    _synthetic_session(tmp_path / "s.mcap", times)
    msgs, st = _replay(tmp_path, tmp_path / "s.mcap", [], 60)
    assert [m.meta["frame_number"] for m in msgs] == list(range(60))
    assert st["sent"] == 60 and st["dropped"] == 0
    assert st["schedule_s"] == pytest.approx(times[-1] - times[0], abs=1e-6)
    assert st["paced_s"] >= st["schedule_s"]


def test_replay_rate_and_window(tmp_path):
    times = [k * 0.05 for k in range(40)]  # 2 s at 20 Hz
    _synthetic_session(tmp_path / "s.mcap", times)
    # --rate 4 over the window [0.5 s, 1.5 s): frames 10..29, scheduled over 19 x 0.05 / 4 s
    msgs, st = _replay(tmp_path, tmp_path / "s.mcap", ["--rate", "4", "--start", "0.5", "--end", "1.5"], 20)
    assert [m.meta["frame_number"] for m in msgs] == list(range(10, 30))
    assert st["sent"] == 20 and st["schedule_s"] == pytest.approx(19 * 0.05 / 4, abs=1e-6)
    assert st["paced_s"] >= st["schedule_s"]


def test_replay_loop_advances_epoch(tmp_path):
    path = tmp_path / "s.mcap"
    _synthetic_session(path, [k * 0.01 for k in range(10)])
    cfg = configmod.load(None, [s for s in ipc_sets(tmp_path) if s != "--set"])
    sub = Subscriber(f"ipc://{tmp_path}/radar.sock")
    stop = threading.Event()
    t = threading.Thread(target=replay_session, args=(cfg, str(path)),
                         kwargs=dict(as_fast=True, loop=True, stop=stop), daemon=True)
    t.start()
    got = collect(sub, 25, 20)
    stop.set()
    t.join(10)
    sub.close()
    assert not t.is_alive()
    assert [m.seq for m in got] == list(range(10)) * 2 + list(range(5))
    assert [m.epoch for m in got[:10]] == [7] * 10 and got[10].epoch == 8 and got[20].epoch == 9
    assert not sub.stats.rejected and sub.stats.restarts == 2


def _cruw_tree(root: Path, seq: str, n: int) -> list[np.ndarray]:
    import cv2
    d = root / "sequences" / "train" / seq
    (d / "IMAGES_0").mkdir(parents=True)
    (d / "RADAR_RA_H").mkdir()
    ras = []
    for k in range(n):
        ra = fake_ra(100 + k)
        ras.append(ra)
        for chirp in (0, 64, 128, 192):
            np.save(d / "RADAR_RA_H" / f"{k:06d}_{chirp:04d}.npy", ra if chirp == 0 else ra * 0)
        cv2.imwrite(str(d / "IMAGES_0" / f"{k:010d}.jpg"), fake_image(k, 90, 120))
    (root / "annotations" / "train").mkdir(parents=True)
    (root / "annotations" / "train" / f"{seq}.txt").write_text(
        "1 5.1300 -0.6283 cyclist\n2 4.0000 0.1000 pedestrian\n2 6.0000 0.2000 car\n")
    return ras


def test_replay_cruw_sequence_as_live(tmp_path):
    seq = "2019_04_09_BMS1001"
    ras = _cruw_tree(tmp_path / "cruw", seq, 4)
    # the frames only: after them the replayer also sends an end-of-stream `event` per endpoint
    sub = Subscriber([f"ipc://{tmp_path}/radar.sock", f"ipc://{tmp_path}/camera.sock"], topics=["radar", "camera"])
    tsub = Subscriber(f"ipc://{tmp_path}/truth.sock", topics=["truth"])
    rp = radvis_proc(["replay", "--cruw", str(tmp_path / "cruw"), "--seq", seq, *ipc_sets(tmp_path),
                      "--set", "transport.slow_joiner_s=10"])
    try:
        got = collect(sub, 8, 30)
        truth = collect(tsub, 8, 30)
        assert rp.wait(30) == 0, rp.stderr.read()
    finally:
        sub.close()
        tsub.close()
        if rp.poll() is None:
            rp.kill()
    radar = [m for m in got if m.kind == "radar"]
    cam = [m for m in got if m.kind == "camera"]
    assert len(radar) == 4 and len(cam) == 4 and sub.stats.lost == 0
    for k, (r, c) in enumerate(zip(radar, cam)):
        np.testing.assert_array_equal(r.buffers["ra"], ras[k])
        assert r.meta["frame_number"] == c.meta["frame_number"] == k
        assert r.t_device_ns == c.t_device_ns == round(k * 1e9 / 30)
        jpg = (tmp_path / "cruw" / "sequences" / "train" / seq / "IMAGES_0" / f"{k:010d}.jpg").read_bytes()
        assert c.buffers["image"].tobytes() == jpg and c.meta["encoding"] == "jpeg"
        assert (c.meta["width"], c.meta["height"]) == (120, 90)
    # the annotations travel as the frames' ground truth on the truth topic, not in the frames' meta
    assert all("truth" not in m.meta for m in got)
    for stream in ("radar", "camera"):
        t = [m for m in truth if m.meta["stream"] == stream]
        assert [m.meta["frame_number"] for m in t] == [0, 1, 2, 3]
        assert [m.meta["label"] for m in t] == ["empty", "cyclist", "mixed", "empty"]
        assert {m.source for m in t} == {f"{stream}0"}
    objs = [m for m in truth if m.meta["stream"] == "radar"][2].meta["objects"]
    assert sorted(o["cls"] for o in objs) == ["car", "pedestrian"]
    by_fn = {m.meta["frame_number"]: m for m in truth if m.meta["stream"] == "radar"}
    assert all(by_fn[r.meta["frame_number"]].meta["t_capture_ns"] == r.t_mono_ns for r in radar)
    # paced at 30 fps: frames 0..3 are scheduled over 0.1 s, and stamped when they leave (never early)
    st = json.loads(rp.stdout.read().strip().splitlines()[-1])
    assert st["schedule_s"] == pytest.approx(0.1, abs=1e-6) and st["paced_s"] >= st["schedule_s"]
    assert [m.t_mono_ns for m in radar] == sorted(m.t_mono_ns for m in radar)


def test_fast_replay_closes_only_once_sync_has_read_its_end(tmp_path, monkeypatch):
    """libzmq drops what is still in a subscriber's socket buffer when the publisher's connection closes while
    that subscriber's receive queue is full, whatever the linger (zeromq/libzmq#4660): a `--max` replay that
    closed once its tail was queued lost a lagging sync's last ~230 frames and the end event (1 CI run in
    ~20). Sync promises to acknowledge the end of stream and does once it has read it; the replay closes only
    then. Here sync reads nothing until the replay waits for that acknowledgement, with its whole session
    queued: sync's receive queue (10) full and the rest, small messages, in the socket buffer."""
    from sync.daemon import SyncDaemon
    from radvis import transport
    n = 300
    _synthetic_session(tmp_path / "session", [k * 0.01 for k in range(n)], ra=False)
    cfg = configmod.load(None, [s for s in ipc_sets(tmp_path) if s != "--set"]
                         + ["transport.sndhwm=1000", "transport.rcvhwm=10"])
    waiting, stop, result = threading.Event(), threading.Event(), {}
    wait_for_acks = transport.Publisher.wait_for_acks

    def seen_waiting(self, *a, **k):
        waiting.set()
        return wait_for_acks(self, *a, **k)

    monkeypatch.setattr(transport.Publisher, "wait_for_acks", seen_waiting)
    daemon = SyncDaemon(cfg)
    replay = threading.Thread(target=lambda: result.update(st=replay_session(cfg, str(tmp_path / "session"),
                                                                             as_fast=True)), daemon=True)
    serve = threading.Thread(target=lambda: daemon.serve(stop=stop), daemon=True)
    try:
        replay.start()
        assert waiting.wait(60)  # sent all and its end: now waiting for sync, which has read nothing yet
        assert daemon.proc.counts["radar_in"] == 0
        serve.start()
        replay.join(60)
        assert not replay.is_alive()
        deadline = time.monotonic() + 60
        while daemon.proc.counts["ends"] < 1 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
    finally:
        stop.set()
        serve.join(10)
        daemon.close()
    assert result["st"].sent == n and daemon.proc.counts["radar_in"] == n and daemon.proc.counts["ends"] == 1
    assert daemon.stats()["sub"]["lost"] == 0


def test_fast_replay_tail_reaches_a_subscriber_slower_than_the_old_linger(tmp_path):
    """`--max` returns once its last message and end-of-stream event are queued. A subscriber that is busy
    then (a loaded synchroniser) must still get every message: the old 5 s close linger dropped the queued
    tail and the 2 s end-event timeout its end event, so the replayed pairs lost their last seconds."""
    _synthetic_session(tmp_path / "session", [k * 0.01 for k in range(200)])
    cfg = configmod.load(None, [s for s in ipc_sets(tmp_path) if s != "--set"] + ["transport.sndhwm=50"])
    sub = Subscriber(f"ipc://{tmp_path}/radar.sock", hwm=50)
    done = threading.Event()
    th = threading.Thread(target=lambda: (replay_session(cfg, str(tmp_path / "session"), as_fast=True), done.set()),
                          daemon=True)
    try:
        th.start()
        got = collect(sub, 130, 40)  # then the subscriber stops reading: 70 frames and the event still to come
        assert len(got) == 130
        assert done.wait(40)  # the replay has returned with its tail queued (sndhwm 50 + the receive queue)
        # the busy subscriber: it reads again only after the old linger (5 s) has run out
        threading.Event().wait(6.0)
        got += collect(sub, 71, 40)
    finally:
        sub.close()
    assert [m.kind for m in got] == ["radar"] * 200 + ["event"]
    assert [m.seq for m in got[:200]] == list(range(200)) and sub.stats.lost == 0
    assert got[-1].meta["event"] == "end_of_stream"

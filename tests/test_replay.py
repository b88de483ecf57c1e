"""capture -> record -> replay reproduces the live messages (headers except the replay flag, and bytes) in
order; replay timing at real time stays within the documented bound; rate, window, loop; CRUW streaming."""
from __future__ import annotations

import json
import signal
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from capture.record import Segment, frame
from capture.replay import mark_replay, replay_session
from radvis import config as configmod
from radvis.transport import Subscriber
from radvis.wire import Message, encode
from tests.test_capture import collect, fake_image, fake_ra, fake_sets, ipc_sets, radvis_proc

TIMING_MAX_MS = 50.0  # docs/recording.md "Replay timing": worst message on a loaded 2-core machine
TIMING_MEAN_MS = 10.0


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
        time.sleep(0.5)
        rec.send_signal(signal.SIGINT)
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


def _synthetic_session(path: Path, times_s: list[float]) -> list[bytes]:
    """A recorded session with messages at known (irregular) log times."""
    seg = Segment(path, compression="zstd", chunk_bytes=1 << 20)
    out = []
    for k, t in enumerate(times_s):
        m = Message(kind="radar", source="radar0", buffers={"ra": fake_ra(k % 4)}, meta={"frame_number": k},
                    seq=k, epoch=7, t_mono_ns=1 + k, t_wall_ns=2 + k)
        d = frame(encode(m))
        seg.add("radar", d, log_time=int(1_700_000_000e9 + t * 1e9), publish_time=0, sequence=k)
        out.append(d)
    seg.close()
    return out


def _replay_and_time(tmp_path, session, args, n, timeout=40):
    sub = Subscriber(f"ipc://{tmp_path}/radar.sock")
    rp = radvis_proc(["replay", str(session), *args, *ipc_sets(tmp_path), "--set", "transport.slow_joiner_s=10"])
    arrivals, msgs = [], []
    try:
        deadline = time.monotonic() + timeout
        while len(msgs) < n and time.monotonic() < deadline:
            m = sub.recv(100)
            if m is not None:
                arrivals.append(time.monotonic())
                msgs.append(m)
        assert rp.wait(30) == 0, rp.stderr.read()
    finally:
        sub.close()
        if rp.poll() is None:
            rp.kill()
    return np.array(arrivals), msgs, json.loads(rp.stdout.read().strip().splitlines()[-1])


def test_replay_timing_at_real_time_within_bound(tmp_path):
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.005, 0.06, 60)).tolist()  # irregular gaps, ~2 s in all
    _synthetic_session(tmp_path / "s.mcap", times)
    arr, msgs, st = _replay_and_time(tmp_path, tmp_path / "s.mcap", [], 60)
    assert [m.meta["frame_number"] for m in msgs] == list(range(60))
    err_ms = ((arr - arr[0]) - (np.array(times) - times[0])) * 1e3
    err_ms -= np.median(err_ms)  # a constant pipe latency is not a timing error
    assert np.abs(err_ms).max() <= TIMING_MAX_MS, err_ms
    assert statistics.fmean(np.abs(err_ms)) <= TIMING_MEAN_MS
    assert st["late_ms_max"] <= TIMING_MAX_MS and st["dropped"] == 0


def test_replay_rate_and_window(tmp_path):
    times = [k * 0.05 for k in range(40)]  # 2 s at 20 Hz
    _synthetic_session(tmp_path / "s.mcap", times)
    # --rate 4 over the window [0.5 s, 1.5 s): frames 10..29 in about 1.0 / 4 s
    arr, msgs, _ = _replay_and_time(tmp_path, tmp_path / "s.mcap", ["--rate", "4", "--start", "0.5", "--end", "1.5"], 20)
    assert [m.meta["frame_number"] for m in msgs] == list(range(10, 30))
    span = arr[-1] - arr[0]
    assert abs(span - 19 * 0.05 / 4) <= TIMING_MAX_MS / 1e3


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
    assert sub.stats.out_of_order == 0 and sub.stats.restarts == 2


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
    rp = radvis_proc(["replay", "--cruw", str(tmp_path / "cruw"), "--seq", seq, *ipc_sets(tmp_path),
                      "--set", "transport.slow_joiner_s=10"])
    try:
        got = collect(sub, 8, 30)
        assert rp.wait(30) == 0, rp.stderr.read()
    finally:
        sub.close()
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
    assert [r.meta["truth"]["label"] for r in radar] == ["empty", "cyclist", "mixed", "empty"]
    # paced at 30 fps: frames 0..3 span 0.1 s
    span = (radar[-1].t_mono_ns - radar[0].t_mono_ns) / 1e9
    assert abs(span - 0.1) <= TIMING_MAX_MS / 1e3

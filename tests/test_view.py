"""`radvis view`: a client speaking Foxglove's WebSocket protocol connects, subscribes, and decodes the camera
image, the heatmap, pairs (skew), truth and the learner's stats; the view drains capture's sockets whether or
not it keeps up, drops (and counts) the frames it has no time to picture, and a viewer that stops reading
does not stop the others. The rig test runs it as a `rig.stages` stage beside the whole emulated rig."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.foxglove import heatmap_rgb
from capture.view import View
from radvis import config
from radvis.transport import Publisher
from radvis.wire import Message
from tests.conftest import rig_sets
from tests.foxglove_ws import FoxgloveClient
from tests.test_foxglove import camera_msg, pair_msg, radar_msg, scene_image, truth_meta

REPO = Path(__file__).resolve().parent.parent
NAMES = ("radar", "camera", "pairs", "truth", "control", "view_stats")


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def view(tmp_path):
    sets = [f"endpoints.{n}='ipc://{tmp_path}/{n}.sock'" for n in NAMES]
    cfg = config.load(None, sets + ["view.port=0", "view.max_hz=50", "view.backlog=8"])
    v = View(cfg)
    v.rx.start()
    stop = threading.Event()
    yield v, cfg, stop
    stop.set()
    v.close()


def _serve(v: View, stop: threading.Event) -> threading.Thread:
    th = threading.Thread(target=lambda: [v.step(0.02) for _ in iter(stop.is_set, True)], daemon=True)
    th.start()
    return th


def test_client_subscribes_and_decodes_images_pairs_truth_and_learner_stats(view):
    v, cfg, stop = view
    pubs = {n: Publisher(getattr(cfg.endpoints, n)) for n in ("radar", "camera", "pairs", "truth")}
    stats = Publisher(cfg.endpoints.view_stats, bind=False)  # as a stage's stats publisher does
    for n, p in [*pubs.items(), ("stats", stats)]:
        assert p.wait_for_subscribers(1, 10), n
    client = FoxgloveClient(f"ws://127.0.0.1:{v.port}")
    topics = ["/camera/image", "/radar/heatmap", "/pairs", "/truth/scene", "/stats/learner"]
    client.subscribe(topics)
    _wait(lambda: len(v._watched_topics()) == len(topics), 10, "the view to see the subscriptions")
    _serve(v, stop)
    sent_cam, sent_ra, got = {}, [], {}
    k = 0
    while not all(t in got for t in topics):
        assert k < 5000, f"only {sorted(got)} after {k} frames"
        r, c = radar_msg(k), camera_msg(k)
        assert pubs["radar"].send(r) and pubs["camera"].send(c)
        assert pubs["truth"].send(Message(kind="truth", source="radar0", meta=truth_meta("radar", k)))
        assert pubs["pairs"].send(pair_msg(r, c, skew_ns=2_000_000))
        assert stats.send(Message(kind="stats", source="learner",
                                  meta={"stage": "learner", "step": k, "loss": 5.0 - k / 100, "linear_acc": 0.5}))
        sent_cam[c.t_wall_ns] = k
        sent_ra.append(r)
        k += 1
        for _ in range(4):
            m = client.recv(0.05)
            if m is not None:
                got.setdefault(m[0], m[1])
    img = got["/camera/image"]
    assert img.format == "jpeg"
    frame_k = sent_cam[img.timestamp.seconds * 10**9 + img.timestamp.nanos]  # which frame it is
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(rgb.astype(int) - scene_image(frame_k)).mean() < 4
    hm = got["/radar/heatmap"]
    r = next(m for m in sent_ra if m.t_wall_ns == hm.timestamp.seconds * 10**9 + hm.timestamp.nanos)
    assert hm.data == heatmap_rgb(r.buffers["ra"], cfg.foxglove.heatmap_db_min, cfg.foxglove.heatmap_db_max,
                                  cfg.foxglove.colormap).tobytes()
    assert got["/pairs"]["skew_ms"] == 2.0 and got["/pairs"]["radar"]["frame_number"] >= 0
    assert got["/truth/scene"].entities[0].cubes
    assert "loss" in got["/stats/learner"] and got["/stats/learner"]["linear_acc"] == 0.5
    for p in [*pubs.values(), stats]:
        assert p.stats.dropped_hwm == 0
        p.close()
    client.close()


def test_busy_view_drops_and_counts_frames_and_never_refuses_capture(view):
    """The picture-making loop is stalled (no step() at all) while capture sends a burst: the receive
    thread still takes every message, keeps only the newest frame and counts the rest as dropped; the
    publisher never finds the view's queue full."""
    v, cfg, stop = view
    cam = Publisher(cfg.endpoints.camera, hwm=cfg.transport.sndhwm)
    assert cam.wait_for_subscribers(1, 10)
    n = 300
    for k in range(n):
        assert cam.send(camera_msg(k % 7))
    _wait(lambda: v.rx.counts["received_camera"] == n, 30, "the view to receive the burst")
    assert v.rx.counts["dropped_camera"] == n - 1 and cam.stats.dropped_hwm == 0
    v.step(0)
    st = v.stats()["counts"]
    assert st["received_camera"] == st["dropped_camera"] + st.get("unwatched_camera", 0) == n
    cam.close()


def test_a_viewer_that_stops_reading_does_not_stop_the_others(view):
    v, cfg, stop = view
    cam = Publisher(cfg.endpoints.camera)
    assert cam.wait_for_subscribers(1, 10)
    stuck, live = FoxgloveClient(f"ws://127.0.0.1:{v.port}"), FoxgloveClient(f"ws://127.0.0.1:{v.port}")
    stuck.subscribe(["/camera/image"])  # ... and never reads again
    live.subscribe(["/camera/image"])
    _wait(lambda: len(v.listener.clients) == 2, 10, "both viewers")
    _serve(v, stop)
    got, k = 0, 0
    while got < 40:
        assert k < 20000, f"live viewer got {got} images"
        assert cam.send(camera_msg(k % 7))
        k += 1
        if live.recv(0.02) is not None:
            got += 1
    assert cam.stats.dropped_hwm == 0
    stuck.close(), live.close(), cam.close()


def test_shipped_layout_is_generated_and_names_served_topics(view, capsys):
    import re
    from capture.foxglove_layout import layout_json
    from radvis import cli
    text = (REPO / "docs" / "foxglove-layout.json").read_text()
    assert text == layout_json(), "docs/foxglove-layout.json is stale: radvis view --layout > docs/foxglove-layout.json"
    assert cli.main(["view", "--layout"]) == 0 and capsys.readouterr().out == text
    v, _, _ = view
    named = set(re.findall(r'"(/[a-z_/]+)', text))
    assert named and named <= set(v.channels), named - set(v.channels)  # every topic it shows, the view serves


# ---------------------------------------------------------------------------------------------
# in the rig
# ---------------------------------------------------------------------------------------------

def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _port_from_log(log: Path) -> int | None:
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        if "view: serving ws://" in line:
            return int(line.split("ws://", 1)[1].split()[0].rsplit(":", 1)[1])
    return None


@pytest.mark.slow
def test_view_in_the_emulated_rig_then_export_learn_offline_and_eval(tmp_path, capsys):
    """The whole emulated rig with `view` in rig.stages: a WebSocket client receives camera images at >= 5 Hz
    of camera time (counted against the camera's own frame counter, not the wall clock) and the learner's
    stats, while sync and the learner report 0 drops. Then the recorded session is exported, pretrained on
    without its labels, and evaluated (the done-means chain of #18)."""
    run_dir, session = tmp_path / "run", tmp_path / "session"
    sets = rig_sets(tmp_path)
    sets += ["--set", "rig.stages=['emulate-radar','emulate-camera','radar','camera','sync','record','learner','view']",
             "--set", f"rig.run_dir='{run_dir}'", "--set", f"record.out='{session}'", "--set", "view.port=0",
             "--set", "rig.stats_interval_s=1.0", "--set", "learner.radar_encoder='tiny'",
             "--set", "learner.vision_encoder='tiny'", "--set", "learner.online_min_fill=16",
             "--set", "learner.batch_size=16", "--set", "learner.queue_size=64"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rig = subprocess.Popen([sys.executable, "-m", "radvis", "rig", "--no-eval", "--duration", "0", *sets], cwd=REPO,
                           env=env, stdout=open(tmp_path / "rig.out", "wb"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    client = None
    try:
        port = _wait(lambda: _port_from_log(run_dir / "logs" / "view.log"), 120, "the view to serve")
        client = FoxgloveClient(f"ws://127.0.0.1:{port}")
        client.subscribe(["/camera/image", "/stats/learner", "/pairs"])
        _wait(lambda: (_status(run_dir).get("camera") or {}).get("rate_per_s"), 120, "camera frames")
        frames0 = None
        images, learner, skews = 0, None, 0
        deadline = time.monotonic() + 240
        while images < 60 or learner is None:
            assert time.monotonic() < deadline, f"{images} images, learner stats {learner}"
            m = client.recv(1.0)
            if m is None:
                continue
            topic, msg, _ = m
            if topic == "/camera/image":
                assert msg.format == "jpeg" and cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR) is not None
                if frames0 is None:  # start counting at the first image received
                    frames0 = _camera_frames(run_dir)
                else:
                    images += 1
            elif topic == "/stats/learner" and "loss" in msg:
                learner = msg
            elif topic == "/pairs":
                skews += 1
        frames1 = _camera_frames(run_dir)
    finally:
        if client is not None:
            client.close()
        rig.send_signal(signal.SIGINT)
        try:
            rig.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(rig.pid, signal.SIGKILL)
            raise
    # >= 5 Hz of camera time: at least one image per 6 frames the 30 fps camera captured meanwhile (frames1 was
    # read after the last image arrived, so it can only over-count captured frames: the check is conservative)
    assert frames1 > frames0 and images >= (frames1 - frames0) * 5 / 30, (images, frames0, frames1)
    final = _status(run_dir)
    assert final["view"]["state"] == "stopped" and final["view"]["restarts"] == 0
    assert final["sync"]["drops"] == 0 and final["learner"]["drops"] == 0, final
    assert skews > 0 and learner["step"] >= 0
    vs = json.loads([ln for ln in (run_dir / "logs" / "view.log").read_text().splitlines() if ln.startswith("{")][-1])
    c = vs["counts"]
    for kind in ("camera", "radar"):  # every frame the view received is accounted for (one may have been waiting)
        accounted = sum(c.get(f"{k}_{kind}", 0) for k in ("pictured", "skipped_rate", "unwatched", "dropped"))
        assert c[f"received_{kind}"] - accounted in (0, 1), c
    assert c["pictured_camera"] >= images

    # the recorded session opens in the Foxglove data model: camera, heatmap and truth decode with the schemas
    # stored in the file, truth annotations carry the stamp of a recorded heatmap / camera frame
    from tests.test_foxglove import read_foxglove, stamp_ns
    fx = read_foxglove(session)
    assert fx["_channels"]["/camera/image"][0] == "foxglove.CompressedImage"
    assert fx["_channels"]["/radar/heatmap"][0] == "foxglove.RawImage"
    heat_t = {stamp_ns(m.timestamp) for m, _ in fx["/radar/heatmap"]}
    cam_t = {stamp_ns(m.timestamp) for m, _ in fx["/camera/image"]}
    assert all(m.width == m.height == 128 and len(m.data) == 128 * 128 * 3 for m, _ in fx["/radar/heatmap"][:5])
    jpeg = fx["/camera/image"][0][0].data
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (96, 128)
    assert {stamp_ns(m.texts[0].timestamp) for m, _ in fx["/radar/heatmap/truth"]} <= heat_t
    assert {stamp_ns(m.texts[0].timestamp) for m, _ in fx["/camera/truth"]} <= cam_t
    scene_t = {stamp_ns(m.deletions[0].timestamp) for m, _ in fx["/truth/scene"]}
    assert scene_t and scene_t <= heat_t  # emulator truth, joined to recorded radar frames

    # export -> learn offline (no annotations) -> eval
    from radvis import cli
    ds = tmp_path / "ds"
    assert cli.main(["export", str(session), "--out", str(ds), "--seq-seconds", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["exported"] == summary["pairs_recorded"] > 0 and len(summary["sequences"]) >= 2
    nolab = tmp_path / "nolab"
    import shutil
    shutil.copytree(ds, nolab, ignore=shutil.ignore_patterns("annotations"))
    tiny = ["--set", "learner.radar_encoder='tiny'", "--set", "learner.vision_encoder='tiny'",
            "--set", "learner.batch_size=8", "--set", "learner.queue_size=32", "--set", "learner.split='random'"]
    run = tmp_path / "offline"
    assert cli.main(["learn", "offline", "--data", str(nolab), "--out", str(run), "--epochs", "1", "--quiet", *tiny]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--run", str(run), "--data", str(nolab), "--json"]) == 2
    assert "needs labels" in capsys.readouterr().err
    if summary["annotated_sequences"]:  # an emulated rig's truth: the export is labelled
        rc = cli.main(["eval", "--run", str(run), "--data", str(ds), "--json", "--seeds", "1", "--fractions", "100",
                       "--no-finetune", "--no-supervised"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert json.loads(out.out)["n_test"] > 0


def _camera_frames(run_dir: Path) -> int:
    """Frames the camera stage has captured so far (its last stats message, via the rig's status.json)."""
    log = (run_dir / "logs" / "camera.log").read_text().splitlines()
    stats = [json.loads(ln.split(" stats ", 1)[1]) for ln in log if " stats {" in ln]
    return stats[-1]["frames"] if stats else 0

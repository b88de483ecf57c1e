"""Foxglove channels of a recording: written beside the exact ones, readable with nothing but the `mcap`
reader and the schemas stored in the file (what the Foxglove app does), and each picture says what the
wire message said: the heatmap is the RA map's colormap at the documented scale, the camera JPEG is the
frame, points and truth sit where they should, a pair links the two stamps."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader

from capture.foxglove import (CAMERA, CAMERA_PAIR, CAMERA_TRUTH, HEATMAP, HEATMAP_TRUTH, JOIN_MAX, PAIRS, POINTS,
                              SCENE, Converter, decode, heatmap_pixel, heatmap_rgb)
from capture.record import ENCODING, Recorder, scan, segments
from drivers.ti import dsp
from radvis.transport import Publisher
from radvis.wire import Message

EXPECTED = {  # topic -> (schema name, schema encoding, message encoding)
    CAMERA: ("foxglove.CompressedImage", "protobuf", "protobuf"),
    HEATMAP: ("foxglove.RawImage", "protobuf", "protobuf"),
    POINTS: ("foxglove.PointCloud", "protobuf", "protobuf"),
    PAIRS: ("radvis.PairLink", "jsonschema", "json"),
    CAMERA_PAIR: ("foxglove.ImageAnnotations", "protobuf", "protobuf"),
    SCENE: ("foxglove.SceneUpdate", "protobuf", "protobuf"),
    HEATMAP_TRUTH: ("foxglove.ImageAnnotations", "protobuf", "protobuf"),
    CAMERA_TRUTH: ("foxglove.ImageAnnotations", "protobuf", "protobuf"),
}
INTRINSICS = {"fx": 76.0, "fy": 76.0, "cx": 64.0, "cy": 48.0}


# ---------------------------------------------------------------------------------------------
# helpers (also used by test_view.py and test_export.py)
# ---------------------------------------------------------------------------------------------

def read_foxglove(session: str | Path) -> dict[str, list]:
    """topic -> [(decoded message, log_time)] for every Foxglove channel of a session, decoded with the
    schema stored in the file; plus "_channels": {topic: (schema name, schema encoding, message encoding)}."""
    out: dict[str, list] = {}
    chans = {}
    for path in segments(session):
        schemas = {}
        with open(path, "rb") as f:
            reader = make_reader(f)
            summary = reader.get_summary()
            schemas = summary.schemas
            for sc, ch, m in reader.iter_messages(log_time_order=False):
                if ch.message_encoding == ENCODING:
                    continue
                assert sc is not None and ch.schema_id in schemas, f"{ch.topic}: no schema"
                chans[ch.topic] = (sc.name, sc.encoding, ch.message_encoding)
                out.setdefault(ch.topic, []).append(
                    (decode(sc.name, sc.encoding, sc.data, ch.message_encoding, m.data), m.log_time))
    out["_channels"] = chans
    return out


def stamp_ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def scene_image(k: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth picture (JPEG keeps it within a few grey levels), different per k."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 17 + k), 128 + 100 * np.cos(y / 13 + 0.5 * k),
                    128 + 90 * np.sin((x + y) / 23 - k)], -1).astype(np.uint8)
    cv2.rectangle(img, (10 + k, 20), (40 + k, 60), (255, 255, 255), -1)
    return img


def ra_with_target(k: int, r_idx: int, a_idx: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    ra = (0.05 * rng.standard_normal((128, 128, 2))).astype(np.float32)
    ra[r_idx, a_idx] = (300.0, 40.0)
    return ra


TRUTH_OBJ = {"cls": "car", "id": 7, "range_m": float(dsp.range_grid()[60]), "azimuth_rad": float(dsp.azimuth_grid()[80])}


def truth_meta(stream: str, fn: int, objs=(TRUTH_OBJ,)) -> dict:
    """The COORD.md truth contract."""
    return {"stream": stream, "frame_number": fn, "t_capture_ns": time.monotonic_ns(), "label": "car",
            "scene_id": 3, "objects": [dict(o) for o in objs]}


def radar_msg(k: int, points: bool = True) -> Message:
    bufs = {"ra": ra_with_target(k, 60, 80)}
    if points:
        bufs["points"] = np.random.default_rng(k).standard_normal((5 + k, 4)).astype(np.float32)
    return Message(kind="radar", source="radar0", buffers=bufs,
                   meta={"frame_number": k, "frame_period_ms": 100.0, "mode": "uart" if points else "dca1000"})


def camera_msg(k: int) -> Message:
    return Message(kind="camera", source="camera0", buffers={"image": scene_image(k)},
                   meta={"frame_number": k, "width": 128, "height": 96, "encoding": "raw", "intrinsics": INTRINSICS})


def pair_msg(r: Message, c: Message, skew_ns: int = 1_500_000) -> Message:
    """What sync publishes (sync/daemon.py pair_message), for two sent frames."""
    def hdr(m):
        h = m.header_dict()
        del h["buffers"]
        return h
    bufs = {f"radar.{k}": v for k, v in r.buffers.items()} | {f"camera.{k}": v for k, v in c.buffers.items()}
    return Message(kind="pair", source="sync0", buffers=bufs,
                   meta={"radar": hdr(r), "camera": hdr(c), "skew_ns": skew_ns, "t_pair_ns": r.t_mono_ns,
                         "t_radar_ns": r.t_mono_ns, "t_camera_ns": c.t_mono_ns})


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------

def test_heatmap_orientation_and_scale():
    """The brightest pixel of the picture is where heatmap_pixel puts that (range, azimuth): far range at
    the top, negative azimuth on the left; the dB scale maps linearly onto the colormap."""
    for r_idx, a_idx in [(5, 10), (100, 120), (64, 64)]:
        ra = np.zeros((128, 128, 2), np.float32)
        ra[r_idx, a_idx, 0] = 1000.0  # 60 dB: top of the scale
        img = heatmap_rgb(ra, -10, 30, "gray")
        y, x = np.unravel_index(img[..., 0].argmax(), img.shape[:2])
        px, py = heatmap_pixel(float(dsp.range_grid()[r_idx]), float(dsp.azimuth_grid()[a_idx]))
        assert (int(px), int(py)) == (x, y) == (a_idx, 127 - r_idx)
    ra = np.zeros((1, 3, 2), np.float32)
    ra[0, :, 0] = [10 ** (-10 / 20), 10 ** (10 / 20), 10 ** (30 / 20)]  # -10, 10, 30 dB
    assert heatmap_rgb(ra, -10, 30, "gray")[0, :, 0].tolist() == [0, 127, 255]


def test_recorded_session_decodes_with_the_foxglove_schemas(tmp_path):
    eps = {n: f"ipc://{tmp_path}/{n}.sock" for n in ("radar", "camera", "pairs", "truth")}
    rec = Recorder(eps, tmp_path / "session", chunk_bytes=1 << 16, foxglove=Converter(-10, 30, "turbo", 90))
    pubs = {n: Publisher(ep) for n, ep in eps.items()}
    for n, p in pubs.items():
        assert p.wait_for_subscribers(1, 10), n
    sent = {"radar": [], "camera": []}
    # truth for radar frame 0 arrives before its frame, for radar 1 and camera 2 after (either order works)
    order = [("truth", Message(kind="truth", source="radar0", meta=truth_meta("radar", 0)))]
    for k in range(3):
        r, c = radar_msg(k), camera_msg(k)
        order += [("radar", r), ("camera", c)]
        sent["radar"].append(r), sent["camera"].append(c)
    order += [("truth", Message(kind="truth", source="radar0", meta=truth_meta("radar", 1))),
              ("truth", Message(kind="truth", source="camera0", meta=truth_meta("camera", 2)))]
    n_sent = 0
    for ep, m in order:
        assert pubs[ep].send(m)
        n_sent += 1
        if ep == "camera" and m.meta["frame_number"] == 1:  # the pair is made of sent (stamped) frames
            assert pubs["pairs"].send(pair_msg(sent["radar"][1], m))
            n_sent += 1
    deadline = time.monotonic() + 30
    while rec.written < n_sent and time.monotonic() < deadline:
        rec.poll_once(50)
    st = rec.close()
    for p in pubs.values():
        p.close()
    assert st["written"] == n_sent and st["lost"] == 0 and st["foxglove"]["errors"] == 0, st

    fx = read_foxglove(tmp_path / "session")
    assert fx["_channels"] == EXPECTED  # schema names and encodings, nothing else
    # the exact channels are still there, schemaless, one message per wire message
    [path] = segments(tmp_path / "session")
    exact = [(ch.topic, ch.schema_id) for ch, _ in scan(path)]
    assert len(exact) == n_sent and all(sid == 0 for _, sid in exact)

    # camera: a JPEG of the frame, stamped with the frame's host arrival
    (img, _), *_ = fx[CAMERA]
    assert img.format == "jpeg" and stamp_ns(img.timestamp) == sent["camera"][0].t_wall_ns
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (96, 128, 3) and np.abs(rgb.astype(int) - scene_image(0)).mean() < 4
    assert len(fx[CAMERA]) == 3

    # heatmap: exactly the documented colormap of that RA map
    (hm, _), *_ = fx[HEATMAP]
    assert (hm.width, hm.height, hm.encoding, hm.step) == (128, 128, "rgb8", 384)
    assert hm.data == heatmap_rgb(sent["radar"][0].buffers["ra"], -10, 30, "turbo").tobytes()
    assert stamp_ns(hm.timestamp) == sent["radar"][0].t_wall_ns

    # points: the UART point cloud, bytes unchanged, fields x y z doppler
    (pc, _), *_ = fx[POINTS]
    assert [(f.name, f.offset) for f in pc.fields] == [("x", 0), ("y", 4), ("z", 8), ("doppler", 12)]
    assert pc.point_stride == 16 and pc.frame_id == "radar"
    assert pc.data == sent["radar"][0].buffers["points"].tobytes()

    # pair: the link between the two stamps, and its annotation on that camera frame
    [(link, _)] = fx[PAIRS]
    r1, c1 = sent["radar"][1], sent["camera"][1]
    assert (link["radar"]["seq"], link["camera"]["seq"]) == (r1.seq, c1.seq)
    assert (link["radar"]["t_wall_ns"], link["camera"]["t_wall_ns"]) == (r1.t_wall_ns, c1.t_wall_ns)
    assert link["radar"]["frame_number"] == 1 and link["skew_ms"] == 1.5
    [(ann, _)] = fx[CAMERA_PAIR]
    assert stamp_ns(ann.texts[0].timestamp) == c1.t_wall_ns and "radar #1" in ann.texts[0].text

    # truth, joined to radar frames 0 (truth first) and 1 (truth after), camera frame 2
    scenes = [m for m, _ in fx[SCENE]]
    assert [stamp_ns(s.entities[0].timestamp) for s in scenes] == [sent["radar"][0].t_wall_ns, sent["radar"][1].t_wall_ns]
    cube = scenes[0].entities[0].cubes[0].pose.position
    r, a = TRUTH_OBJ["range_m"], TRUTH_OBJ["azimuth_rad"]
    assert (cube.x, cube.y) == pytest.approx((r * math.sin(a), r * math.cos(a)))
    circ = fx[HEATMAP_TRUTH][0][0].circles[0]
    assert (round(circ.position.x - 0.5), round(circ.position.y - 0.5)) == (80, 127 - 60)  # the target's pixel
    assert hm.data[3 * (128 * 67 + 80):3 * (128 * 67 + 80) + 3] == bytes(heatmap_rgb(ra_with_target(0, 60, 80), -10, 30,
                                                                                        "turbo")[67, 80])
    [(cam_truth, _)] = fx[CAMERA_TRUTH]
    line = cam_truth.points[0].points
    assert line[0].x == pytest.approx(INTRINSICS["cx"] + INTRINSICS["fx"] * math.tan(a))
    assert stamp_ns(cam_truth.points[0].timestamp) == sent["camera"][2].t_wall_ns

    # the same channels make a picture without radvis's own decoder (capture/snapshot.py)
    from capture.snapshot import snapshot
    res = snapshot(tmp_path / "session", tmp_path / "snap.png")
    assert (tmp_path / "snap.png").read_bytes()[:4] == b"\x89PNG"
    assert res["objects"] == 1 and res["pairs"] == 1 and res["points"] == len(sent["radar"][0].buffers["points"])


def test_converter_never_raises_and_truth_join_is_bounded():
    c = Converter()
    bad = [Message(kind="radar", source="r", buffers={"ra": np.zeros((4, 4), np.float32)}, meta={"frame_number": 1}),
           Message(kind="camera", source="c", buffers={"image": np.zeros((0,), np.uint8)}, meta={"encoding": "jpeg"}),
           Message(kind="truth", source="r", meta={"frame_number": "x"}),
           Message(kind="truth", source="r", meta={"frame_number": 2, "objects": [{"cls": "car"}, 5]}),
           Message(kind="pair", source="s", meta={"radar": None, "camera": "?"}),
           Message(kind="event", source="s", meta={})]
    for m in bad:
        c.convert(m)  # never raises
    assert c.counts["errors"] >= 1
    # the bad-object truth joins its frame and draws no object
    out = c.convert(Message(kind="radar", source="r", buffers={"ra": ra_with_target(0, 1, 1)}, meta={"frame_number": 2}))
    assert {o.topic for o in out} == {HEATMAP, SCENE, HEATMAP_TRUTH}
    # a real device: frames never get truth, and the waiting map stays bounded
    for k in range(3 * JOIN_MAX):
        c.convert(Message(kind="truth", source="emu", meta=truth_meta("radar", k)))
    assert len(c.truths) == JOIN_MAX and c.counts["truth_unmatched"] == 2 * JOIN_MAX

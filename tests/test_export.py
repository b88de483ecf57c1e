"""`radvis export`: a recorded session's pairs as a CRUW dataset (one frame per recorded pair, radar arrays
bit for bit, annotations only from complete ground truth), then `learn offline` on it without labels, with
several --data roots, and `radvis eval` refusing unlabelled data clearly."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.export import export_session
from capture.record import Segment, frame
from learner.data import CRUWFrames
from radvis import cli
from radvis.wire import Message, encode
from tests.test_foxglove import TRUTH_OBJ, camera_msg, pair_msg, ra_with_target, truth_meta
from tests.test_learner_data import make_tiny_cruw
from tests.test_learner_train import TINY

PERIOD_MS = 100.0


class FakeSession:
    """Writes a session the way the recorder does (exact wire messages, framed, on endpoint channels)."""

    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.seg = Segment(path / "radvis-20260101-000000-0000.mcap", chunk_bytes=1 << 18)
        self.t = 1_000_000_000
        self.seqs: dict = {}
        self.pairs: list[Message] = []

    def send(self, topic: str, m: Message, epoch: int = 7) -> Message:
        key = (m.source, m.kind, epoch)
        m.seq, m.epoch = self.seqs.get(key, 0), epoch
        self.seqs[key] = m.seq + 1
        self.t += 10_000_000
        m.t_mono_ns, m.t_wall_ns = self.t, 1_767_225_600_000_000_000 + self.t
        self.seg.add(topic, frame(encode(m)), log_time=m.t_wall_ns, publish_time=m.t_wall_ns, sequence=m.seq)
        return m

    def frame_pair(self, fn: int, epoch: int = 7, truth: str | None = "topic", jpeg: bool = False) -> Message:
        r = Message(kind="radar", source="radar0", buffers={"ra": ra_with_target(fn, 20 + fn % 50, 30 + fn % 60)},
                    meta={"frame_number": fn, "frame_period_ms": PERIOD_MS, "mode": "dca1000"})
        if truth == "meta":
            r.meta["truth"] = truth_meta("radar", fn)
        c = camera_msg(fn)
        if jpeg:
            ok, enc = cv2.imencode(".jpg", c.buffers["image"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
            c.buffers["image"], c.meta["encoding"] = enc.reshape(-1), "jpeg"
        r, c = self.send("radar", r, epoch), self.send("camera", c, epoch)
        if truth == "topic":  # the truth topic, after its frame (the recorder may see either order)
            self.send("truth", Message(kind="truth", source="radar0", meta=truth_meta("radar", fn)), epoch)
        p = self.send("pairs", pair_msg(r, c), 5)
        self.pairs.append(p)
        return p

    def close(self):
        self.seg.close()


def _load_seqs(root: Path) -> list[Path]:
    return sorted((root / "sequences" / "train").iterdir())


def test_export_one_frame_per_pair_arrays_bit_for_bit_and_truth_annotations(tmp_path):
    s = FakeSession(tmp_path / "session")
    for fn in range(10, 40):
        s.frame_pair(fn, jpeg=fn % 2 == 0)
    s.send("pairs", Message(kind="event", source="sync0", meta={"event": "unpaired"}), 5)  # not a pair
    for fn in range(3, 9):  # the radar restarted: new epoch, frame numbers from the start again
        s.frame_pair(fn, epoch=8, truth="meta")
    s.close()
    out = tmp_path / "ds"
    summary = export_session(tmp_path / "session", out, seq_seconds=2.0, name="RIG")
    assert summary["pairs_recorded"] == summary["exported"] == len(s.pairs) == 36
    # 30 frames at 10 Hz cut every 2 s -> 20 + 10, then the restart starts a new sequence
    seqs = _load_seqs(out)
    assert [p.name for p in seqs] == ["2026_01_01_RIG0000", "2026_01_01_RIG0001", "2026_01_01_RIG0002"]
    assert [x["frames"] for x in summary["sequences"]] == [20, 10, 6]
    got = 0
    for p in s.pairs:  # every pair: its radar array bit for bit, its camera frame
        fn = p.meta["radar"]["meta"]["frame_number"]
        sd, fid = (seqs[0], fn - 10) if p.meta["radar"]["epoch"] == 7 and fn < 30 else \
                  (seqs[1], fn - 30) if p.meta["radar"]["epoch"] == 7 else (seqs[2], fn - 3)
        a = np.load(sd / "RADAR_RA_H" / f"{fid:06d}_0000.npy", allow_pickle=False)
        ra = p.buffers["radar.ra"]
        assert a.dtype == ra.dtype == np.float32 and a.shape == ra.shape and a.tobytes() == ra.tobytes()
        jpg = (sd / "IMAGES_0" / f"{fid:010d}.jpg").read_bytes()
        if p.meta["camera"]["meta"]["encoding"] == "jpeg":
            assert jpg == p.buffers["camera.image"].tobytes()  # JPEG frames exactly as recorded
        else:
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            mse = ((img.astype(float) - p.buffers["camera.image"]) ** 2).mean()
            assert 10 * np.log10(255 ** 2 / mse) > 30  # raw frames: JPEG at quality 95 (PSNR > 30 dB)
        got += 1
    assert got == 36
    # annotations from the truth topic (epoch 7) and from frame meta (epoch 8), one line per object
    for sd in seqs:
        lines = (out / "annotations" / "train" / f"{sd.name}.txt").read_text().splitlines()
        assert lines and all(ln.split()[1:] == [f"{TRUTH_OBJ['range_m']:.4f}", f"{TRUTH_OBJ['azimuth_rad']:.4f}", "car"]
                             for ln in lines)
        assert len(lines) == len(list((sd / "IMAGES_0").iterdir()))
    frames = CRUWFrames(out, clutter_removal=False)  # the learner reads it as CRUW, at the radar's frame rate
    assert len(frames) == 36 and (frames.label == 3).all()
    assert frames.t_ns[1] - frames.t_ns[0] == int(PERIOD_MS * 1e6)
    np.testing.assert_array_equal(frames.radar(0), s.pairs[0].buffers["radar.ra"].transpose(2, 0, 1))

    # window and stride; a second export into the same root appends sequences
    part = export_session(tmp_path / "session", out, start_s=0.4, end_s=1.0, stride=3, seq_seconds=60, name="RIG")
    in_window = part["pairs_in_window"]
    assert 0 < in_window < 36 and part["exported"] == (in_window + 2) // 3
    assert [x["name"] for x in part["sequences"]] == ["2026_01_01_RIG0003"]
    fids = sorted(int(p.stem) for p in (out / "sequences" / "train" / "2026_01_01_RIG0003" / "IMAGES_0").iterdir())
    assert fids == [3 * k for k in range(part["exported"])]  # stride keeps the device-time spacing
    assert len(json.loads((out / "export_summary.json").read_text())["exports"]) == 2


def test_partial_truth_leaves_a_sequence_unlabelled_and_no_truth_none(tmp_path):
    s = FakeSession(tmp_path / "session")
    for fn in range(12):
        s.frame_pair(fn, truth="topic" if fn != 5 else None)  # one frame lost its truth
    s.close()
    sm = export_session(tmp_path / "session", tmp_path / "ds", seq_seconds=60)
    assert sm["exported"] == 12 and sm["frames_without_truth"] == 1 and sm["annotated_sequences"] == 0
    assert not (tmp_path / "ds" / "annotations").exists()  # frame 5 would otherwise read as "empty"


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    d = tmp_path_factory.mktemp("fox18-export")
    s = FakeSession(d / "session")
    for fn in range(48):
        s.frame_pair(fn, truth=None)
    s.close()
    sm = export_session(d / "session", d / "ds", seq_seconds=1.2)
    assert sm["frames_with_truth"] == 0 and len(sm["sequences"]) == 4
    return d / "ds"


def test_learn_offline_on_unlabelled_exports_and_cruw_together_then_eval_needs_labels(unlabelled, tmp_path, capsys):
    import torch
    torch.set_num_threads(1)
    cruw = make_tiny_cruw(tmp_path / "cruw", n_frames=16)
    run = tmp_path / "run"
    rc = cli.main(["learn", "offline", "--data", str(unlabelled), "--data", str(cruw), "--out", str(run),
                   "--epochs", "1", "--quiet", "--cache-dir", str(tmp_path / "cache"), *TINY])
    assert rc == 0
    split = json.loads((run / "split.json").read_text())
    assert split["data"] == [str(unlabelled.resolve()), str(cruw.resolve())] and split["n_frames"] == 48 + 8 * 16
    index = json.loads(next((tmp_path / "cache").glob("*/index.json")).read_text())["frames"]
    assert any(k.startswith(str(unlabelled.resolve()) + "::") for k in index)  # keys name their root
    capsys.readouterr()
    # unlabelled data: eval says so, and why
    rc = cli.main(["eval", "--run", str(run), "--data", str(unlabelled), "--json", "--seeds", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "no labels" in err and "needs labels" in err
    # a labelled set: evaluated (the unlabelled export alone pretrained a run too)
    run2 = tmp_path / "run2"
    assert cli.main(["learn", "offline", "--data", str(unlabelled), "--out", str(run2), "--epochs", "1", "--quiet",
                     "--cache-dir", str(tmp_path / "cache2"), *TINY]) == 0
    capsys.readouterr()
    rc = cli.main(["eval", "--run", str(run2), "--data", str(cruw), "--json", "--seeds", "1", "--fractions", "100",
                   "--no-finetune", "--no-supervised"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["n_test"] > 0 and 0 <= res["table"][0]["ssl"][0] <= 1 and "not the pretraining data" in out.err

"""radvis/cruw.py, the one home of the CRUW layout, annotation reader, 4-class label rule and vocabulary:
on the real ROD2021 annotation files in ../shared/fixtures/cruw, strict and lenient reads of damaged
copies of them, the layout, and its users (replay's lenient read, synth's writer)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from radvis import cruw
from tests.conftest import REPO

GT = "cruw/T-RODNet/evaluate/gt"
# the fixture README's table: objects (lines), first and last frame id, distinct frames
REAL = {"2019_04_09_BMS1001": (897, 0, 896, 897), "2019_04_30_MLMS001": (2415, 0, 899, 900),
        "2019_05_23_PM1S013": (978, 0, 897, 897), "2019_09_29_ONRD005": (918, 112, 1696, 642)}


@pytest.fixture
def real(shared_fixtures) -> dict[str, Path]:
    d = shared_fixtures / GT
    if not d.is_dir():
        pytest.skip(f"{d} absent: the real ROD2021 annotation fixtures are not in this checkout's ../shared")
    return {seq: d / f"{seq}.txt" for seq in REAL}


def test_real_annotation_files_read_strictly_as_documented(real):
    for seq, (objects, first, last, distinct) in REAL.items():
        ann = cruw.read_annotations(real[seq])
        assert (len(ann), min(ann.objects), max(ann.objects), len(ann.objects)) == (objects, first, last, distinct)
        assert not ann.skipped and not ann.damaged
        assert {o.cls for objs in ann.objects.values() for o in objs} <= set(cruw.OBJECT_CLASSES)
    cyclist = cruw.read_annotations(real["2019_04_09_BMS1001"]).frame(0)
    assert cyclist == [cruw.Obj(5.13, -0.6283, "cyclist")]


def test_real_files_round_trip_byte_for_byte_through_format_line(real):
    """synth writes annotations with format_line; on the real files it reproduces every byte."""
    for path in real.values():
        ann = cruw.read_annotations(path)
        text = "".join(cruw.format_line(f, o) + "\n" for f in sorted(ann.objects) for o in ann.objects[f])
        assert text == path.read_text()


def test_real_files_label_counts(real):
    """The 4-class rule on the real files gives the counts in cruw.md §3.2 (frames 0..max id; frames
    without a line are empty)."""
    expect = {"2019_04_09_BMS1001": {"cyclist": 897}, "2019_04_30_MLMS001": {"pedestrian": 52, "mixed": 848},
              "2019_05_23_PM1S013": {"pedestrian": 816, "empty": 1, "mixed": 81},
              "2019_09_29_ONRD005": {"car": 641, "empty": 1055, "mixed": 1}}
    for seq, counts in expect.items():
        ann = cruw.read_annotations(real[seq])
        labels = [ann.label(f) for f in range(max(ann.objects) + 1)]
        assert {k: labels.count(k) for k in set(labels)} == counts
        ids = ann.label_ids(range(max(ann.objects) + 1))
        assert (ids == cruw.NO_LABEL).sum() == counts.get("mixed", 0)
        assert all(ids[i] == cruw.LABELS.index(lab) for i, lab in enumerate(labels) if lab != "mixed")


def _damage(src: Path, dest: Path) -> dict[int, str]:
    """A copy of a real file with four kinds of damage; returns {line number: reason}."""
    lines = src.read_text().splitlines()
    bad = {5: "fields", 40: "number", 41: "class", 300: "encoding"}
    lines[4] = lines[4].rsplit(" ", 1)[0]                  # class missing
    lines[39] = lines[39].replace(".", ",", 1)             # not a number
    lines[40] = lines[40].rsplit(" ", 1)[0] + " truck"     # not a CRUW class
    raw = [ln.encode() for ln in lines]
    raw[299] = raw[299][:-3] + b"\xff\xfe"                 # bytes that are not text
    dest.write_bytes(b"\n".join(raw) + b"\n")
    return bad


def test_damaged_file_strict_names_file_and_line(real, tmp_path):
    p = tmp_path / "2019_05_23_PM1S013.txt"
    _damage(real["2019_05_23_PM1S013"], p)
    with pytest.raises(cruw.AnnotationError, match=r"2019_05_23_PM1S013.txt:5: expected 4 fields"):
        cruw.read_annotations(p)
    for n, text, msg in [(40, "4 5.0 x car", "range_m and azimuth_rad numbers"), (2, "-1 5.0 0.1 car", ">= 0"),
                         (3, "7 nan 0.1 car", "finite"), (1, "7 5.0 0.1 truck", "got 'truck'")]:
        q = tmp_path / f"one{n}.txt"
        q.write_text("0 5.0 0.1 car\n" * (n - 1) + text + "\n")
        with pytest.raises(cruw.AnnotationError, match=rf"one{n}.txt:{n}: .*{msg}"):
            cruw.read_annotations(q)


def test_damaged_file_lenient_counts_skips_and_unlabels_only_damaged_frames(real, tmp_path):
    src = real["2019_05_23_PM1S013"]
    p = tmp_path / src.name
    bad = _damage(src, p)
    good = cruw.read_annotations(src)
    ann = cruw.read_annotations(p, strict=False)
    assert dict(ann.skipped) == {r: 1 for r in bad.values()}
    src_lines = src.read_text().splitlines()
    damaged = {int(src_lines[n - 1].split()[0]) for n in bad}
    assert ann.damaged == damaged and len(ann) == len(good) - len(bad)
    frames = range(max(good.objects) + 1)
    for f in frames:
        assert ann.label(f) == (None if f in damaged else good.label(f))
    assert (ann.label_ids(sorted(damaged)) == cruw.NO_LABEL).all()


def test_label_rule_and_vocabulary():
    assert cruw.LABELS == ("empty", "pedestrian", "cyclist", "car")
    assert cruw.SCENE_KINDS == cruw.LABELS + ("mixed",) and cruw.LABELS[1:] == cruw.OBJECT_CLASSES
    assert cruw.frame_label([]) == "empty"
    assert cruw.frame_label(["car", "car"]) == "car"
    assert cruw.frame_label(iter(["car", "cyclist", "car"])) == "mixed"
    assert [cruw.label_index(x) for x in (*cruw.LABELS, "mixed", None, "truck")] == [0, 1, 2, 3, -1, -1, -1]


def test_layout_paths_and_frame_ids(tmp_path):
    seq = cruw.sequence_dir(tmp_path, "train", "2019_04_09_BMS1001")
    assert seq == tmp_path / "sequences" / "train" / "2019_04_09_BMS1001"
    assert cruw.image_path(seq, 7).name == "0000000007.jpg" and cruw.image_path(seq, 7).parent.name == "IMAGES_0"
    assert cruw.radar_path(seq, 7, 128).name == "000007_0128.npy"
    assert cruw.annotation_path(tmp_path, "train", "S") == tmp_path / "annotations" / "train" / "S.txt"
    assert cruw.frame_ids(seq) == []
    cruw.radar_path(seq, 0).parent.mkdir(parents=True)
    for f in (3, 1):
        for c in cruw.CHIRP_IDS:
            cruw.radar_path(seq, f, c).touch()
    (seq / "RADAR_RA_H" / "notes.txt").touch()
    assert cruw.frame_ids(seq) == [1, 3]                # test split: from radar names, each frame once
    (seq / "IMAGES_0").mkdir()
    assert cruw.frame_ids(seq) == [1, 3]                # an empty IMAGES_0 does not hide the radar frames
    cruw.image_path(seq, 2).touch()
    assert cruw.frame_ids(seq) == [2]                   # train split: the camera frames define the sequence
    assert cruw.read_fps(tmp_path) == 30.0
    (tmp_path / "sensor_config_rod2021.json").write_text('{"radar_cfg": {"frame_rate": 10}}')
    assert cruw.read_fps(tmp_path) == 10.0


def test_replay_reads_leniently_and_damaged_frames_carry_no_truth(tmp_path):
    from capture.replay import cruw_annotations, cruw_frames
    seq = cruw.sequence_dir(tmp_path, "train", "S1")
    cruw.radar_path(seq, 0).parent.mkdir(parents=True)
    for f in range(4):
        np.save(cruw.radar_path(seq, f), np.full(cruw.RA_SHAPE, f, np.float32))
    p = cruw.annotation_path(tmp_path, "train", "S1")
    p.parent.mkdir(parents=True)
    p.write_text("1 5.0000 0.1000 car\n2 4.0 0.2 car\n2 oops 0.2 cyclist\nrubbish\n3 6.0 -0.1 pedestrian\n")
    ann = cruw_annotations(tmp_path, "S1")
    assert dict(ann.skipped) == {"number": 1, "fields": 1} and ann.damaged == {2}
    got = {k: truth for k, _, _, truth in cruw_frames(tmp_path, "S1", ann)}
    assert got[2] is None                                # a frame that lost a line: no truth, not a guess
    assert [got[k]["label"] for k in (0, 1, 3)] == ["empty", "car", "pedestrian"]
    assert got[1]["objects"] == [{"cls": "car", "range_m": 5.0, "azimuth_rad": 0.1}]


def test_no_module_spells_out_the_vocabulary_again():
    """One home: outside radvis/cruw.py no tuple or list literal lists the classes (a dict of per-class
    parameters is fine: that is about the classes, not the vocabulary)."""
    vocab = set(cruw.SCENE_KINDS)
    hits = []
    for path in REPO.glob("*/**/*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in (".venv", "tests") or rel == Path("radvis/cruw.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(words & vocab) >= 3:
                    hits.append(f"{rel}:{node.lineno}")
    assert not hits, f"class vocabulary spelled out again (import it from radvis.cruw): {hits}"

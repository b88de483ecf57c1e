"""CRUW loader: real ROD2021 annotation files, the on-disk layout, labels, splits, balancing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learner.data import (UNLABELLED, CRUWFrames, DataError, balanced, class_counts, discover, label_subset,
                          split_frames)
from radvis import cruw

GT = "cruw/T-RODNet/evaluate/gt"
CLASS_OF = {"pedestrian": 0, "cyclist": 1, "car": 2}
COLOURS = {"pedestrian": (220, 40, 40), "cyclist": (40, 200, 40), "car": (40, 60, 230)}
WIDTH = {"pedestrian": 2.0, "cyclist": 4.0, "car": 8.0}


def make_tiny_cruw(root: Path, seqs=(("PMS", "pedestrian"), ("BMS", "cyclist"), ("CMS", "car"), ("EMS", None),
                                     ("PMS2", "pedestrian"), ("BMS2", "cyclist"), ("CMS2", "car"), ("EMS2", None)),
                   n_frames: int = 24, seed: int = 0, image_hw=(48, 80), chirps=(0,)) -> Path:
    """A small CRUW/ROD2021-layout tree: one class per sequence (None = empty scene), objects moving
    smoothly, a radar blob per object at its (range, azimuth) bin whose width depends on the class, and a
    camera image with a class-coloured box at the matching position. Every 5th frame of an object
    sequence has no object (empty) and the last frame adds a second class (mixed)."""
    rng = np.random.default_rng(seed)
    import cv2
    from_r = np.linspace(0.63916, 27.69713, 128)
    az_grid = np.arcsin(np.linspace(-1, 1, 128))
    h, w = image_hw
    for si, (code, cls) in enumerate(seqs):
        name = f"2019_04_09_{code}{si:03d}"
        sd = root / "sequences" / "train" / name
        (sd / "IMAGES_0").mkdir(parents=True)
        (sd / "RADAR_RA_H").mkdir(parents=True)
        (root / "annotations" / "train").mkdir(parents=True, exist_ok=True)
        r0, a0 = rng.uniform(4, 18), rng.uniform(-0.6, 0.6)
        vr, va = rng.uniform(-0.15, 0.15), rng.uniform(-0.02, 0.02)
        lines = []
        for f in range(n_frames):
            objs = []
            if cls is not None and f % 5 != 4:
                objs.append((float(np.clip(r0 + vr * f, 2, 25)), float(np.clip(a0 + va * f, -1, 1)), cls))
                if f == n_frames - 1:
                    other = "car" if cls != "car" else "pedestrian"
                    objs.append((10.0, -0.5, other))
            ra = (rng.normal(0, 0.05, (128, 128)) + 1j * rng.normal(0, 0.05, (128, 128)))
            img = np.full((h, w, 3), 110, np.uint8)
            img[: h // 2] = (150, 170, 190)
            for r, a, c in objs:
                ri, ai = int(np.abs(from_r - r).argmin()), int(np.abs(az_grid - a).argmin())
                ii, jj = np.mgrid[0:128, 0:128]
                blob = np.exp(-(((ii - ri) / 2.0) ** 2 + ((jj - ai) / WIDTH[c]) ** 2) / 2)
                ra = ra + 3.0 * blob * np.exp(1j * rng.uniform(0, 2 * np.pi))
                cx = int((a / 1.2 + 0.5) * w)
                half = max(2, int(30 / r * (1 + CLASS_OF[c])))
                cv2.rectangle(img, (cx - half, h // 2 - half), (cx + half, h // 2 + half), COLOURS[c], -1)
                lines.append(f"{f} {r:.4f} {a:.4f} {c}")
            img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(sd / "IMAGES_0" / f"{f:010d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            arr = np.stack([ra.real, ra.imag], -1).astype(np.float32)
            for c in chirps:
                np.save(sd / "RADAR_RA_H" / f"{f:06d}_{c:04d}.npy", arr)
        (root / "annotations" / "train" / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_cruw(tmp_path_factory.mktemp("cruw"))


# ---- real ROD2021 annotation files (../shared/fixtures/cruw, README table) ------------------------

@pytest.mark.parametrize("seq,counts,objects", [
    ("2019_04_09_BMS1001", {"empty": 0, "pedestrian": 0, "cyclist": 897, "car": 0, "mixed": 0}, 897),
    ("2019_04_30_MLMS001", {"empty": 0, "pedestrian": 52, "cyclist": 0, "car": 0, "mixed": 848}, 2415),
    ("2019_05_23_PM1S013", {"empty": 1, "pedestrian": 816, "cyclist": 0, "car": 0, "mixed": 81}, 978),
    ("2019_09_29_ONRD005", {"empty": 1055, "pedestrian": 0, "cyclist": 0, "car": 641, "mixed": 1}, 918),
])
def test_real_cruw_annotations_give_documented_class_counts(shared_fixtures, seq, counts, objects):
    anno = cruw.read_annotations(shared_fixtures / GT / f"{seq}.txt")
    assert len(anno) == objects and not anno.skipped
    labels = anno.label_ids(range(max(anno.objects) + 1))   # frames 0..max id; unlisted frames are empty
    assert class_counts(labels) == counts


def test_real_cruw_annotations_in_a_rod2021_tree(shared_fixtures, tmp_path):
    """The real files placed at annotations/train/<SEQ>.txt next to a radar-only sequence folder load
    through discover()/CRUWFrames with the same labels."""
    seq = "2019_09_29_ONRD005"
    (tmp_path / "annotations" / "train").mkdir(parents=True)
    (tmp_path / "annotations" / "train" / f"{seq}.txt").write_bytes((shared_fixtures / GT / f"{seq}.txt").read_bytes())
    rd = tmp_path / "sequences" / "train" / seq / "RADAR_RA_H"
    rd.mkdir(parents=True)
    for f in range(1697):
        (rd / f"{f:06d}_0000.npy").touch()      # names only: discover() reads frame ids from radar names
    frames = CRUWFrames(tmp_path)
    assert len(frames) == 1697 and frames.fps == 30.0
    assert class_counts(frames.label)["car"] == 641 and class_counts(frames.label)["empty"] == 1055
    assert frames.t_ns[30] == 1_000_000_000


def test_bad_annotation_line_stops_training_data_with_file_and_line(tmp_path):
    """Training data is read strictly: a label must never be silently wrong."""
    (tmp_path / "sequences" / "train" / "S1" / "RADAR_RA_H").mkdir(parents=True)
    (tmp_path / "annotations" / "train").mkdir(parents=True)
    (tmp_path / "annotations" / "train" / "S1.txt").write_text("0 5.0 0.1 car\n1 5.0 0.1 truck\n")
    with pytest.raises(DataError, match=r"S1.txt:2: class must be one of pedestrian\|cyclist\|car, got 'truck'"):
        discover(tmp_path)


def test_sequence_without_annotation_file_is_unlabelled_not_empty(tmp_path):
    rd = tmp_path / "sequences" / "test" / "S1" / "RADAR_RA_H"
    rd.mkdir(parents=True)
    for f in range(3):
        (rd / f"{f:06d}_0000.npy").touch()
    frames = CRUWFrames(tmp_path, ("test",))
    assert frames.label.tolist() == [UNLABELLED] * 3 and frames.frame.tolist() == [0, 1, 2]


def test_not_a_cruw_tree(tmp_path):
    with pytest.raises(DataError, match="sequences"):
        discover(tmp_path)


# ---- layout, radar, images -------------------------------------------------------------------------

def test_tiny_tree_loads_radar_images_and_labels(tiny):
    frames = CRUWFrames(tiny)
    assert len(frames.sequences) == 8 and len(frames) == 8 * 24
    x = frames.radar(0)
    assert x.shape == (2, 128, 128) and x.dtype == np.float32
    im = frames.image(0)
    assert im.shape == (48, 80, 3) and im.dtype == np.uint8
    c = class_counts(frames.label)
    assert c["mixed"] == 6 and c["empty"] > 0 and c["pedestrian"] > 0 and c["car"] > 0
    # the red (pedestrian) box is in the image where the annotation says
    ped = next(i for i in range(len(frames)) if frames.label[i] == 1)
    assert (frames.image(ped)[..., 0] > 180).any()


def test_missing_chirp_is_a_clear_error(tiny):
    frames = CRUWFrames(tiny, chirp=64)
    with pytest.raises(DataError, match="chirp 64"):
        frames.radar(0)


def test_sequence_split_has_no_shared_sequences_and_every_class_in_test(tiny):
    frames = CRUWFrames(tiny)
    sp = split_frames(frames, "sequence", 0.2, seed=1, val_fraction=0.25)
    tr, va, te = (set(frames.seq[sp[k]]) for k in ("train", "val", "test"))
    assert not (tr & te) and not (va & te)
    assert {int(l) for l in frames.label[sp["test"]] if l >= 1} == {1, 2, 3}
    assert len(sp["train"]) + len(sp["val"]) + len(sp["test"]) == len(frames)
    # val is the tail of each training sequence: later than every train frame of that sequence
    for s in tr:
        assert frames.frame[sp["val"][frames.seq[sp["val"]] == s]].min() > frames.frame[sp["train"][frames.seq[sp["train"]] == s]].max()


def test_random_split_is_80_20(tiny):
    frames = CRUWFrames(tiny)
    sp = split_frames(frames, "random", 0.2, seed=0)
    assert len(sp["test"]) == round(0.2 * len(frames)) and not set(sp["train"]) & set(sp["test"])


def test_balanced_and_label_subset(tiny):
    frames = CRUWFrames(tiny)
    idx = balanced(np.arange(len(frames)), frames.label, seed=0)
    counts = np.bincount(frames.label[idx], minlength=4)
    assert len(set(counts.tolist())) == 1 and (frames.label[idx] >= 0).all()
    sub = label_subset(idx, frames.label, 0.01, seed=0)
    assert sorted(frames.label[sub].tolist()) == [0, 1, 2, 3]


def test_clutter_removal_subtracts_the_static_scene(tiny):
    raw, cr = CRUWFrames(tiny), CRUWFrames(tiny, clutter_removal=True)
    idx = np.flatnonzero(raw.seq == 0)
    static = np.mean([raw.radar(int(i)) for i in idx], axis=0)
    assert np.allclose(cr.radar(int(idx[3])), raw.radar(int(idx[3])) - static, atol=1e-5)
    assert np.abs(np.mean([cr.radar(int(i)) for i in idx], axis=0)).max() < 1e-4   # nothing static left

"""`radvis synth`: the CRUW ROD2021 layout and formats, checked against the real annotation files and
devkit config in ../shared/fixtures/cruw, read back by a loader written from the CRUW documentation, and a
radar-only probe that must be clearly above chance but not perfect."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim import synth
from drivers.ti import dsp
from radvis.cli import main as radvis_main
from radvis.cruw import frame_label

# one object per line: integer frame id, range and azimuth with 4 decimals, class name (cruw.md §1.5)
LINE = re.compile(r"^(\d+) (-?\d+\.\d{4}) (-?\d+\.\d{4}) (pedestrian|cyclist|car)$")
CHIRPS = (0, 64, 128, 192)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    rc = radvis_main(["synth", "--out", str(out), "--sequences", "5", "--frames", "6", "--seed", "3",
                      "--image-size", "96x64", "--quiet"])
    assert rc == 0
    return out


def load_cruw(root: Path):
    """A ROD2021 loader written from the CRUW docs only (cruw.md §6 checklist): sequences by listing,
    frame ids from IMAGES_0, exactly 4 chirp files per frame, labels grouped by frame (no line = empty)."""
    for seq in sorted((root / "sequences" / "train").iterdir()):
        ids = sorted(int(p.stem) for p in (seq / "IMAGES_0").glob("*.jpg"))
        objs: dict[int, list] = {}
        for line in (root / "annotations" / "train" / f"{seq.name}.txt").read_text().splitlines():
            fid, r, a, cls = line.split()
            objs.setdefault(int(fid), []).append((float(r), float(a), cls))
        for f in ids:
            chirps = sorted((seq / "RADAR_RA_H").glob(f"{f:06d}_*.npy"))
            assert [int(p.stem.split("_")[1]) for p in chirps] == list(CHIRPS)
            radar = np.stack([np.load(p) for p in chirps]).astype(np.float32)
            img = cv2.imread(str(seq / "IMAGES_0" / f"{f:010d}.jpg"))[..., ::-1]
            yield seq.name, f, radar, img, objs.get(f, [])


def test_layout_and_file_formats(dataset):
    seqs = sorted(p.name for p in (dataset / "sequences" / "train").iterdir())
    assert seqs == ["2026_01_01_BMS0000", "2026_01_01_CMS0000", "2026_01_01_EMS0000", "2026_01_01_MLMS0000",
                    "2026_01_01_PMS0000"]
    assert sorted(p.name for p in (dataset / "annotations" / "train").iterdir()) == [s + ".txt" for s in seqs]
    for s in seqs:
        d = dataset / "sequences" / "train" / s
        assert sorted(p.name for p in d.iterdir()) == ["IMAGES_0", "RADAR_RA_H"]
        assert sorted(p.name for p in (d / "IMAGES_0").iterdir()) == [f"{f:010d}.jpg" for f in range(6)]
        assert sorted(p.name for p in (d / "RADAR_RA_H").iterdir()) == [f"{f:06d}_{c:04d}.npy" for f in range(6) for c in CHIRPS]
        arr = np.load(d / "RADAR_RA_H" / "000003_0128.npy")
        assert arr.shape == (128, 128, 2) and arr.dtype == np.dtype("<f4") and np.isfinite(arr).all()
        assert (d / "IMAGES_0" / "0000000000.jpg").read_bytes()[:2] == b"\xff\xd8"      # JPEG SOI
    assert (dataset / "calib" / "2026_01_01" / "cam_0.yaml").is_file()


def test_annotations_match_the_real_format(dataset, shared_fixtures):
    real = sorted((shared_fixtures / "cruw" / "T-RODNet" / "evaluate" / "gt").glob("*.txt"))
    assert len(real) == 4
    for p in real:                                  # the pattern is the real files' format ...
        lines = p.read_text().splitlines()
        assert lines and all(LINE.match(ln) for ln in lines), p.name
    n = 0
    for p in (dataset / "annotations" / "train").glob("*.txt"):   # ... and synth writes exactly that
        text = p.read_text()
        assert text == "" or text.endswith("\n")
        for ln in text.splitlines():
            m = LINE.match(ln)
            assert m, ln
            assert 1.0 <= float(m.group(2)) <= 25.0 and abs(float(m.group(3))) <= np.radians(60)   # eval region
            n += 1
    assert n > 0


def test_sensor_config_is_shaped_like_the_devkit_one(dataset, shared_fixtures):
    real = json.loads((shared_fixtures / "cruw" / "cruw-devkit" / "cruw" / "dataset_configs" /
                       "sensor_config_rod2021.json").read_text())
    ours = json.loads((dataset / "sensor_config_rod2021.json").read_text())
    assert ours.keys() == real.keys()
    for sec in ("camera_cfg", "radar_cfg", "calib_cfg"):
        assert ours[sec].keys() == real[sec].keys(), sec
        for k, v in real[sec].items():
            assert type(ours[sec][k]) is type(v) or isinstance(v, float), (sec, k)
    assert ours["camera_cfg"]["image_width"] == 96 and ours["camera_cfg"]["image_height"] == 64
    for k in ("ramap_rsize", "ramap_asize", "frame_rate", "crop_num", "n_chirps", "chirp_ids", "sample_freq",
              "sweep_slope", "chirp_folder"):
        assert ours["radar_cfg"][k] == real["radar_cfg"][k], k     # the CRUW-like chirp: same grid constants
    for date, paths in ours["calib_cfg"]["cam_calib_paths"].items():
        assert all((dataset / p).is_file() for p in paths)
    obj = json.loads((dataset / "object_config.json").read_text())
    real_obj = json.loads((shared_fixtures / "cruw" / "cruw-devkit" / "cruw" / "dataset_configs" /
                           "object_config.json").read_text())
    assert obj == real_obj


def test_a_docs_only_loader_reads_it_and_labels_match_content(dataset):
    summary = json.loads((dataset / "synth_summary.json").read_text())
    counts: dict[str, int] = {}
    seen = 0
    rg, ag = dsp.range_grid(), dsp.azimuth_grid()
    for seq, f, radar, img, objs in load_cruw(dataset):
        seen += 1
        assert radar.shape == (4, 128, 128, 2) and img.shape == (64, 96, 3)
        label = frame_label([o[2] for o in objs])
        counts[label] = counts.get(label, 0) + 1
        kind = {"PMS": "pedestrian", "BMS": "cyclist", "CMS": "car", "EMS": "empty", "MLMS": "mixed"}[
            re.match(r"\d{4}_\d\d_\d\d_([A-Z]+)\d{4}", seq).group(1)]
        assert label == kind
        mag = dsp.ra_magnitude(radar[0])
        for r, a, cls in objs:    # every labelled object has an echo well above the map's median near its cell
            i, j = np.abs(rg - r).argmin(), np.abs(ag - a).argmin()
            assert mag[max(0, i - 12):i + 13, max(0, j - 6):j + 7].max() > 10 * np.median(mag), (seq, f, cls)
    assert seen == 30 and counts == summary["frame_labels"]


def test_radar_only_probe_is_above_chance_but_not_perfect(tmp_path):
    synth.synth(tmp_path, sequences=20, frames=12, seed=1, image_size=(32, 24), progress=False)
    res = synth.probe(tmp_path, every=2)
    assert res["class_counts"] == {"empty": 24, "pedestrian": 24, "cyclist": 24, "car": 24}
    assert res["majority_baseline"] == pytest.approx(0.25, abs=0.05)
    assert 0.4 < res["accuracy"] < 0.97, res


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert radvis_main(["synth", "--out", str(tmp_path), "--image-size", "big"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert radvis_main(["synth", "--out", str(tmp_path), "--frames", "0"]) == 2
    assert not any(tmp_path.iterdir())          # nothing half-written


def test_workers_give_the_same_dataset(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.synth(a, sequences=2, frames=2, seed=9, image_size=(32, 24), progress=False)
    synth.synth(b, sequences=2, frames=2, seed=9, image_size=(32, 24), progress=False, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "synth_summary.json")
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "synth_summary.json")
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_preview_png_and_probe_needs_enough_sequences(dataset):
    png = synth.preview(dataset, dataset / "preview_test.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    img = cv2.imread(str(png))
    assert img.shape[0] > img.shape[1]          # one row per sequence (5), image + RA map side by side
    with pytest.raises(ValueError, match="at least 2 sequences of each"):
        synth.probe(dataset)                   # one sequence per class cannot be split by sequence

"""`radvis synth`: a synthetic dataset in the exact CRUW ROD2021 layout (reference: cruw.md §1 and §6).

    <out>/sequences/train/<SEQ>/IMAGES_0/%010d.jpg
    <out>/sequences/train/<SEQ>/RADAR_RA_H/%06d_%04d.npy     (128, 128, 2) float32, chirps 0, 64, 128, 192
    <out>/annotations/train/<SEQ>.txt                        `frame_id range_m azimuth_rad class`, 4 decimals
    <out>/calib/<date>/cam_0.yaml                            ROS camera_info-style intrinsics
    <out>/sensor_config_rod2021.json, object_config.json     shaped like cruw-devkit's
    <out>/synth_summary.json                                 what was generated (kinds, label counts, timing)

Radar frames: the scene's scatterers rendered as raw ADC (render_radar) with a CRUW-like chirp (the rig's
default cfg with 255 loops per frame at 30 fps, like ROD2021's 255 chirps) and turned into RA maps by the
radar DSP (`drivers.ti.dsp.ra_map(adc, profile, chirp=i)`): only the 4 kept loops are rendered.
`chirps` picks other loops (e.g. the rig's radar.ra_chirps, so a held-out set matches what the rig streams);
`radar_frame = "cfg"` renders what a rig with that cfg streams instead: the cfg's own frame (its loops) and its
`clutterRemoval` setting (every loop rendered, the frame's mean chirp subtracted, as the SDK and the rig's
dca1000 driver do), so a rig's held-out set looks like its live radar. `frame_step` keeps every Nth frame of the 30 fps sequence (file names keep the true frame index), so a short
sequence still spans seconds and its mean RA map is the static scene, not the slow movers.
Sequences are named `<date>_<CODE><NNNN>` with CRUW's codes: PMS pedestrian, BMS cyclist, CMS car,
MLMS mixed, plus EMS for empty scenes (CRUW has no empty sequences, only empty frames).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits
from radvis.log import progress as tqdm  # a bar on a terminal, plain lines in logs

from sim import render_camera, render_radar
from sim.scene import Scene
from sim.worlds import get_world
from drivers.ti import dsp
from drivers.ti.cfg import parse_cfg
from radvis import cruw
from radvis.cruw import CHIRP_IDS, LABELS, OBJECT_CLASSES

N_CHIRPS = 255
FPS = 30
DATE = "2026_01_01"
CODES = {"pedestrian": "PMS", "cyclist": "BMS", "car": "CMS", "mixed": "MLMS", "empty": "EMS"}
# sequence kinds cycle in this order: the four classes of the paper's task, then a mixed one
SCHEDULE = OBJECT_CLASSES + ("empty", cruw.MIXED)
DEFAULT_CFG = Path(__file__).resolve().parents[1] / "drivers" / "ti" / "cfgs" / "radvis_iwr1843.cfg"


RADAR_FRAMES = ("rod2021", "cfg")


def cruw_profile(cfg_path: str | Path = DEFAULT_CFG):
    """The rig's chirp with ROD2021's frame: 255 loops (chirps per virtual array) per frame at 30 fps."""
    p = parse_cfg(Path(cfg_path)).profile
    return dataclasses.replace(p, num_loops=N_CHIRPS, chirps_per_frame=N_CHIRPS * p.num_tx,
                               frame_period_ms=1000.0 / FPS)


def radar_frame(cfg_path: str | Path, frame: str = "rod2021"):
    """(chirp profile, static clutter removal) of the radar frames a set holds: ROD2021's 255-loop frame with
    raw chirps, or ("cfg") the cfg's own frame and clutterRemoval setting."""
    if frame == "rod2021":
        return cruw_profile(cfg_path), False
    if frame == "cfg":
        rc = parse_cfg(Path(cfg_path))
        return rc.profile, rc.static_clutter_removal
    raise ValueError(f"radar frame must be one of {', '.join(RADAR_FRAMES)}, got {frame!r}")


def plan(n_sequences: int, seed: int) -> list[tuple[str, str, int]]:
    """(sequence name, kind, scene seed) for each sequence."""
    out, count = [], {}
    for i in range(n_sequences):
        kind = SCHEDULE[i % len(SCHEDULE)] if n_sequences >= len(SCHEDULE) else SCHEDULE[i % 4]
        k = count.get(kind, 0)
        count[kind] = k + 1
        out.append((f"{DATE}_{CODES[kind]}{k:04d}", kind, int(seed) * 100_003 + i))
    return out


def annotation_lines(frame_id: int, state) -> list[str]:
    return [cruw.format_line(frame_id, (o.range_m, o.azimuth_rad, o.cls)) for o in state.objects]


def write_sequence(root: Path, name: str, kind: str, scene_seed: int, frames: int, image_size: tuple[int, int],
                   cfg_path: str | Path = DEFAULT_CFG, noise: float = 1.0, world: str = "default",
                   jpeg_quality: int = 90, progress=None, chirps: tuple = CHIRP_IDS, frame_step: int = 1,
                   frame: str = "rod2021") -> dict:
    """Render one sequence; returns its summary (frames per 4-class label)."""
    profile, clutter = radar_frame(cfg_path, frame)
    cam = render_camera.PinholeCamera(*image_size)
    scene = Scene(scene_seed, scene_s=frames * frame_step / FPS + 1.0, classes=(kind,), noise=noise, world=world)
    seq = cruw.sequence_dir(root, "train", name)
    (seq / cruw.IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    (seq / cruw.RADAR_DIR).mkdir(parents=True, exist_ok=True)
    anno = cruw.annotation_path(root, "train", name)
    anno.parent.mkdir(parents=True, exist_ok=True)
    lines, labels = [], {}
    with threadpool_limits(1):   # small matmuls: a BLAS thread pool only spins against other processes
        for f in range(0, frames * frame_step, frame_step):
            _write_frame(seq, scene, kind, scene_seed, f, profile, cam, noise, jpeg_quality, lines, labels, chirps,
                         clutter)
            if progress is not None:
                progress.update(1)
    anno.write_text("".join(ln + "\n" for ln in lines))
    return {"name": name, "kind": kind, "seed": scene_seed, "frames": frames, "objects": len(lines),
            "frame_labels": labels}


def _write_frame(seq: Path, scene: Scene, kind: str, scene_seed: int, f: int, profile, cam, noise: float,
                 jpeg_quality: int, lines: list, labels: dict, chirps: tuple = CHIRP_IDS,
                 clutter_removal: bool = False) -> None:
    state = scene.state(f / FPS, kind=kind)
    # clutter removal needs the frame's mean chirp, so every loop; otherwise only the kept ones (60x cheaper)
    adc = render_radar.render_adc(state, profile, rng=render_radar.frame_rng(scene_seed, f), noise=noise,
                                  loops=None if clutter_removal else list(chirps))
    for i, c in enumerate(chirps):
        ra = dsp.ra_map(adc, profile, chirp=c if clutter_removal else i, clutter_removal=clutter_removal)
        np.save(cruw.radar_path(seq, f, c), ra.astype("<f4"))
    img = render_camera.render(state, cam, rng=render_camera.frame_rng(scene_seed, f), noise=noise)
    ok = cv2.imwrite(str(cruw.image_path(seq, f)), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise OSError(f"could not write {cruw.image_path(seq, f)}")
    lines += annotation_lines(f, state)
    labels[state.label] = labels.get(state.label, 0) + 1


def _worker(job: dict):
    return write_sequence(**job)


def sensor_config(image_size: tuple[int, int], profile, names: list[str], chirps: tuple = CHIRP_IDS) -> dict:
    """(The devkit's keys only; whether the frame's mean chirp was removed is in synth_summary.json.)"""
    """cruw-devkit's sensor_config_rod2021.json shape, with this dataset's values."""
    return {
        "dataset": "ROD2021",
        "camera_cfg": {"image_width": image_size[0], "image_height": image_size[1], "frame_rate": FPS,
                       "image_folder": "IMAGES_0", "ext": "jpg"},
        "radar_cfg": {
            "ramap_rsize": 128, "ramap_asize": 128, "frame_rate": FPS, "crop_num": dsp.CRUW_CROP,
            "n_chirps": int(profile.num_loops), "chirp_ids": list(chirps),
            "sample_freq": profile.sample_rate_ksps * 1e3, "sweep_slope": profile.slope_mhz_us * 1e12,
            "data_type": "ROD2021", "chirp_folder": "RADAR_RA_H", "ext": "npy",
            "ramap_rsize_label": 122, "ramap_asize_label": 121, "ra_min_label": -60, "ra_max_label": 60,
            "rr_min": 1.0, "rr_max": 25.0, "ra_min": -90, "ra_max": 90, "xz_dim": [200, 151], "z_max": 30.0},
        "calib_cfg": {"cam_calib_paths": {DATE: [f"calib/{DATE}/cam_0.yaml"]},
                      # camera and radar share one origin in the simulator
                      "t_cl2cr": [0.35, 0.0, 0.0], "t_cl2rh": [0.0, 0.0, 0.0], "t_cl2rv": [0.0, 0.0, 0.0]},
    }


def cam_yaml(cam: render_camera.PinholeCamera) -> str:
    k = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    p = [cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]

    def mat(name, rows, cols, data):
        return f"{name}:\n  rows: {rows}\n  cols: {cols}\n  data: [{', '.join(f'{v:.6f}' for v in data)}]\n"
    return (f"image_width: {cam.width}\nimage_height: {cam.height}\ncamera_name: cam_0\n"
            + mat("camera_matrix", 3, 3, k) + "distortion_model: plumb_bob\n"
            + mat("distortion_coefficients", 1, 5, [0.0] * 5)
            + mat("rectification_matrix", 3, 3, [1, 0, 0, 0, 1, 0, 0, 0, 1]) + mat("projection_matrix", 3, 4, p))


def synth(out: str | Path, *, sequences: int = 10, frames: int = 300, seed: int = 0,
          image_size: tuple[int, int] | None = None, workers: int = 1, cfg_path: str | Path = DEFAULT_CFG,
          noise: float = 1.0, world: str = "default", progress: bool = True, chirps=CHIRP_IDS,
          frame_step: int = 1, radar_frame_of: str = "rod2021") -> dict:
    """Write the dataset; returns the summary also written to <out>/synth_summary.json. `world` (sim/worlds.py)
    sets the look and the sensor mounting, and the image size when `image_size` is None."""
    w = get_world(world)
    image_size = tuple(image_size or w.image_size)
    chirps = tuple(int(c) for c in chirps)
    profile, clutter = radar_frame(cfg_path, radar_frame_of)
    if not chirps or len(set(chirps)) != len(chirps) or not all(0 <= c < profile.num_loops for c in chirps):
        raise ValueError(f"chirps must be distinct loop indices in 0..{profile.num_loops - 1} (the {radar_frame_of} "
                         f"frame), got {list(chirps)}")
    if frame_step < 1:
        raise ValueError(f"frame_step must be >= 1, got {frame_step}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [dict(root=root, name=name, kind=kind, scene_seed=s, frames=frames, image_size=tuple(image_size),
                 cfg_path=str(cfg_path), noise=noise, world=w.name, chirps=chirps, frame_step=frame_step,
                 frame=radar_frame_of)
            for name, kind, s in plan(sequences, seed)]
    bar = tqdm(total=len(jobs) * frames, unit="frame", desc="synth", disable=not progress)
    results = []
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")   # fork would copy other threads' state (BLAS, ZeroMQ) of the caller
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for res in pool.imap_unordered(_worker, jobs):
                results.append(res)
                bar.update(res["frames"])
    else:
        for job in jobs:
            results.append(write_sequence(**job, progress=bar))
    bar.close()
    results.sort(key=lambda r: r["name"])
    cam = render_camera.PinholeCamera(*image_size)
    (root / "sensor_config_rod2021.json").write_text(json.dumps(sensor_config(tuple(image_size), profile,
                                                                              [r["name"] for r in results], chirps),
                                                                indent=2))
    (root / "object_config.json").write_text(json.dumps(
        {"n_classes": 3, "classes": list(OBJECT_CLASSES), "sizes": {"pedestrian": 0.5, "cyclist": 1.0, "car": 3.0}},
        indent=2))
    calib = root / "calib" / DATE
    calib.mkdir(parents=True, exist_ok=True)
    (calib / "cam_0.yaml").write_text(cam_yaml(cam))
    labels: dict[str, int] = {}
    for r in results:
        for k, v in r["frame_labels"].items():
            labels[k] = labels.get(k, 0) + v
    elapsed = time.perf_counter() - t0
    summary = {"generator": "radvis synth", "seed": seed, "world": w.name, "mount_m": w.mount_m,
               "pitch_deg": w.pitch_deg, "sequences": results, "frames": len(jobs) * frames,
               "frame_labels": labels, "image_size": list(image_size), "fps": FPS, "cfg": str(cfg_path), "chirps": list(chirps), "frame_step": frame_step,
               "radar_frame": radar_frame_of, "static_clutter_removal": clutter,
               "intrinsics": cam.intrinsics(), "elapsed_s": round(elapsed, 2),
               "frames_per_s": round(len(jobs) * frames / max(elapsed, 1e-9), 2)}
    (root / "synth_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size: expected WIDTHxHEIGHT (e.g. 320x192), got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise ValueError(f"--image-size: width and height must be 8..8192, got {text!r}")
    return w, h



# ---------------------------------------------------------------------------------------------
# Difficulty check: a small supervised radar-only classifier on a written dataset
# ---------------------------------------------------------------------------------------------

def radar_features(ra_chirps: list[np.ndarray]) -> np.ndarray:
    """Position-invariant features of one frame's 4 chirp RA maps: range-compensated (x r^2, an RCS proxy)
    magnitude of chirp 0 and of the chirp 0 - chirp 128 difference (static clutter cancels, movers stay):
    top-k values, the size of the strongest blob, and pixel counts above thresholds."""
    r2 = (dsp.range_grid() ** 2)[:, None]
    c = [ra[..., 0] + 1j * ra[..., 1] for ra in ra_chirps]
    feats = []
    for x in (np.abs(c[0]) * r2, np.abs(c[0] - c[2]) * r2):
        lx = np.log(x + 1e-3)
        top = np.sort(lx.ravel())[::-1]
        feats += list(top[[0, 1, 3, 7, 15, 31, 63]])
        i, j = np.unravel_index(x.argmax(), x.shape)
        blob = x[max(0, i - 12):i + 13, max(0, j - 12):j + 13]
        feats += [(blob > x.max() / 4).sum(), (blob > x.max() / 16).sum()]
        feats += [(lx > t).sum() for t in (2, 4, 6)]
    return np.array(feats, np.float64)


def probe(root: str | Path, *, every: int = 1) -> dict:
    """Train/test a logistic-regression 4-class probe (empty/pedestrian/cyclist/car) on radar features of a
    synth dataset; mixed frames are dropped (the paper's rule); sequences are split in two halves (never
    frames of one sequence on both sides, each class's sequences alternating) and both folds are averaged."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = Path(root)
    X, y, groups = [], [], []
    for path in sorted((root / "annotations" / "train").glob("*.txt")):
        ann = cruw.read_annotations(path)
        seq = cruw.sequence_dir(root, "train", path.stem)
        for f in cruw.frame_ids(seq)[::every]:
            c = cruw.label_index(ann.label(f))
            if c == cruw.NO_LABEL:
                continue
            ras = [np.load(cruw.radar_path(seq, f, ch)).astype(np.float32) for ch in CHIRP_IDS]
            X.append(radar_features(ras))
            y.append(c)
            groups.append(path.stem)
    X, y, groups = np.array(X), np.array(y), np.array(groups)
    names = sorted(set(groups))
    # two folds, stratified: each class's sequences alternate between the folds
    fold_of, per_class = {}, {}
    for n in names:
        c = int(np.bincount(y[groups == n]).argmax())
        fold_of[n] = per_class.get(c, 0) % 2
        per_class[c] = per_class.get(c, 0) + 1
    if len(per_class) < 4 or min(per_class.values()) < 2:
        raise ValueError(f"probe needs at least 2 sequences of each of {LABELS}, got "
                         f"{ {LABELS[c]: k for c, k in sorted(per_class.items())} } (use --sequences >= 10)")
    accs, chance = [], []
    confusion = np.zeros((4, 4), int)        # rows: true label, columns: predicted (order of LABELS)
    for fold in range(2):
        test = np.isin(groups, [n for n in names if fold_of[n] == fold])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        clf.fit(X[~test], y[~test])
        pred = clf.predict(X[test])
        np.add.at(confusion, (y[test], pred), 1)
        accs.append(float(np.mean(pred == y[test])))
        chance.append(float(np.bincount(y[test]).max() / len(y[test])))
    return {"accuracy": float(np.mean(accs)), "folds": accs, "majority_baseline": float(np.mean(chance)),
            "labels": list(LABELS), "confusion": confusion.tolist(),
            "frames": int(len(y)), "sequences": len(names),
            "class_counts": {LABELS[k]: int(v) for k, v in enumerate(np.bincount(y, minlength=4))}}


def preview(root: str | Path, out: str | Path | None = None, frame: int = 0) -> Path:
    """PNG of one frame per sequence: camera image with the labelled objects' columns, and the chirp-0 RA
    magnitude (dB) with the labelled (range, azimuth) cells; what a person checks first."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    seqs = sorted((root / "sequences" / "train").iterdir())
    cfg = json.loads((root / "sensor_config_rod2021.json").read_text())
    w = cfg["camera_cfg"]["image_width"]
    cam = render_camera.PinholeCamera(w, cfg["camera_cfg"]["image_height"])
    rg, ag = dsp.range_grid(), dsp.azimuth_grid()
    fig, axes = plt.subplots(len(seqs), 2, figsize=(8, 2.6 * len(seqs)), squeeze=False)
    for (ax_img, ax_ra), seq in zip(axes, seqs):
        img = cv2.imread(str(cruw.image_path(seq, frame)))[..., ::-1]
        ra = np.load(cruw.radar_path(seq, frame))
        objs = cruw.read_annotations(cruw.annotation_path(root, "train", seq.name)).frame(frame)
        ax_img.imshow(img)
        ax_ra.imshow(20 * np.log10(dsp.ra_magnitude(ra) + 1e-3), origin="lower", aspect="auto", cmap="viridis",
                     extent=(-1, 1, rg[0], rg[-1]))
        for r, a, cls in objs:
            ax_img.axvline(cam.column(float(a)), color="r", lw=0.8)
            ax_ra.plot(np.sin(float(a)), float(r), "r+", ms=10)
            ax_ra.annotate(cls, (np.sin(float(a)), float(r)), color="w", fontsize=7)
        ax_img.set_title(f"{seq.name} frame {frame}", fontsize=8)
        ax_img.axis("off")
        ax_ra.set_xlabel("sin(azimuth)", fontsize=7)
        ax_ra.set_ylabel("range m", fontsize=7)
        ax_ra.tick_params(labelsize=6)
    fig.tight_layout()
    out = Path(out) if out else root / "preview.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

"""CRUW (ROD2021) loader — the real layout and `radvis synth` output alike — and the paper's 4-class task.

Layout (see ../shared/reference/cruw.md §1):
    <root>/sequences/<split>/<SEQ>/IMAGES_0/%010d.jpg
    <root>/sequences/<split>/<SEQ>/RADAR_RA_H/%06d_%04d.npy     (128,128,2) real/imag, 4 chirps per frame
    <root>/annotations/<split>/<SEQ>.txt                        "frame range_m azimuth_rad class" per object
Frame ids come from the JPEG names when present, else from the radar names; frames without an annotation
line are empty. Timestamps are frame_id / fps (30 fps in ROD2021).

Downstream labels (paper §V-A, rule in cruw.md §3.2): 0 empty (no object), 1 pedestrian / 2 cyclist /
3 car when every object in the frame has that class, -1 mixed (excluded), then balanced by downsampling.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLASSES = ("empty", "pedestrian", "cyclist", "car")
OBJECT_CLASSES = ("pedestrian", "cyclist", "car")
MIXED = -1
CHIRP_IDS = (0, 64, 128, 192)
DEFAULT_FPS = 30.0
_IMG_RE = re.compile(r"^(\d+)\.jpg$", re.IGNORECASE)
_RAD_RE = re.compile(r"^(\d+)_(\d+)\.npy$")


class DataError(ValueError):
    """The data directory does not look like a CRUW/ROD2021 tree (message says what is missing)."""


def parse_annotations(path: str | Path) -> dict[int, list[tuple[float, float, str]]]:
    """`frame_id range_m azimuth_rad class_name` lines -> {frame: [(r, a, cls), ...]}. Malformed lines and
    unknown class names raise with the file and line number (labels must never be silently wrong)."""
    out: dict[int, list[tuple[float, float, str]]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4 or parts[3] not in OBJECT_CLASSES:
            raise DataError(f"{path}:{n}: expected 'frame_id range_m azimuth_rad {'|'.join(OBJECT_CLASSES)}', "
                            f"got {line!r}")
        try:
            fid, r, a = int(parts[0]), float(parts[1]), float(parts[2])
        except ValueError:
            raise DataError(f"{path}:{n}: non-numeric frame/range/azimuth in {line!r}") from None
        out.setdefault(fid, []).append((r, a, parts[3]))
    return out


def frame_label(objects) -> int:
    """4-class label of one frame: 0 empty, 1..3 single class, MIXED (-1) for more than one class."""
    classes = {o[2] for o in objects}
    if not classes:
        return 0
    if len(classes) > 1:
        return MIXED
    return 1 + OBJECT_CLASSES.index(classes.pop())


def labels_for(annotations: dict, frame_ids) -> np.ndarray:
    return np.array([frame_label(annotations.get(int(f), ())) for f in frame_ids], dtype=np.int64)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    out = {c: int((labels == i).sum()) for i, c in enumerate(CLASSES)}
    out["mixed"] = int((labels == MIXED).sum())
    return out


@dataclass
class Sequence:
    name: str
    split: str
    dir: Path
    frame_ids: np.ndarray
    annotations: dict = field(default_factory=dict)
    has_images: bool = True
    has_annotations: bool = False

    def image_path(self, fid: int) -> Path:
        return self.dir / "IMAGES_0" / f"{int(fid):010d}.jpg"

    def radar_path(self, fid: int, chirp: int = 0) -> Path:
        return self.dir / "RADAR_RA_H" / f"{int(fid):06d}_{int(chirp):04d}.npy"


def _read_fps(root: Path) -> float:
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/sensor_config*.json")):
        try:
            cfg = json.loads(p.read_text())
            return float(cfg["radar_cfg"]["frame_rate"])
        except (KeyError, ValueError, TypeError, OSError, json.JSONDecodeError):
            continue
    return DEFAULT_FPS


def discover(root: str | Path, splits=("train",)) -> list[Sequence]:
    """All sequences of `splits` under a CRUW root, sorted by (split, name)."""
    root = Path(root)
    if not (root / "sequences").is_dir():
        raise DataError(f"{root}: not a CRUW/ROD2021 tree (no sequences/ folder; expected "
                        f"sequences/<split>/<SEQ>/{{IMAGES_0,RADAR_RA_H}} and annotations/<split>/<SEQ>.txt)")
    seqs = []
    for split in splits:
        d = root / "sequences" / split
        if not d.is_dir():
            continue
        for sd in sorted(p for p in d.iterdir() if p.is_dir()):
            img_dir, rad_dir = sd / "IMAGES_0", sd / "RADAR_RA_H"
            if img_dir.is_dir():
                ids = sorted(int(m.group(1)) for m in map(_IMG_RE.match, (p.name for p in img_dir.iterdir())) if m)
            elif rad_dir.is_dir():
                ids = sorted({int(m.group(1)) for m in map(_RAD_RE.match, (p.name for p in rad_dir.iterdir())) if m})
            else:
                raise DataError(f"{sd}: has neither IMAGES_0/ nor RADAR_RA_H/")
            anno = root / "annotations" / split / f"{sd.name}.txt"
            seqs.append(Sequence(sd.name, split, sd, np.array(ids, dtype=np.int64),
                                 parse_annotations(anno) if anno.is_file() else {},
                                 img_dir.is_dir(), anno.is_file()))
    if not seqs:
        raise DataError(f"{root}: no sequences under sequences/{{{','.join(splits)}}}/")
    return seqs


class CRUWFrames:
    """Flat, indexable view over every frame of some sequences: arrays `seq` (sequence index), `frame`,
    `t_ns`, `label`, plus `radar(i)` and `image(i)` readers."""

    def __init__(self, root: str | Path, splits=("train",), chirp: int = 0, sequences: list[Sequence] | None = None,
                 clutter_removal: bool = False):
        self.root = Path(root)
        self.sequences = sequences if sequences is not None else discover(root, splits)
        self.chirp = chirp
        self.clutter_removal = clutter_removal
        self._static: dict[int, np.ndarray] = {}
        self._background: dict[tuple[int, int], np.ndarray] = {}
        self.fps = _read_fps(self.root)
        self.seq = np.concatenate([np.full(len(s.frame_ids), i, np.int64) for i, s in enumerate(self.sequences)])
        self.frame = np.concatenate([s.frame_ids for s in self.sequences])
        self.t_ns = np.round(self.frame * (1e9 / self.fps)).astype(np.int64)
        self.label = np.concatenate([labels_for(s.annotations, s.frame_ids) if s.has_annotations
                                     else np.full(len(s.frame_ids), MIXED - 1, np.int64) for s in self.sequences])
        # label -2 = unlabelled sequence (no annotation file): usable for pretraining only

    def __len__(self) -> int:
        return len(self.frame)

    def key(self, i: int) -> str:
        return f"{self.sequences[self.seq[i]].split}/{self.sequences[self.seq[i]].name}/{int(self.frame[i])}"

    def static_clutter(self, si: int) -> np.ndarray:
        """Mean complex RA map of sequence `si` (2,128,128): what a fixed radar sees of the static scene.
        Subtracting it (a standard radar clutter filter) removes walls, poles and parked objects, which
        otherwise make every sequence's features a fingerprint of its location."""
        if si not in self._static:
            idx = np.flatnonzero(self.seq == si)
            acc = np.zeros((2, 128, 128), np.float64)
            for i in idx:
                acc += self._raw_radar(int(i))
            self._static[si] = (acc / max(1, len(idx))).astype(np.float32)
        return self._static[si]

    def radar(self, i: int) -> np.ndarray:
        """(2, 128, 128) float32 (channels first for the encoders); static clutter removed if enabled."""
        x = self._raw_radar(i)
        if self.clutter_removal:
            x = x - self.static_clutter(int(self.seq[i]))
        return x

    def _raw_radar(self, i: int) -> np.ndarray:
        s = self.sequences[self.seq[i]]
        p = s.radar_path(self.frame[i], self.chirp)
        try:
            a = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{p}: radar file missing (frame {int(self.frame[i])} of {s.name}, chirp "
                            f"{self.chirp}; ROD2021 ships chirps {CHIRP_IDS})") from None
        if a.shape != (128, 128, 2):
            raise DataError(f"{p}: expected shape (128, 128, 2) [range, azimuth, real/imag], got {a.shape}")
        return np.ascontiguousarray(a.astype(np.float32).transpose(2, 0, 1))

    def radar_batch(self, idx) -> np.ndarray:
        return np.stack([self.radar(int(i)) for i in idx])

    def image(self, i: int, min_side: int = 0) -> np.ndarray:
        """uint8 HxWx3 RGB. With `min_side`, libjpeg decodes at 1/2, 1/4 or 1/8 scale when the result still
        has at least `min_side` pixels on its short side (decode cost drops ~4-16x)."""
        import cv2
        s = self.sequences[self.seq[i]]
        p = s.image_path(self.frame[i])
        flag = cv2.IMREAD_COLOR
        if min_side:
            h_w = getattr(self, "_img_hw", None)
            if h_w is None:
                im0 = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if im0 is None:
                    raise DataError(f"{p}: cannot decode JPEG")
                h_w = self._img_hw = im0.shape[:2]
            short = min(h_w)
            for f, fl in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                          (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if short // f >= min_side:
                    flag = fl
                    break
        im = cv2.imread(str(p), flag)
        if im is None:
            raise DataError(f"{p}: missing or not a decodable JPEG")
        return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)

    def images(self, idx, min_side: int = 0) -> np.ndarray:
        ims = [self.image(int(i), min_side) for i in idx]
        h = min(im.shape[0] for im in ims)
        w = min(im.shape[1] for im in ims)
        return np.stack([im[:h, :w] for im in ims])

    def background(self, si: int, min_side: int = 0, max_frames: int = 64) -> np.ndarray:
        """Camera background of sequence `si` (uint8 H,W,3): the per-pixel median of its frames (up to
        `max_frames`, evenly spaced; the rig camera is fixed), for teachers that describe the foreground.
        The camera-side twin of `static_clutter`; label-free."""
        from learner.teachers import median_background
        if (si, min_side) not in self._background:
            idx = np.flatnonzero(self.seq == si)
            if len(idx) > max_frames:
                idx = idx[np.linspace(0, len(idx) - 1, max_frames).round().astype(int)]
            self._background[(si, min_side)] = median_background(self.images(idx, min_side), max_frames)
        return self._background[(si, min_side)]

    def backgrounds(self, idx, min_side: int = 0) -> np.ndarray:
        """One background per frame of `idx` (N,H,W,3), cropped like `images(idx, min_side)`."""
        bgs = [self.background(int(self.seq[i]), min_side) for i in idx]
        h = min(b.shape[0] for b in bgs)
        w = min(b.shape[1] for b in bgs)
        return np.stack([b[:h, :w] for b in bgs])


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------

def _dominant(labels: np.ndarray) -> int:
    """Most frequent object class of a sequence (empty only if it has no single-class object frames);
    sequences are grouped by it so every class has test sequences."""
    obj = labels[labels >= 1]
    if len(obj):
        return int(np.bincount(obj, minlength=4).argmax())
    return 0 if (labels == 0).any() else MIXED


def split_frames(frames: CRUWFrames, mode: str = "sequence", test_fraction: float = 0.2, seed: int = 0,
                 val_fraction: float = 0.0) -> dict[str, np.ndarray]:
    """Frame indices for 'train' (pretraining + labelled train pool), 'val' (label-free held-out tail of
    each training sequence) and 'test'. `sequence`: whole sequences go to test, stratified by dominant class
    (no neighbouring-frame leakage). `random`: the paper's frame-level random split."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    if mode == "random":
        perm = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        test = np.sort(perm[:n_test])
        train = np.sort(perm[n_test:])
        nv = int(round(val_fraction * len(train)))
        val = np.sort(rng.choice(train, nv, replace=False)) if nv else np.array([], np.int64)
        return {"train": np.setdiff1d(train, val), "val": val, "test": test}
    if mode != "sequence":
        raise ValueError(f"split mode must be 'sequence' or 'random', got {mode!r}")
    nseq = len(frames.sequences)
    if nseq < 2:
        raise DataError("a sequence-level split needs at least 2 sequences; use split = 'random'")
    groups: dict[int, list[int]] = {}
    for s in range(nseq):
        groups.setdefault(_dominant(frames.label[frames.seq == s]), []).append(s)
    test_seqs = []
    for g in sorted(groups):
        members = list(rng.permutation(groups[g]))
        # at least one test sequence per class that has two or more sequences
        k = max(int(round(test_fraction * len(members))), 1 if len(members) >= 2 else 0)
        test_seqs += members[:k]
    if not test_seqs:
        test_seqs = [int(rng.integers(nseq))]
    is_test = np.isin(frames.seq, test_seqs)
    test = np.flatnonzero(is_test)
    train, val = [], []
    for s in range(nseq):
        if s in test_seqs:
            continue
        idx = np.flatnonzero(frames.seq == s)
        idx = idx[np.argsort(frames.frame[idx], kind="stable")]
        nv = int(round(val_fraction * len(idx)))
        train.append(idx[:len(idx) - nv])
        val.append(idx[len(idx) - nv:])
    return {"train": np.concatenate(train), "val": np.concatenate(val).astype(np.int64), "test": test}


def balanced(indices: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Labelled (label >= 0) subset of `indices` with every present class downsampled to the rarest one."""
    rng = np.random.default_rng(seed)
    idx = indices[labels[indices] >= 0]
    present = [c for c in range(len(CLASSES)) if (labels[idx] == c).any()]
    if not present:
        return idx
    m = min(int((labels[idx] == c).sum()) for c in present)
    keep = [rng.choice(idx[labels[idx] == c], m, replace=False) for c in present]
    return np.sort(np.concatenate(keep))


def label_subset(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified `fraction` of labelled `indices`, at least one frame per class."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels[indices]):
        pool = indices[labels[indices] == c]
        k = max(1, int(round(fraction * len(pool))))
        out.append(rng.choice(pool, k, replace=False))
    return np.sort(np.concatenate(out))

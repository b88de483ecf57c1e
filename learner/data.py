"""CRUW (ROD2021) training data — the real layout and `radvis synth` output alike — and the paper's 4-class
task as the learner uses it: frames as flat arrays, splits, class balancing.

The layout, the annotation reader (strict here: a bad line stops the run with file and line) and the
4-class label rule live in `radvis/cruw.py`. Class ids index `cruw.LABELS` (0 empty, 1 pedestrian,
2 cyclist, 3 car); `cruw.NO_LABEL` (-1) marks mixed frames, which are excluded, and UNLABELLED (-2) frames
of a sequence that has no annotation file (usable for pretraining only). Timestamps are frame_id / fps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radvis import cruw
from radvis.cruw import LABELS, NO_LABEL

UNLABELLED = -2


class DataError(ValueError):
    """The data directory does not look like a CRUW/ROD2021 tree (message says what is missing)."""


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Frames per class name, plus "mixed" (NO_LABEL)."""
    out = {c: int((labels == i).sum()) for i, c in enumerate(LABELS)}
    out[cruw.MIXED] = int((labels == NO_LABEL).sum())
    return out


@dataclass
class Sequence:
    name: str
    split: str
    dir: Path
    frame_ids: np.ndarray
    annotations: cruw.Annotations = field(default_factory=cruw.Annotations)
    has_images: bool = True
    has_annotations: bool = False

    def image_path(self, fid: int) -> Path:
        return cruw.image_path(self.dir, fid)

    def radar_path(self, fid: int, chirp: int = 0) -> Path:
        return cruw.radar_path(self.dir, fid, chirp)


def chirp_tuple(chirp) -> tuple[int, ...]:
    """The chirps a frame's radar input stacks: an int (one chirp) or a sequence of them, as a tuple."""
    t = (int(chirp),) if isinstance(chirp, (int, np.integer)) else tuple(int(c) for c in chirp)
    if not t or len(set(t)) != len(t) or min(t) < 0:
        raise ValueError(f"chirps must be distinct chirp (loop) indices >= 0, got {chirp!r}")
    return t


def learner_chirps(lc) -> tuple[int, ...]:
    """The chirps the learner config asks for: `learner.chirps` when set, else the one `learner.chirp`."""
    return chirp_tuple(lc.chirps or lc.chirp)


def discover(root: str | Path, splits=("train",)) -> list[Sequence]:
    """All sequences of `splits` under a CRUW root, sorted by (split, name). Annotations are read strictly:
    a malformed line raises DataError naming file and line."""
    root = Path(root)
    if not (root / "sequences").is_dir():
        raise DataError(f"{root}: not a CRUW/ROD2021 tree (no sequences/ folder; expected "
                        f"sequences/<split>/<SEQ>/{{{cruw.IMAGE_DIR},{cruw.RADAR_DIR}}} and "
                        f"annotations/<split>/<SEQ>.txt)")
    seqs = []
    for split in splits:
        d = root / "sequences" / split
        if not d.is_dir():
            continue
        for sd in sorted(p for p in d.iterdir() if p.is_dir()):
            has_images = (sd / cruw.IMAGE_DIR).is_dir()
            if not has_images and not (sd / cruw.RADAR_DIR).is_dir():
                raise DataError(f"{sd}: has neither {cruw.IMAGE_DIR}/ nor {cruw.RADAR_DIR}/")
            anno = cruw.annotation_path(root, split, sd.name)
            try:
                ann = cruw.read_annotations(anno) if anno.is_file() else cruw.Annotations()
            except cruw.AnnotationError as e:
                raise DataError(str(e)) from None
            seqs.append(Sequence(sd.name, split, sd, np.array(cruw.frame_ids(sd), dtype=np.int64), ann,
                                 has_images, anno.is_file()))
    if not seqs:
        raise DataError(f"{root}: no sequences under sequences/{{{','.join(splits)}}}/")
    return seqs


class CRUWFrames:
    """Flat, indexable view over every frame of some sequences: arrays `seq` (sequence index), `frame`,
    `t_ns`, `label`, plus `radar(i)` and `image(i)` readers."""

    def __init__(self, root: str | Path, splits=("train",), chirp: int | tuple = 0, sequences: list[Sequence] | None = None,
                 clutter_removal: bool = False):
        self.root = Path(root)
        self.sequences = sequences if sequences is not None else discover(root, splits)
        self.chirps = chirp_tuple(chirp)
        self.clutter_removal = clutter_removal
        self._static: dict[int, np.ndarray] = {}
        self._background: dict[tuple[int, int], np.ndarray] = {}
        self.fps = cruw.read_fps(self.root)
        self.seq = np.concatenate([np.full(len(s.frame_ids), i, np.int64) for i, s in enumerate(self.sequences)])
        self.frame = np.concatenate([s.frame_ids for s in self.sequences])
        self.t_ns = np.round(self.frame * (1e9 / self.fps)).astype(np.int64)
        self.label = np.concatenate([s.annotations.label_ids(s.frame_ids) if s.has_annotations
                                     else np.full(len(s.frame_ids), UNLABELLED, np.int64) for s in self.sequences])

    def __len__(self) -> int:
        return len(self.frame)

    def key(self, i: int) -> str:
        return f"{self.sequences[self.seq[i]].split}/{self.sequences[self.seq[i]].name}/{int(self.frame[i])}"

    @property
    def channels(self) -> int:
        """Input channels per frame: real and imaginary part of each chirp."""
        return 2 * len(self.chirps)

    def static_clutter(self, si: int) -> np.ndarray:
        """Mean complex RA map of sequence `si` (2C,128,128): what a fixed radar sees of the static scene.
        Subtracting it (a standard radar clutter filter) removes walls, poles and parked objects, which
        otherwise make every sequence's features a fingerprint of its location."""
        if si not in self._static:
            idx = np.flatnonzero(self.seq == si)
            acc = np.zeros((self.channels, 128, 128), np.float64)
            for i in idx:
                acc += self._raw_radar(int(i))
            self._static[si] = (acc / max(1, len(idx))).astype(np.float32)
        return self._static[si]

    def radar(self, i: int) -> np.ndarray:
        """(2C, 128, 128) float32 (channels first for the encoders: re, im of each chirp in turn); static clutter
        removed if enabled."""
        x = self._raw_radar(i)
        if self.clutter_removal:
            x = x - self.static_clutter(int(self.seq[i]))
        return x

    def _raw_radar(self, i: int) -> np.ndarray:
        s = self.sequences[self.seq[i]]
        maps = []
        for c in self.chirps:
            p = s.radar_path(self.frame[i], c)
            try:
                a = np.load(p, allow_pickle=False)
            except FileNotFoundError:
                raise DataError(f"{p}: radar file missing (frame {int(self.frame[i])} of {s.name}, chirp {c}; "
                                f"ROD2021 ships chirps {cruw.CHIRP_IDS}; this set's: {cruw.read_chirp_ids(self.root)})") from None
            if a.shape != cruw.RA_SHAPE:
                raise DataError(f"{p}: expected shape {cruw.RA_SHAPE} [range, azimuth, real/imag], got {a.shape}")
            maps.append(a.astype(np.float32).transpose(2, 0, 1))
        return np.ascontiguousarray(maps[0] if len(maps) == 1 else np.concatenate(maps))

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
    return 0 if (labels == 0).any() else NO_LABEL


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


def write_split(dest: str | Path, frames: CRUWFrames, split: dict[str, np.ndarray], mode: str, seed: int,
                data=None) -> None:
    """RUN/split.json: which frames of the data directory were pretraining ("train"), label-free held-out
    ("val") and test, by index into `CRUWFrames(root, ("train",))`. `radvis eval` reads it to evaluate on
    frames the run never trained on; offline and online runs write it the same way (atomically). `data`:
    what the "data" field records (default: the frames' root, resolved)."""
    from learner.checkpoint import atomic_write
    rec = {"data": str(frames.root.resolve()) if data is None else data, "n_frames": len(frames), "mode": mode,
           "seed": seed,
           "test_sequences": sorted({frames.sequences[s].name for s in np.unique(frames.seq[split["test"]])}),
           **{k: np.asarray(v).tolist() for k, v in split.items()}}
    atomic_write(Path(dest), lambda f: f.write(json.dumps(rec).encode()))


def balanced(indices: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Labelled (label >= 0) subset of `indices` with every present class downsampled to the rarest one."""
    rng = np.random.default_rng(seed)
    idx = indices[labels[indices] >= 0]
    present = [c for c in range(len(LABELS)) if (labels[idx] == c).any()]
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

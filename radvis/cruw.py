"""CRUW (ROD2021): the on-disk layout, the annotation format and the paper's 4-class frame label, in one
place. The learner reads training data with it, capture replays a CRUW sequence as a live rig with it, sim
writes `radvis synth` datasets and the emulated scene's ground truth with it, bench labels its streams with
it. Reference: ../shared/reference/cruw.md (§1 layout, §3.2 label rule, §6 loader checklist).

Layout (`root` is the dataset root):
    sequences/<split>/<SEQ>/IMAGES_0/%010d.jpg          camera frames (absent in the test split)
    sequences/<split>/<SEQ>/RADAR_RA_H/%06d_%04d.npy    (128, 128, 2) float32 real/imag, chirps 0/64/128/192
    annotations/<split>/<SEQ>.txt                        one object per line: `frame range_m azimuth_rad class`
    sensor_config*.json                                  cruw-devkit config; radar_cfg.frame_rate (30 fps)

Annotations have one reader with two modes, because the two kinds of caller need different things:
- strict (training data, `learner/data.py`): the first bad line raises `AnnotationError` naming file, line
  and what was expected. A wrong label is worse than no run.
- lenient (replaying a sequence onto a live rig, `capture/replay.py`): a bad line is skipped and counted by
  reason, and the frame it belonged to is marked damaged. A damaged frame has no label (`label()` is None),
  not a guessed one: its other objects may be missing.

The 4-class task (Alloulah et al. §V-A; rule in cruw.md §3.2): a frame with no object is `empty`, a frame
whose objects are all of one class is that class, a frame with two or more classes is `mixed` and is not
part of the task (label index NO_LABEL). Frames without an annotation line are empty.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

# ---- vocabulary -----------------------------------------------------------------------------

OBJECT_CLASSES = ("pedestrian", "cyclist", "car")   # cruw-devkit object_config.json "classes"
LABELS = ("empty",) + OBJECT_CLASSES                 # the paper's 4 classes; a label's index is its class id
MIXED = "mixed"                                      # a frame with more than one object class
SCENE_KINDS = LABELS + (MIXED,)                      # what a simulated scene (episode, sequence) is drawn as
NO_LABEL = -1                                        # class id of a mixed or unknown frame (not in the task)

# ---- layout ---------------------------------------------------------------------------------

FPS = 30.0                                # ROD2021 radar and camera frame rate (sensor_config radar_cfg.frame_rate)
CHIRP_IDS = (0, 64, 128, 192)             # the 4 chirps ROD2021 ships per frame
RA_SHAPE = (128, 128, 2)                  # range bins, azimuth bins, real/imag
IMAGE_DIR, RADAR_DIR = "IMAGES_0", "RADAR_RA_H"
IMAGE_NAME = re.compile(r"^(\d+)\.jpg$", re.IGNORECASE)
RADAR_NAME = re.compile(r"^(\d+)_(\d+)\.npy$")


def sequence_dir(root: str | Path, split: str, seq: str) -> Path:
    return Path(root) / "sequences" / split / seq


def annotation_path(root: str | Path, split: str, seq: str) -> Path:
    return Path(root) / "annotations" / split / f"{seq}.txt"


def image_path(seq_dir: str | Path, frame: int) -> Path:
    return Path(seq_dir) / IMAGE_DIR / f"{int(frame):010d}.jpg"


def radar_path(seq_dir: str | Path, frame: int, chirp: int = 0) -> Path:
    return Path(seq_dir) / RADAR_DIR / f"{int(frame):06d}_{int(chirp):04d}.npy"


def frame_ids(seq_dir: str | Path) -> list[int]:
    """Frame ids of a sequence, sorted: from the JPEG names when IMAGES_0 holds any (train split), else from
    the radar names (test split; a frame counts once whatever its chirps). [] when it has neither."""
    d = Path(seq_dir)

    def ids(folder: str, pattern: re.Pattern) -> list[int]:
        if not (d / folder).is_dir():
            return []
        return sorted({int(m.group(1)) for m in map(pattern.match, (p.name for p in (d / folder).iterdir())) if m})
    return ids(IMAGE_DIR, IMAGE_NAME) or ids(RADAR_DIR, RADAR_NAME)


def read_fps(root: str | Path, default: float = FPS) -> float:
    """radar_cfg.frame_rate of the first sensor config JSON at the root (or one folder down), else `default`."""
    root = Path(root)
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/sensor_config*.json")):
        try:
            return float(json.loads(p.read_text())["radar_cfg"]["frame_rate"])
        except (KeyError, ValueError, TypeError, OSError):
            continue
    return default


def read_chirp_ids(root: str | Path) -> list[int] | None:
    """radar_cfg.chirp_ids of the sensor config JSON at the root (or one folder down): which chirp files a
    set ships per frame (ROD2021: 0, 64, 128, 192). None when no config names them."""
    root = Path(root)
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/sensor_config*.json")):
        try:
            return [int(c) for c in json.loads(p.read_text())["radar_cfg"]["chirp_ids"]]
        except (KeyError, ValueError, TypeError, OSError):
            continue
    return None


# ---- annotations ----------------------------------------------------------------------------

class AnnotationError(ValueError):
    """A malformed annotation line in strict mode; the message names file and line."""


class Obj(NamedTuple):
    """One annotated object: range (m) and azimuth (rad) from the radar, and its class."""
    range_m: float
    azimuth_rad: float
    cls: str

    def truth(self) -> dict:
        """The object as emulated devices describe it in their `truth` meta."""
        return {"cls": self.cls, "range_m": self.range_m, "azimuth_rad": self.azimuth_rad}


def format_line(frame: int, obj: Obj | tuple) -> str:
    """One annotation line as ROD2021 writes it (4 decimals), without the newline."""
    r, a, cls = obj
    return f"{int(frame)} {r:.4f} {a:.4f} {cls}"


@dataclass
class Annotations:
    """Objects per frame id. Frames with no entry are empty. `skipped` counts lines a lenient read dropped,
    by reason; `damaged` holds the frames those lines belonged to (when their frame id was readable)."""
    path: Path | None = None
    objects: dict[int, list[Obj]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    damaged: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        """Objects in the file (lines read)."""
        return sum(len(v) for v in self.objects.values())

    def frame(self, frame: int) -> list[Obj]:
        return self.objects.get(int(frame), [])

    def label(self, frame: int) -> str | None:
        """`frame_label` of the frame's objects; None for a damaged frame."""
        if int(frame) in self.damaged:
            return None
        return frame_label(o.cls for o in self.frame(frame))

    def label_ids(self, frames: Iterable[int]) -> np.ndarray:
        """Class id (index into LABELS) per frame; NO_LABEL for mixed and damaged frames."""
        return np.array([label_index(self.label(f)) for f in frames], dtype=np.int64)


def _parse_line(line: str) -> tuple[int, Obj]:
    """(frame, object) or ValueError(reason, detail)."""
    parts = line.split()
    if len(parts) != 4:
        raise ValueError("fields", f"expected 4 fields 'frame_id range_m azimuth_rad class', got {len(parts)}")
    try:
        fid, r, a = int(parts[0]), float(parts[1]), float(parts[2])
    except ValueError:
        raise ValueError("number", "frame_id must be an integer, range_m and azimuth_rad numbers") from None
    if fid < 0 or not (math.isfinite(r) and math.isfinite(a)):
        raise ValueError("number", "frame_id must be >= 0, range_m and azimuth_rad finite")
    if parts[3] not in OBJECT_CLASSES:
        raise ValueError("class", f"class must be one of {'|'.join(OBJECT_CLASSES)}, got {parts[3]!r}")
    return fid, Obj(r, a, parts[3])


def read_annotations(path: str | Path, *, strict: bool = True) -> Annotations:
    """Read a ROD2021 annotation file (`frame_id range_m azimuth_rad class` per line, blank lines ignored).
    strict: raise AnnotationError at the first bad line. Lenient: skip it, count it in `skipped` by reason
    (encoding, fields, number, class) and mark its frame damaged."""
    path = Path(path)
    ann = Annotations(path)
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        line = raw.decode("ascii", errors="replace")
        if not line.strip():
            continue
        try:
            if "\ufffd" in line:
                raise ValueError("encoding", "not ASCII text")
            fid, obj = _parse_line(line)
        except ValueError as e:
            reason, detail = e.args
            if strict:
                raise AnnotationError(f"{path}:{n}: {detail}: {line[:120]!r}") from None
            ann.skipped[reason] += 1
            head = line.split()[:1]
            if head and head[0].isdigit():
                ann.damaged.add(int(head[0]))
            continue
        ann.objects.setdefault(fid, []).append(obj)
    return ann


# ---- the 4-class label ----------------------------------------------------------------------

def frame_label(classes: Iterable[str]) -> str:
    """The rule: no object -> "empty", every object of one class -> that class, else "mixed"."""
    kinds = set(classes)
    if not kinds:
        return "empty"
    return kinds.pop() if len(kinds) == 1 else MIXED


def label_index(label: str | None) -> int:
    """Class id of a frame label (index into LABELS); NO_LABEL for "mixed", None or anything unknown."""
    return LABELS.index(label) if label in LABELS else NO_LABEL

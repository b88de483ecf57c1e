"""`radvis export SESSION --out DIR`: a recorded session's radar-camera pairs as a CRUW (ROD2021) dataset, the
layout `radvis synth` writes and `radvis learn offline` / `radvis eval` read (../shared/reference/cruw.md §1):

    DIR/sequences/train/<SEQ>/RADAR_RA_H/%06d_0000.npy   the pair's radar `ra` array, exactly as recorded
    DIR/sequences/train/<SEQ>/IMAGES_0/%010d.jpg         the pair's camera frame (JPEG bytes as recorded, or
                                                         raw RGB encoded at --jpeg-quality)
    DIR/annotations/train/<SEQ>.txt                      `frame range_m azimuth_rad class` per object, only
                                                         when the emulator's ground truth covers the sequence
    DIR/sensor_config_rod2021.json, calib/<date>/cam_0.yaml, export_summary.json

One exported frame per recorded pair (in the --start/--end window, every --stride-th): the frame id is the
radar frame number counted from the sequence's first frame, so frame_id / frame_rate is device time and
gaps (unpaired frames, stride) stay gaps. A sequence ends at a radar restart and after --seq-seconds of
radar time, so a session gives several sequences and the learner's sequence-level split works. Another
session exported into the same DIR adds sequences after the ones already there (several sessions, one
dataset). The frame's range-azimuth map `ra` is written as its chirp (meta ra_chirp; the Doppler-integrated frame
map, ra_chirp = -1, as chirp 0000), and with radar.ra_chirps each chirp's map as its own file, so
`learner.chirps` set to the rig's learner.online_chirps reads an exported session as the online learner reads the
live stream.

Labels: a sequence gets an annotation file only when every one of its frames has ground truth (the `truth`
topic, or meta["truth"] from older emulators); a frame without truth would otherwise read as "empty".
Sessions from real devices have none: the export is for label-free pretraining.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capture.record import scan, segments, unframe
from radvis import chirps as radar_chirps
from radvis import cruw
from radvis.cruw import OBJECT_CLASSES  # cruw.md §1: what an annotation line may name
from radvis.wire import WireError, decode

log = logging.getLogger("radvis.export")


class ExportError(ValueError):
    """A session or an output directory that cannot be exported (the message says why)."""


@dataclass
class _Seq:
    name: str
    first_fn: int
    epoch: int
    frames: list = field(default_factory=list)  # (frame id, radar source, radar frame number, truth from meta or None)


def _seq_names(root: Path, prefix: str) -> int:
    """Next free index for sequences named PREFIX#### already in the dataset."""
    d = root / "sequences" / "train"
    used = [int(m.group(1)) for p in d.glob(f"{prefix}*") if (m := re.fullmatch(re.escape(prefix) + r"(\d{4})", p.name))]
    return max(used) + 1 if used else 0


def _cam_yaml(width: int, height: int, k: dict) -> str:
    fx, fy, cx, cy = (float(k[n]) for n in ("fx", "fy", "cx", "cy"))

    def mat(name, rows, cols, data):
        return f"{name}:\n  rows: {rows}\n  cols: {cols}\n  data: [{', '.join(f'{v:.6f}' for v in data)}]\n"
    return (f"image_width: {width}\nimage_height: {height}\ncamera_name: cam_0\n"
            + mat("camera_matrix", 3, 3, [fx, 0, cx, 0, fy, cy, 0, 0, 1]) + "distortion_model: plumb_bob\n"
            + mat("distortion_coefficients", 1, 5, [0.0] * 5) + mat("rectification_matrix", 3, 3, [1, 0, 0, 0, 1, 0, 0, 0, 1])
            + mat("projection_matrix", 3, 4, [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0]))


def _annotation_lines(fid: int, truth: dict) -> list[str]:
    lines = []
    for o in truth.get("objects") or []:
        cls = o.get("cls")
        if cls not in OBJECT_CLASSES:
            raise ValueError(f"object class {cls!r} is not one of {OBJECT_CLASSES}")
        lines.append(cruw.format_line(fid, (float(o["range_m"]), float(o["azimuth_rad"]), cls)))
    return lines


def _chirp_maps(ra: np.ndarray, rmeta: dict, stack) -> list[tuple[int, np.ndarray]]:
    """(chirp id, (128, 128, 2) map) to write for one frame: `ra` as its chirp (0 for the Doppler-integrated
    map), then each chirp of a well-formed radar.ra_chirps stack (a malformed one is left out, with a warning)."""
    rc = rmeta.get("ra_chirp")
    out = [(rc if isinstance(rc, int) and not isinstance(rc, bool) and rc >= 0 else 0, ra)]
    ids = rmeta.get("ra_chirps")
    if stack is not None and isinstance(ids, list):
        try:
            out += [(c, m) for c, m in radar_chirps.split(stack, radar_chirps.check(stack, ids)) if c != out[0][0]]
        except radar_chirps.ChirpStackError as e:
            log.warning("%s; only the frame's ra map written", e)
    return out


def export_session(session: str | Path, out: str | Path, *, start_s: float = 0.0, end_s: float = 0.0, stride: int = 1,
                   seq_seconds: float = 60.0, name: str = "RIG", jpeg_quality: int = 95, progress=None) -> dict:
    """Write the session's pairs as a CRUW dataset; returns (and writes) the export summary."""
    if stride < 1:
        raise ExportError(f"--stride must be >= 1, got {stride}")
    if not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise ExportError(f"--name must be letters and digits (a CRUW sequence code), got {name!r}")
    import cv2
    files = segments(session)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts = {"pairs_recorded": 0, "pairs_in_window": 0, "exported": 0, "skipped_bad": 0, "truth_messages": 0}
    truth_topic: dict[tuple, dict] = {}  # (radar source, frame number) -> truth meta from the `truth` topic
    seqs: list[_Seq] = []
    chirp_ids: set[int] = set()
    cur: _Seq | None = None
    first_log = None
    period_ms = cam_size = intrinsics = date = None
    in_window = 0
    for path in files:
        for ch, m in scan(path):
            first_log = m.log_time if first_log is None else first_log
            rel = (m.log_time - first_log) / 1e9
            try:
                msg = decode(unframe(m.data))
            except (ValueError, WireError) as e:
                counts["skipped_bad"] += 1
                log.warning("%s: skipped an unreadable message: %s", path.name, e)
                continue
            if msg.kind == "truth":
                counts["truth_messages"] += 1
                if msg.meta.get("stream", "radar") == "radar" and msg.meta.get("frame_number") is not None:
                    truth_topic[(msg.source, int(msg.meta["frame_number"]))] = msg.meta
                continue
            if msg.kind != "pair":
                continue
            counts["pairs_recorded"] += 1
            if rel < start_s or (end_s and rel >= end_s):
                continue
            counts["pairs_in_window"] += 1
            in_window += 1
            if (in_window - 1) % stride:
                continue
            r, c = msg.meta.get("radar") or {}, msg.meta.get("camera") or {}
            rmeta, cmeta = r.get("meta") or {}, c.get("meta") or {}
            ra, img = msg.buffers.get("radar.ra"), msg.buffers.get("camera.image")
            fn = rmeta.get("frame_number")
            if ra is None or img is None or ra.shape != (128, 128, 2) or fn is None:
                counts["skipped_bad"] += 1
                log.warning("pair %d: no (128, 128, 2) radar.ra, camera.image or radar frame_number; skipped", msg.seq)
                continue
            fn = int(fn)
            if period_ms is None:
                period_ms = float(rmeta.get("frame_period_ms") or 100.0)
                date = time.strftime("%Y_%m_%d", time.localtime(int(r.get("t", {}).get("wall_ns", 0)) / 1e9))
                seq_index = _seq_names(root, f"{date}_{name}")
            # a new sequence at a radar restart (new epoch, frame numbers going back) or after seq_seconds
            if (cur is None or r.get("epoch") != cur.epoch or fn <= cur.first_fn + (cur.frames[-1][0] if cur.frames else -1)
                    or (fn - cur.first_fn) * period_ms / 1000 >= seq_seconds):
                cur = _Seq(f"{date}_{name}{seq_index + len(seqs):04d}", fn, r.get("epoch"))
                if (root / "sequences" / "train" / cur.name).exists():
                    raise ExportError(f"{root / 'sequences' / 'train' / cur.name} already exists")
                seqs.append(cur)
            fid = fn - cur.first_fn
            sd = root / "sequences" / "train" / cur.name
            (sd / "RADAR_RA_H").mkdir(parents=True, exist_ok=True)
            (sd / "IMAGES_0").mkdir(exist_ok=True)
            for c, m in _chirp_maps(ra, rmeta, msg.buffers.get("radar.ra_chirps")):
                np.save(sd / "RADAR_RA_H" / f"{fid:06d}_{c:04d}.npy", m)  # the recorded bytes, dtype and shape
                chirp_ids.add(c)
            if cmeta.get("encoding") == "jpeg":
                jpg = img.tobytes()
            else:
                ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                if not ok:
                    raise ExportError(f"JPEG encoding failed for a camera frame of shape {img.shape}")
                jpg = enc.tobytes()
            (sd / "IMAGES_0" / f"{fid:010d}.jpg").write_bytes(jpg)
            cam_size = cam_size or (int(cmeta.get("width") or img.shape[1]), int(cmeta.get("height") or img.shape[0]))
            intrinsics = intrinsics or cmeta.get("intrinsics")
            cur.frames.append((fid, r.get("source"), fn, rmeta.get("truth")))
            counts["exported"] += 1
            if progress is not None:
                progress.update(1)
    if not seqs:
        raise ExportError(f"{session}: no radar-camera pairs to export (pairs recorded: {counts['pairs_recorded']}, "
                          f"in the window: {counts['pairs_in_window']}); was the `pairs` endpoint recorded?")

    # labels: only for sequences whose every frame has ground truth
    ann_dir = root / "annotations" / "train"
    seq_info, with_truth, without_truth = [], 0, 0
    for s in seqs:
        truths = [t if isinstance(t, dict) else truth_topic.get((src, fn)) for _, src, fn, t in s.frames]
        have = sum(t is not None for t in truths)
        with_truth += have
        without_truth += len(truths) - have
        annotated = have == len(truths)
        if annotated:
            try:
                lines = [ln for (fid, *_), t in zip(s.frames, truths) for ln in _annotation_lines(fid, t)]
            except (ValueError, KeyError, TypeError) as e:
                log.warning("%s: ground truth not usable as CRUW annotations (%s); sequence left unlabelled", s.name, e)
                annotated = False
        if annotated:
            ann_dir.mkdir(parents=True, exist_ok=True)
            (ann_dir / f"{s.name}.txt").write_text("".join(ln + "\n" for ln in lines))
        elif have:
            log.warning("%s: %d of %d frames have ground truth; no annotation file (a frame without one would read "
                        "as empty)", s.name, have, len(truths))
        seq_info.append({"name": s.name, "frames": len(s.frames), "first_radar_frame": s.first_fn,
                         "annotated": annotated, "frames_with_truth": have})

    fps = 1000.0 / period_ms
    cfg_path = root / "sensor_config_rod2021.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        old_fps = float(old.get("radar_cfg", {}).get("frame_rate", fps))
        if abs(old_fps - fps) > 1e-6:
            raise ExportError(f"{cfg_path}: frame_rate {old_fps} differs from this session's {fps:g} (radar frame "
                              f"period {period_ms} ms); export into another directory and pass both to --data")
    else:
        cfg_path.write_text(json.dumps({
            "dataset": "radvis export", "camera_cfg": {"image_width": cam_size[0], "image_height": cam_size[1],
                                                       "frame_rate": fps, "image_folder": "IMAGES_0", "ext": "jpg"},
            "radar_cfg": {"ramap_rsize": 128, "ramap_asize": 128, "frame_rate": fps, "chirp_ids": sorted(chirp_ids),
                          "data_type": "ROD2021", "chirp_folder": "RADAR_RA_H", "ext": "npy"}}, indent=2))
    if intrinsics:
        cal = root / "calib" / date
        cal.mkdir(parents=True, exist_ok=True)
        (cal / "cam_0.yaml").write_text(_cam_yaml(cam_size[0], cam_size[1], intrinsics))
    summary = {"session": str(Path(session).resolve()), "segments": [p.name for p in files], "out": str(root.resolve()),
               "start_s": start_s, "end_s": end_s, "stride": stride, "seq_seconds": seq_seconds, "frame_rate": fps,
               **counts, "sequences": seq_info, "frames_with_truth": with_truth, "frames_without_truth": without_truth,
               "annotated_sequences": sum(s["annotated"] for s in seq_info), "jpeg_quality": jpeg_quality,
               "elapsed_s": round(time.perf_counter() - t0, 2)}
    sp = root / "export_summary.json"
    prev = json.loads(sp.read_text()) if sp.exists() else None
    runs = (prev.get("exports", [prev]) if isinstance(prev, dict) else []) + [summary]
    sp.write_text(json.dumps({"exports": runs}, indent=1))
    return summary


def export_main(args) -> int:
    """Handler of `radvis export`."""
    import sys

    from radvis.log import progress
    bar = progress(unit="pair", desc="export")
    try:
        s = export_session(args.session, args.out, start_s=args.start, end_s=args.end, stride=args.stride,
                           seq_seconds=args.seq_seconds, name=args.name, jpeg_quality=args.jpeg_quality, progress=bar)
    except (ExportError, FileNotFoundError, ValueError) as e:
        print(f"radvis export: {e}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    labelled = (f"{s['annotated_sequences']} of {len(s['sequences'])} sequences annotated from ground truth"
                if s["frames_with_truth"] else "no ground truth in the session: no annotations (pretraining only)")
    print(f"radvis export: {s['exported']} pairs of {s['pairs_in_window']} in the window (stride {s['stride']}) "
          f"-> {len(s['sequences'])} sequence(s) in {s['out']}; {labelled}", file=sys.stderr)
    print(json.dumps({k: v for k, v in s.items() if k != "segments"}))
    return 0

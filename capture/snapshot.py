"""A picture of one moment of a recorded session, made only from its Foxglove channels (decoded with the
schemas stored in the file, as Foxglove would): the camera frame with its ground-truth columns and pair label,
the range-azimuth heatmap with its truth circles, a bird's-eye view of the radar points (UART mode) and truth
boxes, and the sync skew of every pair in the session.

    python -m capture.snapshot SESSION --out docs/img/foxglove-session.png [--at SECONDS]

Without --at, the moment is the first radar frame whose ground truth holds the most objects (so there is
something to see); sessions without truth use the middle of the session.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from capture.foxglove import (CAMERA, CAMERA_PAIR, CAMERA_TRUTH, HEATMAP, HEATMAP_TRUTH, PAIRS, POINTS, SCENE,
                              decode)
from capture.record import ScanResult, scan, segments

SMALL = (CAMERA_PAIR, CAMERA_TRUTH, HEATMAP_TRUTH, PAIRS, SCENE)


def _messages(session, topics):
    """(topic, decoded message, log_time) of the session's Foxglove channels in `topics`, in file order."""
    for path in segments(session):
        res = ScanResult()
        for ch, m in scan(path, res, every_channel=True):
            if ch.topic in topics:
                sc = res.schemas[ch.schema_id]
                yield ch.topic, decode(sc.name, sc.encoding, sc.data, ch.message_encoding, m.data), m.log_time


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def snapshot(session: str | Path, out: str | Path, at_s: float | None = None) -> dict:
    import cv2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small: dict[str, list] = {t: [] for t in SMALL}
    first_log = None
    for topic, msg, lt in _messages(session, set(SMALL) | {HEATMAP}):
        first_log = lt if first_log is None else first_log
        if topic in small:
            small[topic].append((msg, lt))
    if first_log is None:
        raise ValueError(f"{session}: no Foxglove channels (recorded with record.foxglove = false?)")
    # the moment: a radar frame stamp
    scenes = [(s, lt) for s, lt in small[SCENE] if s.entities]
    if at_s is None and scenes:
        best = max(len(s.entities) for s, _ in scenes)
        t_radar = _ns(next(s for s, _ in scenes if len(s.entities) == best).entities[0].timestamp)
    else:
        ann = small[HEATMAP_TRUTH] or small[PAIRS]
        want = first_log + int((at_s if at_s is not None else 0) * 1e9)
        t_radar = None if not ann else min(
            (_ns(a.texts[0].timestamp) if hasattr(a, "texts") else a["radar"]["t_wall_ns"] for a, _ in ann),
            key=lambda t: abs(t - want))
    heat = cam = pts = None
    best_cam = None
    link = min((p for p, _ in small[PAIRS]), key=lambda p: abs(p["radar"]["t_wall_ns"] - (t_radar or 0)), default=None)
    t_cam = link["camera"]["t_wall_ns"] if link else t_radar
    for topic, msg, _ in _messages(session, {HEATMAP, CAMERA, POINTS}):
        t = _ns(msg.timestamp)
        if topic == HEATMAP and (t_radar is None or t == t_radar) and heat is None:
            heat, t_radar = msg, t
        elif topic == POINTS and t == t_radar:
            pts = msg
        elif topic == CAMERA and (best_cam is None or abs(t - t_cam) < abs(_ns(best_cam.timestamp) - t_cam)):
            best_cam = msg
    cam = best_cam
    at = {"t_radar_ns": t_radar, "t_camera_ns": _ns(cam.timestamp) if cam else None,
          "t_s": (t_radar - first_log) / 1e9 if t_radar else None}

    def same(topic, t):
        return [m for m, _ in small[topic] if any(_ns(x.timestamp) == t for x in list(m.texts) + list(m.points)
                                                  + list(getattr(m, "circles", [])))]

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    ax = axes[0, 0]
    if cam is not None:
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(cam.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ax.imshow(img)
        for a in same(CAMERA_TRUTH, _ns(cam.timestamp)) + same(CAMERA_PAIR, _ns(cam.timestamp)):
            for p in a.points:
                c = p.outline_color
                ax.plot([q.x for q in p.points], [q.y for q in p.points], color=(c.r, c.g, c.b), lw=1.5)
            for tx in a.texts:
                c = tx.text_color
                ax.text(tx.position.x, tx.position.y, tx.text, color=(c.r, c.g, c.b), fontsize=7, va="top",
                        bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0))
    ax.set_title(f"{CAMERA} (foxglove.CompressedImage) + {CAMERA_TRUTH}, {CAMERA_PAIR}", fontsize=8)
    ax.axis("off")
    ax = axes[0, 1]
    if heat is not None:
        ax.imshow(np.frombuffer(heat.data, np.uint8).reshape(heat.height, heat.width, 3))
        for a in same(HEATMAP_TRUTH, t_radar):
            for cc in a.circles:
                c = cc.outline_color
                ax.add_patch(plt.Circle((cc.position.x - 0.5, cc.position.y - 0.5), cc.diameter / 2, fill=False,
                                        color=(c.r, c.g, c.b), lw=1.5))
            for tx in a.texts:
                c = tx.text_color
                ax.text(tx.position.x, tx.position.y, tx.text, color=(c.r, c.g, c.b), fontsize=7, va="top")
    ax.set_title(f"{HEATMAP} (foxglove.RawImage): far range at top, azimuth -90..+90 deg\n+ {HEATMAP_TRUTH}",
                 fontsize=8)
    ax.set_xlabel("azimuth bin (uniform in sin)", fontsize=7)
    ax.set_ylabel("range bin (near at bottom)", fontsize=7)
    ax = axes[1, 0]
    if pts is not None and pts.point_stride:
        p = np.frombuffer(pts.data, "<f4").reshape(-1, pts.point_stride // 4)
        sc = ax.scatter(p[:, 0], p[:, 1], c=p[:, 3] if p.shape[1] > 3 else "k", cmap="coolwarm", s=12)
        if p.shape[1] > 3:
            fig.colorbar(sc, ax=ax, label="doppler m/s")
    for s in (s for s, _ in small[SCENE] if s.entities and _ns(s.entities[0].timestamp) == t_radar):
        for e in s.entities:
            for cube in e.cubes:
                x, y = cube.pose.position.x, cube.pose.position.y
                c = cube.color
                ax.add_patch(plt.Rectangle((x - cube.size.x / 2, y - cube.size.y / 2), cube.size.x, cube.size.y,
                                           color=(c.r, c.g, c.b), alpha=0.5))
            for tx in e.texts:
                ax.text(tx.pose.position.x, tx.pose.position.y, tx.text, fontsize=7)
    ax.set_xlim(-15, 15), ax.set_ylim(0, 27)
    ax.set_aspect("equal")
    ax.set_xlabel("x m (right)", fontsize=7), ax.set_ylabel("y m (boresight)", fontsize=7)
    ax.set_title(f"bird's eye, frame \"radar\": {SCENE} (foxglove.SceneUpdate)"
                 + (f" + {POINTS}" if pts is not None else " (no points: DCA1000 mode)"), fontsize=8)
    ax = axes[1, 1]
    links = [p for p, _ in small[PAIRS]]
    if links:
        t0 = links[0]["radar"]["t_wall_ns"]
        ax.plot([(p["radar"]["t_wall_ns"] - t0) / 1e9 for p in links], [p["skew_ms"] for p in links], ".", ms=3)
        if at["t_s"] is not None:
            ax.axvline((t_radar - t0) / 1e9, color="r", lw=0.8)
    ax.set_xlabel("s", fontsize=7), ax.set_ylabel("skew ms", fontsize=7)
    ax.set_title(f"{PAIRS} (radvis.PairLink JSON): sync skew of {len(links)} pairs", fontsize=8)
    fig.suptitle(f"{Path(session).name}: decoded from the MCAP's Foxglove channels at t = {at['t_s'] or 0:.1f} s",
                 fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    shown = [s for s, _ in scenes if _ns(s.entities[0].timestamp) == t_radar]
    return {"out": str(out), "pairs": len(links), "objects": len(shown[0].entities) if shown else 0,
            "points": 0 if pts is None or not pts.point_stride else len(pts.data) // pts.point_stride, **at}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("session")
    ap.add_argument("--out", required=True)
    ap.add_argument("--at", type=float, default=None, help="seconds from the session's start")
    a = ap.parse_args(argv)
    print(snapshot(a.session, a.out, a.at))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

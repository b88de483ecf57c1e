"""The rig report's timing section: radar/camera latency and pairing error over the run, from the recording.

Reads the recorded session (radar and camera frame headers, the live sync's pairs, and - on an emulated
rig - the scene's ground truth on the `truth` topic: docs/sync.md). With truth:
- latency of every frame = its host arrival stamp (t.mono_ns) - its true capture instant;
- pairing error of every pair = |radar t_capture - camera t_capture|: how far apart the two frames of a
  positive pair were really captured (below half a camera period, 16.7 ms at 30 fps, when the clocks are
  right); and the sync's skew error = its own skew estimate + the true offset.
Without truth (real devices) it says "no truth" and plots what the sync itself estimated (arrival minus
corrected capture time, and |skew|). Writes timing.png beside the report; returns the markdown and the
one line `radvis rig` prints.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HALF_CAMERA_PERIOD_MS = 1e3 / 60


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_session(session: Path) -> dict:
    """Headers only: frames {(kind, source, fn): arrival ns}, truth {(source, fn): t_capture ns}, pairs."""
    from capture.record import scan, segments, unframe
    frames, truth, pairs = {}, {}, []
    for path in segments(session):
        for ch, m in scan(path):
            try:
                h = json.loads(bytes(unframe(m.data)[1]))
            except (ValueError, IndexError):
                continue
            kind, meta = h.get("kind"), h.get("meta") or {}
            if kind in ("radar", "camera"):
                fn = _int(meta.get("frame_number"))
                if fn is not None:
                    frames[(kind, h.get("source"), fn)] = h["t"]["mono_ns"]
            elif kind == "truth":
                fn, t = _int(meta.get("frame_number")), _int(meta.get("t_capture_ns"))
                if fn is not None and t is not None:
                    truth[(h.get("source"), fn)] = t
            elif kind == "pair":
                pairs.append(meta)
    return {"frames": frames, "truth": truth, "pairs": pairs}


def _pct(x) -> dict | None:
    if len(x) == 0:
        return None
    a = np.abs(np.asarray(x, float))
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": int(len(a))}


def analyse(data: dict) -> dict:
    truth, frames = data["truth"], data["frames"]
    lat = {"radar": [], "camera": []}  # (t_capture ns, latency ms)
    for (kind, src, fn), arr in frames.items():
        t = truth.get((src, fn))
        if t is not None and 0 <= arr - t <= 10e9:  # same run of the device (frame numbers restart)
            lat[kind].append((t, (arr - t) / 1e6))
    err, skew_err, est_lat, skews = [], [], {"radar": [], "camera": []}, []
    # the best pair the truth allows: the camera frame (that reached the host) captured nearest each radar
    # frame. With a fixed trigger phase between the two sensors even that can be ~half a camera period away,
    # so the sync is judged by its excess over it, and by how often it picked exactly that frame.
    cam_true = {}
    for (kind, src, fn) in frames:
        if kind == "camera" and (src, fn) in truth:
            cam_true.setdefault(src, []).append(truth[(src, fn)])
    cam_true = {k: np.sort(np.asarray(v, np.int64)) for k, v in cam_true.items()}
    excess, optimal = [], 0
    for p in data["pairs"]:
        r, c = p.get("radar") or {}, p.get("camera") or {}
        for k, h, tk in (("radar", r, "t_radar_ns"), ("camera", c, "t_camera_ns")):
            if _int(p.get(tk)) is not None and _int((h.get("t") or {}).get("mono_ns")) is not None:
                est_lat[k].append((p[tk], (h["t"]["mono_ns"] - p[tk]) / 1e6))
        skews.append((p.get("t_radar_ns", 0), p.get("skew_ns", 0) / 1e6))
        tr = truth.get((r.get("source"), _int((r.get("meta") or {}).get("frame_number"))))
        tc = truth.get((c.get("source"), _int((c.get("meta") or {}).get("frame_number"))))
        if tr is not None and tc is not None:
            err.append((tr, (tr - tc) / 1e6))
            ct = cam_true.get(c.get("source"))
            if ct is not None and len(ct):
                i = int(np.searchsorted(ct, tr))
                best = min(abs(tr - int(ct[j])) for j in (i - 1, i) if 0 <= j < len(ct))
                excess.append((abs(tr - tc) - best) / 1e6)
                optimal += abs(tr - tc) == best
            skew_err.append((tr, (p.get("skew_ns", 0) + tr - tc) / 1e6))
    return {"has_truth": bool(truth), "pairs": len(data["pairs"]), "latency": lat, "est_latency": est_lat,
            "pair_error": err, "skew_error": skew_err, "skew": skews,
            "pair_error_ms": _pct([e for _, e in err]), "skew_error_ms": _pct([e for _, e in skew_err]),
            "excess_ms": _pct(excess), "optimal_fraction": round(optimal / len(excess), 4) if excess else None,
            "latency_ms": {k: _pct([x for _, x in v]) for k, v in lat.items()}}


def plot(a: dict, out: Path) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = [a["latency"], a["pair_error"]] if a["has_truth"] else [a["est_latency"], a["skew"]]
    if not any(series[0].values()) and not series[1]:
        return None
    t0 = min(t for s in (*series[0].values(), series[1]) for t, _ in s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for k, col in (("radar", "tab:red"), ("camera", "tab:blue")):
        if series[0][k]:
            t, v = np.array(series[0][k]).T
            ax1.plot((t - t0) / 1e9, v, ".", ms=2, color=col, label=k)
    ax1.set_ylabel("latency (ms)" if a["has_truth"] else "arrival - corrected capture (ms)")
    ax1.set_title("Frame latency (host arrival - true capture)" if a["has_truth"]
                  else "No truth (real devices): latency as the sync estimates it")
    ax1.legend(markerscale=4)
    if series[1]:
        t, v = np.array(series[1]).T
        ax2.plot((t - t0) / 1e9, np.abs(v), ".", ms=2, color="k",
                 label="|radar - camera| true capture" if a["has_truth"] else "|skew| (sync's estimate)")
    if a["has_truth"] and a["skew_error"]:
        t, v = np.array(a["skew_error"]).T
        ax2.plot((t - t0) / 1e9, np.abs(v), ".", ms=2, color="tab:orange", label="sync skew error")
    ax2.axhline(HALF_CAMERA_PERIOD_MS, color="grey", ls=":", lw=1, label="half a camera period")
    ax2.set_ylabel("pairing error (ms)" if a["has_truth"] else "pair skew (ms)")
    ax2.set_xlabel("seconds of the run")
    ax2.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _fmt(d: dict | None) -> str:
    return "-" if not d else f"p50 {d['p50']:.2f} / p99 {d['p99']:.2f} / max {d['max']:.2f} ms"


def sync_report(session: Path, run_dir: Path) -> dict:
    """{"line": what `radvis rig` prints, "markdown": [lines], "analysis": {...}} (never raises on a bad or
    missing recording: the line says what is missing)."""
    try:
        a = analyse(read_session(Path(session)))
    except (OSError, ValueError) as e:
        return {"line": f"pairing error: no recording to measure it ({e})", "markdown": [], "analysis": None}
    png = plot(a, Path(run_dir) / "timing.png") if a["pairs"] else None
    if a["has_truth"] and a["pair_error_ms"]:
        e = a["pair_error_ms"]
        ok = "below" if e["p99"] < HALF_CAMERA_PERIOD_MS else "ABOVE"
        line = (f"pairing error against the truth ({e['n']} pairs): p50 {e['p50']:.2f} ms, p99 {e['p99']:.2f} ms, "
                f"max {e['max']:.2f} ms (p99 {ok} half a camera period, {HALF_CAMERA_PERIOD_MS:.1f} ms); "
                f"sync's skew error p99 {a['skew_error_ms']['p99']:.2f} ms")
        if a["excess_ms"]:
            line += (f"; {100 * a['optimal_fraction']:.1f} % of pairs took the camera frame captured nearest the radar "
                     f"frame, excess over that best pair p99 {a['excess_ms']['p99']:.2f} ms")
    elif a["pairs"]:
        line = f"pairing error: no truth in the recording (real devices?); {a['pairs']} pairs"
    else:
        line = "pairing error: no pairs in the recording"
    md = ["## Timing: latency and pairing error", "", line + ".", ""]
    if a["has_truth"]:
        md += ["| | p50 / p99 / max |", "|---|---|",
               f"| radar latency (arrival - true capture) | {_fmt(a['latency_ms']['radar'])} |",
               f"| camera latency | {_fmt(a['latency_ms']['camera'])} |",
               f"| pairing error: \\|radar - camera\\| true capture | {_fmt(a['pair_error_ms'])} |",
               f"| sync skew error (estimate + true offset) | {_fmt(a['skew_error_ms'])} |",
               f"| pairing error minus the best pair the truth allows | {_fmt(a['excess_ms'])} |", ""]
    if png is not None:
        md += [f"![timing]({png.name})", ""]
    return {"line": line, "markdown": md, "analysis": {k: a[k] for k in
                                                       ("has_truth", "pairs", "pair_error_ms", "skew_error_ms",
                                                        "latency_ms", "excess_ms", "optimal_fraction")}}

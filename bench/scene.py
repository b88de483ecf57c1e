"""Scene rendering throughput vs the rig's real-time need (radar 10-30 Hz, camera 30 Hz).

    .venv/bin/python bench/scene.py [--quick]

Rows (each with a baseline measured in the same run):
  radar-adc     raw ADC cube of the default cfg (64 loops x 8 virtual x 128 samples); baseline: the naive
                per-scatterer loop (one full-cube outer product per scatterer)
  radar-ra      render + frame RA map (dsp.ra_map, Doppler-integrated) with BLAS on 1 thread; baseline: the
                same with numpy's default BLAS thread pool (on a loaded 2-core box the pool spins)
  synth-ra      the synth path: 4 CRUW chirps rendered + 4 dsp.ra_map(chirp=i); baseline: rendering all
                255 loops of the CRUW frame first
  camera        render_camera at the rig's 128x96; baseline: CRUW's 1440x864
  mjpeg         frames delivered by the emulated camera over HTTP MJPEG to the driver (30 fps requested);
  realsense     frames delivered by the emulated RealSense through pyrealsense2 (30 fps requested);
                baseline of both: the emulated camera's own frame loop, no transport
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from threadpoolctl import threadpool_limits  # noqa: E402

from sim import render_camera, render_radar, synth  # noqa: E402
from sim.scene import Scene  # noqa: E402
from drivers.ti import dsp  # noqa: E402
from drivers.ti.cfg import parse_cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _rate(fn, n: int) -> float:
    fn(0)   # warm caches (DFT matrices, lru caches)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i + 1)
    return n / (time.perf_counter() - t0)


def _naive_adc(state, profile) -> np.ndarray:
    """Reference implementation: one full-cube complex exponential per scatterer."""
    sc = state.scatterers()
    fs, slope = profile.sample_rate_ksps * 1e3, profile.slope_mhz_us * 1e12
    tc, lam = profile.chirp_interval_us * 1e-6, profile.wavelength_m
    az, el = dsp.virtual_array(profile)
    L, V, N = profile.num_loops, profile.num_tx * profile.num_rx, profile.num_adc_samples
    t = (np.arange(L)[:, None] * profile.num_tx + np.repeat(np.arange(profile.num_tx), profile.num_rx)[None]) * tc
    n = np.arange(N)
    cube = np.zeros((L, V, N), np.complex128)
    for p in range(len(sc)):
        R = np.linalg.norm(sc.pos[p])
        vr = sc.vel[p] @ sc.pos[p] / R
        s = sc.pos[p, 0] / np.hypot(sc.pos[p, 0], sc.pos[p, 2])
        amp = render_radar.ADC_GAIN * np.sqrt(sc.rcs[p]) / R ** 2
        ph = (4 * np.pi * R / lam + sc.phase[p] + 4 * np.pi * vr * t[:, :, None] / lam
              + np.pi * az[None, :, None] * s + 2 * np.pi * (2 * slope * R / render_radar.C) * n[None, None, :] / fs)
        cube += amp * np.exp(1j * ph)
    return cube.astype(np.complex64)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (< 60 s)")
    args = ap.parse_args(argv)
    n = 10 if args.quick else 40
    profile = parse_cfg(REPO / "drivers/ti/cfgs/radvis_iwr1843.cfg").profile
    need_radar = f"{1000 / profile.frame_period_ms:.0f} Hz (cfg; 10-30 Hz)"
    scene = Scene(0)
    states = [scene.state(3.0 + 0.1 * i) for i in range(n + 1)]
    mixed = [scene.state(t) for t in np.arange(0.5, 200, 10.0)]
    mixed = [s for s in mixed if len(s.objects) >= 2][0]   # a busy frame for the ADC comparison
    rows = []

    def row(stage, metric, value, unit, baseline, need):
        rows.append({"stage": stage, "metric": metric, "value": round(value, 2), "unit": unit,
                     "baseline": round(baseline, 2), "ratio": round(value / baseline, 2) if baseline else None,
                     "need": need})

    with threadpool_limits(1):
        rng = np.random.default_rng(0)
        fast = _rate(lambda i: render_radar.render_adc(mixed, profile, rng=rng), n)
        naive = _rate(lambda i: _naive_adc(mixed, profile), max(2, n // 10))
        row("radar-adc", f"ADC cube frames/s ({len(mixed.scatterers())} scatterers, {profile.num_loops}x"
            f"{profile.num_virtual}x{profile.num_adc_samples})", fast, "frames/s", naive, need_radar)

        def ra_frame(i):
            adc = render_radar.render_adc(states[i], profile, rng=rng)
            return dsp.ra_map(adc, profile)
        ra1 = _rate(ra_frame, n)
    ra_pool = _rate(ra_frame, max(2, n // 4))
    row("radar-ra", "render + frame RA map frames/s, BLAS 1 thread", ra1, "frames/s", ra_pool, need_radar)

    with threadpool_limits(1):
        cruw = synth.cruw_profile()

        def synth_ra(i, loops=synth.CHIRP_IDS):
            adc = render_radar.render_adc(states[i], cruw, rng=rng, loops=loops)
            idx = range(4) if loops is not None else synth.CHIRP_IDS
            return [dsp.ra_map(adc, cruw, chirp=c) for c in idx]
        s4 = _rate(synth_ra, n)
        sall = _rate(lambda i: synth_ra(i, loops=None), max(2, n // 4))
        row("synth-ra", "4-chirp CRUW RA frames/s (render 4 of 255 loops)", s4, "frames/s", sall, "offline")

        small, full = render_camera.PinholeCamera(128, 96), render_camera.PinholeCamera(1440, 864)
        cam_small = _rate(lambda i: render_camera.render(states[i], small, rng=rng), n)
        cam_full = _rate(lambda i: render_camera.render(states[i], full, rng=rng), max(2, n // 5))
        row("camera", "render frames/s 128x96 (rig default)", cam_small, "frames/s", cam_full, "30 Hz")

    try:
        import socket
        import threading

        from drivers.camera import open_camera
        from radvis import config
        from sim.camera_device import EmulatedCamera
        from sim.emulate import CameraEmulator
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        cfg = config.load(overrides=[f"camera.url='http://127.0.0.1:{port}/?action=stream'"])
        dur = 1.0 if args.quick else 3.0

        def delivered(src, close) -> float:
            it = iter(src)
            next(it)
            t0, k = time.monotonic(), 0
            while time.monotonic() - t0 < dur:
                next(it)
                k += 1
            close()
            return k / (time.monotonic() - t0)
        stop = threading.Event()
        c = cfg.camera
        base = delivered(EmulatedCamera(Scene(0), width=c.width, height=c.height, fps=c.fps).frames(stop), stop.set)
        with CameraEmulator(c, Scene(0)):
            cam = open_camera(c)
            mj_rate = delivered(cam, cam.close)
        row("mjpeg", "emulated camera delivered frames/s over HTTP MJPEG (driver)", mj_rate, "frames/s", base,
            f"{c.fps} Hz")
        from sim.realsense_device import open_emulated
        rs = open_emulated(cfg)
        rs_rate = delivered(rs, rs.close)
        row("realsense", "emulated RealSense delivered frames/s via pyrealsense2", rs_rate, "frames/s", base,
            f"{c.fps} Hz")
    except Exception as e:   # e.g. no pyrealsense2/libusb on this machine: say so, keep the other rows
        print(f"camera delivery rows skipped: {e!r}", file=sys.stderr)

    print(f"{'stage':<10} {'metric':<62} {'value':>9} {'baseline':>9} {'ratio':>7}  need")
    for r in rows:
        print(f"{r['stage']:<10} {r['metric']:<62} {r['value']:>9} {r['baseline']:>9} {r['ratio']!s:>7}  {r['need']}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

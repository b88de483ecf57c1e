"""Scene simulator and renderers: determinism, geometry (RA bins via the radar DSP, image columns),
class-typical motion, labels that match what is rendered."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sim import render_camera, render_radar
from radvis.cruw import LABELS, frame_label
from sim.scene import CLASS_PARAMS, Scene, place
from sim.scene_source import SceneRadarSource
from sim.source import FrameSource, RadarFrameContent
from drivers.ti import dsp
from drivers.ti.cfg import parse_cfg
from tests.conftest import REPO

PROFILE = parse_cfg(REPO / "drivers/ti/cfgs/radvis_iwr1843.cfg").profile


def _truth_at(seed: int, t: float) -> dict:
    return Scene(seed).state(t).truth(seed)


def test_state_is_a_pure_function_of_seed_and_time():
    a, b = Scene(7), Scene(7)
    for t in (0.0, 3.21, 9.999, 10.0, 123.4, 1.5e6 + 0.033):
        sa, sb = a.state(t), b.state(t)
        assert sa.truth() == sb.truth()
        np.testing.assert_array_equal(sa.scatterers().pos, sb.scatterers().pos)
        np.testing.assert_array_equal(sa.scatterers().vel, sb.scatterers().vel)
    # a different seed gives different content somewhere
    assert any(Scene(8).state(t).truth() != a.state(t).truth() for t in (1.0, 11.0, 21.0))
    # the camera process and the radar process agree without talking: another interpreter, same answer
    code = ("import json,sys; from sim.scene import Scene; "
            "print(json.dumps([Scene(7).state(t).truth(7) for t in (3.21, 1.5e6 + 0.033)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [_truth_at(7, 3.21), _truth_at(7, 1.5e6 + 0.033)]


def test_fixed_place_keeps_clutter_and_light_and_changes_only_the_objects():
    fixed, moving = Scene(4, place="fixed"), Scene(4, place="episode")
    a, b = fixed.state(1.0), fixed.state(21.0)  # two episodes of the mounted rig
    assert (a.light, a.sky, a.ground, a.clutter.poles, a.clutter.walls) == \
        (b.light, b.sky, b.ground, b.clutter.poles, b.clutter.walls)
    np.testing.assert_array_equal(a.clutter.scatterers.pos, b.clutter.scatterers.pos)
    # with a place per episode (synth sequences, CRUW-like), the static world changes
    c, d = moving.state(1.0), moving.state(21.0)
    assert (c.light, c.clutter.poles) != (d.light, d.clutter.poles)
    # the traffic is the same in both modes: only the place differs
    for t in (1.0, 21.0, 35.5):
        assert fixed.state(t).truth() == moving.state(t).truth()
    with pytest.raises(ValueError, match="place"):
        Scene(0, place="moon")


def test_episodes_and_smooth_trajectories():
    s = Scene(3, scene_s=5.0)
    assert s.state(4.99).episode == 0 and s.state(5.0).episode == 1
    with pytest.raises(ValueError):
        s.state(-1.0)
    for t0 in (0.0, 5.0, 50.0):
        prev = s.state(t0)
        for k in range(1, 60):
            cur = s.state(t0 + k / 30)
            assert cur.episode == prev.episode
            for o0, o1 in zip(prev.objects, cur.objects):
                assert o0.obj_id == o1.obj_id and o0.cls == o1.cls
                # moved at most its speed x dt (plus a little for curvature): no jumps
                assert math.hypot(o1.x - o0.x, o1.z - o0.z) <= max(o0.speed, o1.speed) / 30 * 1.1 + 1e-6
                # and stays where both sensors can see it
                assert 2.0 <= o1.range_m <= 24.0 and abs(o1.azimuth_rad) < math.radians(33)
            prev = cur


def test_kinds_labels_and_counts():
    s = Scene(0, classes=("pedestrian", "cyclist", "car", "empty", "mixed"))
    seen = {}
    for i in range(60):
        st = s.state(i * s.scene_s + 1.0)
        seen[st.kind] = seen.get(st.kind, 0) + 1
        assert st.label == frame_label([o.cls for o in st.objects])
        if st.kind == "empty":
            assert st.objects == [] and st.label == "empty" and st.label_index == 0
        elif st.kind == "mixed":
            assert len({o.cls for o in st.objects}) >= 2 and st.label == "mixed" and st.label_index == -1
        else:
            assert st.objects and {o.cls for o in st.objects} == {st.kind}
            assert st.label_index == LABELS.index(st.kind)
    assert set(seen) == {"pedestrian", "cyclist", "car", "empty", "mixed"}
    assert frame_label([]) == "empty" and frame_label(["car", "car"]) == "car"
    assert frame_label(["car", "pedestrian"]) == "mixed"
    with pytest.raises(ValueError):
        Scene(0, classes=("truck",))


def test_class_statistics_overlap_but_differ():
    """RCS, speed and extent differ on average but their ranges overlap (not trivially separable)."""
    stats = {c: {"rcs": [], "speed": [], "length": []} for c in CLASS_PARAMS}
    s = Scene(11)
    for i in range(150):
        st = s.state(i * s.scene_s + 2.0, kind=("pedestrian", "cyclist", "car")[i % 3])
        for o in st.objects:
            stats[o.cls]["rcs"].append(o.scatterers.rcs.sum())
            stats[o.cls]["speed"].append(o.speed)
            stats[o.cls]["length"].append(o.length)
    med = {c: {k: np.median(v) for k, v in d.items()} for c, d in stats.items()}
    assert med["pedestrian"]["rcs"] < med["cyclist"]["rcs"] < med["car"]["rcs"]
    assert med["pedestrian"]["speed"] < med["cyclist"]["speed"]
    assert med["pedestrian"]["length"] < med["cyclist"]["length"] < med["car"]["length"]
    # overlap: the strongest pedestrian outshines the weakest car; some car is slower than some cyclist
    assert max(stats["pedestrian"]["rcs"]) > min(stats["car"]["rcs"])
    assert min(stats["car"]["speed"]) < np.median(stats["cyclist"]["speed"])


def test_micro_doppler_of_wheels_and_legs():
    s = Scene(5)
    for cls in ("cyclist", "car", "pedestrian"):
        i = next(i for i in range(40) if s.state(i * s.scene_s + 1.3, kind=cls).objects[0].speed > 1.0)
        lo, hi = [], []
        for k in range(30):   # one second: a few wheel turns / a gait cycle
            o = s.state(i * s.scene_s + 1.3 + k / 30, kind=cls).objects[0]
            along = o.scatterers.vel[:, [0, 2]] @ (np.array([o.vx, o.vz]) / o.speed)   # speed along travel
            assert np.any(np.abs(along - o.speed) < 1e-9)    # rigid body points move with the object
            lo.append(along.min() / o.speed)
            hi.append(along.max() / o.speed)
        if cls == "pedestrian":
            assert max(hi) - min(lo) > 0.5                   # swinging legs and arms
        else:
            # rolling wheels: rim points pass the ground (at rest) and the top (2 v)
            assert min(lo) < 0.2 and max(hi) > 1.8, (cls, min(lo), max(hi))


@pytest.mark.parametrize("r,az", [(4.0, -0.5), (9.5, 0.0), (15.0, 0.35), (22.0, -0.2)])
def test_object_peaks_at_its_ra_bins(r, az):
    st = place([("pedestrian", r, az)])
    adc = render_radar.render_adc(st, PROFILE, rng=np.random.default_rng(1))
    assert adc.shape == (PROFILE.num_loops, PROFILE.num_virtual, PROFILE.num_adc_samples) and adc.dtype == np.complex64
    for chirp in (0, PROFILE.num_loops - 1):
        mag = dsp.ra_magnitude(dsp.ra_map(adc, PROFILE, chirp=chirp))
        i, j = np.unravel_index(mag.argmax(), mag.shape)
        ri = np.abs(dsp.range_grid() - r).argmin()
        aj = np.abs(dsp.azimuth_grid() - az).argmin()
        assert abs(i - ri) <= 1, (i, ri)          # range resolution 0.22 m on a 0.213 m grid
        assert abs(j - aj) <= 3, (j, aj)          # 8-antenna beam on a 128-bin sin grid
        assert mag.max() > 20 * np.median(mag)


@pytest.mark.parametrize("variant", [
    dict(num_tx=3, tx_order=[0, 2, 1], chirps_per_frame=192),          # xWR18xx 3 TX (TX1 raised)
    dict(num_adc_samples=256, sample_rate_ksps=5000.0, slope_mhz_us=30.0, num_loops=32, chirps_per_frame=64),
])
def test_any_chirp_profile_peaks_at_the_right_bins(variant):
    import dataclasses
    prof = dataclasses.replace(PROFILE, **variant)
    for r, az in ((6.0, 0.3), (12.0, -0.2)):
        adc = render_radar.render_adc(place([("pedestrian", r, az)]), prof)
        assert adc.shape == (prof.num_loops, prof.num_tx * prof.num_rx, prof.num_adc_samples)
        mag = dsp.ra_magnitude(dsp.ra_map(adc, prof, chirp=0))
        i, j = np.unravel_index(mag.argmax(), mag.shape)
        assert abs(i - np.abs(dsp.range_grid() - r).argmin()) <= 1
        assert abs(j - np.abs(dsp.azimuth_grid() - az).argmin()) <= 3


def test_car_is_extended_and_stronger():
    ped = place([("pedestrian", 10.0, 0.2)], seed=2)
    car = place([("car", 10.0, 0.2, 0.0)], seed=2)   # driving away: seen lengthwise, 4-5 m deep in range
    m = {}
    for name, st in (("ped", ped), ("car", car)):
        adc = render_radar.render_adc(st, PROFILE)
        m[name] = dsp.ra_magnitude(dsp.ra_map(adc, PROFILE, chirp=0))
    assert m["car"].max() > 2 * m["ped"].max()
    extent = {k: (v > v.max() / 10).any(axis=1).sum() for k, v in m.items()}   # range bins lit
    assert extent["car"] >= extent["ped"] + 8
    # the car's energy lies within its footprint: range 10 +- 2.5 m
    rows = np.nonzero((m["car"] > m["car"].max() / 10).any(axis=1))[0]
    rg = dsp.range_grid()
    assert rg[rows.min()] > 7.0 and rg[rows.max()] < 13.0


def test_doppler_matches_radial_velocity():
    """A moving point scatterer: the phase progression across loops gives its radial velocity
    (TDM-MIMO chirp timing, wavelength and sign are right)."""
    from sim.scene import Scatterers
    for v in (-3.0, 1.2, 5.5):
        sc = Scatterers(np.array([[0.0, 0.0, 8.0]]), np.array([[0.0, 0.0, v]]), np.array([1.0]), np.zeros(1))
        adc = render_radar.render_scatterers(sc, PROFILE)
        rng = dsp.range_fft(adc[:, 0, :], PROFILE)          # [loops, range]
        col = rng[:, np.abs(rng).sum(0).argmax()]
        nd = 1024
        k = np.fft.fftfreq(nd)[np.abs(np.fft.fft(col, nd)).argmax()]     # cycles per loop
        v_est = k * PROFILE.wavelength_m / (2 * PROFILE.chirp_interval_us * 1e-6 * PROFILE.num_tx)
        assert abs(v_est - v) < 0.1, (v_est, v)


def test_object_lands_on_its_image_column_with_perspective_size():
    cam = render_camera.PinholeCamera(320, 192)
    bg = render_camera.render(place([]), cam).astype(int)
    heights = {}
    for r, az in ((6.0, -0.4), (12.0, 0.0), (12.0, 0.3), (20.0, 0.45)):
        st = place([("pedestrian", r, az, 0.0)], seed=4)          # walking away: front view, symmetric
        img = render_camera.render(st, cam).astype(int)
        mask = np.abs(img - bg).sum(-1) > 30
        rows, cols = np.nonzero(mask)
        assert abs(cols.mean() - cam.column(az)) < 1.5, (cols.mean(), cam.column(az))
        # feet on the ground plane: lowest row at cy + fy * h / z
        z = r * math.cos(az)
        assert abs(rows.max() - (cam.cy + cam.fy * 1.0 / z)) < 2.0
        heights[(r, az)] = rows.max() - rows.min() + 1
        assert abs(heights[(r, az)] - cam.fy * st.objects[0].height / z) < 2.5
    assert heights[(6.0, -0.4)] > 1.6 * heights[(12.0, 0.0)]


def test_rendered_content_matches_labels():
    """Every labelled object shows up in both sensors where its label says; empty scenes show none."""
    from sim.scene import Clutter, Scatterers
    cam = render_camera.PinholeCamera(320, 192)
    s = Scene(21)
    for i, kind in enumerate(("pedestrian", "cyclist", "car", "empty", "mixed")):
        st = s.state(i * s.scene_s + 4.0, kind=kind)

        def only(objs, clutter=st.clutter):
            return type(st)(st.t_s, st.episode, st.kind, frame_label([o.cls for o in objs]), objs, clutter,
                            st.light, st.sky, st.ground)
        bare_img = render_camera.render(only([]), cam).astype(int)
        if kind == "empty":
            assert np.array_equal(render_camera.render(st, cam), render_camera.render(only([]), cam))
            assert len(st.scatterers()) == len(st.clutter.scatterers)
            continue
        assert np.abs(render_camera.render(st, cam).astype(int) - bare_img).sum() > 0
        for o in st.objects:
            # camera: the object's own pixels are centred on the column of its labelled azimuth
            cols = np.nonzero((np.abs(render_camera.render(only([o]), cam).astype(int) - bare_img).sum(-1) > 30).any(0))[0]
            half_width = cam.fx * (o.length + o.width) / 2 / o.z
            assert abs(cols.mean() - cam.column(o.azimuth_rad)) <= half_width + 1, (kind, o.cls)
            # radar: the object's own echo peaks near its labelled range-azimuth cell
            alone = only([o], Clutter(Scatterers.empty()))
            mag = dsp.ra_magnitude(dsp.ra_map(render_radar.render_adc(alone, PROFILE), PROFILE, chirp=0))
            i_, j_ = np.unravel_index(mag.argmax(), mag.shape)
            r_, a_ = dsp.range_grid()[i_], dsp.azimuth_grid()[j_]
            assert abs(r_ - o.range_m) < max(o.length, o.width) / 2 + 0.5, (kind, o.cls, r_, o.range_m)
            assert abs(r_ * math.sin(a_) - o.x) < max(o.length, o.width) / 2 + 0.3 + 0.12 * o.range_m, (kind, o.cls)


def test_scene_radar_source_implements_frame_source():
    src = SceneRadarSource(Scene(9))
    assert isinstance(src, object) and callable(getattr(src, "frame"))
    fs: FrameSource = src
    t = 1234.5
    c = fs.frame(17, t, PROFILE)
    assert isinstance(c, RadarFrameContent)
    assert c.adc.shape == (PROFILE.num_loops, PROFILE.num_virtual, PROFILE.num_adc_samples)
    assert c.truth == Scene(9).state(t).truth(9)
    assert c.range_profile.shape == (PROFILE.num_range_bins,) and c.noise_profile.shape == (PROFILE.num_range_bins,)
    # reproducible from (seed, frame number); a different frame number gives different noise
    again = SceneRadarSource(Scene(9)).frame(17, t, PROFILE)
    np.testing.assert_array_equal(c.adc, again.adc)
    assert not np.array_equal(c.adc, src.frame(18, t, PROFILE).adc)
    # points are in TI's frame (y = boresight) and include the objects' positions
    st = Scene(9).state(t)
    for o in st.objects:
        d = np.hypot(c.points[:, 0] - o.x, c.points[:, 1] - o.z)
        assert d.min() < max(o.length, o.width) + 0.5

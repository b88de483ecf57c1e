"""Named worlds (sim/worlds.py): the same traffic rendered visibly differently, with the sensors mounted
elsewhere; both sensors follow the mounting; `radvis synth --world` and `scene.world` reach them."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from radvis.cli import main as radvis_main
from radvis.config import SceneConfig
from sim import render_camera, synth
from sim.scene import CLASS_PARAMS, Scene, place
from sim.worlds import WORLDS, get_world


def test_config_choices_name_every_world_and_unknown_worlds_are_refused(tmp_path, capsys):
    choices = dataclasses.fields(SceneConfig)[[f.name for f in dataclasses.fields(SceneConfig)].index("world")]
    assert choices.metadata["choices"] == list(WORLDS)
    with pytest.raises(ValueError, match="known worlds: default, dusk, snow, blocky"):
        Scene(0, world="moon")
    assert radvis_main(["synth", "--out", str(tmp_path / "x"), "--world", "moon"]) == 2
    assert "known worlds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_default_world_is_the_scene_without_a_world():
    a, b = Scene(7), Scene(7, world="default")
    for t in (0.5, 13.2):
        assert a.state(t).truth() == b.state(t).truth()
        cam = render_camera.PinholeCamera(64, 48)
        assert np.array_equal(render_camera.render(a.state(t), cam), render_camera.render(b.state(t), cam))


def test_worlds_look_different_with_the_same_traffic():
    """Same seed in every world: the same classes on the same tracks, different pixels (mean colour of the
    frame far apart), object sizes scaled per world."""
    cam = render_camera.PinholeCamera(96, 72)
    means, truths = {}, {}
    for name in WORLDS:
        sc = Scene(11, world=name)
        st = sc.state(3.0, kind="car")
        truths[name] = [(o.cls, round(o.x, 6), round(o.z, 6)) for o in st.objects]
        img = render_camera.render(st, cam, rng=render_camera.frame_rng(11, 0))
        means[name] = img.reshape(-1, 3).mean(0)
        lo, hi = CLASS_PARAMS["car"]["height"]
        k = get_world(name).scale("car")[2]
        assert all(lo * k - 1e-9 <= o.height <= hi * k + 1e-9 for o in st.objects)
    assert all(t == truths["default"] for t in truths.values())
    names = list(WORLDS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 15, (a, b, means[a], means[b])
    assert means["snow"].mean() > means["default"].mean() > means["dusk"].mean()


@pytest.mark.parametrize("world", ["default", "dusk", "blocky", "snow"])
def test_camera_and_radar_follow_the_worlds_mounting(world):
    """A pedestrian walking away: its feet are on the ground row the pitched, raised camera projects, its
    column is its azimuth's, and its radar scatterers sit `mount_m` lower than over the default ground."""
    w = get_world(world)
    cam = render_camera.PinholeCamera(320, 240)
    mounted = dataclasses.replace(cam, height_m=w.mount_m, pitch_deg=w.pitch_deg)
    r, az = 9.0, 0.2
    st = place([("pedestrian", r, az, 0.0)], seed=4, world=world)
    bg = render_camera.render(dataclasses.replace(st, objects=[]), cam).astype(int)
    img = render_camera.render(st, cam).astype(int)
    rows, cols = np.nonzero(np.abs(img - bg).sum(-1) > 30)
    o = st.objects[0]
    (_,), (v_feet,) = mounted.project([o.x], [-w.mount_m], o.z)
    assert abs(rows.max() - v_feet) < 2.5, (rows.max(), v_feet)
    assert abs(cols.mean() - cam.column(az)) < 2.0
    assert abs(mounted.horizon - (cam.cy - cam.fy * math.tan(math.radians(w.pitch_deg)))) < 1e-9
    # radar frame: every scatterer of the body lies between the ground (mount_m below the sensor) and the
    # top of the body, the head near the top
    up = o.scatterers.pos[:, 1] + w.mount_m
    assert up.min() > 0 and up.max() <= o.height and up.max() > 0.85 * o.height


def test_synth_world_sets_the_image_size_and_is_recorded(tmp_path):
    s = synth.synth(tmp_path / "d", sequences=1, frames=1, seed=2, world="blocky", progress=False)
    assert s["world"] == "blocky" and s["image_size"] == [160, 120] and s["mount_m"] == 2.2
    cfg = json.loads((tmp_path / "d" / "sensor_config_rod2021.json").read_text())
    assert (cfg["camera_cfg"]["image_width"], cfg["camera_cfg"]["image_height"]) == (160, 120)
    assert radvis_main(["synth", "--out", str(tmp_path / "e"), "--sequences", "1", "--frames", "1", "--world", "snow",
                        "--image-size", "64x36", "--quiet", "--no-preview"]) == 0
    assert json.loads((tmp_path / "e" / "synth_summary.json").read_text())["image_size"] == [64, 36]

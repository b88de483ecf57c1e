"""Several chirps per frame, end to end: the radar driver's per-chirp maps (radar.ra_chirps), a held-out
`radvis synth --chirps --frame-step` set, the learner's stacked input (learner.chirps) offline and online,
and the export of a recorded session that carries them."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from capture.export import export_session
from drivers.ti import dsp
from drivers.ti.cfg import parse_cfg
from drivers.ti.radar import DcaRadar, RadarError, check_config
from learner.data import CRUWFrames, DataError, learner_chirps
from learner.models import build_radar_encoder
from learner.online.ingest import Ingest, PairError, decode_pair
from learner.online.buffer import ReplayBuffer
from radvis import config
from radvis.cli import main as radvis_main
from radvis.config import ConfigError
from radvis.wire import Message
from sim import render_radar
from tests.test_export import FakeSession
from tests.test_foxglove import camera_msg, pair_msg, ra_with_target

REPO = Path(__file__).resolve().parent.parent
DCA_CFG = REPO / "drivers" / "ti" / "cfgs" / "radvis_iwr1843_dca.cfg"


@pytest.fixture(scope="module")
def held(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("held")
    assert radvis_main(["synth", "--out", str(out), "--sequences", "4", "--frames", "3", "--frame-step", "5",
                        "--chirps", "0,16", "--seed", "2", "--image-size", "64x48", "--quiet", "--no-preview"]) == 0
    return out


def test_synth_chirps_and_frame_step(held):
    seqs = sorted((held / "sequences" / "train").iterdir())
    assert len(seqs) == 4
    for s in seqs:
        # the true 30 fps frame index names the files: 0, 5, 10
        assert sorted(int(p.stem) for p in (s / "IMAGES_0").glob("*.jpg")) == [0, 5, 10]
        assert sorted(p.name for p in (s / "RADAR_RA_H").iterdir()) == [
            f"{f:06d}_{c:04d}.npy" for f in (0, 5, 10) for c in (0, 16)]
    cfg = json.loads((held / "sensor_config_rod2021.json").read_text())
    assert cfg["radar_cfg"]["chirp_ids"] == [0, 16]
    summary = json.loads((held / "synth_summary.json").read_text())
    assert summary["chirps"] == [0, 16] and summary["frame_step"] == 5
    frames = CRUWFrames(held, chirp=(0, 16))
    # frame times follow the file names: 5 frames of 30 fps apart
    assert np.abs(np.diff(frames.t_ns[:3]) - 5e9 / 30).max() <= 1
    x = frames.radar(1)
    assert x.shape == (4, 128, 128) and x.dtype == np.float32
    seq = frames.sequences[int(frames.seq[1])]
    for k, c in enumerate((0, 16)):   # re, im of chirp 0, then of chirp 16, from their own files
        a = np.load(seq.radar_path(int(frames.frame[1]), c))
        assert np.array_equal(x[2 * k:2 * k + 2], a.transpose(2, 0, 1))
    with pytest.raises(DataError, match="chirp 64.*this set's: \\[0, 16\\]"):
        CRUWFrames(held, chirp=(0, 64)).radar(0)


def test_synth_rejects_bad_chirps(tmp_path, capsys):
    assert radvis_main(["synth", "--out", str(tmp_path / "a"), "--chirps", "0,x", "--quiet"]) == 2
    assert "--chirps" in capsys.readouterr().err
    assert radvis_main(["synth", "--out", str(tmp_path / "b"), "--chirps", "0,300", "--sequences", "1",
                        "--frames", "1", "--quiet", "--no-preview"]) == 2
    assert "0..254" in capsys.readouterr().err


def _moving_adc(profile, loops):
    """A scene with two point targets moving radially (so the chirps' phases differ) and one standing still."""
    return render_radar.synth_adc(profile, [dict(range_m=8.0, azimuth_rad=0.2, velocity_mps=3.0),
                                            dict(range_m=12.0, azimuth_rad=-0.3, velocity_mps=-1.3),
                                            dict(range_m=5.0, azimuth_rad=0.0, amplitude=3000.0)],
                                  loops=loops, rng=np.random.default_rng(0), noise_counts=2.0)


def test_driver_stacks_the_configured_chirps():
    rcfg = parse_cfg(DCA_CFG)
    adc = _moving_adc(rcfg.profile, None)          # every loop of the rig's frame, as the DCA1000 delivers it
    r = DcaRadar(rcfg, capture=None, cli_url="", ra_chirp=0, ra_chirps=(16, 0, 48))
    ra = dsp.ra_map(adc, rcfg.profile, chirp=0, clutter_removal=True)   # the frame's ra, as the driver makes it
    st = r.chirp_maps(adc, ra)
    assert st.shape == (128, 128, 6) and st.dtype == np.float32
    assert r.clutter_removal   # the shipped cfg: clutterRemoval -1 1, the frame's mean chirp subtracted
    for k, c in enumerate((16, 0, 48)):
        assert np.array_equal(st[..., 2 * k:2 * k + 2], dsp.ra_map(adc, rcfg.profile, chirp=c, clutter_removal=True))
    # the target standing still at 5 m drops out; the movers stay
    mag = np.hypot(st[..., 2], st[..., 3])
    still, mover = [int(np.abs(dsp.range_grid() - d).argmin()) for d in (5.0, 8.0)]
    raw = np.hypot(*dsp.ra_map(adc, rcfg.profile, chirp=0).transpose(2, 0, 1))
    assert mag[still - 1:still + 2].max() < 0.05 * raw[still - 1:still + 2].max()
    assert mag[mover - 1:mover + 2].max() > 0.5 * raw[mover - 1:mover + 2].max()
    with pytest.raises(RadarError, match="radar.ra_chirps names chirp 64 but .* 64 loops"):
        DcaRadar(rcfg, capture=None, cli_url="", ra_chirps=(0, 64))


def test_uart_mode_refuses_ra_chirps(tmp_path):
    cfg = config.load(overrides=['radar.mode="uart"', 'radar.cfg="drivers/ti/cfgs/radvis_iwr1843.cfg"',
                                 "radar.ra_chirps=[0, 16]"])
    with pytest.raises(ConfigError, match="radar.ra_chirps.*dca1000"):
        check_config(cfg.radar, config_source=cfg.source)
    with pytest.raises(ConfigError, match="distinct integers >= 0"):
        config.load(overrides=["learner.chirps=[0, 0]"])


def _chirp_pair(fn: int, ids=(0, 16), shape=None) -> Message:
    r = Message(kind="radar", source="radar0", buffers={"ra": ra_with_target(fn, 20, 30)},
                meta={"frame_number": fn, "frame_period_ms": 100.0, "mode": "dca1000", "ra_chirp": 0})
    if ids is not None:
        rng = np.random.default_rng(fn)
        st = rng.normal(size=shape or (128, 128, 2 * len(ids))).astype(np.float32)
        st[..., 0:2] = r.buffers["ra"]
        r.buffers["ra_chirps"], r.meta["ra_chirps"] = st, list(ids)
    c = camera_msg(fn)
    r.t_mono_ns = c.t_mono_ns = 1_000_000_000 + fn * 100_000_000
    return pair_msg(r, c)


def test_ingest_reads_the_chirps_it_asks_for_and_drops_what_lacks_them():
    m = _chirp_pair(3, ids=(0, 16, 32))
    st = m.buffers["radar.ra_chirps"]
    p = decode_pair(m, chirps=(32, 0))
    assert p.radar.shape == (4, 128, 128)
    assert np.array_equal(p.radar[0:2], st[..., 4:6].transpose(2, 0, 1))   # chirp 32 first, as asked
    assert np.array_equal(p.radar[2:4], st[..., 0:2].transpose(2, 0, 1))
    assert decode_pair(m).radar.shape == (2, 128, 128)                      # without learner.chirps: the one ra
    for bad, reason in ((_chirp_pair(4, ids=None), "radar_chirps"), (_chirp_pair(5, ids=(0, 32)), "radar_chirps"),
                        (_chirp_pair(6, shape=(128, 128, 3)), "radar")):
        with pytest.raises(PairError) as e:
            decode_pair(bad, chirps=(0, 16))
        assert e.value.reason == reason

    # in the ingest: the pair without the chirps is dropped and counted, the next one goes into the buffer
    def embed(images):
        x = np.ones((len(images), 4), np.float32)
        return x / 2.0
    buf = ReplayBuffer(16, 4, (4, 128, 128))
    ing = Ingest(None, embed, buf, dedup_threshold=1.0, keep_interval_s=0.0, chirps=(0, 16), truth_wait_s=0.0)
    ing.process([(0, _chirp_pair(7, ids=None)), (0, _chirp_pair(8))])
    assert ing.dropped == {"bad_pair_radar_chirps": 1}
    assert ing.counts["inserted"] == 1 and len(buf) == 1


def test_tiny_encoder_sees_motion_between_chirps():
    """Two chirps of a moving target differ in phase; the encoder's |DFT over chirps| input has energy in its
    second channel only when they differ (a static scene gives zero there)."""
    profile = parse_cfg(DCA_CFG).profile
    adc = _moving_adc(profile, [0, 16])
    x = np.concatenate([dsp.ra_map(adc, profile, chirp=i) for i in range(2)], axis=2).transpose(2, 0, 1)
    static = np.concatenate([x[0:2], x[0:2]])
    enc = build_radar_encoder("tiny", 8, chirps=2)
    mag = enc.backbone[0](torch.from_numpy(np.stack([x, static])))
    assert mag.shape == (2, 2, 64, 64)      # max-pooled to 64x64 on the power (the cheap order, same numbers)
    assert float(mag[0, 1].max()) > 0.3 * float(mag[0, 0].max()) and float(mag[1, 1].abs().max()) < 1e-5


def test_export_writes_each_chirp_and_the_learner_reads_them_back(tmp_path):
    s = FakeSession(tmp_path / "session")
    sent = []
    for fn in range(1, 7):
        sent.append(s.send("pairs", _chirp_pair(fn), 5))
    s.close()
    out = tmp_path / "ds"
    summary = export_session(tmp_path / "session", out, name="RIG")
    assert summary["exported"] == 6
    assert json.loads((out / "sensor_config_rod2021.json").read_text())["radar_cfg"]["chirp_ids"] == [0, 16]
    frames = CRUWFrames(out, chirp=(0, 16))
    for i, m in enumerate(sent):
        assert np.array_equal(frames.radar(i), m.buffers["radar.ra_chirps"].transpose(2, 0, 1))


def test_synth_radar_frame_cfg_is_what_the_rig_streams(tmp_path):
    """--radar-frame cfg: the shipped dca cfg's 64-loop frame with its clutterRemoval, so the static scene of an
    empty sequence (walls, poles) drops out, where ROD2021's raw chirps keep it."""
    sets = {}
    for frame in ("rod2021", "cfg"):
        out = tmp_path / frame
        assert radvis_main(["synth", "--out", str(out), "--sequences", "4", "--frames", "2", "--seed", "4",
                            "--chirps", "0", "--radar-frame", frame, "--radar-cfg", str(DCA_CFG),
                            "--image-size", "64x48", "--quiet", "--no-preview"]) == 0
        s = json.loads((out / "synth_summary.json").read_text())
        assert s["radar_frame"] == frame and s["static_clutter_removal"] == (frame == "cfg")
        sets[frame] = CRUWFrames(out)
    for frames in sets.values():
        assert sorted(s.name[-7:-4] for s in frames.sequences) == ["BMS", "CMS", "EMS", "PMS"]

    # the static scene's energy drops out (what stays: the movers, swaying bushes and noise)
    energy = {k: float((f.radar_batch(np.arange(len(f))) ** 2).sum()) for k, f in sets.items()}
    assert energy["cfg"] < 0.5 * energy["rod2021"], energy
    # and a frame is exactly what the rig's dca1000 driver makes of the same ADC: every loop, mean chirp removed
    from sim import render_radar, synth
    from sim.scene import Scene
    rcfg = parse_cfg(DCA_CFG)
    seq = json.loads((tmp_path / "cfg" / "synth_summary.json").read_text())["sequences"][0]
    st = Scene(seq["seed"], scene_s=2 / synth.FPS + 1.0, classes=(seq["kind"],)).state(1 / synth.FPS, kind=seq["kind"])
    adc = render_radar.render_adc(st, rcfg.profile, rng=render_radar.frame_rng(seq["seed"], 1))
    drv = DcaRadar(rcfg, capture=None, cli_url="")
    want = dsp.ra_map(adc, rcfg.profile, chirp=0, clutter_removal=drv.clutter_removal)
    got = np.load(tmp_path / "cfg" / "sequences" / "train" / seq["name"] / "RADAR_RA_H" / "000001_0000.npy")
    # the same numbers up to float32 rounding: synth runs its matmuls with one BLAS thread, this test with
    # the default pool, and OpenBLAS sums in a different order per thread count (ulp-level, ~6e-7 here); a
    # wrong loop or a missed clutter removal differs by orders of magnitude more
    np.testing.assert_allclose(got, want.astype("<f4"), rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    with pytest.raises(ValueError, match="0..63 .*cfg frame"):
        from sim import synth
        synth.synth(tmp_path / "bad", sequences=1, frames=1, chirps=(0, 64), cfg_path=DCA_CFG, radar_frame_of="cfg",
                    progress=False)


def test_rig_refuses_learner_chirps_the_radar_does_not_send(tmp_path, capsys):
    rc = radvis_main(["--set", f"rig.run_dir='{tmp_path / 'run'}'", "--set", "learner.online_chirps=[0, 1]",
                      "--set", "radar.ra_chirps=[0]", "rig", "--no-eval"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "learner.online_chirps = [0, 1] reads chirps [1]" in err and "radar.ra_chirps" in err
    # with online_chirps empty the online learner reads learner.chirps (the key before online_chirps existed)
    rc = radvis_main(["--set", f"rig.run_dir='{tmp_path / 'run2'}'", "--set", "learner.online_chirps=[]",
                      "--set", "learner.chirps=[0, 2]", "--set", "radar.ra_chirps=[0]", "rig", "--no-eval"])
    assert rc == 2 and "learner.chirps = [0, 2] reads chirps [2]" in capsys.readouterr().err


def test_config_check_names_the_chirp_rules_the_rig_would_refuse_at_start(tmp_path, capsys):
    """`radvis config check` catches what the radar and the rig refuse only when they start: a UART config
    that keeps the default radar.ra_chirps, and a learner reading chirps the radar does not send."""
    def check(text: str) -> tuple[int, str]:
        p = tmp_path / "rig.toml"
        p.write_text(text)
        rc = radvis_main(["config", "check", str(p)])
        return rc, capsys.readouterr().err
    uart = '[radar]\nmode = "uart"\ncfg = "drivers/ti/cfgs/radvis_iwr1843.cfg"\n'
    rc, err = check(uart)
    assert rc == 2 and "radar.ra_chirps" in err and "rig.toml" in err and "set radar.ra_chirps = [] in uart mode" in err
    rc, err = check(uart.replace('mode = "uart"', 'mode = "uart"\nra_chirps = []'))
    assert rc == 2 and "learner.online_chirps = [0, 1, 2, 3] reads chirps [0, 1, 2, 3]" in err, err
    rc, err = check(uart.replace('mode = "uart"', 'mode = "uart"\nra_chirps = []') + "[learner]\nonline_chirps = []\n")
    assert rc == 0 and err == ""
    # a rig without the learner stage may send fewer chirps than the learner's keys would read
    rc, err = check('[radar]\nra_chirps = [0]\n[rig]\nstages = ["emulate-radar", "radar"]\n')
    assert rc == 0, err
    rc, err = check('[radar]\nra_chirps = [0]\n')
    assert rc == 2 and "reads chirps [1, 2, 3]" in err


def test_online_chirps_are_the_runs_chirps_for_its_checkpoint_export_and_eval(tmp_path):
    """The default rig learns from 4 consecutive chirps of its own radar (learner.online_chirps), while
    learner.chirps stays the offline CRUW chirp ids ([] = one chirp). The online run records what it read as
    its `chirps`, so `radvis eval` rebuilds a 4-chirp encoder and reads those chirps of the held-out set."""
    from radvis.chirps import online_chirps
    from learner.evaluate import cfg_from_checkpoint, load_encoder_state
    from learner.online.trainer import OnlineLearner
    base = config.load()
    assert base.learner.online_chirps == [0, 1, 2, 3] and base.radar.ra_chirps == [0, 1, 2, 3]
    assert base.learner.chirps == [] and learner_chirps(base.learner) == (0,)          # offline: one chirp
    assert online_chirps(base.learner) == (0, 1, 2, 3)
    assert online_chirps(config.load(overrides=["learner.online_chirps=[]", "learner.chirps=[0, 16]"]).learner) == (0, 16)
    assert online_chirps(config.load(overrides=["learner.online_chirps=[]"]).learner) == ()   # the frame's one map
    cfg = config.load(overrides=['learner.radar_encoder="tiny"', 'learner.vision_encoder="tiny"', 'learner.weights="none"',
                                 "learner.batch_size=4", "learner.queue_size=64", "learner.online_min_fill=4",
                                 "learner.online_center_pairs=4", "learner.online_min_separation_s=0",
                                 "learner.online_live_eval_fraction=0", "learner.online_max_updates_per_pair=0"])
    lrn = OnlineLearner(cfg, tmp_path / "run", device="cpu")
    assert lrn.chirps == (0, 1, 2, 3) and lrn.buffer.radar_shape == (8, 128, 128)
    assert lrn.ingest.chirps == (0, 1, 2, 3)      # what the ingest asks of every pair (dropping, counted, above)
    g = np.random.default_rng(0)
    for fn in range(1, 9):
        p = decode_pair(_chirp_pair(fn, ids=(0, 1, 2, 3)), chirps=lrn.chirps)
        lrn.buffer.add(p.radar, g.standard_normal(lrn.dim).astype(np.float32), fn * 10**8, 0)
    assert lrn.train_step() is not None
    state = load_encoder_state(lrn.export())
    assert state["config"]["chirps"] == [0, 1, 2, 3]
    back = cfg_from_checkpoint(state, base.learner)
    assert learner_chirps(back) == (0, 1, 2, 3)
    enc = build_radar_encoder("tiny", lrn.dim, chirps=len(learner_chirps(back)))
    enc.load_state_dict(state["model"])                                  # the 4-chirp encoder, rebuilt
    lrn.save()     # resuming that run with another radar input is named, not a shape error deep in torch
    one = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, online_chirps=[]))
    with pytest.raises(ValueError, match=r"saved reading radar chirps \[0, 1, 2, 3\], this run reads the one map"):
        OnlineLearner(one, tmp_path / "run", device="cpu")


def test_chirp_dft_magnitude_equals_the_complex_fft():
    """LogMagnitude (one chirp; the 4-chirp butterfly; the real DFT matrix for other counts) gives the numbers
    of torch.fft over the chirps, and pooling the power first gives those of pooling the log-magnitude."""
    from learner.models import LogMagnitude
    g = torch.Generator().manual_seed(0)
    for c in (1, 2, 3, 4, 5):
        x = torch.randn(3, 2 * c, 16, 16, generator=g) * 10
        ref = torch.log1p(torch.fft.fft(torch.complex(x[:, 0::2], x[:, 1::2]), dim=1).abs() / c)
        assert torch.allclose(LogMagnitude()(x), ref, atol=1e-5, rtol=1e-5)
        assert torch.allclose(LogMagnitude(pool=2)(x), torch.nn.functional.max_pool2d(ref, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,chirps", [("tiny", 1), ("tiny", 4), ("resnet18", 1)])
def test_features_of_the_precomputed_front_equal_the_features(name, chirps):
    """Evaluation and the online probe compute `front` once per frame and then `features(.., fronted=True)`:
    the features must be those of the whole encoder, so the probe and the baselines measure the same model."""
    from learner.models import build_radar_encoder
    torch.manual_seed(0)
    enc = build_radar_encoder(name, 16, chirps=chirps).eval()
    x = torch.randn(4, 2 * chirps, 128, 128) * 3
    with torch.no_grad():
        f, front = enc.features(x), enc.front(x)
        assert torch.allclose(enc.features(front, fronted=True), f, atol=1e-5, rtol=1e-4)
    if name == "tiny":
        assert front.shape == (4, chirps, 64, 64)


def test_ra_chirps_layout_stack_select_split_and_check_agree():
    """radvis/chirps.py is the one home of the radar.ra_chirps layout: what the driver stacks, the ingest
    selects and export splits are the same maps, and a malformed buffer is named, not misread."""
    from radvis import chirps as rc
    maps = [np.full((128, 128, 2), float(c), np.float32) + np.array([0, 0.5], np.float32) for c in (0, 16, 32)]
    buf = rc.stack(maps)
    ids = rc.check(buf, [0, 16, 32])
    assert buf.shape == (128, 128, 6) and buf.dtype == np.float32
    assert [c for c, _ in rc.split(buf, ids)] == [0, 16, 32]
    assert all(np.array_equal(m, maps[k]) for k, (_, m) in enumerate(rc.split(buf, ids)))
    sel = rc.select(buf, ids, (32, 0))
    assert np.array_equal(sel[..., :2], maps[2]) and np.array_equal(sel[..., 2:], maps[0])
    assert rc.select(buf, ids, (0, 16, 32)) is buf
    with pytest.raises(KeyError):
        rc.select(buf, ids, (0, 8))
    for bad_buf, bad_ids in ((buf, [0, 16]), (buf.astype(np.float64), ids), (buf, [0, 16, 16]), (buf, [0, -1, 2]),
                             (buf, "0,16,32")):
        with pytest.raises(rc.ChirpStackError):
            rc.check(bad_buf, bad_ids)

"""learner/augment.py: the radar-side augmentation is the physical mirror and range move it claims to be."""
from pathlib import Path

import numpy as np
import pytest
import torch

from drivers.ti.cfg import parse_cfg
from drivers.ti.dsp import azimuth_grid, ra_map, range_grid
from learner.augment import RadarAugment
from sim.render_radar import synth_adc

CFG = Path(__file__).resolve().parents[1] / "drivers" / "ti" / "cfgs" / "radvis_iwr1843_dca.cfg"


def _map(profile, range_m: float, azimuth_rad: float) -> torch.Tensor:
    """(1, 2, range, azimuth) the rig's single-chirp map of one point target, as the learner reads it."""
    # a still target: with TDM-MIMO a moving one picks up a velocity-dependent phase between TX slots,
    # which skews its angle spectrum (docs/radar-dsp.md), so only a still one is exactly mirror-symmetric
    adc = synth_adc(profile, [dict(range_m=range_m, azimuth_rad=azimuth_rad)])
    ra = ra_map(adc, profile, chirp=0)
    return torch.from_numpy(np.ascontiguousarray(ra.transpose(2, 0, 1)))[None]


def _mag(x: torch.Tensor) -> torch.Tensor:
    return torch.hypot(x[:, 0::2], x[:, 1::2])


def test_the_azimuth_grid_is_symmetric_so_reversing_it_is_a_mirror():
    g = azimuth_grid()
    np.testing.assert_allclose(g[::-1], -g, atol=1e-12)


def test_a_flipped_target_is_the_target_rendered_on_the_other_side():
    profile = parse_cfg(CFG).profile
    right, left = _map(profile, 8.0, 0.35), _map(profile, 8.0, -0.35)
    flipped = RadarAugment(flip_p=1.0)(right)
    # the peak moves to the mirrored bin, and the whole magnitude map is the left-hand rendering's
    peak = lambda x: np.unravel_index(int(_mag(x)[0, 0].argmax()), (128, 128))  # noqa: E731
    assert peak(right)[1] != peak(left)[1]
    assert peak(flipped) == peak(left)
    torch.testing.assert_close(_mag(flipped), _mag(left), rtol=1e-3, atol=1e-3 * float(_mag(left).max()))
    assert not torch.equal(flipped, right)          # the caller's batch is not changed in place
    torch.testing.assert_close(RadarAugment(flip_p=1.0)(flipped), right)


def test_a_range_shift_moves_the_target_by_that_many_bins_and_shifts_in_zeros():
    profile = parse_cfg(CFG).profile
    x = _map(profile, 8.0, 0.1).repeat(64, 1, 1, 1)
    aug = RadarAugment(shift_bins=3, seed=5)
    y = aug(x)
    r0 = int(_mag(x)[0, 0].amax(1).argmax())
    moves = [int(_mag(y[i:i + 1])[0, 0].amax(1).argmax()) - r0 for i in range(len(y))]
    assert set(moves) <= set(range(-3, 4)) and len(set(moves)) >= 5   # every pair its own draw
    for i, s in enumerate(moves):
        if s > 0:
            assert torch.count_nonzero(y[i, :, :s]) == 0
            torch.testing.assert_close(y[i, :, s:], x[i, :, :-s])
        elif s < 0:
            assert torch.count_nonzero(y[i, :, s:]) == 0
            torch.testing.assert_close(y[i, :, :s], x[i, :, -s:])
    # one range bin is ROD2021's 0.213 m step
    assert np.diff(range_grid())[0] == pytest.approx(0.21305, abs=1e-4)


def test_draws_repeat_with_the_seed_and_differ_between_seeds():
    x = torch.randn(32, 8, 128, 128)   # 4 chirps: real/imag of each move together
    a, b, c = (RadarAugment(0.5, 4, seed=s)(x) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flips = RadarAugment(0.5, 0, seed=1)(x)
    flipped = [i for i in range(32) if not torch.equal(flips[i], x[i])]
    assert 0 < len(flipped) < 32
    for i in flipped:
        assert torch.equal(flips[i], x[i].flip(-1))


def test_off_is_the_identity_and_bad_settings_are_refused():
    x = torch.randn(4, 2, 128, 128)
    assert RadarAugment()(x) is x
    with pytest.raises(ValueError, match="radar_flip"):
        RadarAugment(flip_p=1.5)
    with pytest.raises(ValueError, match="radar_shift_bins"):
        RadarAugment(shift_bins=-1)


class _RadarSpy:
    """Records the radar batch each learner hands to the shared contrastive step, and the pairs' keys."""

    def __init__(self, monkeypatch, module):
        from learner import step as step_mod
        self.seen = []
        real = step_mod.contrastive_step

        def spy(encoder, opt, queue, radar, keys, *a, **kw):
            self.seen.append((radar.detach().clone(), keys.detach().clone()))
            return real(encoder, opt, queue, radar, keys, *a, **kw)
        monkeypatch.setattr(module, "contrastive_step", spy)


def test_the_online_learner_trains_on_mirrored_maps_when_asked(tmp_path, monkeypatch):
    from bench.online import SyntheticStream, _stream_items
    from learner.online import trainer
    from tests.test_learner_step import _tiny_online
    runs = {}
    for flip in (0.0, 1.0):
        spy = _RadarSpy(monkeypatch, trainer)
        torch.manual_seed(0)
        lrn = trainer.OnlineLearner(_tiny_online(tmp_path, "learner.radar_shift_bins=3"), tmp_path / f"f{flip}",
                                    naive=True, device="cpu")
        # the config reaches the learner; the tiny test teacher keys whole frames, so the default mirror is off
        assert (lrn.augment.flip_p, lrn.augment.shift_bins) == (0.0, 3)
        lrn.augment = RadarAugment(flip_p=flip, shift_bins=0)
        lrn.ingest.process(_stream_items(SyntheticStream(seed=2), 0, 16))
        lrn.np_rng = np.random.default_rng(0)     # both runs sample the same batch
        assert lrn.train_step() is not None
        runs[flip] = spy.seen[0]
    (plain, k0), (mirrored, k1) = runs[0.0], runs[1.0]
    assert torch.equal(k0, k1)                    # the same pairs and keys: only the radar view changed
    assert torch.equal(mirrored, plain.flip(-1)) and not torch.equal(mirrored, plain)


def test_the_offline_learner_trains_on_moved_maps_when_asked(tmp_path, monkeypatch):
    from learner import train_offline
    from radvis.config import LearnerConfig
    from tests.test_learner_data import make_tiny_cruw
    data = make_tiny_cruw(tmp_path / "cruw", n_frames=8)
    seen = {}
    for shift in (0, 6):
        spy = _RadarSpy(monkeypatch, train_offline)
        cfg = LearnerConfig(radar_encoder="tiny", vision_encoder="tiny", batch_size=8, queue_size=256, epochs=1,
                            device="cpu", val_fraction=0.25, radar_flip=0.0, radar_shift_bins=shift)
        train_offline.train(cfg, data, tmp_path / f"run{shift}", progress=False, cache_dir=tmp_path / "cache")
        seen[shift] = spy.seen
    assert len(seen[0]) == len(seen[6]) > 0
    moved = 0
    for (r0, k0), (r6, k6) in zip(seen[0], seen[6]):
        assert torch.equal(k0, k6)
        for a, b in zip(r0, r6):
            s = [t for t in range(-6, 7) if torch.equal(b, RadarAugment(shift_bins=0)(a) if t == 0 else
                                                          _moved(a, t))]
            assert s, "each map is the plain one moved by at most 6 range bins"
            moved += s[0] != 0
    assert moved > 0


def _moved(x: torch.Tensor, s: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    if s > 0:
        out[:, s:] = x[:, :-s]
    else:
        out[:, :s] = x[:, -s:]
    return out


def test_the_mirror_is_applied_only_where_the_key_does_not_say_where_the_object_stands(caplog):
    from learner.augment import from_config
    from radvis.config import LearnerConfig
    with caplog.at_level("INFO", logger="radvis.learner"):
        for teacher in ("auto", "effnet-lite0", "vgg16"):   # a network on the object crops
            aug = from_config(LearnerConfig(radar_flip=0.5, radar_shift_bins=4, vision_encoder=teacher,
                                            teacher_region="foreground"), 0)
            assert (aug.flip_p, aug.shift_bins) == (0.5, 4) and not caplog.records
        cases = [("effnet-lite0", "frame"), ("fg-descriptor", "foreground"), ("descriptor", "foreground")]
        for teacher, region in cases:   # whole-frame keys, and descriptors that keep a layout
            aug = from_config(LearnerConfig(radar_flip=0.5, radar_shift_bins=4, vision_encoder=teacher,
                                            teacher_region=region), 0)
            assert (aug.flip_p, aug.shift_bins) == (0.0, 4), teacher
    assert len(caplog.records) == len(cases) and all("not applied" in r.getMessage() for r in caplog.records)
    assert "fg-descriptor" in caplog.text and 'teacher_region = "frame"' in caplog.text


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    """The online learner saves the generator with its checkpoint, so a restart draws what a run that never
    stopped would have drawn."""
    x = torch.randn(16, 2, 128, 128)
    a = RadarAugment(0.5, 4, seed=3)
    a(x)
    torch.save(a.state_dict(), tmp_path / "aug.pt")
    b = RadarAugment(0.5, 4, seed=99)
    b.load_state_dict(torch.load(tmp_path / "aug.pt", weights_only=True))
    assert torch.equal(a(x), b(x))
    a.reseed(3, 7), b.reseed(3, 7)
    assert torch.equal(a(x), b(x))
    b.reseed(3, 8)
    assert not torch.equal(a(x), b(x))

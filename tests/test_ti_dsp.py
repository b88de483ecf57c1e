"""DSP: point targets at known range/azimuth in a synthetic FMCW beat signal peak at the right cells of the
ROD2021 range–azimuth grid (values from ../shared/reference/cruw.md §1.6)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from drivers.ti import dsp
from drivers.ti.cfg import parse_cfg
from sim.render_radar import synth_adc

REPO = Path(__file__).resolve().parent.parent
C = 299_792_458.0


@pytest.fixture(scope="module")
def cruw_profile():
    return parse_cfg(REPO / "drivers/ti/cfgs/radvis_iwr1843_dca.cfg").profile


def cfg_variant(tmp_path, channel: str, chirps: list[str], frame: str, profile_line: str | None = None):
    text = (REPO / "drivers/ti/cfgs/radvis_iwr1843_dca.cfg").read_text().splitlines()
    out = []
    for ln in text:
        if ln.startswith("channelCfg"):
            ln = channel
        elif ln.startswith("chirpCfg"):
            if chirps:
                out += chirps
                chirps = []
            continue
        elif ln.startswith("frameCfg"):
            ln = frame
        elif ln.startswith("profileCfg") and profile_line:
            ln = profile_line
        out.append(ln)
    p = tmp_path / "variant.cfg"
    p.write_text("\n".join(out) + "\n")
    return parse_cfg(p).profile


def beat(profile, r, theta, v=0.0, amp=1000.0, noise=0.0, seed=0):
    """Textbook TDM-MIMO FMCW beat signal, written independently of the synthesiser: IF tone 2·S·r/c,
    λ/2 array phase π·(element)·sinθ, slow-time phase 4π·v·t/λ; virtual index = loop slot × nrx + rx,
    element = rank of the slot's TX among azimuth TXs × nrx + rx."""
    fs, s = profile.sample_rate_ksps * 1e3, profile.slope_mhz_us * 1e12
    lam, tc = profile.wavelength_m, profile.chirp_interval_us * 1e-6
    ntx, nrx, ns, nl = profile.num_tx, profile.num_rx, profile.num_adc_samples, profile.num_loops
    az_tx = sorted(t for t in profile.tx_order if not (ntx == 3 and t == 1))
    x = np.zeros((nl, ntx * nrx, ns), complex)
    n = np.arange(ns)
    for l in range(nl):
        for p, tx in enumerate(profile.tx_order):
            if ntx == 3 and tx == 1:
                continue                          # elevation TX: not used for azimuth here
            t = (l * ntx + p) * tc
            for rx in range(nrx):
                e = az_tx.index(tx) * nrx + rx
                x[l, p * nrx + rx] = amp * np.exp(1j * (2 * np.pi * 2 * s * r / (C * fs) * n
                                                        + np.pi * e * math.sin(theta) + 4 * np.pi * v * t / lam))
    if noise:
        g = np.random.default_rng(seed)
        x += noise * (g.standard_normal(x.shape) + 1j * g.standard_normal(x.shape)) / math.sqrt(2)
    return x.astype(np.complex64)


def peak(ra):
    m = dsp.ra_magnitude(ra)
    return tuple(int(i) for i in np.unravel_index(m.argmax(), m.shape)), float(m.max())


def test_grids_match_rod2021():
    r, a = dsp.range_grid(), dsp.azimuth_grid()
    assert r.shape == a.shape == (128,)
    assert r[0] == pytest.approx(0.63916, abs=1e-5) and r[-1] == pytest.approx(27.69713, abs=1e-5)
    assert np.allclose(np.diff(r), 0.21305, atol=1e-5)
    assert np.array_equal(a, np.arcsin(np.linspace(-1, 1, 128)))
    assert math.degrees(a[63]) == pytest.approx(-0.451, abs=1e-3) and math.degrees(a[64]) == pytest.approx(0.451, abs=1e-3)
    # devkit tutorial: ra2idx(5.0 m, 30°) = (20, 95); idx2ra(20, 95) = (4.90026 m, 29.7399°)
    assert (int(np.abs(r - 5.0).argmin()), int(np.abs(a - math.radians(30)).argmin())) == (20, 95)
    assert r[20] == pytest.approx(4.90026, abs=1e-5) and math.degrees(a[95]) == pytest.approx(29.7399, abs=1e-4)


def test_synth_adc_is_the_textbook_beat_signal(cruw_profile):
    got = synth_adc(cruw_profile, [dict(range_m=7.3, azimuth_rad=-0.4, velocity_mps=1.5, amplitude=800)])
    ref = beat(cruw_profile, 7.3, -0.4, 1.5, 800)
    # synth_adc adds the constant 4π·r/λ carrier phase; compare up to that one phase
    ph = np.angle(np.vdot(ref, got))
    np.testing.assert_allclose(got, ref * np.exp(1j * ph), atol=0.05)


@pytest.mark.parametrize("ri,ai", [(20, 95), (40, 64), (100, 20), (5, 110), (70, 40)])
def test_point_target_single_chirp_peaks_at_its_cell(cruw_profile, ri, ai):
    r, a = dsp.range_grid()[ri], dsp.azimuth_grid()[ai]
    adc = beat(cruw_profile, r, a, noise=20.0)
    for chirp in (0, 17, -1):
        ra = dsp.ra_map(adc, cruw_profile, chirp=chirp)
        assert ra.shape == (128, 128, 2) and ra.dtype == np.float32
        (pr, pa), mag = peak(ra)
        assert (pr, pa) == (ri, ai)
        assert mag == pytest.approx(1000, rel=0.03)       # amplitude normalised to ADC counts


def test_off_grid_target_lands_on_nearest_cell(cruw_profile):
    r, a = 9.1234, math.radians(-23.0)
    (pr, pa), _ = peak(dsp.ra_map(beat(cruw_profile, r, a), cruw_profile, chirp=0))
    assert pr == int(np.abs(dsp.range_grid() - r).argmin())
    assert abs(pa - int(np.abs(dsp.azimuth_grid() - a).argmin())) <= 1


def test_frame_map_doppler_moving_target_and_clutter_removal(cruw_profile):
    rg, ag = dsp.range_grid(), dsp.azimuth_grid()
    moving = beat(cruw_profile, rg[30], ag[80], v=2.5, amp=600, noise=10.0, seed=1)
    static = beat(cruw_profile, rg[90], ag[40], v=0.0, amp=1000)
    adc = moving + static
    ra = dsp.ra_map(adc, cruw_profile)
    m = dsp.ra_magnitude(ra)
    # coherent integration over the frame: both targets at their cells, despite TDM motion phase
    assert np.unravel_index(m.argmax(), m.shape) == (90, 40)
    sub = m.copy()
    sub[85:96, 30:51] = 0
    assert np.unravel_index(sub.argmax(), m.shape) == (30, 80)
    assert m[30, 80] == pytest.approx(600, rel=0.1) and m[90, 40] == pytest.approx(1000, rel=0.05)
    cr = dsp.ra_magnitude(dsp.ra_map(adc, cruw_profile, clutter_removal=True))
    assert cr[90, 40] < 1.0                       # static target removed
    assert np.unravel_index(cr.argmax(), cr.shape) == (30, 80)
    # the frame map's noise floor is lower than one chirp's (coherent gain over 64 loops)
    one = dsp.ra_magnitude(dsp.ra_map(moving, cruw_profile, chirp=0))
    far = (slice(100, 128), slice(0, 30))
    assert dsp.ra_magnitude(dsp.ra_map(moving, cruw_profile))[far].mean() < 0.5 * one[far].mean()


def test_other_profile_three_tx_and_max_range(tmp_path):
    # xWR18xx with all 3 TX, chirp order TX0, TX2, TX1 (TX1 raised: excluded from azimuth), 256 samples
    p = cfg_variant(tmp_path, "channelCfg 15 7 0",
                    ["chirpCfg 0 0 0 0 0 0 0 1", "chirpCfg 1 1 0 0 0 0 0 4", "chirpCfg 2 2 0 0 0 0 0 2"],
                    "frameCfg 0 2 16 0 100 1 0", "profileCfg 0 77 429 7 57.14 0 0 70 1 256 5209 0 0 30")
    assert p.num_tx == 3 and p.tx_order == [0, 2, 1]
    assert list(dsp.azimuth_antennas(p)) == [0, 1, 2, 3, 4, 5, 6, 7]
    rg, ag = dsp.range_grid(), dsp.azimuth_grid()
    adc = beat(p, rg[33], ag[100])
    assert peak(dsp.ra_map(adc, p, chirp=0))[0] == (33, 100)
    assert peak(dsp.ra_map(adc, p))[0] == (33, 100)
    # beyond c·Fs/(2S) = 11.16 m the grid is not observable with this profile: zero rows
    m = dsp.ra_magnitude(dsp.ra_map(adc, p, chirp=0))
    beyond = rg >= p.max_range_m
    assert beyond.any() and not m[beyond].any() and m[~beyond].any()


def test_ra_from_azimuth_heatmap(cruw_profile):
    rg, ag = dsp.range_grid(), dsp.azimuth_grid()
    adc = beat(cruw_profile, rg[50], ag[30])
    nb = cruw_profile.num_range_bins
    # what the demo computes for TLV 4: range FFT per virtual antenna of one chirp, [range bins, antennas]
    heat = np.fft.fft(adc[0], n=nb, axis=-1).T / cruw_profile.num_adc_samples
    ra = dsp.ra_from_azimuth_heatmap(heat, cruw_profile)
    (pr, pa), mag = peak(ra)
    assert (pr, pa) == (50, 30) and mag > 300
    with pytest.raises(ValueError, match="range bins, antennas"):
        dsp.ra_from_azimuth_heatmap(heat[0], cruw_profile)


def test_bad_inputs_raise_clear_errors(cruw_profile):
    adc = beat(cruw_profile, 5.0, 0.0)
    with pytest.raises(ValueError, match="chirp=64 but the frame has 64 chirps"):
        dsp.ra_map(adc, cruw_profile, chirp=64)
    with pytest.raises(ValueError, match=r"\[chirps, virtual antennas, samples\]"):
        dsp.ra_map(adc[0], cruw_profile)
    with pytest.raises(ValueError, match="samples per chirp"):
        dsp.ra_map(adc[..., :100], cruw_profile, chirp=0)


def test_virtual_array_is_the_board_layout(tmp_path, cruw_profile):
    """One layout for the DSP and the synthesiser: RX λ/2 apart, TX0/TX2 2λ apart; with 3 TX the raised TX1
    sits half-way, one row up, and is left out of the azimuth array."""
    az, el = dsp.virtual_array(cruw_profile)
    assert list(az) == [0, 1, 2, 3, 4, 5, 6, 7] and not el.any()
    p = cfg_variant(tmp_path, "channelCfg 15 7 0",
                    ["chirpCfg 0 0 0 0 0 0 0 1", "chirpCfg 1 1 0 0 0 0 0 4", "chirpCfg 2 2 0 0 0 0 0 2"],
                    "frameCfg 0 2 16 0 100 1 0")
    az, el = dsp.virtual_array(p)                      # chirp order TX0, TX2, TX1
    assert list(az) == [0, 1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5] and list(el) == [0] * 8 + [1] * 4
    # a target in the horizontal plane: the azimuth row carries the textbook signal (up to the carrier phase)
    up = synth_adc(p, [dict(range_m=6.0, azimuth_rad=0.3)])
    assert np.allclose(up[:, dsp.azimuth_antennas(p)], beat(p, 6.0, 0.3)[:, dsp.azimuth_antennas(p)]
                       * np.exp(1j * np.angle(np.vdot(beat(p, 6.0, 0.3)[:, :8], up[:, :8]))), atol=0.05)

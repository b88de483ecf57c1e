"""The FMCW ADC synthesiser: the beat signal of point scatterers -> raw ADC cube. The one radar simulation of
radvis: the scene renderer, the emulated TI board and the DSP tests all call `beat_signal` (through
`render_scatterers` for scene scatterers with RCS, or `synth_adc` for point targets of given amplitude).

For each scatterer p at range R_p, azimuth theta_p, radial velocity v_p the de-chirped complex baseband of
loop l, virtual antenna k, ADC sample n is (standard FMCW model, TI mmWave SDK conventions):

    a_p * exp(j [ 4 pi R_p / lambda           (carrier phase at the first sample)
                + 2 pi (2 S R_p / c) n / Fs  (beat frequency -> range bin)
                + pi d_k sin(theta_p) cos(phi_p) + pi e_k sin(phi_p)   (virtual array, drivers.ti.dsp)
                + 4 pi v_p t_lk / lambda     (Doppler across chirps, TDM-MIMO chirp times)
                + psi_p ])

with lambda the profile's centre wavelength and t_lk = (l * num_tx + slot(k)) * chirp interval. For scene
scatterers the amplitude a_p ~ sqrt(RCS) / R^2 (radar equation) with a cos(theta) element pattern and the
IF low-pass filter; point targets give a_p directly. The sum over scatterers factorises per axis, so the
cube is one complex matrix product (loops*virt, P) @ (P, samples) — fast enough to run the emulated radar
in real time.

The scatterer motion inside one frame changes only the phase (no range migration, no change of the
micro-Doppler within a frame): frames last a few ms to tens of ms.
"""
from __future__ import annotations

import math

import numpy as np

from drivers.ti.dsp import virtual_array
from sim.scene import SceneState, Scatterers

C = 299_792_458.0
ADC_GAIN = 2000.0        # amplitude (ADC counts) of a 1 m^2 target at 1 m, per sample
NOISE_COUNTS = 1.5       # thermal noise std (ADC counts, per I and Q) at noise = 1


def beat_signal(pos: np.ndarray, vel: np.ndarray, amp: np.ndarray, phase: np.ndarray, profile, *,
                loops=None, rng: np.random.Generator | None = None, noise_counts: float = 0.0,
                quantise: bool = True) -> np.ndarray:
    """Raw ADC cube complex64 [loops, num_tx*num_rx, num_adc_samples] of point scatterers.

    pos, vel: (P, 3) metres and m/s in the radar frame (x right, y up, z boresight); amp: (P,) amplitude in
    ADC counts per sample; phase: (P,) extra phase (rad). loops: which loop (chirp) indices to render
    (default all `profile.num_loops`). noise_counts: thermal noise std per I and Q, drawn from rng.
    quantise: round and saturate I/Q to int16 like the ADC."""
    fs = profile.sample_rate_ksps * 1e3
    slope = profile.slope_mhz_us * 1e12
    lam = profile.wavelength_m
    tc = profile.chirp_interval_us * 1e-6
    ntx, nrx, ns = int(profile.num_tx), int(profile.num_rx), int(profile.num_adc_samples)
    loops = np.arange(int(profile.num_loops)) if loops is None else np.asarray(loops, int)
    az_pos, el_pos = virtual_array(profile)
    cube = np.zeros((len(loops), len(az_pos), ns), np.complex64)
    pos = np.asarray(pos, np.float64).reshape(-1, 3)
    if len(pos):
        vel = np.asarray(vel, np.float64).reshape(-1, 3)
        R = np.linalg.norm(pos, axis=1).clip(0.1)
        vr = np.einsum("ij,ij->i", vel, pos / R[:, None])
        u_az = pos[:, 0] / R                                   # sin(azimuth) * cos(elevation)
        u_el = pos[:, 1] / R                                   # sin(elevation)
        fb = 2 * slope * R / C
        phase0 = 4 * np.pi * R / lam + np.asarray(phase, np.float64)
        # chirp start time of loop l, TX slot m (TDM-MIMO): (l * ntx + m) * Tc
        t_lm = (loops[:, None] * ntx + np.arange(ntx)[None, :]) * tc                      # [L, ntx]
        t_lk = np.repeat(t_lm, nrx, axis=1)                                                # [L, nv]
        dop = np.exp(1j * (4 * np.pi / lam) * vr[:, None, None] * t_lk[None])             # [P, L, nv]
        ant = np.exp(1j * np.pi * (az_pos[None, :] * u_az[:, None] + el_pos[None, :] * u_el[:, None]))
        left = (np.asarray(amp, np.float64) * np.exp(1j * phase0))[:, None, None] * dop * ant[:, None, :]
        rng_term = np.exp(2j * np.pi * fb[:, None] * np.arange(ns)[None, :] / fs)           # [P, ns]
        cube[:] = (left.reshape(len(R), -1).T.astype(np.complex64) @ rng_term.astype(np.complex64)).reshape(cube.shape)
    if rng is not None and noise_counts > 0:
        cube += (rng.standard_normal(cube.shape, np.float32) + 1j * rng.standard_normal(cube.shape, np.float32)) \
            * np.float32(noise_counts)
    if quantise:   # the ADC is 16-bit: round and saturate I and Q like the device does
        cube = (np.clip(np.round(cube.real), -32768, 32767) + 1j * np.clip(np.round(cube.imag), -32768, 32767))
        cube = cube.astype(np.complex64)
    return cube


def synth_adc(profile, targets: list[dict], *, rng: np.random.Generator | None = None, noise_counts: float = 0.0,
              loops=None, quantise: bool = False) -> np.ndarray:
    """Beat signal of point targets in the horizontal plane, complex64 [loops, virtual, samples] (the model
    the DSP inverts; see docs/radar-dsp.md). Target keys: range_m, azimuth_rad (+ = right), velocity_mps
    (radial, + = away), amplitude (ADC counts, default 1000), phase (rad, default 0)."""
    n = len(targets)
    pos, vel = np.zeros((n, 3)), np.zeros((n, 3))
    amp, phase = np.zeros(n), np.zeros(n)
    for i, t in enumerate(targets):
        r, th = float(t["range_m"]), float(t.get("azimuth_rad", 0.0))
        u = np.array([math.sin(th), 0.0, math.cos(th)])
        pos[i], vel[i] = r * u, float(t.get("velocity_mps", 0.0)) * u
        amp[i], phase[i] = float(t.get("amplitude", 1000.0)), float(t.get("phase", 0.0))
    return beat_signal(pos, vel, amp, phase, profile, loops=loops, rng=rng, noise_counts=noise_counts,
                       quantise=quantise)


def render_scatterers(sc: Scatterers, profile, *, rng: np.random.Generator | None = None, noise: float = 1.0,
                      loops=None, fluctuation: float = 0.25, quantise: bool = True) -> np.ndarray:
    """Raw ADC cube complex64 [loops, num_tx*num_rx, num_adc_samples] of a scene's scatterers.

    loops: which loop (chirp) indices to render (default all `profile.num_loops`); rendering only the 4
    chirps CRUW keeps is 60x cheaper. rng drives thermal noise and per-frame RCS fluctuation (Swerling-like
    lognormal of sigma `fluctuation`); None = noiseless and steady. quantise: round and saturate I/Q to
    int16 like the ADC.
    """
    amp = np.zeros(0)
    if len(sc):
        fs = profile.sample_rate_ksps * 1e3
        R = np.linalg.norm(sc.pos, axis=1).clip(0.1)
        sin_az = sc.pos[:, 0] / np.hypot(sc.pos[:, 0], sc.pos[:, 2]).clip(1e-6)
        fb = 2 * profile.slope_mhz_us * 1e12 * R / C
        rcs = sc.rcs if rng is None or fluctuation <= 0 else sc.rcs * rng.lognormal(0, fluctuation, len(sc))
        # IF low-pass: beat frequencies beyond ~90 % of the sample rate are cut (TI's IF bandwidth)
        lpf = 1.0 / (1.0 + (fb / (0.9 * fs)) ** 12)
        amp = ADC_GAIN * np.sqrt(rcs) / R ** 2 * np.clip(np.cos(np.arcsin(np.clip(sin_az, -1, 1))), 0, 1) * lpf
    return beat_signal(sc.pos, sc.vel, amp, sc.phase, profile, loops=loops, rng=rng,
                       noise_counts=NOISE_COUNTS * noise if noise > 0 else 0.0, quantise=quantise)


def render_adc(state: SceneState, profile, *, rng: np.random.Generator | None = None, noise: float = 1.0,
               loops=None) -> np.ndarray:
    """Raw ADC cube complex64 [loops, virtual antennas, samples] of a scene state."""
    return render_scatterers(state.scatterers(), profile, rng=rng, noise=noise, loops=loops)


def frame_rng(seed: int, frame_number: int) -> np.random.Generator:
    """Noise RNG of one radar frame: reproducible from (seed, frame number), independent of the scene RNG."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFF, frame_number & 0xFFFFFFFFFFFF, 0xADC])


def detections(state: SceneState, profile, *, rng: np.random.Generator | None = None, noise: float = 1.0,
               snr_db: float = 12.0) -> np.ndarray:
    """Point cloud the demo firmware's CFAR would report: float32 (N, 4) x, y, z, doppler in TI's frame
    (x right, y forward = boresight, z up), positions quantised to the range resolution, doppler = radial
    velocity. A scatterer is detected when its post-FFT SNR exceeds `snr_db`."""
    sc = state.scatterers()
    if not len(sc):
        return np.zeros((0, 4), np.float32)
    R = np.linalg.norm(sc.pos, axis=1).clip(0.1)
    amp = ADC_GAIN * np.sqrt(sc.rcs) / R ** 2
    gain = profile.num_adc_samples * profile.num_tx * profile.num_rx * profile.num_loops
    snr = 10 * np.log10(amp ** 2 * gain / (2 * (NOISE_COUNTS * max(noise, 1e-3)) ** 2))
    if rng is not None:
        snr = snr + rng.normal(0, 2.0, len(snr))
    keep = snr > snr_db
    pos, vel = sc.pos[keep], sc.vel[keep]
    R = R[keep]
    vr = np.einsum("ij,ij->i", vel, pos / R[:, None])
    dr = profile.range_resolution_m
    Rq = np.round(R / dr) * dr
    pts = np.stack([pos[:, 0] * Rq / R, pos[:, 2] * Rq / R, pos[:, 1] * Rq / R, vr], 1)
    return pts.astype(np.float32)


def range_profiles(adc: np.ndarray, profile) -> tuple[np.ndarray, np.ndarray]:
    """The demo firmware's RANGE_PROFILE and NOISE_PROFILE (log2 magnitude, num_range_bins long):
    the zero-Doppler bin and the highest Doppler bin of the range-Doppler map, summed non-coherently
    over the virtual antennas."""
    nr = int(profile.num_range_bins)
    rng = np.fft.fft(adc, n=nr, axis=-1)                                    # [L, V, R]
    nd = 1 << max(0, (adc.shape[0] - 1).bit_length())
    dop = np.fft.fft(rng, n=nd, axis=0)                                     # [D, V, R]
    prof = np.abs(dop[0]).sum(0) + 1e-3
    noise = np.abs(dop[nd // 2]).sum(0) + 1e-3
    return np.log2(prof).astype(np.float32), np.log2(noise).astype(np.float32)

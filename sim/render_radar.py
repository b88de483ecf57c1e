"""FMCW radar rendering: the beat signal of a scene's point scatterers -> raw ADC cube.

For each scatterer p at range R_p, azimuth theta_p, radial velocity v_p the de-chirped complex baseband of
loop l, virtual antenna k, ADC sample n is (standard FMCW model, TI mmWave SDK conventions):

    a_p * exp(j [ 4 pi f0 R_p / c            (carrier phase at the first sample)
                + 2 pi (2 S R_p / c) n / Fs  (beat frequency -> range bin)
                + pi d_k sin(theta_p) cos(phi_p) + pi e_k sin(phi_p)   (half-wavelength virtual array)
                + 4 pi v_p t_lk / lambda     (Doppler across chirps, TDM-MIMO chirp times)
                + psi_p ])

with amplitude a_p ~ sqrt(RCS) / R^2 (radar equation), a cos(theta) element pattern and the IF low-pass
filter. The sum over scatterers factorises per axis, so the cube is one complex matrix product
(loops*virt, P) @ (P, samples) — fast enough to run the emulated radar in real time.

The scatterer motion inside one frame changes only the phase (no range migration, no change of the
micro-Doppler within a frame): frames last a few ms to tens of ms.
"""
from __future__ import annotations


import numpy as np

from sim.scene import SceneState, Scatterers
from sim.source import azimuth_positions

C = 299_792_458.0
ADC_GAIN = 2000.0        # amplitude (ADC counts) of a 1 m^2 target at 1 m, per sample
NOISE_COUNTS = 1.5       # thermal noise std (ADC counts, per I and Q) at noise = 1


def virtual_array(profile) -> tuple[np.ndarray, np.ndarray]:
    """Virtual antenna positions in half-wavelengths (azimuth, elevation), in the ADC cube's order
    (chirp position in the loop x num_rx + rx). Azimuth positions are the radar helper's
    (`sim.source.azimuth_positions`: RX lambda/2 apart, TDM TXs 2 lambda apart); with 3 TX the
    xWR18xx TX1 sits half-way and one half-wavelength higher (the elevation row)."""
    az = azimuth_positions(profile)
    el = np.zeros_like(az)
    if int(profile.num_tx) == 3:
        order = [t for t in (profile.tx_order or [0, 1, 2])][:3]
        el = np.repeat([1.0 if t == 1 else 0.0 for t in order], int(profile.num_rx))
    return az, el


def _prof(profile):
    fs = profile.sample_rate_ksps * 1e3
    slope = profile.slope_mhz_us * 1e12
    f0 = profile.start_freq_ghz * 1e9 + slope * profile.adc_start_us * 1e-6
    tc = (profile.idle_us + profile.ramp_end_us) * 1e-6
    return fs, slope, f0, tc, C / f0


def render_scatterers(sc: Scatterers, profile, *, rng: np.random.Generator | None = None, noise: float = 1.0,
                      loops=None, fluctuation: float = 0.25, quantise: bool = True) -> np.ndarray:
    """Raw ADC cube complex64 [loops, num_tx*num_rx, num_adc_samples] of the scatterers.

    loops: which loop (chirp) indices to render (default all `profile.num_loops`); rendering only the 4
    chirps CRUW keeps is 60x cheaper. rng drives thermal noise and per-frame RCS fluctuation (Swerling-like
    lognormal of sigma `fluctuation`); None = noiseless and steady. quantise: round and saturate I/Q to
    int16 like the ADC.
    """
    fs, slope, f0, tc, lam = _prof(profile)
    ntx, nrx, ns = int(profile.num_tx), int(profile.num_rx), int(profile.num_adc_samples)
    loops = np.arange(int(profile.num_loops)) if loops is None else np.asarray(loops, int)
    az_pos, el_pos = virtual_array(profile)
    nv = len(az_pos)
    cube = np.zeros((len(loops), nv, ns), np.complex64)
    if len(sc):
        pos, vel = sc.pos, sc.vel
        R = np.linalg.norm(pos, axis=1).clip(0.1)
        u = pos / R[:, None]
        vr = np.einsum("ij,ij->i", vel, u)
        sin_az = pos[:, 0] / np.hypot(pos[:, 0], pos[:, 2]).clip(1e-6)
        cos_el = np.hypot(pos[:, 0], pos[:, 2]) / R
        sin_el = pos[:, 1] / R
        fb = 2 * slope * R / C
        rcs = sc.rcs if rng is None or fluctuation <= 0 else sc.rcs * rng.lognormal(0, fluctuation, len(sc))
        # IF low-pass: beat frequencies beyond ~90 % of the sample rate are cut (TI's IF bandwidth)
        lpf = 1.0 / (1.0 + (fb / (0.9 * fs)) ** 12)
        amp = ADC_GAIN * np.sqrt(rcs) / R ** 2 * np.clip(np.cos(np.arcsin(np.clip(sin_az, -1, 1))), 0, 1) * lpf
        phase0 = 4 * np.pi * f0 * R / C + sc.phase
        # chirp start time of loop l, TX slot m (TDM-MIMO): (l * ntx + m) * Tc
        t_lm = (loops[:, None] * ntx + np.arange(ntx)[None, :]) * tc                     # [L, ntx]
        t_lk = np.repeat(t_lm, nrx, axis=1)                                               # [L, nv]
        dop = np.exp(1j * (4 * np.pi / lam) * vr[:, None, None] * t_lk[None])             # [P, L, nv]
        ant = np.exp(1j * np.pi * (az_pos[None, :] * (sin_az * cos_el)[:, None] + el_pos[None, :] * sin_el[:, None]))
        left = (amp * np.exp(1j * phase0))[:, None, None] * dop * ant[:, None, :]          # [P, L, nv]
        rng_term = np.exp(2j * np.pi * fb[:, None] * np.arange(ns)[None, :] / fs)          # [P, ns]
        cube[:] = (left.reshape(len(R), -1).T.astype(np.complex64) @ rng_term.astype(np.complex64)).reshape(cube.shape)
    if rng is not None and noise > 0:
        sigma = NOISE_COUNTS * noise
        cube += (rng.standard_normal(cube.shape, np.float32) + 1j * rng.standard_normal(cube.shape, np.float32)) * sigma
    if quantise:   # the ADC is 16-bit: round and saturate I and Q like the device does
        cube = (np.clip(np.round(cube.real), -32768, 32767) + 1j * np.clip(np.round(cube.imag), -32768, 32767))
        cube = cube.astype(np.complex64)
    return cube


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
    fs, slope, f0, tc, lam = _prof(profile)
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

"""Raw ADC → range–azimuth (RA) maps on the CRUW / ROD2021 grid. The math is in docs/radar-dsp.md.

Input `adc`: complex64 `[chirps (loops), virtual antennas (tx-major), samples]` as `dca1000_receiver.adc_from_raw`
gives it. Output: float32 `(128, 128, 2)` = [range bin, azimuth bin, (real, imag)], range bins on
`range_grid()` (0.639…27.697 m, ascending) and azimuth bins on `azimuth_grid()` = arcsin(linspace(-1, 1, 128)).

Both transforms are evaluated *exactly at the grid points* (a DFT at the grid's beat frequencies and
spatial frequencies), so the map lands on the CRUW grid for any chirp profile: when the grid falls on the
bins of an FFT (the CRUW-like cfg: a 134-point range FFT) an FFT is used, otherwise a precomputed DFT matrix.
Amplitudes are normalised so a point target of amplitude A ADC counts peaks at ≈ A.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

C = 299_792_458.0
RA_SIZE = 128
# ROD2021 radar constants (cruw-devkit sensor_config_rod2021.json): the grid is defined by them
CRUW_SAMPLE_FREQ = 4e6
CRUW_SWEEP_SLOPE = 21.0017e12
CRUW_CROP = 3
CRUW_FFT = RA_SIZE + 2 * CRUW_CROP          # 134


def range_grid(profile=None) -> np.ndarray:
    """ROD2021 range bins in metres (128, ascending, step 0.21305 m). The grid does not depend on the
    profile (every map is resampled onto it); `profile` is accepted so callers can pass one uniformly."""
    k = np.arange(CRUW_FFT, dtype=np.float64)
    r = k * (CRUW_SAMPLE_FREQ / CRUW_FFT) * C / CRUW_SWEEP_SLOPE / 2
    return r[CRUW_CROP:CRUW_FFT - CRUW_CROP].copy()


def azimuth_grid() -> np.ndarray:
    """ROD2021 azimuth bins in radians: arcsin(linspace(-1, 1, 128)), uniform in sin θ."""
    return np.arcsin(np.linspace(-1.0, 1.0, RA_SIZE))


def ra_magnitude(ra: np.ndarray) -> np.ndarray:
    """|RA| of a (..., 2) real/imag map, float32."""
    ra = np.asarray(ra, dtype=np.float32)
    return np.sqrt(ra[..., 0] ** 2 + ra[..., 1] ** 2)


def to_ra(z: np.ndarray) -> np.ndarray:
    """complex (128, 128) → float32 (128, 128, 2)."""
    out = np.empty(z.shape + (2,), np.float32)
    out[..., 0] = z.real
    out[..., 1] = z.imag
    return out


# ---------------------------------------------------------------------------------------------------------
# range transform: windowed DFT at the grid's beat frequencies

def _profile_key(profile) -> tuple:
    return (float(profile.sample_rate_ksps), float(profile.slope_mhz_us), int(profile.num_adc_samples))


@functools.lru_cache(maxsize=16)
def range_matrix(fs_ksps: float, slope_mhz_us: float, n: int) -> np.ndarray:
    """(n, 128) complex64 windowed DFT evaluated at the beat frequency of each grid range:
    ν_k = 2·S·r_k / (c·Fs) cycles/sample. Columns with ν ≥ 1 (beyond the IF bandwidth, where complex
    sampling aliases) are zero. A matrix, not an FFT: the grid is not an FFT grid for most profiles, and
    even for the CRUW one (a 134-point FFT) one matmul is faster than FFT + crop."""
    fs, slope = fs_ksps * 1e3, slope_mhz_us * 1e12
    nu = 2 * slope * range_grid() / (C * fs)
    win = np.hanning(n + 2)[1:-1]             # Hann without the zero end points
    win = win / win.sum()                      # a tone of amplitude A → A at its bin
    mat = np.exp(-2j * np.pi * np.outer(np.arange(n), nu)) * win[:, None]
    mat[:, nu >= 1.0] = 0
    return mat.astype(np.complex64)


def range_fft(adc: np.ndarray, profile) -> np.ndarray:
    """[..., samples] complex → [..., 128] complex on range_grid() (Hann window, zeros beyond max range)."""
    x = np.asarray(adc)
    if x.shape[-1] != profile.num_adc_samples:
        raise ValueError(f"ADC has {x.shape[-1]} samples per chirp, profile says {profile.num_adc_samples}")
    m = range_matrix(*_profile_key(profile))
    flat = np.ascontiguousarray(x, dtype=np.complex64).reshape(-1, x.shape[-1])
    return (flat @ m).reshape(x.shape[:-1] + (RA_SIZE,))      # one GEMM, not one per leading index


# ---------------------------------------------------------------------------------------------------------
# angle transform: DFT over the azimuth virtual array at u = sin θ of the grid

def virtual_array(profile) -> tuple[np.ndarray, np.ndarray]:
    """The board's virtual array: (azimuth, elevation) position of each virtual antenna in half-wavelengths,
    in the ADC cube's order (chirp slot in the loop × num_rx + rx). TI EVM layout: RX λ/2 apart; TDM TXs 2λ
    apart (xWR16xx TX0/TX1, xWR18xx TX0/TX2); with 3 TX the xWR18xx/68xx TX1 sits half-way and λ/2 higher
    (the elevation row). The one home of the layout: the DSP below and the emulated board's synthesiser
    (sim/render_radar.py) both read it."""
    nrx, ntx = int(profile.num_rx), int(profile.num_tx)
    order = list(getattr(profile, "tx_order", None) or range(ntx))[:ntx]
    if ntx == 3:
        tx_pos = {0: (0.0, 0.0), 1: (2.0, 1.0), 2: (4.0, 0.0)}
    else:
        tx_pos = {t: (4.0 * k, 0.0) for k, t in enumerate(sorted(t for t in set(order) if t >= 0))}
    pos = [tx_pos.get(t, (0.0, 0.0)) for t in order]          # a chirp with several TXs at once: no position
    az = np.array([p[0] + r for p in pos for r in range(nrx)], np.float64)
    el = np.array([p[1] for p in pos for _ in range(nrx)], np.float64)
    return az, el


def azimuth_antennas(profile, num_virtual: int | None = None) -> np.ndarray:
    """Indices (into the virtual-antenna axis) of the horizontal λ/2 array, in spatial order: the elements
    of `virtual_array` in the azimuth row, left to right (with 3 TX the raised TX1 is left out, as in the
    SDK's azimuth FFT)."""
    az, el = virtual_array(profile)
    keep = np.flatnonzero(el == 0)
    idx = keep[np.argsort(az[keep], kind="stable")].astype(np.intp)
    if num_virtual is not None and idx.size and idx.max() >= num_virtual:
        raise ValueError(f"profile needs {idx.max() + 1} virtual antennas, ADC has {num_virtual}")
    return idx


@functools.lru_cache(maxsize=16)
def steering_matrix(m: int) -> np.ndarray:
    """(m, 128) complex64: e^{-jπ·k·u} / m for element k of a λ/2 ULA and u = sin θ on the grid."""
    u = np.linspace(-1.0, 1.0, RA_SIZE)
    k = np.arange(m)
    return (np.exp(-1j * np.pi * np.outer(k, u)) / m).astype(np.complex64)


@functools.lru_cache(maxsize=16)
def _steering_t(m: int) -> np.ndarray:
    return np.ascontiguousarray(steering_matrix(m).T)


def angle_fft(x: np.ndarray) -> np.ndarray:
    """[..., m antennas] → [..., 128] azimuth bins (zero-padded DFT evaluated on the arcsin grid)."""
    return np.asarray(x) @ steering_matrix(x.shape[-1])


# ---------------------------------------------------------------------------------------------------------

def ra_map(adc: np.ndarray, profile, *, chirp: int | None = None, clutter_removal: bool = False,
           antennas: np.ndarray | None = None) -> np.ndarray:
    """Range–azimuth map (128, 128, 2) float32 on the ROD2021 grid.

    chirp=i: the CRUW-style map of loop i alone (range FFT + angle FFT, no Doppler; `clutter_removal`
    subtracts the frame's mean chirp first). chirp=None: the frame map: range FFT → (clutter removal:
    subtract the mean over chirps) → Hann-windowed Doppler FFT → angle FFT → for each range–azimuth cell
    the Doppler bin with the most energy (coherent integration over the frame)."""
    x = np.asarray(adc)
    if x.ndim != 3:
        raise ValueError(f"adc must be [chirps, virtual antennas, samples], got shape {x.shape}")
    ant = azimuth_antennas(profile, x.shape[1]) if antennas is None else np.asarray(antennas)
    if chirp is not None:
        if not -x.shape[0] <= chirp < x.shape[0]:
            raise ValueError(f"chirp={chirp} but the frame has {x.shape[0]} chirps (loops)")
        c = x[chirp, ant]
        if clutter_removal:
            c = c - x[:, ant].mean(axis=0)
        rng = range_fft(c, profile)                     # [m, 128 range]
        return to_ra(angle_fft(rng.T))                  # [128 range, 128 az]
    rng = range_fft(x[:, ant], profile)                 # [L, m, R]
    if clutter_removal:
        rng = rng - rng.mean(axis=0, keepdims=True)
    # layout [R, m, L] so the Doppler FFT, the angle matmul and the argmax all run on the last axis
    rng = np.ascontiguousarray(rng.transpose(2, 1, 0))
    nl = rng.shape[-1]
    w = np.hanning(nl + 2)[1:-1]
    w = (w / w.sum()).astype(np.float32)
    nd = 1 << max(0, (nl - 1).bit_length())
    dop = np.fft.fft(rng * w, n=nd, axis=-1).astype(np.complex64, copy=False)   # [R, m, D]
    if nd > 1:
        dop *= _tdm_doppler_compensation(tuple(int(a) for a in ant), int(profile.num_rx), x.shape[1] // int(profile.num_rx), nd)
    cube, mag = _workspace((rng.shape[0], RA_SIZE, nd))
    np.matmul(_steering_t(len(ant)), dop, out=cube)     # [R, A, D]
    best = np.abs(cube, out=mag).argmax(axis=-1)        # reused buffers: no page faults per frame
    z = np.take_along_axis(cube, best[..., None], axis=-1)[..., 0]
    return to_ra(z)


_ws = threading.local()


def _workspace(shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread complex + magnitude scratch cubes for the frame map (allocated once per shape)."""
    buf = getattr(_ws, "buf", None)
    if buf is None or buf[0].shape != shape:
        buf = _ws.buf = (np.empty(shape, np.complex64), np.empty(shape, np.float32))
    return buf


@functools.lru_cache(maxsize=16)
def _tdm_doppler_compensation(ant: tuple | np.ndarray, nrx: int, ntx: int, nd: int) -> np.ndarray:
    """(m, D) phase correction for TDM-MIMO: the chirp in loop slot p fires p·Tc after slot 0, so a target
    in Doppler bin d (phase ψ_d = 2π·d/nd per loop, d signed) has an extra phase ψ_d·p/ntx on those virtual
    antennas; without removing it, moving targets appear at a shifted azimuth (as in the TI SDK)."""
    d = np.fft.fftfreq(nd) * nd                         # signed Doppler bin index
    psi = 2 * np.pi * d / nd
    slot = np.asarray(ant) // nrx
    return np.exp(-1j * np.outer(slot, psi) / ntx).astype(np.complex64)


def ra_from_azimuth_heatmap(heatmap: np.ndarray, profile) -> np.ndarray:
    """RA map from the demo's azimuth static heatmap TLV (type 4): complex [range bins, virtual azimuth
    antennas], the (windowed, zero-padded) range FFT of one chirp per antenna. The range axis is moved onto
    range_grid() by exact band-limited interpolation (inverse FFT back to fast time, then the DFT at each grid
    range's beat frequency; linear interpolation would cancel between bins of opposite phase), then the
    angle DFT. Grid ranges beyond the IF bandwidth are zero."""
    h = np.asarray(heatmap)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be [range bins, antennas], got shape {h.shape}")
    rows = _heatmap_matrix(h.shape[0], *_profile_key(profile)[:2]) @ np.fft.ifft(h, axis=0)
    return to_ra(angle_fft(rows.astype(np.complex64)))


@functools.lru_cache(maxsize=16)
def _heatmap_matrix(nb: int, fs_ksps: float, slope_mhz_us: float) -> np.ndarray:
    nu = 2 * slope_mhz_us * 1e12 * range_grid() / (C * fs_ksps * 1e3)
    mat = np.exp(-2j * np.pi * np.outer(nu, np.arange(nb)))
    mat[nu >= 1.0] = 0
    return mat.astype(np.complex64)

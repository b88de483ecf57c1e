"""What an emulated TI radar observes: the pluggable frame-source protocol and a deterministic source.

The emulated device (`sim/ti_device.py`) asks its source for each frame's content and turns it into
exactly what the demo firmware would send (UART TLVs) or stream (raw ADC to the DCA1000). The scene
simulator (`sim/scene_source.py: SceneRadarSource`) implements the same protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from radvis.cruw import OBJECT_CLASSES, frame_label

C = 299_792_458.0


@dataclass
class RadarFrameContent:
    adc: np.ndarray | None = None            # complex64 [chirps (Doppler loops), virtual antennas, samples], ADC counts
    points: np.ndarray | None = None         # float32 (N, 4): x, y, z (m; x right, y boresight, z up), doppler m/s
    range_profile: np.ndarray | None = None  # float (num range bins,), log2 magnitude
    noise_profile: np.ndarray | None = None
    truth: dict | None = None                # {"label", "scene_id", "objects": [{"cls", "range_m", "azimuth_rad"}]}


class FrameSource(Protocol):
    def frame(self, frame_number: int, t_s: float, profile) -> RadarFrameContent: ...


def azimuth_positions(profile) -> np.ndarray:
    """Horizontal position of each virtual antenna in half-wavelengths, in [TX chirp order][RX] order.
    RX are λ/2 apart; TDM TXs are 2λ apart (xWR16xx TX0/TX1, xWR18xx TX0/TX2); xWR18xx TX1 sits half-way
    (and raised) when 3 TX are used."""
    num_tx, num_rx = profile.num_tx, profile.num_rx
    order = [t for t in (profile.tx_order or list(range(num_tx))) if t >= 0][:num_tx] or list(range(num_tx))
    if num_tx == 3:
        off = {0: 0, 1: 2, 2: 4}
    else:
        off = {t: 4 * k for k, t in enumerate(sorted(set(order)))}
    return np.array([off.get(t, 0) + r for t in order for r in range(num_rx)], np.float64)


def synth_adc(targets: list[dict], profile, rng: np.random.Generator, noise_counts: float = 8.0) -> np.ndarray:
    """FMCW beat signal of point targets (range_m, azimuth_rad, velocity_mps, amplitude counts) as the
    ADC sees it: [Doppler loops, virtual antennas, samples] complex64, TDM-MIMO chirp timing included."""
    L, N = profile.num_doppler_chirps, profile.num_adc_samples
    num_tx, num_rx = profile.num_tx, profile.num_rx
    V = num_tx * num_rx
    fs = profile.sample_rate_ksps * 1e3
    slope = profile.slope_mhz_us * 1e12
    lam = profile.wavelength_m
    tc = profile.chirp_interval_us * 1e-6
    n = np.arange(N)
    pos = azimuth_positions(profile)
    tx_of_v = np.repeat(np.arange(num_tx), num_rx)
    t_chirp = (np.arange(L)[:, None] * num_tx + tx_of_v[None, :]) * tc          # [L, V]
    adc = np.zeros((L, V, N), np.complex128)
    for tg in targets:
        r, az, v = tg["range_m"], tg["azimuth_rad"], tg.get("velocity_mps", 0.0)
        amp = tg.get("amplitude", 2000.0 / max(r, 0.5))
        fb = 2 * slope * r / C
        ph_fast = 2 * np.pi * fb * n / fs                                        # [N]
        ph_slow = 4 * np.pi * (r + v * t_chirp) / lam + np.pi * pos[None, :] * math.sin(az)   # [L, V]
        adc += amp * np.exp(1j * (ph_slow[:, :, None] + ph_fast[None, None, :] + tg.get("phase", 0.0)))
    if noise_counts:
        adc += rng.normal(0, noise_counts, adc.shape) + 1j * rng.normal(0, noise_counts, adc.shape)
    # the ADC is 16-bit
    adc = np.clip(np.round(adc.real), -32768, 32767) + 1j * np.clip(np.round(adc.imag), -32768, 32767)
    return adc.astype(np.complex64)


def targets_to_points(targets: list[dict]) -> np.ndarray:
    pts = np.zeros((len(targets), 4), np.float32)
    for k, tg in enumerate(targets):
        pts[k] = (tg["range_m"] * math.sin(tg["azimuth_rad"]), tg["range_m"] * math.cos(tg["azimuth_rad"]), 0.0,
                  tg.get("velocity_mps", 0.0))
    return pts


class PointTargetSource:
    """Deterministic point targets: a static reflector and a pedestrian walking radially back and forth.
    Content is a pure function of (seed, frame_number, t_s); with `with_adc` it also renders the ADC cube."""

    def __init__(self, targets: list[dict] | None = None, seed: int = 0, noise: float = 1.0, with_adc: bool = True):
        self.targets = targets
        self.seed, self.noise, self.with_adc = seed, noise, with_adc

    def targets_at(self, t_s: float) -> list[dict]:
        if self.targets is not None:
            return [dict(t) for t in self.targets]
        # walker: 4 m <-> 14 m at 1.25 m/s (16 s round trip), 20 deg to the right
        ph = (t_s % 16.0) / 16.0
        r = 4.0 + 10.0 * (2 * ph if ph < 0.5 else 2 - 2 * ph)
        v = 1.25 if ph < 0.5 else -1.25
        return [{"cls": "reflector", "range_m": 6.0, "azimuth_rad": math.radians(-25.0), "velocity_mps": 0.0,
                 "amplitude": 1500.0},
                {"cls": "pedestrian", "range_m": r, "azimuth_rad": math.radians(20.0), "velocity_mps": v}]

    def frame(self, frame_number: int, t_s: float, profile) -> RadarFrameContent:
        tg = self.targets_at(t_s)
        adc = None
        if self.with_adc:
            rng = np.random.default_rng([self.seed, frame_number & 0xFFFFFFFF])
            adc = synth_adc(tg, profile, rng, noise_counts=8.0 * self.noise)
        objs = [{"cls": t["cls"], "range_m": round(t["range_m"], 4), "azimuth_rad": round(t["azimuth_rad"], 4)}
                for t in tg if t.get("cls") in OBJECT_CLASSES]  # a "reflector" is scenery, not an object
        label = frame_label(o["cls"] for o in objs)
        return RadarFrameContent(adc=adc, points=targets_to_points(tg),
                                 truth={"label": label, "scene_id": 0, "objects": objs})

"""What an emulated TI radar observes: the pluggable frame-source protocol and a deterministic source.

The emulated device (`sim/ti_device.py`) asks its source for each frame's content and turns it into
exactly what the demo firmware would send (UART TLVs) or stream (raw ADC to the DCA1000). The scene
simulator (`sim/scene_source.py: SceneRadarSource`) implements the same protocol. Both render the ADC cube
with the one FMCW synthesiser, `sim/render_radar.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from radvis.cruw import OBJECT_CLASSES, frame_label
from sim.render_radar import synth_adc


@dataclass
class RadarFrameContent:
    adc: np.ndarray | None = None            # complex64 [chirps (Doppler loops), virtual antennas, samples], ADC counts
    points: np.ndarray | None = None         # float32 (N, 4): x, y, z (m; x right, y boresight, z up), doppler m/s
    range_profile: np.ndarray | None = None  # float (num range bins,), log2 magnitude
    noise_profile: np.ndarray | None = None
    truth: dict | None = None                # {"label", "scene_id", "objects": [{"cls", "range_m", "azimuth_rad"}]}


class FrameSource(Protocol):
    def frame(self, frame_number: int, t_s: float, profile) -> RadarFrameContent: ...


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
            tg_amp = [{**t, "amplitude": t.get("amplitude", 2000.0 / max(t["range_m"], 0.5))} for t in tg]
            adc = synth_adc(profile, tg_amp, rng=rng, noise_counts=8.0 * self.noise, quantise=True)
        objs = [{"cls": t["cls"], "range_m": round(t["range_m"], 4), "azimuth_rad": round(t["azimuth_rad"], 4)}
                for t in tg if t.get("cls") in OBJECT_CLASSES]  # a "reflector" is scenery, not an object
        label = frame_label(o["cls"] for o in objs)
        return RadarFrameContent(adc=adc, points=targets_to_points(tg),
                                 truth={"label": label, "scene_id": 0, "objects": objs})

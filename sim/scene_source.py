"""`SceneRadarSource`: the scene simulator as the emulated TI radar's frame source (sim/source.py).

Each frame renders the scene at the frame's time t_s (the rig passes time.monotonic(), so the emulated
camera, rendering the same Scene at its own frame times, sees the same objects): the raw ADC cube
(for the DCA1000 path) plus the TLV products of the demo firmware (CFAR points, range and noise
profiles) for the UART path, and the ground truth. Noise is reproducible from (seed, frame_number).
"""
from __future__ import annotations

from threadpoolctl import ThreadpoolController

from sim import render_radar
from sim.scene import Scene
from sim.source import RadarFrameContent

# The per-frame matmuls are small: a multi-threaded BLAS pool only spins against the rig's other processes
# (measured 80x slower on a loaded 2-core box), so rendering runs on one BLAS thread.
_BLAS = ThreadpoolController()


class SceneRadarSource:
    def __init__(self, scene: Scene, *, with_adc: bool = True, noise: float | None = None):
        self.scene = scene
        self.with_adc = with_adc
        self.noise = scene.noise if noise is None else noise

    @classmethod
    def from_config(cls, cfg) -> "SceneRadarSource":
        return cls(Scene.from_config(cfg.scene))

    def frame(self, frame_number: int, t_s: float, profile) -> RadarFrameContent:
        state = self.scene.state(max(0.0, t_s))
        rng = render_radar.frame_rng(self.scene.seed, frame_number)
        with _BLAS.limit(limits=1, user_api="blas"):
            # the cube is also what the profiles are computed from, so render it whenever profiles are wanted
            adc = render_radar.render_adc(state, profile, rng=rng, noise=self.noise)
            rp, npf = render_radar.range_profiles(adc, profile)
            pts = render_radar.detections(state, profile, rng=rng, noise=self.noise)
        return RadarFrameContent(adc=adc if self.with_adc else None, points=pts, range_profile=rp,
                                 noise_profile=npf, truth=state.truth(self.scene.seed))

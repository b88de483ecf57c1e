"""Radar-side augmentation for the contrastive step: a mirrored scene and a small range jitter.

The online rig learner sees each kept pair ~16 times (`online_max_updates_per_pair`) and a 4-minute demo
holds ~80 scenes, so the radar encoder can learn the pairs rather than the objects. MoCo and SimCLR
augment both views; here the image key is frozen and object-centric (`teacher_region = "foreground"`: the
crop around the object), so only the radar view is changed, and only in ways that keep what the key says:

- **Azimuth mirror** (`learner.radar_flip`, a probability per pair). The ROD2021 azimuth grid is
  arcsin(linspace(-1, 1, 128)), symmetric about boresight, so reversing the azimuth axis is exactly the
  scene seen in a mirror: bin k <-> bin 127 - k. A mirrored pedestrian is still a pedestrian, and the key
  of the object crop does not encode where the object stands. (Whole-frame keys and the hand-made
  descriptors do encode position, so the mirror is not applied there: `from_config`.)
- **Range jitter** (`learner.radar_shift_bins`): the map moved by up to ± that many range bins (0.213 m
  each), zeros shifted in. After clutter removal the background is near zero, so this is an object a
  little nearer or farther.

Applied per pair with the learner's own generator, to the (B, C, range, azimuth) batch of any chirp count
(C = 2 per chirp, real/imag: the chirp phases move with the cell, so the chirp DFT is unchanged).
Evaluation never augments.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("radvis.learner")


class RadarAugment:
    def __init__(self, flip_p: float = 0.0, shift_bins: int = 0, seed: int = 0):
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"radar_flip must be a probability in [0, 1], got {flip_p}")
        if shift_bins < 0:
            raise ValueError(f"radar_shift_bins must be >= 0, got {shift_bins}")
        self.flip_p, self.shift_bins = float(flip_p), int(shift_bins)
        self.gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)

    def reseed(self, seed: int, epoch: int) -> None:
        """Offline: draws fixed by (seed, epoch), like the epoch's batch order, so a run resumed at an epoch
        boundary augments exactly as the uninterrupted one, on every rank."""
        self.gen.manual_seed(int(seed) * 100003 + int(epoch) * 7919 + 17)

    def state_dict(self) -> dict:
        """Online: the generator's state travels in the learner's checkpoint (a uint8 tensor, weights_only)."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.gen.set_state(sd["gen"])

    @property
    def active(self) -> bool:
        return self.flip_p > 0 or self.shift_bins > 0

    def __call__(self, radar: torch.Tensor) -> torch.Tensor:
        """(B, C, R, A) -> the same shape, a new tensor (the caller's batch is left as it was)."""
        if not self.active or len(radar) == 0:
            return radar
        b = len(radar)
        # draw on the CPU generator whatever the device: the same seed gives the same draws on CPU and GPU
        flip = torch.rand(b, generator=self.gen) < self.flip_p
        shift = torch.randint(-self.shift_bins, self.shift_bins + 1, (b,), generator=self.gen)
        # one copy per pair, straight into the output (a clone, then gather/scatter per flip and per shift
        # value, was ~10x slower on a 4-chirp batch: bench/learner_step.py)
        out = torch.empty_like(radar)
        r = radar.shape[2]
        for j, (f, s) in enumerate(zip(flip.tolist(), shift.tolist())):
            src = radar[j].flip(-1) if f else radar[j]
            if s > 0:     # farther: bin r takes bin r - s
                out[j, :, :s].zero_()
                out[j, :, s:].copy_(src[:, :r - s])
            elif s < 0:   # nearer
                out[j, :, s:].zero_()
                out[j, :, :s].copy_(src[:, -s:])
            else:
                out[j].copy_(src)
        return out


def from_config(lc, seed: int) -> RadarAugment:
    """The learners' augmentation from `learner.radar_flip` / `radar_shift_bins`. The mirror is applied only
    where the key does not say where the object stands (`teachers.keys_say_where`: a network's keys of the
    object crops); whole-frame keys (CRUW, a moving camera, the paper's setting) and the hand-made
    descriptors would contradict a mirrored map, so the log says it is skipped. The range jitter applies."""
    from learner.teachers import keys_say_where
    flip = lc.radar_flip
    if flip > 0 and keys_say_where(lc):
        log.info("learner.radar_flip = %g not applied: the %s teacher's key (teacher_region = \"%s\") says where the "
                 "object stands, and a mirrored radar map would put it on the other side (learner/augment.py)",
                 flip, lc.vision_encoder, lc.teacher_region)
        flip = 0.0
    return RadarAugment(flip, lc.radar_shift_bins, seed)

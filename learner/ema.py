"""An exponential moving average of the radar encoder's weights (Polyak averaging), for the online learner.

A stream has no end for a cosine schedule to decay towards, so the online learner trains at a constant
learning rate, and its last iterate carries the noise of its last few hundred SGD steps. The average of
those iterates is what `encoder.pt` exports: the same idea as MoCo's momentum key encoder, here used for
the weights people probe and re-use rather than for the keys (the keys come from the frozen teacher).

BatchNorm running statistics are averaged the same way (integer buffers such as `num_batches_tracked`
are copied). The momentum ramps up as (1 + t) / (10 + t) until it reaches `momentum`, so the first steps
are not tied to the random initialisation (TensorFlow's ExponentialMovingAverage with num_updates).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, momentum: float):
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"weight-average momentum must be in (0, 1), got {momentum}")
        self.momentum, self.updates = momentum, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def decay(self) -> float:
        return min(self.momentum, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """After each optimiser step: average <- m x average + (1 - m) x weights."""
        w = 1.0 - self.decay()
        for a, p in zip(self.model.parameters(), model.parameters()):
            a.lerp_(p.detach(), w)
        for a, b in zip(self.model.buffers(), model.buffers()):
            if a.dtype.is_floating_point:
                a.lerp_(b, w)
            else:
                a.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "momentum": self.momentum}

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.updates = int(sd["updates"])

"""learner/ema.py: the online learner's weight average is the moving average it says it is."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.ema import WeightAverage


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_average_follows_the_formula_with_the_ramp_and_bn_statistics():
    net = _net()
    avg = WeightAverage(net, 0.9)
    w0 = net[0].weight.detach().clone()
    expect_w, expect_mean = w0.clone(), net[1].running_mean.clone()
    for t in range(30):
        with torch.no_grad():
            net[0].weight.add_(1.0)  # a "step"
        net.train()
        net(torch.randn(8, 3) + t)  # moves the BatchNorm running statistics
        m = min(0.9, (1 + t) / (10 + t))  # ramped at first, then the momentum
        expect_w = m * expect_w + (1 - m) * net[0].weight.detach()
        expect_mean = m * expect_mean + (1 - m) * net[1].running_mean
        avg.update(net)
    torch.testing.assert_close(avg.model[0].weight, expect_w)
    torch.testing.assert_close(avg.model[1].running_mean, expect_mean)
    assert int(avg.model[1].num_batches_tracked) == 30  # integer buffers are copied
    # the average lags the iterate (which gained +30) and no gradient can reach it
    assert (avg.model[0].weight < net[0].weight).all() and not any(p.requires_grad for p in avg.model.parameters())


def test_state_round_trip_and_bad_momentum():
    net = _net()
    a = WeightAverage(net, 0.99)
    with torch.no_grad():
        net[0].weight.mul_(2)
    a.update(net)
    b = WeightAverage(_net(), 0.99)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and b.decay() == a.decay()
    torch.testing.assert_close(b.model[0].weight, a.model[0].weight)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            WeightAverage(net, bad)

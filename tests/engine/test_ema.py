"""The EMA's warm-up: a short run's average follows the trained weights, not the starting ones."""

import math

import pytest
import torch
from torch import nn

from glip.engine.ema import ModelEMA


def test_warmup_ramps_the_decay():
    ema = ModelEMA(nn.Linear(2, 2), decay=0.999, warmup=100)
    assert ema.decay_at(0) == 0.0  # the first update copies the model
    assert ema.decay_at(100) == pytest.approx(0.999 * (1 - math.exp(-1)))
    assert ema.decay_at(10_000) == pytest.approx(0.999, abs=1e-6)
    assert ModelEMA(nn.Linear(2, 2), decay=0.999).decay_at(5) == 0.999  # no warm-up: constant


def test_short_run_average_is_mostly_the_trained_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    plain, warm = ModelEMA(model, 0.999), ModelEMA(model, 0.999, warmup=50)
    with torch.no_grad():
        model.weight.fill_(1.0)  # "trained" weights
    for step in range(1, 301):
        plain.update(model, step)
        warm.update(model, step)
    assert plain.module.weight.item() == pytest.approx(1 - 0.999**300, rel=1e-4)  # ~0.26: mostly the start
    assert warm.module.weight.item() > 0.99

"""FPN: shapes, a hand-computed pyramid, the P6 input switch, init, and the official key map."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from glip.modeling.fpn import FPN


def _maps(batch: int, channels: list[int], sizes: list[tuple[int, int]]) -> list[Tensor]:
    return [torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes, strict=True)]


@pytest.mark.parametrize(
    "sizes",
    [
        [(13, 20), (7, 10), (4, 5)],
        [(100, 168), (50, 84), (25, 42)],
        [(1, 1), (1, 1), (1, 1)],
        [(5, 3), (3, 2), (2, 1)],
    ],
)
def test_output_shapes(sizes: list[tuple[int, int]]) -> None:
    fpn = FPN([8, 16, 32], 12)
    outs = fpn(_maps(2, [8, 16, 32], sizes))
    h5, w5 = sizes[-1]
    h6, w6 = math.ceil(h5 / 2), math.ceil(w5 / 2)
    expected = [*sizes, (h6, w6), (math.ceil(h6 / 2), math.ceil(w6 / 2))]
    assert [tuple(o.shape) for o in outs] == [(2, 12, h, w) for h, w in expected]


def test_official_example_sizes() -> None:
    # reference-glip.md 1.5: padded 800x1344 -> P3 100x168, P4 50x84, P5 25x42, P6 13x21, P7 7x11
    fpn = FPN([4, 4, 4], 4)
    with torch.no_grad():
        outs = fpn(_maps(1, [4, 4, 4], [(100, 168), (50, 84), (25, 42)]))
    assert [tuple(o.shape[-2:]) for o in outs] == [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
    assert sum(o.shape[-2] * o.shape[-1] for o in outs) == 22400


def _set_conv(conv: torch.nn.Conv2d, weight: Tensor, bias: float) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight))
        conv.bias.fill_(bias)


def test_hand_computed_pyramid() -> None:
    fpn = FPN([1, 1, 1], 1)
    # laterals: C3 * 1 + 0, C4 * 2 + 1, C5 * 3 - 1
    for conv, (w, b) in zip(fpn.inner_blocks, [(1.0, 0.0), (2.0, 1.0), (3.0, -1.0)], strict=True):
        _set_conv(conv, torch.tensor([w]), b)
    # output convs: identity 3x3 kernel, bias 0.5
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1.0
    for conv in fpn.layer_blocks:
        _set_conv(conv, identity, 0.5)
    _set_conv(fpn.p6, torch.ones(3, 3), 0.0)  # 3x3 box sum, stride 2, pad 1
    _set_conv(fpn.p7, identity, -1.0)

    c3 = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5) / 10
    c4 = torch.tensor([[1.0, -2.0, 3.0], [0.0, 1.0, -1.0], [2.0, 2.0, 0.0]]).view(1, 1, 3, 3)
    c5 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]]).view(1, 1, 2, 2)
    p3, p4, p5, p6, p7 = (o[0, 0] for o in fpn([c3, c4, c5]))

    inner5 = 3 * c5[0, 0] - 1  # [[2, 5], [-4, 0.5]]
    assert torch.allclose(p5, inner5 + 0.5)
    # nearest 2 -> 3 uses source rows/cols floor(i * 2 / 3) = 0, 0, 1
    up5 = inner5[[0, 0, 1]][:, [0, 0, 1]]
    inner4 = 2 * c4[0, 0] + 1 + up5
    assert torch.allclose(p4, inner4 + 0.5)
    # nearest 3 -> 5 uses floor(i * 3 / 5) = 0, 0, 1, 1, 2
    up4 = inner4[[0, 0, 1, 1, 2]][:, [0, 0, 1, 1, 2]]
    assert torch.allclose(p3, c3[0, 0] + up4 + 0.5)
    # P6 from the P5 output: 2x2 -> 1x1; the window centred on (0, 0) covers the whole 2x2 map
    assert p6.shape == (1, 1) and torch.allclose(p6, p5.sum().view(1, 1))
    assert torch.allclose(p7, torch.relu(p6) - 1.0)


@pytest.mark.parametrize("p6_from_p5", [True, False])
def test_p6_input_switch(p6_from_p5: bool) -> None:
    torch.manual_seed(0)
    fpn = FPN([4, 6, 8], 8, p6_from_p5=p6_from_p5)  # C5 has as many channels as P5
    seen: list[Tensor] = []
    fpn.p6.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    feats = _maps(1, [4, 6, 8], [(12, 12), (6, 6), (3, 3)])
    outs = fpn(feats)
    assert len(seen) == 1
    assert seen[0] is (outs[2] if p6_from_p5 else feats[-1])
    assert not torch.equal(outs[2], feats[-1])


def test_p6_from_c5_uses_c5_channels() -> None:
    assert FPN([4, 6, 10], 8, p6_from_p5=False).p6.in_channels == 10
    assert FPN([4, 6, 10], 8, p6_from_p5=True).p6.in_channels == 8


def test_init_kaiming_uniform_a1_zero_bias() -> None:
    torch.manual_seed(0)
    fpn = FPN([64, 128, 256], 32)
    for conv in [*fpn.inner_blocks, *fpn.layer_blocks, fpn.p6, fpn.p7]:
        fan_in = conv.weight[0].numel()
        bound = math.sqrt(3.0 / fan_in)  # gain sqrt(2 / (1 + a^2)) = 1 for a = 1
        assert float(conv.weight.detach().abs().max()) <= bound
        assert float(conv.weight.detach().abs().max()) > 0.9 * bound
        assert torch.all(conv.bias == 0)

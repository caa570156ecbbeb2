"""Swin body: shapes, official key layout, recorded official outputs, masks, checkpointing, freezing."""

from __future__ import annotations

import math

import pytest
import torch

from glip.modeling.swin import (
    SHIFT_MASK_VALUE,
    SwinTransformer,
    relative_position_index,
    shifted_window_mask,
)


def tiny_swin(window_size: int = 3, **kwargs: object) -> SwinTransformer:
    return SwinTransformer(8, (2, 2, 2, 2), (1, 2, 2, 4), window_size, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (17, 9), (37, 53), (64, 64), (33, 47)])
def test_output_shapes_and_strides(size: tuple[int, int]) -> None:
    h, w = size
    model = tiny_swin().eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, h, w))
    assert model.out_channels == [16, 32, 64]
    assert model.strides == [8, 16, 32]
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(model.out_channels, model.strides, strict=True)
    ]


def test_out_indices_with_stage0_identity_norm() -> None:
    model = tiny_swin(out_indices=(0, 1, 2, 3)).eval()
    assert isinstance(model.norm0, torch.nn.Identity)
    assert not any(k.startswith("norm0") for k in model.state_dict())
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 19, 23))
    assert [o.shape[1] for o in outs] == [8, 16, 32, 64]
    assert outs[0].shape[-2:] == (5, 6)


def expected_official_swin_keys(
    embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window: int
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official GLIP Swin body, from the rules of reference-glip.md section 3.2."""
    keys: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (embed_dim, 3, 4, 4),
        "patch_embed.proj.bias": (embed_dim,),
        "patch_embed.norm.weight": (embed_dim,),
        "patch_embed.norm.bias": (embed_dim,),
    }
    n = window * window
    for s, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        c = embed_dim * 2**s
        for b in range(depth):
            p = f"layers.{s}.blocks.{b}."
            keys.update(
                {
                    p + "norm1.weight": (c,),
                    p + "norm1.bias": (c,),
                    p + "attn.qkv.weight": (3 * c, c),
                    p + "attn.qkv.bias": (3 * c,),
                    p + "attn.proj.weight": (c, c),
                    p + "attn.proj.bias": (c,),
                    p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                    p + "attn.relative_position_index": (n, n),
                    p + "norm2.weight": (c,),
                    p + "norm2.bias": (c,),
                    p + "mlp.fc1.weight": (4 * c, c),
                    p + "mlp.fc1.bias": (4 * c,),
                    p + "mlp.fc2.weight": (c, 4 * c),
                    p + "mlp.fc2.bias": (c,),
                }
            )
        if s < len(depths) - 1:
            keys[f"layers.{s}.downsample.reduction.weight"] = (2 * c, 4 * c)
            keys[f"layers.{s}.downsample.norm.weight"] = (4 * c,)
            keys[f"layers.{s}.downsample.norm.bias"] = (4 * c,)
        if s >= 1:
            keys[f"norm{s}.weight"] = (c,)
            keys[f"norm{s}.bias"] = (c,)
    return keys


@pytest.mark.parametrize(
    ("embed_dim", "depths", "heads", "window"),
    [(96, (2, 2, 6, 2), (3, 6, 12, 24), 7), (192, (2, 2, 18, 2), (6, 12, 24, 48), 12)],
    ids=["swin-t", "swin-l"],
)
def test_state_dict_matches_official_layout(
    embed_dim: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int
) -> None:
    with torch.device("meta"):
        model = SwinTransformer(embed_dim, depths, heads, window)
    state = model.state_dict()
    expected = expected_official_swin_keys(embed_dim, depths, heads, window)
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert state["layers.0.blocks.0.attn.relative_position_index"].dtype == torch.int64
    assert not any("attn_mask" in k for k in state)


def test_loading_official_layout_gives_no_unexpected_keys() -> None:
    model = tiny_swin()
    donor = tiny_swin()
    official = {f"module.backbone.body.{k}": v.clone() for k, v in donor.state_dict().items()}
    stripped = {k.removeprefix("module.backbone.body."): v for k, v in official.items()}
    result = model.load_state_dict(stripped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_relative_position_index_by_hand() -> None:
    # window 2: tokens (0,0),(0,1),(1,0),(1,1); index = (dy + 1) * 3 + (dx + 1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)
    idx7 = relative_position_index(7)
    assert idx7.shape == (49, 49) and int(idx7.min()) == 0 and int(idx7.max()) == 168
    assert torch.all(idx7.diagonal() == 84)


def test_shifted_window_mask_by_hand() -> None:
    # 4x4 map, window 2, shift 1: row/col regions are [0, 2) -> 0, [2, 3) -> 1, [3, 4) -> 2.
    mask = shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert torch.all(mask[0] == 0)  # top-left window lies in one region
    m = SHIFT_MASK_VALUE
    # top-right window: columns 2, 3 are different regions, rows 0, 1 the same one
    assert torch.equal(mask[1], torch.tensor([[0, m, 0, m], [m, 0, m, 0], [0, m, 0, m], [m, 0, m, 0]]))
    # bottom-right window: four different regions
    assert torch.equal(mask[3], torch.full((4, 4), m).fill_diagonal_(0))
    # a map of one window keeps the shift and its mask
    one = shifted_window_mask(7, 7, 7, 3)
    assert one.shape == (1, 49, 49) and bool((one == m).any())


def _fill_deterministic(model: torch.nn.Module) -> None:
    """0.3 * sin(0.37 i + k) per parameter (k = rank in sorted name order), +1 on norm weights."""
    with torch.no_grad():
        for k, (name, p) in enumerate(sorted(model.named_parameters())):
            v = 0.3 * torch.sin(0.37 * torch.arange(p.numel(), dtype=torch.float64) + k)
            if "norm" in name and name.endswith("weight"):
                v = v + 1.0
            p.copy_(v.view_as(p))


# Outputs of the official swint.py (float64, eval) for the weights and inputs above, recorded once:
# per stage (shape, sum, sum of |x|, out[-1, :3, -1, -1]).
OFFICIAL_RECORDS = {
    ((1, 2, 2, 4), 3, (2, 37, 53)): [
        ((2, 16, 5, 7), -26.173178102087615, 976.2438820412192, (0.2844374325, -1.6890746979, -0.5590923612)),
        ((2, 32, 3, 4), -3.6890797991093764, 713.4644604849013, (-0.7455389992, 1.9927770258, -0.5276355712)),
        ((2, 64, 2, 2), 5.701405424979111, 463.3817019968103, (-1.3749193756, -0.3902812236, -0.9458866993)),
    ],
    ((2, 2, 4, 4), 7, (1, 45, 30)): [
        ((1, 16, 6, 4), -8.9945961777827, 333.3273812790582, (0.1622629673, -1.6319581819, -0.3428553637)),
        (
            (1, 32, 3, 2),
            -0.8567217226153874,
            175.73524887574968,
            (-0.7210473032, 2.0751616678, -0.4291074484),
        ),
        (
            (1, 64, 2, 1),
            1.4212295020586123,
            115.79626938263912,
            (-1.3663412252, -0.3881945765, -0.9547472585),
        ),
    ],
}


@pytest.mark.parametrize("case", list(OFFICIAL_RECORDS), ids=["window3", "window7"])
def test_matches_recorded_official_outputs(case: tuple) -> None:
    heads, window, (b, h, w) = case
    model = SwinTransformer(8, (2, 2, 2, 2), heads, window).double().eval()
    _fill_deterministic(model)
    n = b * 3 * h * w
    x = torch.sin(0.013 * torch.arange(n, dtype=torch.float64) ** 1.3).view(b, 3, h, w) * 2.0
    with torch.no_grad():
        outs = model(x)
    for out, (shape, total, abs_total, corner) in zip(outs, OFFICIAL_RECORDS[case], strict=True):
        assert tuple(out.shape) == shape
        assert float(out.sum()) == pytest.approx(total, abs=1e-8)
        assert float(out.abs().sum()) == pytest.approx(abs_total, rel=1e-10)
        assert torch.allclose(out[-1, :3, -1, -1], torch.tensor(corner, dtype=torch.float64), atol=1e-9)


def test_activation_checkpointing_gives_same_outputs_and_grads() -> None:
    torch.manual_seed(0)
    plain = tiny_swin(drop_path_rate=0.0).train()
    ckpt = tiny_swin(drop_path_rate=0.0, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 29, 35)
    loss_plain = sum(o.square().mean() for o in plain(x))
    loss_ckpt = sum(o.square().mean() for o in ckpt(x))
    loss_plain.backward()
    loss_ckpt.backward()
    assert torch.allclose(loss_plain, loss_ckpt)
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6), name


def test_drop_path_only_in_training() -> None:
    model = tiny_swin(drop_path_rate=0.5)
    rates = [blk.drop_path.p for layer in model.layers for blk in layer.blocks]
    assert rates == pytest.approx([0.5 * i / 7 for i in range(8)], abs=1e-6)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x)[-1], model(x)[-1]
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c = model(x)[-1]
    assert not torch.allclose(a, c)


def test_freeze_stages_matches_official_semantics() -> None:
    model = tiny_swin()
    model.freeze_stages(2)  # patch embedding and stage 0
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert not model.layers[0].training and model.layers[1].training

"""Fusion block, clamped text layer, DyConv and head: hand-checkable behaviour."""

import math

import pytest
import torch
from torchvision.ops import deform_conv2d
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from glip.modeling.dyhead import DyConv, DyReLU, _prefix
from glip.modeling.fusion import BiMultiHeadAttention, FusionBlock, flatten_levels, split_levels
from glip.modeling.head import GLIPHead
from glip.modeling.text_layer import ClampedBertLayer


def test_flatten_and_split_levels_round_trip():
    feats = [torch.randn(2, 4, 3, 5), torch.randn(2, 4, 2, 3), torch.randn(2, 4, 1, 1)]
    flat, sizes = flatten_levels(feats)
    assert flat.shape == (2, 15 + 6 + 1, 4)
    assert torch.equal(flat[:, 1], feats[0][:, :, 0, 1])  # row-major within a level
    assert torch.equal(flat[:, 15], feats[1][:, :, 0, 0])
    for a, b in zip(split_levels(flat, sizes), feats, strict=True):
        assert torch.equal(a, b)


def _reference_biattention(attn: BiMultiHeadAttention, v, t, mask):
    """Direct single-head-at-a-time restatement of the official equations."""
    h, d = attn.num_heads, attn.head_dim
    q = attn.v_proj(v) * d**-0.5
    k = attn.l_proj(t)
    vv = attn.values_v_proj(v)
    vl = attn.values_l_proj(t)
    out_v, out_l = [], []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        s = q[..., sl] @ k[..., sl].transpose(1, 2)  # (B, N, T)
        pv = (s + torch.where(mask[:, None, :] > 0, 1.0, -9e15)).softmax(-1)
        pl = s.transpose(1, 2).softmax(-1)  # over all pixels, unmasked
        out_v.append(pv @ vl[..., sl])
        out_l.append(pl @ vv[..., sl])
    return attn.out_v_proj(torch.cat(out_v, -1)), attn.out_l_proj(torch.cat(out_l, -1))


def test_biattention_matches_the_equations():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(visual_dim=8, text_dim=6, embed_dim=12, num_heads=3).eval()
    v, t = torch.randn(2, 10, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    dv, dl = attn(v, t, mask)
    rv, rl = _reference_biattention(attn, v, t, mask)
    assert torch.allclose(dv, rv, atol=1e-5) and torch.allclose(dl, rl, atol=1e-5)


def test_image_side_ignores_padded_tokens_but_text_side_sees_padded_pixels():
    torch.manual_seed(0)
    attn = BiMultiHeadAttention(8, 6, 12, 3).eval()
    v, t = torch.randn(1, 10, 8), torch.randn(1, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    dv, dl = attn(v, t, mask)
    l2 = t.clone()
    l2[:, 3:] = torch.randn(1, 2, 6) * 10  # change only padded tokens
    dv2, dl2 = attn(v, l2, mask)
    assert torch.allclose(dv, dv2, atol=1e-6)  # image side never attends to padding
    assert torch.allclose(dl[:, :3], dl2[:, :3], atol=1e-6)  # real tokens' updates unchanged
    # text->image is unmasked: changing a (padded) pixel changes the text update ...
    v2 = v.clone()
    v2[:, -1] += 5.0
    _, dl3 = attn(v2, t, mask)
    assert not torch.allclose(dl, dl3, atol=1e-4)
    # ... unless a pixel mask is given (the optional, non-official behaviour)
    pm = torch.ones(1, 10, dtype=torch.bool)
    pm[:, -1] = False
    _, dl4 = attn(v, t, mask, pm)
    _, dl5 = attn(v2, t, mask, pm)
    assert torch.allclose(dl4, dl5, atol=1e-6)


def test_fusion_residual_is_taken_from_the_normed_inputs():
    torch.manual_seed(0)
    block = FusionBlock(8, 6, 12, 3, dropout=0.0, layer_scale_init=0.0).eval()
    feats = [torch.randn(1, 8, 2, 2) * 3 + 1, torch.randn(1, 8, 1, 1)]
    text = torch.randn(1, 4, 6) * 2 + 5
    new_v, new_l = block(feats, text, torch.ones(1, 4))
    # with gamma = 0 the block returns exactly the layer-normed inputs
    flat, _ = flatten_levels(feats)
    assert torch.allclose(flatten_levels(new_v)[0], block.layer_norm_v(flat), atol=1e-6)
    assert torch.allclose(new_l, block.layer_norm_l(text), atol=1e-6)
    block.residual_on_normed = False
    new_v, new_l = block(feats, text, torch.ones(1, 4))
    assert torch.allclose(new_l, text)


def test_clamped_bert_layer_equals_transformers_bert_layer_when_nothing_clamps():
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, attn_implementation="eager")
    ref = BertLayer(cfg).eval()
    ours = ClampedBertLayer(32, 4, 64).eval()
    ours.load_state_dict(
        {
            "query.weight": ref.attention.self.query.weight,
            "query.bias": ref.attention.self.query.bias,
            "key.weight": ref.attention.self.key.weight,
            "key.bias": ref.attention.self.key.bias,
            "value.weight": ref.attention.self.value.weight,
            "value.bias": ref.attention.self.value.bias,
            "attn_out.weight": ref.attention.output.dense.weight,
            "attn_out.bias": ref.attention.output.dense.bias,
            "attn_norm.weight": ref.attention.output.LayerNorm.weight,
            "attn_norm.bias": ref.attention.output.LayerNorm.bias,
            "ffn_in.weight": ref.intermediate.dense.weight,
            "ffn_in.bias": ref.intermediate.dense.bias,
            "ffn_out.weight": ref.output.dense.weight,
            "ffn_out.bias": ref.output.dense.bias,
            "ffn_norm.weight": ref.output.LayerNorm.weight,
            "ffn_norm.bias": ref.output.LayerNorm.bias,
        }
    )
    x = torch.randn(2, 7, 32)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    expected = ref(x, attention_mask=ext)
    expected = expected[0] if isinstance(expected, tuple) else expected
    assert torch.allclose(ours(x, mask), expected, atol=1e-5)


def test_clamped_bert_layer_clamps_overflowing_activations():
    layer = ClampedBertLayer(8, 2, 16, clamp_value=10.0).eval()
    with torch.no_grad():
        layer.ffn_norm.weight.fill_(1e6)
    out = layer(torch.randn(1, 3, 8), torch.ones(1, 3))
    assert out.abs().max() <= 10.0


def test_prefix_reads_the_flat_per_sample_buffer():
    t = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 2, 3, 4)
    p = _prefix(t, 2, 2)
    assert p.shape == (2, 2, 2, 2)
    assert p[0].flatten().tolist() == list(range(8))  # sample 0's first 8 values, channel 0 then 1
    assert p[1].flatten().tolist() == list(range(24, 32))


def test_dyconv_coarse_branch_uses_the_offset_prefix():
    torch.manual_seed(0)
    dy = DyConv(8, groups=2, coarse_offset_mode="prefix").eval()
    with torch.no_grad():
        dy.offset.weight.normal_(std=0.5)  # non-trivial offsets
    feats = [torch.randn(1, 8, 6, 6), torch.randn(1, 8, 3, 3)]
    captured = {}

    def hook(module, args, output):
        captured.setdefault("calls", []).append((args[0].shape[-2:], output))

    handle = dy.convs[0].register_forward_hook(hook)
    dy(feats)
    handle.remove()
    # level 0 calls conv[0] (the coarser branch) on the 3x3 map with offsets from the 6x6 level
    ((shape, out),) = captured["calls"]
    assert tuple(shape) == (3, 3)
    om = dy.offset(feats[0])
    offset, mask = om[:, :18], om[:, 18:].sigmoid()
    conv = dy.convs[0].conv
    expected = deform_conv2d(
        feats[1], _prefix(offset, 3, 3), conv.weight, conv.bias, padding=1, mask=_prefix(mask, 3, 3)
    )
    assert torch.allclose(out, dy.convs[0].norm(expected), atol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "own"])
def test_dyconv_keeps_shapes(mode):
    dy = DyConv(16, groups=4, coarse_offset_mode=mode)
    feats = [torch.randn(2, 16, 8, 12), torch.randn(2, 16, 4, 6), torch.randn(2, 16, 2, 3), torch.randn(2, 16, 1, 2)]
    outs = dy(feats)
    assert [o.shape for o in outs] == [f.shape for f in feats]


def test_dyrelu_at_neutral_coefficients_is_identity_for_positive_inputs():
    act = DyReLU(8)
    with torch.no_grad():
        act.fc2.weight.zero_()
        act.fc2.bias.zero_()  # hsigmoid(0) = 0.5 -> a1 = 1, b1 = 0, a2 = 0, b2 = 0
    x = torch.randn(1, 8, 3, 3)
    assert torch.allclose(act(x), x.clamp(min=0))


def test_head_logit_formula():
    torch.manual_seed(0)
    head = GLIPHead(channels=4, text_dim=6, num_levels=2)
    with torch.no_grad():
        head.log_scale.fill_(math.log(2.0))
        head.bias_lang.normal_()
    feats = [torch.randn(1, 4, 2, 2), torch.randn(1, 4, 1, 1)]
    text = torch.randn(1, 3, 6)
    _, proj, bias = head.text_queries(text)
    logits = head.grounding_logits(feats, proj, bias)
    e = text / text.norm(dim=-1, keepdim=True)
    tok = head.text_proj(e / 2.0)
    q = flatten_levels(feats)[0]
    expected = q @ tok.transpose(1, 2) / 2.0 + (e @ head.bias_lang + head.bias0)[:, None, :]
    assert torch.allclose(logits, expected, atol=1e-5)
    assert math.isclose(head.bias0.item(), -math.log(99), rel_tol=1e-6)

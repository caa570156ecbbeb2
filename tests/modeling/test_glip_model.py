"""GLIPModel end to end: output shapes for every preset, chunk-friendly entry points, training mode."""

import pytest
import torch

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel


def _inputs(cfg, h=64, w=96, tokens=12, batch=1):
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, h, w)
    ids = torch.randint(1000, 2000, (batch, tokens))
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[:, -3:] = 0
    return pixels, ids, mask


def _expected_sizes(h, w):
    sizes = [((h + 7) // 8, (w + 7) // 8)]
    for _ in range(4):
        ph, pw = sizes[-1]
        sizes.append(((ph + 1) // 2, (pw + 1) // 2))
    return sizes


@pytest.mark.parametrize(
    "preset",
    [
        "tiny",
        "tiny_a",
        "effnet_minilm",
        "mobilenet_minilm",
        pytest.param("glip_t", marks=pytest.mark.slow),
        pytest.param("glip_t_a", marks=pytest.mark.slow),
        pytest.param("glip_l", marks=pytest.mark.slow),
    ],
)
def test_output_shapes_for_every_preset(preset):
    cfg = GLIPConfig.from_preset(preset)
    model = GLIPModel(cfg).eval()
    pixels, ids, mask = _inputs(cfg)
    with torch.inference_mode():
        out = model(pixels, ids, mask)
    sizes = _expected_sizes(64, 96)
    n = sum(h * w for h, w in sizes)
    assert out.level_sizes == sizes
    assert out.logits.shape == (1, n, 12)
    assert out.box_regression.shape == (1, n, 4)
    assert out.centerness.shape == (1, n)
    assert out.anchors_xyxy.shape == (n, 4)
    assert out.text_embedding.shape == (1, 12, cfg.text.hidden_size)
    assert [tuple(f.shape) for f in out.fpn_features] == [(1, cfg.tower.channels, h, w) for h, w in sizes]
    assert (out.fused_text is None) == (not cfg.tower.early_fusion)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.box_regression).all()


def test_split_entry_points_equal_the_full_forward():
    cfg = GLIPConfig.tiny()
    model = GLIPModel(cfg).eval()
    pixels, ids, mask = _inputs(cfg, batch=2)
    with torch.inference_mode():
        full = model(pixels, ids, mask)
        feats = model.encode_image(pixels)
        text = model.encode_text(ids[:1], mask[:1]).repeat(2)
        ids2 = ids.clone()
        ids2[1] = ids[0]
        full_same_text = model(pixels, ids2, mask)
        split = model.forward_features(feats, text)
    assert torch.allclose(split.logits, full_same_text.logits, atol=1e-5)
    assert torch.allclose(split.box_regression, full_same_text.box_regression, atol=1e-5)
    assert not torch.allclose(full.logits[1], full_same_text.logits[1], atol=1e-5)  # the text matters


def test_padding_tokens_do_not_change_real_token_logits():
    """The official model pads prompts to 256 tokens; padding to the longest gives the same numbers."""
    cfg = GLIPConfig.tiny()
    model = GLIPModel(cfg).eval()
    pixels, ids, _ = _inputs(cfg, tokens=8)
    short_mask = torch.ones(1, 8, dtype=torch.long)
    long_ids = torch.cat([ids, torch.zeros(1, 24, dtype=torch.long)], dim=1)
    long_mask = torch.cat([short_mask, torch.zeros(1, 24, dtype=torch.long)], dim=1)
    with torch.inference_mode():
        a = model(pixels, ids, short_mask)
        b = model(pixels, long_ids, long_mask)
    assert torch.allclose(a.logits, b.logits[..., :8], atol=1e-4)
    assert torch.allclose(a.box_regression, b.box_regression, atol=1e-4)


def test_training_mode_backward_reaches_every_trainable_parameter():
    cfg = GLIPConfig.tiny()
    model = GLIPModel(cfg).train()
    pixels, ids, mask = _inputs(cfg)
    out = model(pixels, ids, mask)
    loss = out.logits.sigmoid().mean() + out.box_regression.mean() + out.centerness.mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    # token-type embeddings of BERT rows other than 0 and the unused layers get zero but present grads
    assert no_grad == [], no_grad[:10]


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = GLIPConfig.tiny().replace(
        **{"tower.fusion_dropout": 0.0, "text.hidden_dropout_prob": 0.0, "text.attention_probs_dropout_prob": 0.0}
    )
    model = GLIPModel(cfg).train()
    pixels, ids, mask = _inputs(cfg)

    def grads():
        model.zero_grad()
        out = model(pixels, ids, mask)
        (out.logits.mean() + out.box_regression.mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.tower.gradient_checkpointing = True
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-5), k

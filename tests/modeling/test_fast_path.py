"""The fused-attention fast path computes what the exact path computes; reduced precision stays close."""

import pytest
import torch

from glip.config import GLIPConfig
from glip.errors import GLIPError
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor
from glip.processing import GLIPProcessor, load_image


@pytest.mark.parametrize("preset", ["tiny", "tiny_a", "effnet_minilm"])
def test_fast_path_matches_the_exact_path(preset, sample_image):
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.from_preset(preset)).eval()
    with torch.no_grad():
        model.head.bias0.zero_()
    proc = GLIPProcessor.from_config(model.config)
    inputs = proc(load_image(sample_image), ["raccoon", "dog", "traffic light"])
    with torch.inference_mode():
        exact = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
        model.enable_fast_path()
        fast = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
    for name in ("logits", "box_regression", "centerness"):
        assert torch.allclose(getattr(exact, name), getattr(fast, name), atol=1e-5), name
    assert (exact.logits - low.logits.float()).abs().max() < 0.1  # bf16 keeps ~2-3 significant digits
    model.enable_fast_path(False)
    with torch.inference_mode():
        again = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
    assert torch.equal(again.logits, exact.logits)  # the exact path is untouched


def test_fast_path_is_not_used_in_training():
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny()).enable_fast_path().train()
    pixels, ids = torch.randn(1, 3, 64, 64), torch.randint(1000, 2000, (1, 6))
    out = model(pixels, ids, torch.ones_like(ids))
    out.logits.mean().backward()  # dropout and the exact path run in training
    assert model.tower.blocks[0].fusion.attn.fast


def test_predictor_in_bf16_gives_nearly_the_same_detections(tiny_model_dir, sample_image):
    fp32 = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu").predict(sample_image, classes=["raccoon"])[0]
    bf16 = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16").predict(
        sample_image, classes=["raccoon"]
    )[0]
    assert len(bf16) > 0 and bf16.boxes_xyxy.dtype == torch.float32
    assert abs(float(fp32.scores[0]) - float(bf16.scores[0])) < 0.02
    with pytest.raises(GLIPError, match="dtype"):
        GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="int8")


@pytest.mark.parametrize(("size", "small"), [((100, 168), (50, 84)), ((13, 21), (7, 11)), ((5, 1), (3, 1))])
def test_fast_upsampling_is_bilinear_with_aligned_corners(size, small):
    from glip.modeling.dyhead import _upsample

    x = torch.randn(2, 3, *small, dtype=torch.float64)
    want = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)
    got = _upsample(x, torch.Size(size), fast=True)  # float64: the GEMM route, without rounding
    assert torch.allclose(got, want, atol=1e-12)
    low = _upsample(x.bfloat16(), torch.Size(size), fast=True)
    assert (low.double() - want).abs().max() < 0.05


def test_fast_path_keeps_small_cnn_bodies_in_fp32_under_autocast():
    model = GLIPModel(GLIPConfig.small("mobilenet_v2", pretrained=False)).eval()  # no weight packages needed
    seen = []
    first_conv = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode_image(pixels)  # exact path: the body follows autocast
        model.enable_fast_path()
        model.encode_image(pixels)
    assert seen == [torch.bfloat16, torch.float32]
    swin = GLIPModel(GLIPConfig.from_preset("tiny")).enable_fast_path()
    assert swin.backbone.fp32_body is False  # Swin bodies run in the autocast dtype


def test_fast_path_forms_text_level_fusion_and_logits_in_fp32_under_autocast():
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny()).eval()
    ids = torch.randint(1000, 2000, (1, 6))
    mask = torch.ones_like(ids)
    dyconv = model.tower.blocks[0].dyconv
    seen: list[torch.dtype] = []
    dyconv.act.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    text_linear = next(m for m in model.text_encoder.modules() if isinstance(m, torch.nn.Linear))
    text_seen: list[torch.dtype] = []
    text_linear.register_forward_hook(lambda mod, inp, out: text_seen.append(out.dtype))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(1, 3, 64, 64), ids, mask)
        model.enable_fast_path()
        model(torch.randn(1, 3, 64, 64), ids, mask)
    assert text_seen == [torch.bfloat16, torch.float32]  # the text encoder: autocast, then fp32
    # DyReLU ran in bf16 on the exact path and in fp32 (rounded once afterwards) on the fast path
    assert seen[0] == torch.bfloat16 and set(seen[len(seen) // 2 :]) == {torch.float32}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(f.dtype == torch.bfloat16 for f in dyconv([torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]))
    # grounding logits from bf16 tower maps: formed in fp32, exactly as without autocast
    feats = [torch.randn(1, 32, 4, 6).bfloat16(), torch.randn(1, 32, 2, 3).bfloat16()]
    text = torch.randn(1, 5, 32)
    with torch.inference_mode():
        want = model.head.grounding_logits([f.float() for f in feats], *model.head.text_queries(text)[1:])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.head.grounding_logits(feats, *model.head.text_queries(text)[1:])
            model.head.fast = False
            rounded = model.head.grounding_logits(feats, *model.head.text_queries(text)[1:])
    assert torch.equal(got, want)
    assert not torch.equal(rounded.float(), want)  # autocast alone rounds the GEMM to bf16


def test_fast_path_on_a_model_cast_to_bf16_as_a_whole():
    """Without autocast nothing is moved to fp32 (the weights are bf16 too)."""
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.small(pretrained=False)).eval().enable_fast_path().to(torch.bfloat16)
    ids = torch.randint(1000, 2000, (1, 6))
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16), ids, torch.ones_like(ids))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()

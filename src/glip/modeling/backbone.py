"""Image backbone: a body giving C3-C5 (Swin, EfficientNet-Lite0, MobileNetV2) plus the FPN (P3-P7).

State-dict layout: ``body.*`` holds the body's own names (for Swin exactly the official names
under ``backbone.body.``); ``fpn.*`` holds :class:`~glip.modeling.fpn.FPN` names, which map onto
the official ``backbone.fpn.*`` through the key map of :mod:`glip.checkpoints`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from glip.modeling.cnn_backbones import EfficientNetLite0, MobileNetV2Body
from glip.modeling.fpn import FPN
from glip.modeling.swin import SwinTransformer

logger = logging.getLogger(__name__)

BACKBONE_NAMES: tuple[str, ...] = ("swin", "efficientnet_lite0", "mobilenet_v2")


class VisionBackbone(nn.Module):
    """``body`` (C3, C4, C5) followed by ``fpn`` (P3 .. P7).

    Args:
        body: module mapping ``(B, 3, H, W)`` to a list of maps, finest first, with an
            ``out_channels`` list attribute.
        fpn: feature pyramid over the body maps.

    Attributes:
        out_channels: channels of every pyramid level.
        strides: stride of each output level (8, 16, 32, 64, 128 for the built-in bodies).
    """

    def __init__(self, body: nn.Module, fpn: FPN) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels: int = fpn.out_channels
        body_strides: list[int] = list(getattr(body, "strides", [8, 16, 32]))
        self.strides: list[int] = [*body_strides, body_strides[-1] * 2, body_strides[-1] * 4]
        # Set by GLIPModel.enable_fast_path for the small CNN bodies: under autocast they stay in fp32
        # (their depthwise convolutions and frozen batch norms lose most of the accuracy in bf16).
        self.fp32_body = False

    def forward(self, pixel_values: Tensor) -> list[Tensor]:
        """Compute the pyramid.

        Args:
            pixel_values: ``(B, 3, H, W)`` normalised, padded images.

        Returns:
            5 maps ``(B, out_channels, ceil(H / s), ceil(W / s))`` for ``s`` = 8, 16, 32, 64, 128
            (for the P6/P7 levels, ``ceil`` of the previous level's size over 2).
        """
        kind = pixel_values.device.type
        if self.fp32_body and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return self.fpn([c.float() for c in self.body(pixel_values.float())])
        return self.fpn(self.body(pixel_values))

    def freeze_body(self, frozen_stages: int) -> None:
        """Stop gradients into the early body stages (official ``FREEZE_CONV_BODY_AT`` for Swin).

        Swin: see :meth:`SwinTransformer.freeze_stages`. CNN bodies: ``frozen_stages >= 0`` freezes
        the whole body (their batch norms are frozen anyway). ``-1`` freezes nothing.
        """
        if isinstance(self.body, SwinTransformer):
            self.body.freeze_stages(frozen_stages)
        elif frozen_stages >= 0:
            for p in self.body.parameters():
                p.requires_grad_(False)


def build_vision_backbone(
    name: str,
    *,
    swin_embed_dim: int = 96,
    swin_depths: Sequence[int] = (2, 2, 6, 2),
    swin_num_heads: Sequence[int] = (3, 6, 12, 24),
    swin_window_size: int = 7,
    swin_mlp_ratio: float = 4.0,
    swin_patch_size: int = 4,
    swin_drop_path_rate: float = 0.2,
    swin_use_checkpoint: bool = False,
    pretrained: bool = False,
    fpn_channels: int = 256,
    fpn_p6_from_p5: bool = True,
) -> VisionBackbone:
    """Build a body and its FPN from plain arguments.

    Args:
        name: ``"swin"``, ``"efficientnet_lite0"`` or ``"mobilenet_v2"``.
        swin_*: Swin hyper-parameters (ignored by the CNN bodies).
        pretrained: CNN bodies only: load the ImageNet weights of the installed weight package
            (Swin weights come with a GLIP checkpoint instead).
        fpn_channels: channels of every pyramid level.
        fpn_p6_from_p5: P6 from the P5 output (official) instead of from C5.

    Raises:
        ValueError: unknown ``name``.
        glip.errors.CheckpointError: ``pretrained`` and the weight package is missing.
    """
    body: SwinTransformer | EfficientNetLite0 | MobileNetV2Body
    if name == "swin":
        if pretrained:
            logger.info("pretrained=True has no effect on the Swin body; load a GLIP checkpoint instead")
        body = SwinTransformer(
            swin_embed_dim,
            swin_depths,
            swin_num_heads,
            swin_window_size,
            mlp_ratio=swin_mlp_ratio,
            patch_size=swin_patch_size,
            drop_path_rate=swin_drop_path_rate,
            out_indices=(1, 2, 3),
            use_checkpoint=swin_use_checkpoint,
        )
    elif name == "efficientnet_lite0":
        body = EfficientNetLite0(pretrained=pretrained)
    elif name == "mobilenet_v2":
        body = MobileNetV2Body(pretrained=pretrained)
    else:
        raise ValueError(f"unknown vision backbone {name!r}: use one of {BACKBONE_NAMES}")
    fpn = FPN(body.out_channels, fpn_channels, p6_from_p5=fpn_p6_from_p5)
    return VisionBackbone(body, fpn)

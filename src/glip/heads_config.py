"""Configuration of the task heads on the GLIP trunk (the ``heads`` section of a model config).

The grounding head (boxes, centerness, region-word logits) is configured by ``GLIPConfig.head`` and
is always built; the GLIPv2 heads here exist when their section is set, so a model folder's
``config.json`` says which heads it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from glip.errors import ConfigError


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class VQAHeadConfig:
    """GLIPv2 VQA head: attention pooling over the fused text → 2-layer MLP (GELU) → one score per answer.

    The question gets a ``[MASK]`` token appended; the region-word logits at that token ground the answer.
    """

    # The answer vocabulary (built from the training data), in score order; its size is the output width.
    answers: list[str] = field(default_factory=list)
    # Width of the MLP's hidden layer; 0: twice the text width.
    hidden_dim: int = 0
    dropout: float = 0.1

    def validate(self) -> None:
        """Raises ConfigError for an empty vocabulary, repeated answers or bad sizes."""
        _check(len(self.answers) >= 1, "heads.vqa.answers is empty: build the answer vocabulary from training data")
        _check(len(set(self.answers)) == len(self.answers), "heads.vqa.answers lists an answer twice")
        _check(0 <= self.hidden_dim <= 65536, f"heads.vqa.hidden_dim={self.hidden_dim} is out of range")
        _check(0.0 <= self.dropout < 1.0, f"heads.vqa.dropout={self.dropout} must be in [0, 1)")


@dataclass
class CaptionHeadConfig:
    """GLIPv2 captioning: a causal language-model head on the fused text.

    Its decoder is the MLM decoder when the model has one, else the text encoder's word embeddings
    (tied weights: nothing of vocabulary size is added).
    """

    # Decoding defaults (``glip caption`` can change them).
    max_length: int = 20
    beam_size: int = 3
    # Beam scores are divided by length ** length_penalty (0: no normalisation).
    length_penalty: float = 1.0

    def validate(self) -> None:
        """Raises ConfigError for impossible decoding settings."""
        _check(1 <= self.max_length <= 512, f"heads.caption.max_length={self.max_length} must be in [1, 512]")
        _check(1 <= self.beam_size <= 64, f"heads.caption.beam_size={self.beam_size} must be in [1, 64]")
        _check(
            0.0 <= self.length_penalty <= 10.0, f"heads.caption.length_penalty={self.length_penalty} is out of range"
        )


@dataclass
class MaskHeadConfig:
    """GLIPv2 mask head: ROIAlign on the fused pyramid → Hourglass → per-pixel region-word logits.

    Its width is the tower's (``tower.channels``): the hourglass keeps its input width. The official
    code has no mask config; T/B use 1 hourglass of 1 scale, H 4 hourglasses of 2 scales.
    """

    num_hourglasses: int = 1
    hourglass_scales: int = 1
    # ROIAlign output side P (masks are 2P x 2P); must be divisible by 2 ** hourglass_scales.
    pooler_resolution: int = 14
    sampling_ratio: int = 2
    log_scale_init: float = 0.0
    # Official quirk (as the detection head): the L2-normalised text is halved before the projection.
    text_input_scale: float = 0.5
    # Training: a ROI learns the mask of the GT box it overlaps by at least this IoU.
    iou_threshold: float = 0.5
    # Training: predicted boxes per image added to the GT boxes as ROIs (0: GT boxes only).
    train_proposals: int = 16
    # Inference: mask probability above which a pixel belongs to the instance.
    mask_threshold: float = 0.5

    def validate(self, tower_channels: int) -> None:
        """Raises ConfigError for settings the head cannot be built with."""
        for name in ("num_hourglasses", "hourglass_scales", "pooler_resolution", "sampling_ratio"):
            value, lowest = getattr(self, name), 0 if name == "sampling_ratio" else 1
            _check(lowest <= value <= 64, f"heads.mask.{name}={value} must be in [{lowest}, 64]")
        _check(
            self.pooler_resolution % (2**self.hourglass_scales) == 0,
            f"heads.mask.pooler_resolution={self.pooler_resolution} must be divisible by 2**hourglass_scales="
            f"{2**self.hourglass_scales}",
        )
        _check(tower_channels % 2 == 0, f"heads.mask needs an even tower.channels, got {tower_channels}")
        for name in ("iou_threshold", "mask_threshold"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"heads.mask.{name}={getattr(self, name)} must be in [0, 1]")
        _check(self.text_input_scale > 0, f"heads.mask.text_input_scale={self.text_input_scale} must be positive")
        _check(0 <= self.train_proposals <= 10**4, f"heads.mask.train_proposals={self.train_proposals} is out of range")


@dataclass
class ContrastiveHeadConfig:
    """GLIPv2 projections of regions and tokens for the inter-image contrastive loss."""

    dim: int = 64


@dataclass
class HeadsConfig:
    """The task heads built on the trunk (image encoder, text encoder, VL tower).

    The grounding head (boxes, centerness, region-word logits; ``GLIPConfig.head``) is always there;
    the others exist when their section is set. A model folder's ``config.json`` therefore says which
    heads it has, and asking a model for the task of a missing head is a :class:`ConfigError`.
    """

    # GLIPv2 instance / referring-expression segmentation.
    mask: MaskHeadConfig | None = None
    # GLIPv2 masked-language-model decoder on the fused text (pre-training).
    mlm: bool = False
    # GLIPv2 inter-image contrastive projections (pre-training).
    contrastive: ContrastiveHeadConfig | None = None
    # GLIPv2 grounded VQA: attention pooling of the fused text → answer scores.
    vqa: VQAHeadConfig | None = None
    # GLIPv2 grounded captioning: causal language modelling on the fused text.
    caption: CaptionHeadConfig | None = None

    def names(self) -> list[str]:
        """The heads present, ``"grounding"`` first."""
        present = {
            "mask": self.mask is not None,
            "mlm": self.mlm,
            "contrastive": self.contrastive is not None,
            "vqa": self.vqa is not None,
            "caption": self.caption is not None,
        }
        return ["grounding", *(name for name, on in present.items() if on)]

    def validate(self, tower_channels: int, text_dim: int, early_fusion: bool) -> None:
        """Reject head settings that cannot work with the trunk.

        Raises:
            ConfigError: naming the field.
        """
        _check(not self.mlm or early_fusion, "heads.mlm needs tower.early_fusion=True (MLM reads the fused text)")
        _check(
            self.caption is None or early_fusion,
            "heads.caption needs tower.early_fusion=True (the language model reads the fused text)",
        )
        if self.contrastive is not None:
            _check(1 <= self.contrastive.dim <= 65536, f"heads.contrastive.dim={self.contrastive.dim} is out of range")
        if self.mask is not None:
            self.mask.validate(tower_channels)
        if self.vqa is not None:
            self.vqa.validate()
        if self.caption is not None:
            self.caption.validate()

"""GLIPModel: backbone + FPN, text encoder, VL DyHead tower, grounding head.

The only place where a :class:`~glip.config.GLIPConfig` becomes module arguments. ``forward``
takes tensors and returns one :class:`GLIPOutput` in both training and evaluation; losses live in
the criterion and detections in :mod:`glip.modeling.postprocess`.

The forward pass is split so that callers can reuse work: :meth:`GLIPModel.encode_image` (once
per image), :meth:`GLIPModel.encode_text` (once per distinct prompt), and
:meth:`GLIPModel.forward_features` (once per image-prompt pair, e.g. per vocabulary chunk).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from glip.config import GLIPConfig
from glip.errors import ConfigError
from glip.modeling.anchors import box_coder_for, grid_anchors
from glip.modeling.backbone import VisionBackbone, build_vision_backbone
from glip.modeling.dyhead import ConvGN, DyConv, ModulatedDeformConv3x3, VLTower, VLTowerBlock, level_pixel_mask
from glip.modeling.fusion import BiMultiHeadAttention, FusionBlock, flatten_levels
from glip.modeling.head import GLIPHead
from glip.modeling.language import TextEncoder, resolve_text_weights
from glip.modeling.mask_head import MaskHead, training_rois
from glip.modeling.text_layer import ClampedBertLayer
from glip.modeling.vl_heads import CaptionLMHead, VQAHead

logger = logging.getLogger(__name__)


@dataclass
class TextFeatures:
    """Output of the text encoder.

    Attributes:
        hidden: ``(batch, tokens, text_dim)`` last layer, padding positions not masked.
        mask: ``(batch, tokens)`` attention mask (1 real, 0 padding).
    """

    hidden: Tensor
    mask: Tensor

    @property
    def embedded(self) -> Tensor:
        """``hidden`` with padding positions zeroed, ``(batch, tokens, text_dim)``."""
        return self.hidden * self.mask.unsqueeze(-1).to(self.hidden.dtype)

    def repeat(self, n: int) -> TextFeatures:
        """Repeat a batch-1 prompt for ``n`` images."""
        return TextFeatures(self.hidden.expand(n, -1, -1), self.mask.expand(n, -1))


class MLMHead(nn.Module):
    """BERT's masked-language-model head: dense + activation + LayerNorm, then a vocabulary decoder."""

    def __init__(
        self, hidden_size: int, vocab_size: int, layer_norm_eps: float = 1e-12, hidden_act: str = "gelu"
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """``(batch, T, hidden_size)`` → ``(batch, T, vocab_size)`` logits."""
        return self.decoder(self.norm(self.act(self.dense(hidden))))


@dataclass
class GLIPOutput:
    """Everything the criterion and the post-processor need.

    ``N = sum_l H_l W_l`` locations (P3 first, row-major), ``T`` token slots.

    Attributes:
        logits: ``(batch, N, T)`` region-word logits.
        box_regression: ``(batch, N, 4)`` anchor deltas.
        centerness: ``(batch, N)`` centerness logits.
        anchors_xyxy: ``(N, 4)`` anchors in padded-image pixels.
        level_sizes: ``(H_l, W_l)`` of each level.
        text_embedding: ``(batch, T, text_dim)`` L2-normalised text used for the logits.
        fused_text: ``(batch, T, text_dim)`` text after the tower (None without fusion).
        fpn_features: the pre-fusion pyramid, ``L`` maps ``(batch, C, H_l, W_l)``.
        tower_features: the tower's output pyramid, same shapes.
        region_embeddings: ``(batch, N, D_c)`` L2-normalised projections of the pre-fusion features
            (GLIPv2 contrastive loss; None unless ``loss.contrastive``).
        token_embeddings: ``(batch, T, D_c)`` L2-normalised projections of ``text_embedding`` (same).
        mlm_logits: ``(batch, T, vocab)`` masked-language-model logits from the fused text (None unless
            the model has the MLM head).
        mask_text: ``(batch, T, text_dim)`` the text the mask head reads (the fused text; the text
            encoder's output in a model without fusion).
        mask_rois: ``(R, 5)`` rows ``(image index, x1, y1, x2, y2)`` the mask head ran on (training
            with ``mask_boxes``; None otherwise).
        mask_logits: ``(R, T, M, M)`` per-token mask logits of those ROIs (None without ``mask_boxes``).
        vqa_logits: ``(batch, answers)`` VQA answer logits (a model with the VQA head, not causal).
        lm_logits: ``(rows, T, vocab)`` next-token logits of the causal rows (a model with the caption head).
    """

    logits: Tensor
    box_regression: Tensor
    centerness: Tensor
    anchors_xyxy: Tensor
    level_sizes: list[tuple[int, int]]
    text_embedding: Tensor
    fused_text: Tensor | None
    fpn_features: list[Tensor]
    tower_features: list[Tensor]
    region_embeddings: Tensor | None = None
    token_embeddings: Tensor | None = None
    mlm_logits: Tensor | None = None
    mask_text: Tensor | None = None
    mask_rois: Tensor | None = None
    mask_logits: Tensor | None = None
    vqa_logits: Tensor | None = None
    lm_logits: Tensor | None = None


class GLIPModel(nn.Module):
    """Grounded language-image model (GLIP-T, GLIP-L, GLIP-T(A) and small variants)."""

    def __init__(self, config: GLIPConfig, load_pretrained_parts: bool | Collection[str] = True) -> None:
        """Build from a config.

        Args:
            config: the model description.
            load_pretrained_parts: load the pretrained text encoder / CNN weights named by the config
                (``text.weights``, ``vision.pretrained``): True for both, or the parts to load
                (``{"text"}``, ``{"body"}``). ``from_pretrained`` loads only the parts its weight file
                leaves out: the file overwrites the others anyway.
        """
        super().__init__()
        parts = {"text", "body"} if load_pretrained_parts is True else set(load_pretrained_parts or ())
        self.config = config
        v, t, tw, h = config.vision, config.text, config.tower, config.head
        sw = v.swin
        self.backbone = build_vision_backbone(
            v.backbone,
            swin_embed_dim=sw.embed_dim,
            swin_depths=tuple(sw.depths),
            swin_num_heads=tuple(sw.num_heads),
            swin_window_size=sw.window_size,
            swin_mlp_ratio=sw.mlp_ratio,
            swin_patch_size=sw.patch_size,
            swin_drop_path_rate=sw.drop_path_rate,
            pretrained=v.pretrained and "body" in parts,
            fpn_channels=v.fpn_channels,
            fpn_p6_from_p5=v.fpn_p6_from_p5,
        )
        self.text_encoder = TextEncoder(
            hidden_size=t.hidden_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            intermediate_size=t.intermediate_size,
            vocab_size=t.vocab_size,
            max_position_embeddings=t.max_position_embeddings,
            type_vocab_size=t.type_vocab_size,
            layer_norm_eps=t.layer_norm_eps,
            hidden_act=t.hidden_act,
            hidden_dropout_prob=t.hidden_dropout_prob,
            attention_probs_dropout_prob=t.attention_probs_dropout_prob,
        )
        if t.weights is not None and "text" in parts:
            self.text_encoder.load_pretrained(resolve_text_weights(t.weights))

        blocks = []
        for i in range(tw.num_blocks):
            fusion = text_layer = None
            if tw.early_fusion:
                fusion = FusionBlock(
                    tw.channels,
                    t.hidden_size,
                    tw.fusion_embed_dim,
                    tw.fusion_heads,
                    tw.fusion_dropout,
                    config.layer_scale_init,
                    tw.clamp_value,
                    tw.fusion_residual_on_normed,
                )
                # The last block's text layer only exists when its output feeds the logits.
                if i < tw.num_blocks - 1 or tw.fused_text_for_logits:
                    text_layer = ClampedBertLayer(
                        t.hidden_size,
                        t.num_attention_heads,
                        t.intermediate_size,
                        t.layer_norm_eps,
                        t.hidden_act,
                        t.hidden_dropout_prob,
                        t.attention_probs_dropout_prob,
                        tw.clamp_value,
                    )
            dyconv = DyConv(
                tw.channels,
                tw.group_norm_groups,
                tw.use_deform,
                tw.use_dyrelu,
                tw.use_scale_attention,
                tw.coarse_offset_mode,
            )
            blocks.append(VLTowerBlock(fusion, text_layer, dyconv))
        self.tower = VLTower(blocks)
        self.head = GLIPHead(
            tw.channels,
            t.hidden_size,
            len(h.anchor_strides),
            h.prior_prob,
            h.log_scale_init,
            h.text_input_scale,
            tw.clamp_value,
        )
        self.box_coder = box_coder_for(h)
        heads = config.heads
        # Prompt tuning (official language_prompt_v2): only this offset is trained, initialised to zero.
        self.prompt_offset = (
            nn.Parameter(torch.zeros(t.prompt_offset_positions, t.hidden_size)) if t.prompt_offset else None
        )
        # GLIPv2 task heads, built when the config's `heads` section names them.
        contrastive = heads.contrastive
        self.contrastive_image = nn.Linear(tw.channels, contrastive.dim) if contrastive else None
        self.contrastive_text = nn.Linear(t.hidden_size, contrastive.dim) if contrastive else None
        self.mlm_head = MLMHead(t.hidden_size, t.vocab_size, t.layer_norm_eps, t.hidden_act) if heads.mlm else None
        self.mask_head = _build_mask_head(config) if heads.mask is not None else None
        vqa = heads.vqa
        self.vqa_head = VQAHead(t.hidden_size, len(vqa.answers), vqa.hidden_dim, vqa.dropout) if vqa else None
        self.caption_head = (
            CaptionLMHead(t.hidden_size, t.vocab_size, t.layer_norm_eps, t.hidden_act) if heads.caption else None
        )
        self._anchor_strides = tuple(h.anchor_strides)
        self._anchor_scale = h.anchor_scale
        self._legacy_plus_one = h.legacy_plus_one
        self._fused_text_for_logits = tw.fused_text_for_logits
        self._mask_text_to_image = tw.mask_text_to_image
        self._anchor_cache: dict[tuple, Tensor] = {}
        self._fp32_text = False  # set by enable_fast_path

    # ------------------------------------------------------------------ heads
    @property
    def heads(self) -> list[str]:
        """Names of the task heads this model has (``"grounding"`` first)."""
        return self.config.heads.names()

    def require_head(self, name: str) -> None:
        """Raise a clear error when the task of head ``name`` is asked of a model without it.

        Raises:
            ConfigError: naming the head, the heads the model has, and what to do.
        """
        if name not in self.heads:
            raise ConfigError(
                f"this model has no {name} head (it has: {', '.join(self.heads)}): use a model trained with "
                f"heads.{name}, or train one (glip train with model.overrides heads.{name})"
            )

    # ------------------------------------------------------------------ pieces
    def encode_image(self, pixel_values: Tensor) -> list[Tensor]:
        """Backbone + FPN: ``(batch, 3, H, W)`` → P3..P7, each ``(batch, C, H_l, W_l)``."""
        return self.backbone(pixel_values)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, causal: bool | Tensor = False) -> TextFeatures:
        """Text encoder: ``(batch, tokens)`` ids and mask → :class:`TextFeatures`.

        On the fast path the encoder runs in fp32 even under autocast: its output is cached per prompt
        (:class:`~glip.predictor.GLIPPredictor`), so the precision costs nothing per image.
        """
        kind = input_ids.device.type
        if self._fp32_text and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return TextFeatures(self.text_encoder(input_ids, attention_mask, causal), attention_mask)
        return TextFeatures(self.text_encoder(input_ids, attention_mask, causal), attention_mask)

    def anchors(self, level_sizes: list[tuple[int, int]], device: torch.device) -> Tensor:
        """``(N, 4)`` anchors for these level sizes (cached)."""
        key = (tuple(level_sizes), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = grid_anchors(
                level_sizes, self._anchor_strides, self._anchor_scale, self._legacy_plus_one, device
            )
        return self._anchor_cache[key]

    def forward_features(
        self,
        fpn_features: list[Tensor],
        text: TextFeatures,
        pixel_mask: Tensor | None = None,
        causal: bool | Tensor = False,
    ) -> GLIPOutput:
        """Tower + head on pre-computed image and text features (batch sizes must agree).

        Args:
            fpn_features: P3..P7 from :meth:`encode_image`.
            text: from :meth:`encode_text` (use :meth:`TextFeatures.repeat` for one prompt, many images).
            pixel_mask: ``(batch, H, W)`` bool validity of the padded image; used only when the
                config masks the text→image attention (off in the official models).
            causal: captioning: the text attends causally, the image side does not read the text,
                and the caption head's next-token logits are computed (``text`` from
                :meth:`encode_text` with the same ``causal``). A ``(batch,)`` bool tensor applies this
                to some rows only (training batches that mix captions with other prompts); the
                next-token logits are then those of the causal rows.
        """
        level_sizes = [(f.shape[-2], f.shape[-1]) for f in fpn_features]
        flat_mask = None
        if self._mask_text_to_image and pixel_mask is not None:
            flat_mask = level_pixel_mask(pixel_mask, level_sizes)
        hidden, embedded = text.hidden, text.embedded
        if self.prompt_offset is not None:
            offset = self.prompt_offset[: hidden.shape[1]].unsqueeze(0)
            hidden, embedded = hidden + offset, embedded + offset
        tower_feats, fused = self.tower(fpn_features, hidden, text.mask, flat_mask, causal)
        lang = fused if self._fused_text_for_logits else embedded
        emb, proj, bias = self.head.text_queries(lang)
        logits = self.head.grounding_logits(tower_feats, proj, bias)
        box_regression, centerness = self.head.box_outputs(tower_feats)
        region_emb = token_emb = mlm_logits = None
        if self.contrastive_image is not None and self.contrastive_text is not None:
            region_emb = F.normalize(self.contrastive_image(flatten_levels(fpn_features)[0]), dim=-1)
            token_emb = F.normalize(self.contrastive_text(emb), dim=-1)
        vqa_logits = lm_logits = None
        mixed = isinstance(causal, Tensor)
        if self.mlm_head is not None and (mixed or not causal):
            mlm_logits = self.mlm_head(fused)
        if self.vqa_head is not None and (mixed or not causal):
            vqa_logits = self.vqa_head(fused, text.mask)
        if self.caption_head is not None and (mixed or causal):
            rows = fused[causal.to(fused.device)] if mixed else fused
            lm_logits = self.caption_head(rows, self.decoder_weight())
        return GLIPOutput(
            logits=logits,
            box_regression=box_regression,
            centerness=centerness,
            anchors_xyxy=self.anchors(level_sizes, logits.device),
            level_sizes=level_sizes,
            text_embedding=emb,
            fused_text=fused if self.config.tower.early_fusion else None,
            fpn_features=fpn_features,
            tower_features=tower_feats,
            region_embeddings=region_emb,
            token_embeddings=token_emb,
            mlm_logits=mlm_logits,
            mask_text=(fused if self.config.tower.early_fusion else hidden) if self.mask_head is not None else None,
            vqa_logits=vqa_logits,
            lm_logits=lm_logits,
        )

    def decoder_weight(self) -> Tensor:
        """``(V, D)`` weight of the language-model decoder: the MLM decoder's, else the word embeddings (tied)."""
        if self.mlm_head is not None:
            return self.mlm_head.decoder.weight
        return self.text_encoder.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        pixel_mask: Tensor | None = None,
        mask_boxes: list[Tensor] | None = None,
        causal: bool | Tensor = False,
    ) -> GLIPOutput:
        """Full model.

        Args:
            pixel_values: ``(batch, 3, H, W)`` normalised, padded images.
            input_ids: ``(batch, tokens)`` prompt token ids.
            attention_mask: ``(batch, tokens)``.
            pixel_mask: optional ``(batch, H, W)`` bool, True on real (unpadded) pixels.
            mask_boxes: training of the mask head: per image the ``(G_i, 4)`` ground-truth boxes. The
                head runs on them plus the ``heads.mask.train_proposals`` best predicted boxes of the
                image (detached), as the official training runs it on detections and ground truth;
                the output then carries ``mask_rois`` and ``mask_logits``.
            causal: captioning (see :meth:`forward_features`).
        """
        out = self.forward_features(
            self.encode_image(pixel_values), self.encode_text(input_ids, attention_mask, causal), pixel_mask, causal
        )
        if mask_boxes is not None:
            self.require_head("mask")
            k = self.config.heads.mask.train_proposals  # type: ignore[union-attr]
            out.mask_rois = training_rois(
                out.logits, out.centerness, out.box_regression, out.anchors_xyxy, mask_boxes, k,
                self.box_coder, tuple(pixel_values.shape[-2:]), self._legacy_plus_one,
            )  # fmt: skip
            out.mask_logits = self.mask_head(out.tower_features, out.mask_rois, out.mask_text)  # type: ignore[misc]
        return out

    # ------------------------------------------------------------------ tensor-only contract
    def head_tensors(self, *args: Tensor) -> tuple[Tensor, ...]:
        """Tower + heads as a function of tensors only: what the predictor, CUDA graphs and ONNX export run.

        Inputs (see :func:`pack_head_inputs`): the ``L`` pyramid maps ``(B, C, H_l, W_l)``, the text
        ``hidden (B, T, D)`` and ``mask (B, T)``, and ``pixel_mask (B, H, W)``. Outputs (see
        :func:`head_outputs`): ``logits (B, N, T)``, ``box_regression (B, N, 4)``, ``centerness (B, N)``
        and, for a model with a mask head, ``mask_text (B, T, D)`` and the ``L`` tower maps.
        """
        return head_outputs(self.forward_features(*unpack_head_inputs(args)), self.mask_head is not None)

    def segment(self, tower_features: list[Tensor], mask_text: Tensor, rois: Tensor, token_weights: Tensor) -> Tensor:
        """Phrase mask logits ``(R, M, M)`` of boxes (tensor-only; see :meth:`MaskHead.phrase_logits`).

        Args:
            tower_features: the tower maps of :meth:`head_tensors`.
            mask_text: ``(B, T, D)`` from :meth:`head_tensors`.
            rois: ``(R, 5)`` rows ``(image index, x1, y1, x2, y2)`` in network-input pixels.
            token_weights: ``(R, T)`` each box's phrase as weights over tokens (rows sum to 1).

        Raises:
            ConfigError: if the model has no mask head.
        """
        self.require_head("mask")
        return self.mask_head.phrase_logits(tower_features, rois, mask_text, token_weights)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> GLIPModel:
        """Load a saved model folder (``config.json`` + ``model.safetensors``) or an official ``.pth``."""
        from glip.checkpoints import load_model

        return load_model(path, cls, map_location=map_location)

    def save_pretrained(
        self, folder: str | Path, exclude: tuple[str, ...] = (), dtype: torch.dtype | None = None
    ) -> None:
        """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) into ``folder``.

        ``exclude`` leaves out parts that installed packages provide (``"text"``, ``"body"``) and
        ``dtype`` stores the weights in another precision (see :func:`glip.checkpoints.save_model`).
        """
        from glip.checkpoints import save_model

        save_model(self, folder, exclude=exclude, dtype=dtype)

    def enable_fast_path(self, enabled: bool = True) -> GLIPModel:
        """Switch to fused kernels for inference (the exact path, the default, is left as it is).

        The exact path reproduces the official arithmetic step by step. The fast path runs the fusion
        blocks and tower BERT layers through ``scaled_dot_product_attention`` without the overflow
        clamps of the attention scores (logit differences ~1e-6 in fp32, see ``tests/modeling``),
        keeps small CNN image bodies (EfficientNet-Lite0, MobileNetV2), the text encoder (cached per
        prompt), the DyHead's level fusion + DyReLU arithmetic and the grounding logits in fp32 under
        autocast, and, under bf16/fp16 autocast, keeps the rest of the DyHead in the reduced dtype: the
        fused Triton DCNv2 (:mod:`glip.modeling.dcn_triton`, CUDA), GroupNorm and the bilinear
        upsampling without fp32 round trips. Accuracy of the whole path is measured in ``docs/speed.md``.
        """
        for module in self.modules():
            if isinstance(
                module, (BiMultiHeadAttention, ClampedBertLayer, DyConv, ConvGN, ModulatedDeformConv3x3, GLIPHead)
            ):
                module.fast = enabled
        self._fp32_text = enabled
        if isinstance(self.backbone, VisionBackbone):
            self.backbone.fp32_body = enabled and self.config.vision.backbone != "swin"
        return self

    def num_parameters(self) -> int:
        """Number of parameters (buffers excluded)."""
        return sum(p.numel() for p in self.parameters())


def pack_head_inputs(features: list[Tensor], text: TextFeatures, pixel_mask: Tensor) -> tuple[Tensor, ...]:
    """The tensors :meth:`GLIPModel.head_tensors` takes, in order."""
    return (*features, text.hidden, text.mask, pixel_mask)


def unpack_head_inputs(args: tuple[Tensor, ...]) -> tuple[list[Tensor], TextFeatures, Tensor]:
    """Inverse of :func:`pack_head_inputs`."""
    return list(args[:-3]), TextFeatures(args[-3], args[-2]), args[-1]


def head_outputs(out: GLIPOutput, with_masks: bool) -> tuple[Tensor, ...]:
    """The output tensors of :meth:`GLIPModel.head_tensors` from a :class:`GLIPOutput`."""
    core = (out.logits, out.box_regression, out.centerness)
    if not with_masks:
        return core
    assert out.mask_text is not None
    return (*core, out.mask_text, *out.tower_features)


def _build_mask_head(config: GLIPConfig) -> MaskHead:
    """The mask head a config describes: ROIAlign on the tower's P3..P7 (strides 8..128)."""
    m, tw, h = config.heads.mask, config.tower, config.head
    assert m is not None
    return MaskHead(
        in_channels=tw.channels,
        channels=tw.channels,
        text_dim=config.text.hidden_size,
        num_hourglasses=m.num_hourglasses,
        hourglass_scales=m.hourglass_scales,
        pooler_resolution=m.pooler_resolution,
        pooler_scales=tuple(1.0 / s for s in h.anchor_strides),
        sampling_ratio=m.sampling_ratio,
        log_scale_init=m.log_scale_init,
        text_input_scale=m.text_input_scale,
        clamp_value=tw.clamp_value,
    )

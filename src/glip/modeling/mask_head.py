"""GLIPv2 mask head: ROIAlign → Hourglass → region-word dot product per mask pixel.

Instance segmentation as grounding ("classification to matching"): every pixel of a box's mask
gets one logit per token slot, formed like the detection head's region-word logits

    e_t        = L2norm(text_t)                                      (tokens, text_dim)
    tok_t      = W e_t * text_input_scale + b                        (tokens, channels)
    logit_tyx  = <f_yx, tok_t> / exp(log_scale) + <e_t, bias_lang>,   clamped to +-50000

with ``f_yx`` the (not normalised) feature of mask pixel ``(y, x)``, and no ``bias0``. A phrase's
mask is the mean of its tokens' logits (then a sigmoid), for the loss and for inference alike.

Pipeline for ``R`` boxes (from several images): ROIAlign (legacy, ``aligned=False``) on the pyramid
level picked by the FPN heuristic → ``(R, C, P, P)`` → ``num_hourglasses`` × (Hourglass → ReLU) →
2x2 stride-2 transposed conv → ReLU → ``(R, C, 2P, 2P)`` → logits ``(R, T, 2P, 2P)``.

Numerical choices follow microsoft/GLIP ``roi_heads/mask_head`` (``HourglassFPNFeatureExtractor``,
``VLMaskRCNNC4Predictor``, ``loss.py`` with ``vl_version=True``, ``inference.py``,
``modeling/poolers.py``), including two quirks of its ``Residual`` block: its three convolutions are
all 3x3 (the intended 1/3/1 kernel sizes are passed as *dilation*: 1, 3, 1) and each is preceded by
a ReLU (pre-activation). The official code has no mask config, so pooler scales, sampling ratio and
hourglass sizes are constructor arguments (see :class:`MaskHead`). GroupNorm in the hourglass
(official ``USE_GN``, off by default) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from glip.structures import box_iou


def _conv3x3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution keeping the spatial size, kaiming-normal (fan_out) weights, zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class Residual(nn.Module):
    """Pre-activation bottleneck ``x + conv3(relu(conv2(relu(conv1(relu(x))))))``.

    ``conv1``: C → C/2, ``conv2``: C/2 → C/2 with dilation 3, ``conv3``: C/2 → C; all 3x3 (official).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"hourglass channels must be even, got {channels}")
        half = channels // 2
        self.conv1 = _conv3x3(channels, half)
        self.conv2 = _conv3x3(half, half, dilation=3)
        self.conv3 = _conv3x3(half, channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(R, C, H, W)`` → same shape."""
        y = self.conv1(F.relu(x))
        y = self.conv2(F.relu(y))
        return self.conv3(F.relu(y)) + x


class Hourglass(nn.Module):
    """Recursive hourglass of ``scales`` levels: ``up1(x) + upsample2(low3(low2(low1(maxpool2(x)))))``.

    ``low2`` is a nested hourglass of ``scales - 1`` levels, or a :class:`Residual` at the bottom.
    Input sides must be divisible by ``2 ** scales``.
    """

    def __init__(self, channels: int, scales: int) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"hourglass scales must be >= 1, got {scales}")
        self.up1 = Residual(channels)
        self.low1 = Residual(channels)
        self.low2: nn.Module = Hourglass(channels, scales - 1) if scales > 1 else Residual(channels)
        self.low3 = Residual(channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(R, C, H, W)`` → same shape."""
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, 2))))
        return self.up1(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


def map_levels(
    boxes_xyxy: Tensor, k_min: int, k_max: int, canonical_size: float = 224.0, canonical_level: int = 4
) -> Tensor:
    """FPN level index of each box: ``floor(4 + log2(sqrt(area) / 224 + 1e-6))`` clamped, minus ``k_min``.

    Areas use the +1 convention (``(x2 - x1 + 1) * (y2 - y1 + 1)``), as the official ``LevelMapper``.

    Args:
        boxes_xyxy: ``(R, 4)``.

    Returns:
        ``(R,)`` int64 in ``[0, k_max - k_min]``.
    """
    b = boxes_xyxy.float()
    size = torch.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1))
    levels = torch.floor(canonical_level + torch.log2(size / canonical_size + 1e-6))
    return levels.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def rois_from_boxes(boxes_xyxy: Sequence[Tensor]) -> Tensor:
    """Per-image boxes ``[(R_i, 4)]`` → ``(sum R_i, 5)`` fp32 rows ``(image index, x1, y1, x2, y2)``."""
    rows = [torch.cat((b.new_full((b.shape[0], 1), i), b), dim=1).float() for i, b in enumerate(boxes_xyxy)]
    return torch.cat(rows) if rows else torch.zeros(0, 5)


class MaskHead(nn.Module):
    """GLIPv2 segmentation head on the fused pyramid and the fused text.

    Args:
        in_channels: channels of the pyramid maps (must equal ``channels``, as the official code asserts).
        channels: hourglass / mask feature width (T and B: 256; H: 384).
        text_dim: width of the text features (768 for BERT-base).
        num_hourglasses: stacked hourglass blocks, each followed by a ReLU (T/B: 1; H: 4).
        hourglass_scales: levels per hourglass (T/B: 1; H: 2); ``pooler_resolution`` must be
            divisible by ``2 ** hourglass_scales``.
        pooler_resolution: ROIAlign output side ``P``; masks are ``2P x 2P``.
        pooler_scales: ``1 / stride`` of the pyramid levels the boxes are pooled from, finest first;
            each must be a power of two. Only the first ``len(pooler_scales)`` maps are read.
        sampling_ratio: ROIAlign samples per bin side (0: adaptive).
        log_scale_init: initial logit temperature (log).
        text_input_scale: factor on the normalised text before projection (0.5, official).
        clamp_value: clamp of the logits, or None.
    """

    def __init__(
        self,
        in_channels: int = 256,
        channels: int = 256,
        text_dim: int = 768,
        num_hourglasses: int = 1,
        hourglass_scales: int = 1,
        pooler_resolution: int = 14,
        pooler_scales: Sequence[float] = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128),
        sampling_ratio: int = 2,
        log_scale_init: float = 0.0,
        text_input_scale: float = 0.5,
        clamp_value: float | None = 50000.0,
    ) -> None:
        super().__init__()
        if in_channels != channels:
            raise ValueError(
                f"mask head: in_channels={in_channels} must equal channels={channels} (the hourglass keeps "
                "its input width); set the mask head channels to the pyramid width"
            )
        if pooler_resolution % (2**hourglass_scales):
            raise ValueError(
                f"mask head: pooler_resolution={pooler_resolution} must be divisible by 2**hourglass_scales="
                f"{2**hourglass_scales}"
            )
        levels = [-math.log2(s) for s in pooler_scales]
        if not levels or any(abs(lv - round(lv)) > 1e-6 for lv in levels):
            raise ValueError(f"mask head: pooler_scales={tuple(pooler_scales)} must be non-empty powers of two")
        self.pooler_resolution = pooler_resolution
        self.pooler_scales = tuple(float(s) for s in pooler_scales)
        self.sampling_ratio = sampling_ratio
        self.k_min, self.k_max = round(levels[0]), round(levels[-1])
        self.text_input_scale = text_input_scale
        self.clamp_value = clamp_value

        self.hourglasses = nn.ModuleList([Hourglass(channels, hourglass_scales) for _ in range(num_hourglasses)])
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.text_proj = nn.Linear(text_dim, channels)
        self.log_scale = nn.Parameter(torch.tensor([log_scale_init]))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        for module in (self.deconv, self.text_proj):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)

    @property
    def mask_resolution(self) -> int:
        """Side ``M = 2P`` of the predicted masks (the loss targets' resolution)."""
        return 2 * self.pooler_resolution

    def pool(self, features: Sequence[Tensor], boxes_xyxy: Sequence[Tensor] | Tensor) -> Tensor:
        """ROIAlign every box on its pyramid level.

        Args:
            features: pyramid maps ``(batch, C, H_l, W_l)``, finest first (at least ``len(pooler_scales)``).
            boxes_xyxy: per image, ``(R_i, 4)`` boxes in the pixels of the (padded) network input; or the
                ``(R, 5)`` ROI rows ``(image index, x1, y1, x2, y2)`` of :func:`rois_from_boxes`.

        Returns:
            ``(R, C, P, P)`` in the dtype of ``features``, in ROI order. ROIAlign runs in fp32.
        """
        if len(features) < len(self.pooler_scales):
            raise ValueError(f"mask head: {len(features)} feature maps for {len(self.pooler_scales)} pooler scales")
        rois = _as_rois(boxes_xyxy).to(features[0].device)
        p = self.pooler_resolution
        levels = map_levels(rois[:, 1:], self.k_min, self.k_max)
        pooled, order = [], []
        for level, (feat, scale) in enumerate(zip(features, self.pooler_scales, strict=False)):
            idx = torch.nonzero(levels == level).squeeze(1)
            if level and idx.numel() == 0:
                continue
            pooled.append(roi_align(feat.float(), rois[idx], (p, p), scale, self.sampling_ratio, aligned=False))
            order.append(idx)
        flat, index = torch.cat(pooled), torch.cat(order)
        out = torch.empty_like(flat)
        out[index] = flat
        return out.to(features[0].dtype)

    def mask_features(self, pooled: Tensor) -> Tensor:
        """Hourglasses and upsampling: ``(R, C, P, P)`` → ``(R, C, 2P, 2P)``."""
        x = pooled
        for hourglass in self.hourglasses:
            x = F.relu(hourglass(x))
        return F.relu(self.deconv(x))

    def text_queries(self, text: Tensor) -> tuple[Tensor, Tensor]:
        """Projected tokens ``(batch, T, C)`` and per-token bias ``(batch, T)`` from text ``(batch, T, text_dim)``."""
        emb = F.normalize(text, p=2, dim=-1)
        return self.text_proj(emb * self.text_input_scale), emb @ self.bias_lang

    def forward(self, features: Sequence[Tensor], boxes_xyxy: Sequence[Tensor] | Tensor, text: Tensor) -> Tensor:
        """Per-token mask logits of every box.

        Args:
            features: fused pyramid maps ``(batch, C, H_l, W_l)``, finest first.
            boxes_xyxy: ``batch`` tensors ``(R_i, 4)``, boxes in network-input pixels, or ``(R, 5)`` ROI rows.
            text: ``(batch, T, text_dim)`` fused text features (all token slots, padding included;
                padded slots get logits too and are simply never read).

        Returns:
            ``(R, T, M, M)`` logits, ``R = sum R_i`` in image order, ``M = 2 * pooler_resolution``.
        """
        rois = _as_rois(boxes_xyxy).to(text.device)
        x = self.mask_features(self.pool(features, rois))
        image_of_box = rois[:, 0].long()
        proj, bias = self.text_queries(text)
        r, c, h, w = x.shape
        logits = torch.bmm(proj[image_of_box], x.reshape(r, c, h * w)) / self.log_scale.exp()
        logits = logits + bias[image_of_box].unsqueeze(-1)
        if self.clamp_value is not None:
            logits = logits.clamp(min=-self.clamp_value, max=self.clamp_value)
        return logits.reshape(r, proj.shape[1], h, w)


    def phrase_logits(self, features: Sequence[Tensor], rois: Tensor, text: Tensor, token_weights: Tensor) -> Tensor:
        """Each box's phrase mask logits without the per-token tensor: ``(R, M, M)``.

        The phrase logit is the ``token_weights``-weighted sum of the token logits; since a token's
        logit is linear in its query, this equals :func:`phrase_mask_logits` of :meth:`forward` (as
        long as no token logit reaches the clamp) at ``1 / T`` of its memory and compute.

        Args:
            features: fused pyramid maps ``(batch, C, H_l, W_l)``, finest first.
            rois: ``(R, 5)`` rows ``(image index, x1, y1, x2, y2)`` in network-input pixels.
            text: ``(batch, T, text_dim)`` fused text.
            token_weights: ``(R, T)`` weight of each token in each box's phrase (rows sum to 1).

        Returns:
            ``(R, M, M)`` fp32 logits.
        """
        x = self.mask_features(self.pool(features, rois))
        image_of_box = rois[:, 0].long()
        proj, bias = self.text_queries(text)
        weights = token_weights.to(proj.dtype)
        query = torch.bmm(weights.unsqueeze(1), proj[image_of_box]).squeeze(1)  # (R, C)
        phrase_bias = (weights * bias[image_of_box]).sum(-1)  # (R,)
        r, c, h, w = x.shape
        logits = torch.bmm(query.unsqueeze(1), x.reshape(r, c, h * w)).squeeze(1) / self.log_scale.exp()
        logits = logits + phrase_bias.unsqueeze(-1)
        if self.clamp_value is not None:
            logits = logits.clamp(min=-self.clamp_value, max=self.clamp_value)
        return logits.reshape(r, h, w).float()


def _as_rois(boxes_xyxy: Sequence[Tensor] | Tensor) -> Tensor:
    return boxes_xyxy.float() if isinstance(boxes_xyxy, Tensor) else rois_from_boxes(boxes_xyxy)


# ----------------------------------------------------------------------------- phrases and inference
def token_weights(token_ids: Sequence[Sequence[int]], num_tokens: int, device: torch.device) -> Tensor:
    """``(E, T)`` rows ``1 / n`` on each entity's ``n`` tokens (zero rows for entities without tokens)."""
    weights = torch.zeros(len(token_ids), num_tokens)
    for e, toks in enumerate(token_ids):
        if len(toks):
            weights[e, list(toks)] = 1.0 / len(toks)
    return weights.to(device)


def phrase_mask_logits(mask_logits: Tensor, token_ids: Sequence[Sequence[int]], entities: Tensor) -> Tensor:
    """Each box's mask for its entity: the mean of the entity's token logits (official inference).

    Args:
        mask_logits: ``(R, T, M, M)`` from :class:`MaskHead`.
        token_ids: per entity, its token positions (``EntityMap.token_ids``).
        entities: ``(R,)`` entity index (into ``token_ids``) of each box.

    Returns:
        ``(R, M, M)`` fp32 logits (``sigmoid`` gives the official mask probabilities). An entity
        without tokens gets logit 0.
    """
    weights = token_weights(token_ids, mask_logits.shape[1], mask_logits.device)[entities.long()]
    return torch.einsum("rt,rthw->rhw", weights, mask_logits.float())


def paste_masks(
    mask_probs: Tensor,
    boxes_xyxy: Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    padding: int = 1,
    chunk_pixels: int = 2**26,
) -> Tensor:
    """Binary masks in the image, as the official ``Masker``.

    Each ``M x M`` mask is padded by ``padding`` zero pixels, its box grown by ``(M + 2 padding) / M``
    about the centre and truncated to integers, the mask resized bilinearly (``align_corners=False``)
    to ``(y2 - y1 + 1, x2 - x1 + 1)`` pixels, thresholded (``> threshold``) and clipped to the image.

    On the CPU each box is resized and placed in turn (as the official code does). On a GPU, where
    one small kernel per box would dominate, every box is pasted at once: the bilinear resize is
    separable, so it becomes two batched GEMMs with interpolation matrices that are zero outside the
    box (``(R, H, M') @ (R, M', M') @ (R, M', W)``), a chunk of boxes at a time (at most
    ``chunk_pixels`` output pixels per chunk). The two differ only where a probability lands within
    float rounding of the threshold (3 of 46M pixels in the tests).

    Args:
        mask_probs: ``(R, M, M)`` probabilities.
        boxes_xyxy: ``(R, 4)`` boxes in the pixels of the target image (+1 convention).
        image_size: ``(height, width)`` of the target image.

    Returns:
        ``(R, height, width)`` bool.
    """
    im_h, im_w = image_size
    r = mask_probs.shape[0]
    out = torch.zeros(r, im_h, im_w, dtype=torch.bool, device=mask_probs.device)
    if r == 0:
        return out
    m = mask_probs.shape[-1]
    padded = F.pad(mask_probs.float(), (padding,) * 4)
    scale = (m + 2 * padding) / m
    boxes = boxes_xyxy.float()
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    grown = torch.cat((centre - half, centre + half), dim=1).to(torch.int64)  # truncation, as int() does
    paste = _paste_loop if mask_probs.device.type != "cuda" else _paste_batched
    return paste(padded, grown, out, threshold, chunk_pixels)


def _paste_loop(padded: Tensor, grown: Tensor, out: Tensor, threshold: float, chunk_pixels: int) -> Tensor:
    """One resize per box (the official arithmetic); fills ``out (R, H, W)``."""
    im_h, im_w = out.shape[-2:]
    for i, (x1, y1, x2, y2) in enumerate(grown.tolist()):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x0, x1c, y0, y1c = max(x1, 0), min(x2 + 1, im_w), max(y1, 0), min(y2 + 1, im_h)
        if x1c > x0 and y1c > y0:
            out[i, y0:y1c, x0:x1c] = resized[y0 - y1 : y1c - y1, x0 - x1 : x1c - x1] > threshold
    return out


def _paste_batched(padded: Tensor, grown: Tensor, out: Tensor, threshold: float, chunk_pixels: int) -> Tensor:
    """All boxes as batched GEMMs with interpolation matrices (see :func:`paste_masks`); fills ``out``.

    The matrices of up to ``8 * chunk_pixels / (H + W)`` boxes are built at once (a few kernels for
    all of them), the GEMMs run on at most ``chunk_pixels`` output pixels at a time.
    """
    im_h, im_w = out.shape[-2:]
    source = padded.shape[-1]
    starts, sizes = grown[:, :2], (grown[:, 2:] - grown[:, :2] + 1).clamp(min=1)
    per_build = max(1, 8 * chunk_pixels // ((im_h + im_w) * source))
    per_gemm = max(1, chunk_pixels // max(im_h * im_w, 1))
    for i in range(0, out.shape[0], per_build):
        sl = slice(i, i + per_build)
        rows = _interpolation_matrix(starts[sl, 1], sizes[sl, 1], im_h, source)  # (r, H, M')
        cols = _interpolation_matrix(starts[sl, 0], sizes[sl, 0], im_w, source).transpose(1, 2)  # (r, M', W)
        left = torch.bmm(rows, padded[sl])  # (r, H, M')
        for j in range(0, rows.shape[0], per_gemm):
            part = slice(j, j + per_gemm)
            out[i + j : i + j + left[part].shape[0]] = torch.bmm(left[part], cols[part]) > threshold
    return out


def _interpolation_matrix(starts: Tensor, sizes: Tensor, length: int, source: int) -> Tensor:
    """``(R, length, source)`` weights of a bilinear resize (``align_corners=False``, as ``F.interpolate``)
    of a ``source``-long signal to ``sizes[r]`` samples placed at ``starts[r]``; zero outside the box.
    """
    pos = torch.arange(length, device=starts.device)
    offset = pos[None, :] - starts[:, None]  # (R, length): index inside the resized box
    inside = (offset >= 0) & (offset < sizes[:, None])
    ratio = source / sizes.double()  # F.interpolate's scale = input / output (fp32 there; exact enough)
    src = (ratio[:, None] * (offset.double() + 0.5) - 0.5).clamp(min=0.0).float()
    low = src.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    frac = src - low.float()
    weights = torch.zeros(starts.shape[0], length, source, device=starts.device)
    weights.scatter_add_(2, low.unsqueeze(-1), (1.0 - frac).unsqueeze(-1))
    weights.scatter_add_(2, high.unsqueeze(-1), frac.unsqueeze(-1))
    return weights * inside.unsqueeze(-1).float()


# ----------------------------------------------------------------------------- training targets and loss
@torch.no_grad()
def training_rois(
    logits: Tensor,
    centerness: Tensor,
    box_regression: Tensor,
    anchors_xyxy: Tensor,
    gt_boxes: Sequence[Tensor],
    num_proposals: int,
    box_coder: object,
    image_hw: tuple[int, int],
    legacy_plus_one: bool = True,
) -> Tensor:
    """Training ROIs: each image's GT boxes and its ``num_proposals`` best predicted boxes (detached).

    A location's score is its best token probability times its centerness (as post-processing ranks
    candidates); its box is decoded from the regression and clipped to the image, as the official
    training runs the mask head on detections and ground truth.

    Args:
        logits: ``(B, N, T)``; centerness: ``(B, N)``; box_regression: ``(B, N, 4)``; anchors_xyxy: ``(N, 4)``.
        gt_boxes: per image ``(G_i, 4)``; box_coder: a :class:`glip.modeling.anchors.BoxCoder`.

    Returns:
        ``(R, 5)`` fp32 rows ``(image index, x1, y1, x2, y2)``, image by image.
    """
    h, w = image_hw
    one = 1.0 if legacy_plus_one else 0.0
    upper = logits.new_tensor([w - one, h - one, w - one, h - one]).float()
    rows = []
    for i, gt in enumerate(gt_boxes):
        boxes = [gt.float()]
        if num_proposals > 0:
            score = logits[i].sigmoid().amax(dim=-1) * centerness[i].sigmoid()
            top = score.topk(min(num_proposals, score.shape[0])).indices
            pred = box_coder.decode(box_regression[i, top].float(), anchors_xyxy[top])  # type: ignore[attr-defined]
            boxes.append(pred.clamp(min=0).minimum(upper))
        b = torch.cat(boxes)
        rows.append(torch.cat((b.new_full((b.shape[0], 1), float(i)), b), dim=1))
    return torch.cat(rows) if rows else logits.new_zeros(0, 5)



def match_boxes(rois_xyxy: Tensor, gt_boxes_xyxy: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index of the GT box each ROI overlaps most, or -1 below ``iou_threshold`` (official ``Matcher``).

    IoU uses the +1 convention. Args: ``(R, 4)`` and ``(G, 4)``. Returns ``(R,)`` int64.
    """
    if gt_boxes_xyxy.shape[0] == 0 or rois_xyxy.shape[0] == 0:
        return torch.full((rois_xyxy.shape[0],), -1, dtype=torch.long, device=rois_xyxy.device)
    best, index = box_iou(gt_boxes_xyxy.float(), rois_xyxy.float(), legacy_plus_one=True).max(dim=0)
    return torch.where(best >= iou_threshold, index, torch.full_like(index, -1))


def project_masks_on_boxes(gt_masks: Tensor, boxes_xyxy: Tensor, gt_index: Tensor, resolution: int) -> Tensor:
    """Crop each ROI's GT bitmask to the ROI and resize it to ``resolution`` (the mask targets).

    ROIAlign (``aligned=True``, adaptive sampling) on the bitmask, then ``>= 0.5``: target pixel
    ``(i, j)`` is the GT mask around ``(x1 + (j + 0.5) w / M, y1 + (i + 0.5) h / M)`` with
    ``w = x2 - x1`` (the official rasterises the cropped, rescaled polygon on the same grid).

    Args:
        gt_masks: ``(G, H, W)`` bool/uint8/float bitmasks in the boxes' pixel frame.
        boxes_xyxy: ``(R, 4)`` ROI boxes.
        gt_index: ``(R,)`` GT index of each ROI (>= 0).
        resolution: output side ``M``.

    Returns:
        ``(R, M, M)`` fp32 in {0, 1}.
    """
    if boxes_xyxy.shape[0] == 0:
        return gt_masks.new_zeros((0, resolution, resolution), dtype=torch.float32)
    rois = torch.cat((gt_index[:, None].to(boxes_xyxy), boxes_xyxy), dim=1).float()
    crops = roi_align(gt_masks[:, None].float(), rois, (resolution, resolution), 1.0, 0, aligned=True)
    return (crops[:, 0] >= 0.5).float()


def mask_targets(
    rois_xyxy: Sequence[Tensor],
    gt_boxes_xyxy: Sequence[Tensor],
    gt_masks: Sequence[Tensor],
    gt_positive_maps: Sequence[Tensor],
    resolution: int,
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Token map and mask target of every ROI of a batch (official ``prepare_targets``, ``vl_version``).

    Each ROI takes the token row and the mask of the GT box it overlaps most (IoU >= threshold);
    unmatched ROIs get an all-zero token row and so no loss.

    Args:
        rois_xyxy: per image ``(R_i, 4)`` boxes the head was run on.
        gt_boxes_xyxy: per image ``(G_i, 4)``.
        gt_masks: per image ``(G_i, H_i, W_i)`` bitmasks in the same pixel frame.
        gt_positive_maps: per image ``(G_i, T)`` token maps (non-zero = positive token).
        resolution: mask side ``M``.

    Returns:
        ``positive_map (R, T)`` and ``targets (R, M, M)`` for the concatenated ROIs.
    """
    maps, targets = [], []
    for rois, boxes, masks, pmap in zip(rois_xyxy, gt_boxes_xyxy, gt_masks, gt_positive_maps, strict=True):
        matched = match_boxes(rois, boxes, iou_threshold)
        ok = matched >= 0
        row = pmap.new_zeros((rois.shape[0], pmap.shape[1]))
        row[ok] = pmap[matched[ok]]
        target = torch.zeros(rois.shape[0], resolution, resolution, device=rois.device)
        target[ok] = project_masks_on_boxes(masks, rois[ok], matched[ok], resolution)
        maps.append(row)
        targets.append(target)
    return torch.cat(maps), torch.cat(targets)


def mask_loss(mask_logits: Tensor, positive_map: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy of each positive box's phrase mask (official ``vl_version`` loss).

    Rows with at least one positive token take the unweighted mean of those tokens' logits as
    their mask logit; the loss is the BCE-with-logits averaged over all pixels of those rows.
    Without any positive row the loss is ``0 * sum(mask_logits)`` (keeps the graph).

    Args:
        mask_logits: ``(R, T, M, M)``.
        positive_map: ``(R, T)``, non-zero = positive token.
        targets: ``(R, M, M)`` in [0, 1].

    Returns:
        Scalar fp32 loss.
    """
    positive = positive_map != 0
    rows = positive.any(dim=1)
    if not bool(rows.any()):
        return mask_logits.sum().float() * 0.0
    weights = positive[rows].float()
    weights = weights / weights.sum(dim=1, keepdim=True)
    logits = torch.einsum("rt,rthw->rhw", weights, mask_logits[rows].float())
    return F.binary_cross_entropy_with_logits(logits, targets[rows].float())

"""GLIP and GLIPv2 training losses as pure functions.

Each function reproduces one term of the official ``ATSSLossComputation`` (``rpn/loss.py``) or of
``VLDyHeadModule._forward_train`` (``rpn/vldyhead.py``); normalisation by the number of positives
and the loss weights are applied by :class:`glip.modeling.criterion.GLIPCriterion`.

* :func:`token_sigmoid_focal_loss` – region-word alignment (``token_sigmoid_binary_focal_loss``).
* :func:`giou_loss`, :func:`centerness_targets`, :func:`centerness_loss` – box terms.
* :func:`region_word_contrastive_loss` – GLIPv2 inter-image ("shallow") contrastive loss with label
  propagation over the global batch.
* :func:`mlm_loss` – GLIPv2 masked language modelling.

The distributed helpers (:func:`world_info`, :func:`all_reduce_sum`, :func:`all_gather_with_grad`,
:func:`global_max`) are no-ops when ``torch.distributed`` is not initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

# Logit given to masked-out entries before a softmax (official value).
MASKED_LOGIT = -1_000_000.0


# ----------------------------------------------------------------------------- distributed helpers
def world_info() -> tuple[int, int]:
    """``(world_size, rank)``; ``(1, 0)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over all ranks (a detached copy; ``tensor`` itself without a process group)."""
    world, _ = world_info()
    if world == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_max(value: int, device: torch.device | str = "cpu") -> int:
    """The largest ``value`` over all ranks."""
    world, _ = world_info()
    if world == 1:
        return int(value)
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Stack ``tensor`` from every rank: ``(world_size, *tensor.shape)``.

    The slice of this rank *is* ``tensor`` (gradients flow through it); the other ranks' slices are
    constants, as in the official ``gather_tensors``. Shapes must agree across ranks.
    """
    world, rank = world_info()
    if world == 1:
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[rank] = tensor
    return torch.stack(parts, dim=0)


def _pad_dim(x: Tensor, dim: int, length: int, value: float | bool) -> Tensor:
    if x.shape[dim] == length:
        return x
    shape = list(x.shape)
    shape[dim] = length - x.shape[dim]
    return torch.cat((x, x.new_full(shape, value)), dim=dim)


# ----------------------------------------------------------------------------- GLIP losses
def token_sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, text_mask: Tensor | None, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Binary sigmoid focal loss over every (anchor, token) pair, summed over the valid tokens.

    The fvcore / torchvision form applied elementwise:
    ``alpha_t * (1 - p_t) ** gamma * BCE(logit, target)`` with ``p_t = p`` for positive targets
    and ``1 - p`` otherwise, ``alpha_t = alpha`` / ``1 - alpha`` (no weighting if ``alpha < 0``).
    Token slots where ``text_mask`` is 0 contribute nothing (the official ``masked_select``).

    Args:
        logits: ``(batch, num_anchors, num_tokens)`` region-word logits.
        targets: ``(batch, num_anchors, num_tokens)`` float 0/1 targets.
        text_mask: ``(batch, num_tokens)`` 1 for real tokens, 0 for padding; None keeps all.
        alpha: positive/negative balance.
        gamma: focusing exponent.

    Returns:
        Scalar: the sum over the kept elements (not normalised).
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if text_mask is not None:
        loss = torch.where((text_mask > 0).unsqueeze(1), loss, loss.new_zeros(()))
    return loss.sum()


def giou_loss(pred_boxes_xyxy: Tensor, target_boxes_xyxy: Tensor, weight: Tensor | None = None) -> Tensor:
    """Generalised-IoU loss ``1 - GIoU`` summed over box pairs, as the official ``GIoULoss``.

    The official function works on boxes decoded with the +1 box coder but measures areas *without*
    the +1 (``(x2 - x1) * (y2 - y1)``); so does this one. A predicted box with ``x2 < x1`` is
    flattened to ``x2 = x1``; the intersection counts only when strictly positive; ``1e-7`` is added
    to the union and to the enclosing area.

    Args:
        pred_boxes_xyxy: ``(P, 4)`` predicted boxes.
        target_boxes_xyxy: ``(P, 4)`` target boxes.
        weight: optional ``(P,)`` per-pair weights (centerness targets in GLIP). Used only when
            their sum is positive, as in the official code.

    Returns:
        Scalar: ``sum(weight * (1 - giou))`` (or the plain sum).
    """
    px1, py1 = pred_boxes_xyxy[:, 0], pred_boxes_xyxy[:, 1]
    px2 = torch.max(px1, pred_boxes_xyxy[:, 2])
    py2 = torch.max(py1, pred_boxes_xyxy[:, 3])
    tx1, ty1, tx2, ty2 = target_boxes_xyxy.unbind(-1)
    pred_area = (px2 - px1) * (py2 - py1)
    target_area = (tx2 - tx1) * (ty2 - ty1)
    iw = torch.min(px2, tx2) - torch.max(px1, tx1)
    ih = torch.min(py2, ty2) - torch.max(py1, ty1)
    inter = torch.where((iw > 0) & (ih > 0), iw * ih, iw.new_zeros(()))
    enclosing = (torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1)) + 1e-7
    union = pred_area + target_area - inter + 1e-7
    giou = inter / union - (enclosing - union) / enclosing
    losses = 1 - giou
    if weight is not None and bool(weight.sum() > 0):
        return (losses * weight).sum()
    return losses.sum()


def centerness_targets(anchors_xyxy: Tensor, boxes_xyxy: Tensor) -> Tensor:
    """FCOS centerness of each anchor centre with respect to its matched box.

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` where ``l = cx - x1``, ``r = x2 - cx``,
    ``t = cy - y1``, ``b = y2 - cy`` and ``(cx, cy) = ((ax1 + ax2) / 2, (ay1 + ay2) / 2)`` is the
    anchor centre (no +1 anywhere, as official ``compute_centerness_targets``).

    Args:
        anchors_xyxy: ``(P, 4)`` positive anchors.
        boxes_xyxy: ``(P, 4)`` the box each anchor is matched to.

    Returns:
        ``(P,)`` targets in ``[0, 1]`` (positive for ATSS positives, whose centres are inside).
    """
    cx = (anchors_xyxy[:, 2] + anchors_xyxy[:, 0]) / 2
    cy = (anchors_xyxy[:, 3] + anchors_xyxy[:, 1]) / 2
    lr = torch.stack((cx - boxes_xyxy[:, 0], boxes_xyxy[:, 2] - cx), dim=1)
    tb = torch.stack((cy - boxes_xyxy[:, 1], boxes_xyxy[:, 3] - cy), dim=1)
    return torch.sqrt((lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values))


def centerness_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, summed: ``(P,)`` logits vs ``(P,)`` centerness targets → scalar."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="sum")


# ----------------------------------------------------------------------------- GLIPv2 losses
def random_subset(population: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``k`` distinct elements of ``population`` drawn uniformly, returned sorted.

    Args:
        population: ``(K,)`` int64 candidates (e.g. anchor indices).
        k: how many to draw (clamped to ``K``).
        generator: CPU generator for reproducible draws; a permutation is drawn even when ``k``
            is 0 or ``K``, so the generator advances the same way whatever ``k`` is.

    Returns:
        ``(min(k, K),)`` int64, ascending.
    """
    order = torch.randperm(population.numel(), generator=generator).to(population.device)
    return population[order[: max(0, min(k, population.numel()))]].sort().values


def _row_normalise(target: Tensor) -> Tensor:
    counts = target.sum(dim=-1, keepdim=True)
    return target / counts.clamp(min=1e-6)


def region_word_contrastive_loss(
    region_embeddings: Tensor,
    token_embeddings: Tensor,
    region_labels: Tensor,
    region_token_map: Tensor,
    token_labels: Tensor,
    text_mask: Tensor,
    region_mask: Tensor | None = None,
    log_scale: float | Tensor = 0.0,
) -> Tensor:
    """GLIPv2 inter-image region-word contrastive loss over the global batch (all ranks).

    Every selected region of every image of the global batch is scored against every token of
    every prompt of the global batch: ``logit = <r, w> / exp(log_scale)``. The target of (region,
    token) is, by **label propagation**, 1 when the region's object-detection class equals the
    class the token names (``region_labels == token_labels``, both ``>= 0``); within the region's
    own image the exact ``region_token_map`` replaces it. Padding tokens (``text_mask == 0``) and
    masked regions get the logit ``-1e6``. With ``Tn`` the row-normalised targets,

    ``loss = ½ (Σ_rows -Tn · log_softmax_tokens(logits)  +  Σ_tokens -Tn' · log_softmax_regions(logits'))``

    where the first sum runs over this rank's regions and all tokens, the second over this rank's
    tokens and all regions. Regions or tokens without positives contribute nothing.

    With ``torch.distributed`` initialised the inputs are gathered from all ranks (this rank's slice
    keeps its gradient); ``A`` and ``T`` may differ across ranks (they are padded and masked).

    Args:
        region_embeddings: ``(B, A, D)`` L2-normalised embeddings of the selected regions.
        token_embeddings: ``(B, T, D)`` L2-normalised token embeddings.
        region_labels: ``(B, A)`` int64 class id of each region's box, ``-1`` for none (negatives,
            boxes of grounding data).
        region_token_map: ``(B, A, T)`` bool/0-1: the tokens of the region's box in its own prompt.
        token_labels: ``(B, T)`` int64 class id each token names, ``-1`` otherwise.
        text_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        region_mask: optional ``(B, A)`` bool, False for padding regions.
        log_scale: temperature, logits are divided by ``exp(log_scale)``.

    Returns:
        Scalar, the sum above (the criterion divides it by the number of positive anchors).
    """
    b, a, _ = region_embeddings.shape
    t = token_embeddings.shape[1]
    device = region_embeddings.device
    _, rank = world_info()
    if region_mask is None:
        region_mask = torch.ones((b, a), dtype=torch.bool, device=device)
    a_max, t_max = global_max(a, device), global_max(t, device)
    reg = _pad_dim(region_embeddings, 1, a_max, 0.0)
    tok = _pad_dim(token_embeddings, 1, t_max, 0.0)
    reg_labels = _pad_dim(region_labels.long(), 1, a_max, -1)
    reg_mask = _pad_dim(region_mask.bool(), 1, a_max, False)
    tok_labels = _pad_dim(token_labels.long(), 1, t_max, -1)
    tok_mask = _pad_dim(text_mask > 0, 1, t_max, False)
    own_map = _pad_dim(_pad_dim(region_token_map.bool(), 1, a_max, False), 2, t_max, False)
    own_map = own_map & reg_mask[:, :, None] & tok_mask[:, None, :]

    all_reg = all_gather_with_grad(reg).flatten(0, 2)  # (W*B*A, D)
    all_tok = all_gather_with_grad(tok).flatten(0, 2)  # (W*B*T, D)
    with torch.no_grad():
        all_reg_labels = all_gather_with_grad(reg_labels).flatten()  # (W*B*A,)
        all_reg_mask = all_gather_with_grad(reg_mask.long()).flatten() > 0
        all_tok_labels = all_gather_with_grad(tok_labels).flatten()  # (W*B*T,)
        all_tok_mask = all_gather_with_grad(tok_mask.long()).flatten() > 0
    own_reg, own_tok = reg.flatten(0, 1), tok.flatten(0, 1)  # (B*A, D), (B*T, D)
    own_reg_labels, own_tok_labels = reg_labels.flatten(), tok_labels.flatten()
    scale = torch.exp(torch.as_tensor(log_scale, dtype=own_reg.dtype, device=device))
    first_row, first_col = rank * b * a_max, rank * b * t_max

    def propagated(r_labels: Tensor, t_labels: Tensor) -> Tensor:
        return (r_labels[:, None] == t_labels[None, :]) & (r_labels[:, None] >= 0)

    def own_blocks(target: Tensor, row0: int, col0: int) -> Tensor:
        for i in range(b):
            r, c = row0 + i * a_max, col0 + i * t_max
            target[r : r + a_max, c : c + t_max] = own_map[i]
        return target

    # this rank's regions against all tokens
    logits_rows = own_reg @ all_tok.T / scale  # (B*A, W*B*T)
    valid = reg_mask.flatten()[:, None] & all_tok_mask[None, :]
    logits_rows = logits_rows.masked_fill(~valid, MASKED_LOGIT)
    with torch.no_grad():
        target_rows = own_blocks(propagated(own_reg_labels, all_tok_labels), 0, first_col)
        target_rows &= valid
    loss_regions = -(_row_normalise(target_rows.to(logits_rows.dtype)) * logits_rows.log_softmax(-1)).sum()

    # this rank's tokens against all regions
    logits_cols = own_tok @ all_reg.T / scale  # (B*T, W*B*A)
    valid = tok_mask.flatten()[:, None] & all_reg_mask[None, :]
    logits_cols = logits_cols.masked_fill(~valid, MASKED_LOGIT)
    with torch.no_grad():
        target_cols = own_blocks(propagated(all_reg_labels, own_tok_labels), first_row, 0).T
        target_cols &= valid
    loss_tokens = -(_row_normalise(target_cols.to(logits_cols.dtype)) * logits_cols.log_softmax(-1)).sum()
    return (loss_regions + loss_tokens) / 2


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked-language-model cross-entropy, averaged over the masked tokens.

    Args:
        logits: ``(B, T, vocab)`` predictions from the fused text features.
        labels: ``(B, T)`` int64 original token ids at masked positions, ``-100`` elsewhere.

    Returns:
        Scalar mean cross-entropy over positions with a label. When no position has one (the
        official code would return NaN) the result is ``0`` and still depends on ``logits``.
    """
    flat_labels = labels.reshape(-1).to(logits.device)
    if not bool((flat_labels != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_labels, ignore_index=-100)

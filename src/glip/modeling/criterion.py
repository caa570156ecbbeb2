"""GLIPCriterion: ATSS assignment + the GLIP / GLIPv2 losses → a dict of named, weighted losses.

Reproduces the official ``ATSSLossComputation.__call__`` (``rpn/loss.py``) with the dot-product
token loss on (the released GLIP configuration), plus the optional GLIPv2 terms:

====================  ==========================================================================
``loss_token``        token focal loss over (anchor, token) pairs / ``num_pos_avg`` × ``token_weight``
``loss_box``          centerness-weighted GIoU / (centerness-target sum averaged over ranks) × ``box_weight``
``loss_centerness``   centerness BCE / ``num_pos_avg`` × ``centerness_weight``
``loss_contrastive``  inter-image region-word contrastive / ``num_pos_avg`` × ``contrastive_weight``
``loss_mlm``          masked-LM cross-entropy (mean over masked tokens) × ``mlm_weight``
====================  ==========================================================================

``num_pos_avg = max(sum of positive anchors over ranks / world_size, 1)``. Diagnostics under keys
that do not start with ``loss_``: ``num_positives`` (this rank) and ``num_positives_avg``.

Official quirk *not* reproduced: the official contrastive loss collects its positive anchors with
``nonzero(anchors_to_gt_indexs)`` (``rpn/loss.py`` line 777), which also drops every anchor matched
to box #0 of each image; here every matched anchor is a candidate positive. ``benchmarks/parity_losses.py``
shows the two agree once box #0 is a dummy that matches nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from glip.config import GLIPConfig
from glip.modeling.anchors import BoxCoder, box_coder_for
from glip.modeling.assigner import atss_assign_batch
from glip.modeling.glip import GLIPOutput
from glip.modeling.losses import (
    all_reduce_sum,
    centerness_loss,
    centerness_targets,
    giou_loss,
    global_max,
    mlm_loss,
    random_subset,
    region_word_contrastive_loss,
    token_sigmoid_focal_loss,
    world_info,
)
from glip.modeling.mask_head import mask_loss, mask_targets
from glip.modeling.vl_heads import caption_loss, vqa_loss
from glip.structures import GroundingTarget


def fit_width(x: Tensor, width: int, fill: float) -> Tensor:
    """Cut or pad the last dimension of ``x`` to ``width`` (pad value ``fill``)."""
    if x.shape[-1] >= width:
        return x[..., :width]
    return torch.cat((x, x.new_full((*x.shape[:-1], width - x.shape[-1]), fill)), dim=-1)


def _float32(outputs: GLIPOutput) -> GLIPOutput:
    """The fields the losses read, in float32 (a shallow copy; other fields untouched)."""

    def f(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.float()

    return dataclasses.replace(
        outputs,
        logits=outputs.logits.float(),
        box_regression=outputs.box_regression.float(),
        centerness=outputs.centerness.float(),
        anchors_xyxy=outputs.anchors_xyxy.float(),
        region_embeddings=f(outputs.region_embeddings),
        token_embeddings=f(outputs.token_embeddings),
        mlm_logits=f(outputs.mlm_logits),
    )


class GLIPCriterion(nn.Module):
    """Training losses of GLIP (and GLIPv2 when its terms are on).

    An anchor is positive when ATSS matches it to a box (:func:`glip.modeling.assigner.atss_assign`).
    The official code additionally requires the box's class label to be ``> 0``; every official
    dataset uses 1-based labels, so the two agree, and here grounding boxes without a class
    (``box_labels == -1``) are positives too.

    Token targets: a positive anchor gets the ``positive_map`` row of its box; an unmatched anchor
    gets a vector whose only 1 is at ``no_object_token`` (official: the last of the 256 slots, a
    vestigial "no object" token). That slot is normally padding, removed by the text mask, so the
    target is effectively all-zero; it matters only for a prompt that fills all 256 slots, where it
    makes the last real token a positive of every unmatched anchor — reproduced as the official.

    Args:
        box_coder: decodes predicted deltas (the model's coder).
        topk: ATSS candidates per level and box.
        focal_alpha, focal_gamma: token focal loss parameters.
        token_weight, box_weight, centerness_weight: loss weights.
        contrastive: compute ``loss_contrastive`` (needs ``region_embeddings``/``token_embeddings``).
        contrastive_weight: its weight.
        contrastive_max_positives: positive anchors kept per image (random subset beyond).
        contrastive_log_scale: contrastive logits are divided by ``exp(log_scale)`` (the official
            ``SHALLOW_LOG_SCALE`` initial value; here a constant, not a learned parameter).
        mlm: compute ``loss_mlm`` (needs ``mlm_logits`` and ``mlm_labels``).
        mlm_weight: its weight.
        no_object_token: token slot set to 1 for unmatched anchors, None for all-zero targets;
            ignored when it is outside the token axis.
        legacy_plus_one: +1 box convention in the ATSS IoU.
        seed: seed of the generator that samples contrastive regions (offset by the rank).
    """

    def __init__(
        self,
        box_coder: BoxCoder | None = None,
        topk: int = 9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        token_weight: float = 1.0,
        box_weight: float = 2.0,
        centerness_weight: float = 1.0,
        contrastive: bool = False,
        contrastive_weight: float = 1.0,
        contrastive_max_positives: int = 100,
        contrastive_log_scale: float = 0.0,
        mlm: bool = False,
        mlm_weight: float = 1.0,
        mask: bool = False,
        mask_weight: float = 1.0,
        mask_iou_threshold: float = 0.5,
        vqa_weight: float = 1.0,
        caption_weight: float = 1.0,
        no_object_token: int | None = 255,
        legacy_plus_one: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.topk = topk
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.contrastive = contrastive
        self.contrastive_max_positives = contrastive_max_positives
        self.contrastive_log_scale = contrastive_log_scale
        self.mlm = mlm
        self.mask = mask
        self.mask_iou_threshold = mask_iou_threshold
        self.no_object_token = no_object_token
        self.legacy_plus_one = legacy_plus_one
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.weight_dict: dict[str, float] = {
            "loss_token": token_weight,
            "loss_box": box_weight,
            "loss_centerness": centerness_weight,
        }
        if contrastive:
            self.weight_dict["loss_contrastive"] = contrastive_weight
        if mlm:
            self.weight_dict["loss_mlm"] = mlm_weight
        if mask:
            self.weight_dict["loss_mask"] = mask_weight
        self.weight_dict["loss_vqa"] = vqa_weight
        self.weight_dict["loss_caption"] = caption_weight

    @classmethod
    def from_config(cls, config: GLIPConfig, box_coder: BoxCoder | None = None) -> GLIPCriterion:
        """The criterion of a model config (``config.loss``; the box coder from ``config.head`` if not given)."""
        lo, h = config.loss, config.head
        if box_coder is None:
            box_coder = box_coder_for(h)
        return cls(
            box_coder,
            topk=lo.atss_topk,
            focal_alpha=lo.focal_alpha,
            focal_gamma=lo.focal_gamma,
            token_weight=lo.token_weight,
            box_weight=lo.box_weight,
            centerness_weight=lo.centerness_weight,
            contrastive=lo.contrastive,
            contrastive_weight=lo.contrastive_weight,
            contrastive_max_positives=lo.contrastive_max_positives,
            contrastive_log_scale=lo.contrastive_log_scale,
            mlm=lo.mlm,
            mlm_weight=lo.mlm_weight,
            mask=config.heads.mask is not None and lo.mask_weight > 0,
            mask_weight=lo.mask_weight,
            mask_iou_threshold=config.heads.mask.iou_threshold if config.heads.mask else 0.5,
            vqa_weight=lo.vqa_weight,
            caption_weight=lo.caption_weight,
            # official: the last slot of the max_query_len-wide positive map
            no_object_token=config.text.max_query_len - 1,
            legacy_plus_one=h.legacy_plus_one,
        )

    # ------------------------------------------------------------------ pieces
    def mask_loss(self, mask_logits: Tensor, rois: Tensor, targets: Sequence[GroundingTarget]) -> Tensor:
        """GLIPv2 mask loss of the ROIs the mask head ran on (see :func:`glip.modeling.mask_head.mask_loss`).

        Each ROI learns the mask of the GT box it overlaps by at least ``mask_iou_threshold``, through
        the mean of that box's positive tokens; images whose target has no masks contribute nothing.

        Args:
            mask_logits: ``(R, T, M, M)``; rois: ``(R, 5)`` (image index first); targets: per image.
        """
        resolution, num_tokens = mask_logits.shape[-1], mask_logits.shape[1]
        image = rois[:, 0].long()
        rows, boxes_per_image, gt_boxes, gt_masks, gt_maps = [], [], [], [], []
        for i, tgt in enumerate(targets):
            idx = (image == i).nonzero().squeeze(1)
            if tgt.masks is None or idx.numel() == 0:
                continue
            rows.append(idx)
            boxes_per_image.append(rois[idx, 1:])
            gt_boxes.append(tgt.boxes_xyxy.to(rois))
            gt_masks.append(tgt.masks.to(rois.device))
            gt_maps.append(fit_width(tgt.positive_map.to(rois.device, torch.float32), num_tokens, 0.0))
        if not rows:
            return mask_logits.sum().float() * 0.0
        order = torch.cat(rows)
        positive_map, mask_targets_ = mask_targets(
            boxes_per_image, gt_boxes, gt_masks, gt_maps, resolution, self.mask_iou_threshold
        )
        return mask_loss(mask_logits[order].float(), positive_map, mask_targets_)

    def assign(self, outputs: GLIPOutput, targets: Sequence[GroundingTarget]) -> Tensor:
        """``(B, N)`` matched box index of every anchor of every image, ``-1`` for negatives."""
        counts = [h * w for h, w in outputs.level_sizes]
        return atss_assign_batch(
            outputs.anchors_xyxy, counts, [t.boxes_xyxy for t in targets], self.topk, self.legacy_plus_one
        )

    def token_targets(self, matched: Tensor, targets: Sequence[GroundingTarget], num_tokens: int) -> Tensor:
        """``(B, N, T)`` float token targets from ``(B, N)`` matches (see the class docstring)."""
        b, n = matched.shape
        out = torch.zeros((b, n, num_tokens), dtype=torch.float32, device=matched.device)
        for i, target in enumerate(targets):
            pos = matched[i] >= 0
            if bool(pos.any()):
                pmap = fit_width(target.positive_map.to(out.device, torch.float32), num_tokens, 0.0)
                out[i, pos] = (pmap[matched[i, pos]] > 0).float()
            if self.no_object_token is not None and self.no_object_token < num_tokens:
                out[i, ~pos, self.no_object_token] = 1.0
        return out

    def _generator_for_rank(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed + world_info()[1])
        return self._generator

    def select_regions(
        self, matched: Tensor, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor], int]:
        """Anchors entering the contrastive loss: positives (≤ max per image) padded with negatives.

        Sampling order follows the official code (positives of every image, then negatives of
        every image), so one generator state gives one selection. Positives are subsampled when an
        image has ``>= contrastive_max_positives`` of them (the official test); negatives are drawn
        from the unmatched anchors.

        Returns:
            Per image the ascending positive anchor indices, per image the ascending negative
            anchor indices, and ``A``: positives per image padded to the global-batch maximum.
        """
        gen = generator if generator is not None else self._generator_for_rank()
        positives = []
        for row in matched:
            idx = (row >= 0).nonzero().squeeze(1)
            if idx.numel() >= self.contrastive_max_positives:
                idx = random_subset(idx, self.contrastive_max_positives, gen)
            positives.append(idx)
        num_regions = global_max(max((p.numel() for p in positives), default=0), matched.device)
        negatives = [
            random_subset((row < 0).nonzero().squeeze(1), num_regions - p.numel(), gen)
            for row, p in zip(matched, positives, strict=True)
        ]
        return positives, negatives, num_regions

    def contrastive_loss(
        self,
        outputs: GLIPOutput,
        targets: Sequence[GroundingTarget],
        matched: Tensor,
        text_mask: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The unnormalised inter-image contrastive loss of this batch (see :func:`region_word_contrastive_loss`)."""
        regions, tokens = outputs.region_embeddings, outputs.token_embeddings
        if regions is None or tokens is None:
            raise ValueError("contrastive=True needs outputs.region_embeddings and token_embeddings: build the model "
                             "with loss.contrastive=True")  # fmt: skip
        positives, negatives, a = self.select_regions(matched, generator)
        b, _, t = outputs.logits.shape
        device = regions.device
        rows = []  # built by indexing even when empty, so the projection stays in the graph (DDP)
        labels = torch.full((b, a), -1, dtype=torch.long, device=device)
        token_map = torch.zeros((b, a, t), dtype=torch.bool, device=device)
        mask = torch.zeros((b, a), dtype=torch.bool, device=device)
        token_labels = torch.full((b, t), -1, dtype=torch.long, device=device)
        for i, (target, pos, neg) in enumerate(zip(targets, positives, negatives, strict=True)):
            sel = torch.cat((pos, neg))
            k, p = sel.numel(), pos.numel()
            rows.append(torch.cat((regions[i, sel], regions.new_zeros((a - k, regions.shape[-1])))))
            mask[i, :k] = True
            gt = matched[i, pos]
            labels[i, :p] = target.box_labels.to(device)[gt]
            token_map[i, :p] = fit_width(target.positive_map.to(device), t, 0.0)[gt] > 0
            token_labels[i] = fit_width(target.token_labels.to(device).long(), t, -1)
        return region_word_contrastive_loss(
            torch.stack(rows), tokens, labels, token_map, token_labels, text_mask, mask, self.contrastive_log_scale
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        outputs: GLIPOutput,
        targets: Sequence[GroundingTarget],
        text_mask: Tensor,
        mlm_labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        input_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute the losses of one batch.

        Args:
            outputs: the model output; reads ``logits (B, N, T)``, ``box_regression (B, N, 4)``,
                ``centerness (B, N)``, ``anchors_xyxy (N, 4)``, ``level_sizes``, and when enabled
                ``region_embeddings (B, N, D)``, ``token_embeddings (B, T, D)``, ``mlm_logits (B, T, V)``.
            targets: ``B`` targets with boxes in the anchors' (resized-image) pixel frame; their
                ``positive_map`` / ``token_labels`` are cut or zero-padded to ``T``.
            text_mask: ``(B, T)`` attention mask of the prompts.
            mlm_labels: ``(B, T)`` masked-LM labels (``-100`` where not masked), when ``mlm``.
            generator: overrides the criterion's own generator for the contrastive sampling.
            input_ids: ``(B, T)`` prompt tokens: the next-token targets of the caption rows.

        Returns:
            The weighted losses named in the module docstring and the diagnostics.

        Like the official ``custom_fwd(cast_inputs=torch.float32)``, the losses are computed in
        float32 with autocast disabled, whatever the precision of the model outputs.
        """
        with torch.autocast(outputs.logits.device.type, enabled=False):
            losses = self._losses(_float32(outputs), targets, text_mask, mlm_labels, generator)
            losses.update(self.understanding_losses(outputs, targets, text_mask, input_ids))
            return losses

    def understanding_losses(
        self, outputs: GLIPOutput, targets: Sequence[GroundingTarget], text_mask: Tensor, input_ids: Tensor | None
    ) -> dict[str, Tensor]:
        """GLIPv2 VQA loss on the rows with answer scores, captioning loss on the causal rows."""
        losses: dict[str, Tensor] = {}
        w = self.weight_dict
        # a head without rows in this batch still gets a zero loss (DDP expects every head used)
        vqa_rows = [i for i, t in enumerate(targets) if t.vqa_scores is not None]
        if outputs.vqa_logits is not None:
            if vqa_rows:
                scores = torch.stack([targets[i].vqa_scores for i in vqa_rows]).to(outputs.vqa_logits.device)  # type: ignore[misc]
                losses["loss_vqa"] = vqa_loss(outputs.vqa_logits[vqa_rows].float(), scores) * w["loss_vqa"]
            else:
                losses["loss_vqa"] = outputs.vqa_logits.float().sum() * 0.0
        causal_rows = [i for i, t in enumerate(targets) if t.causal]
        if outputs.lm_logits is not None:
            if causal_rows:
                if input_ids is None:
                    raise ValueError("caption rows need input_ids (the next-token targets)")
                lm = caption_loss(outputs.lm_logits.float(), input_ids[causal_rows], text_mask[causal_rows])
                losses["loss_caption"] = lm * w["loss_caption"]
            else:
                losses["loss_caption"] = outputs.lm_logits.float().sum() * 0.0
        return losses

    def _losses(
        self,
        outputs: GLIPOutput,
        targets: Sequence[GroundingTarget],
        text_mask: Tensor,
        mlm_labels: Tensor | None,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        logits, deltas, ctr_logits = outputs.logits, outputs.box_regression, outputs.centerness
        anchors = outputs.anchors_xyxy
        b, _, t = logits.shape
        if len(targets) != b:
            raise ValueError(f"got {len(targets)} targets for a batch of {b} images")
        if text_mask.shape != (b, t):
            raise ValueError(f"text_mask has shape {tuple(text_mask.shape)}, expected {(b, t)}")
        world = world_info()[0]
        with torch.no_grad():
            matched = self.assign(outputs, targets)
            positive = matched >= 0
            token_targets = self.token_targets(matched, targets, t)
            img_idx, anchor_idx = positive.nonzero(as_tuple=True)
            gt_boxes = torch.cat(
                [tgt.boxes_xyxy.to(anchors)[matched[i, positive[i]]] for i, tgt in enumerate(targets)]
            ).reshape(-1, 4)
            ctr_targets = centerness_targets(anchors[anchor_idx], gt_boxes)
            num_pos = positive.sum().to(logits.dtype)
            num_pos_avg = torch.clamp(all_reduce_sum(num_pos.clone()) / world, min=1.0)
            ctr_sum_avg = all_reduce_sum(ctr_targets.sum().to(logits.dtype)) / world

        w = self.weight_dict
        losses: dict[str, Tensor] = {}
        # rows without grounding (captions with no linked boxes) take no token loss
        grounded = torch.tensor([t.ground for t in targets], device=text_mask.device, dtype=text_mask.dtype)
        focal = token_sigmoid_focal_loss(
            logits, token_targets, text_mask * grounded[:, None], self.focal_alpha, self.focal_gamma
        )
        losses["loss_token"] = focal / num_pos_avg * w["loss_token"]
        if anchor_idx.numel() > 0:
            pred_boxes = self.box_coder.decode(deltas[img_idx, anchor_idx], anchors[anchor_idx])
            box = giou_loss(pred_boxes, gt_boxes.to(pred_boxes.dtype), ctr_targets) / ctr_sum_avg
            ctr = centerness_loss(ctr_logits[img_idx, anchor_idx], ctr_targets) / num_pos_avg
        else:  # no positive anchor on this rank: zero losses that still touch the outputs
            box, ctr = deltas.sum() * 0.0, ctr_logits.sum() * 0.0
        losses["loss_box"] = box * w["loss_box"]
        losses["loss_centerness"] = ctr * w["loss_centerness"]
        if self.contrastive:
            contrastive = self.contrastive_loss(outputs, targets, matched, text_mask, generator)
            losses["loss_contrastive"] = contrastive / num_pos_avg * w["loss_contrastive"]
        if self.mlm:
            if outputs.mlm_logits is None or mlm_labels is None:
                raise ValueError("mlm=True needs outputs.mlm_logits (loss.mlm=True in the model config) and "
                                 "mlm_labels from glip.text.mlm.mask_tokens")  # fmt: skip
            losses["loss_mlm"] = mlm_loss(outputs.mlm_logits, mlm_labels) * w["loss_mlm"]
        if self.mask and outputs.mask_logits is not None and outputs.mask_rois is not None:
            losses["loss_mask"] = self.mask_loss(outputs.mask_logits, outputs.mask_rois, targets) * w["loss_mask"]
        losses["num_positives"] = num_pos.detach()
        losses["num_positives_avg"] = num_pos_avg.detach()
        return losses

"""Referring expressions as training samples (GLIPv2 referring-expression segmentation).

A refexp file (:mod:`glip.data.refexp`, the ``coco_mt`` format) names, per expression, the COCO
instances it refers to (``ann_ids``, ids of the instances file of the same images). One sample per
expression:

* caption = the expression; ONE entity spanning the whole (stripped) expression
  (:func:`glip.data.refexp.expression_prompt`, the prompt the referring-segmentation evaluation
  uses), so "all knives" grounds every knife to the whole phrase;
* boxes = each referred instance's box from the instances file (``x2 = x + w - 1``, clipped, thin
  boxes dropped, as every training box: :func:`glip.data.grounding.coco_boxes_to_xyxy`);
* masks = each referred instance's mask from the instances file (decoded when the sample is
  loaded), aligned with the boxes; None when an instance has no segmentation or masks are off.

Samples have ``kind="grounding"`` (free text: entity label -1). The other instances of the image are
not targets: for "the leftmost person" the other people are negatives, as they should be.
Expressions without ``ann_ids``, and those whose every instance is a crowd region or a box of at
most one pixel, are skipped (counted in ``issues``). The DERIVED ``coco_mt`` / ``coco128`` refexp
files are templated language: call what a model learns from them "coco_mt derived".
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch

from glip.data.coco import CocoDataset, is_held_out
from glip.data.grounding import (
    SKIP_THIN,
    GroundingDatasetBase,
    SampleTransform,
    coco_boxes_to_xyxy,
    open_checked,
    resolve_masks,
)
from glip.data.refexp import RefExp, RefExpDataset, expression_prompt, load_refexp
from glip.errors import DataError
from glip.structures import GroundingSample

logger = logging.getLogger(__name__)


class RefExpGroundingDataset(GroundingDatasetBase):
    """Referring expressions over a COCO instances file (see the module docstring).

    Args:
        refexp: the refexp file, or an already loaded :class:`~glip.data.refexp.RefExpDataset`.
        instances: the COCO instances file of the same images, loaded
            (:meth:`glip.data.coco.CocoDataset.load`); its images are the ones loaded.
        transform: applied to every sample with its generator.
        seed: base seed of the per-sample randomness (used by the transform).
        masks: instance masks in the samples: None when every referred instance has a segmentation,
            False never, True required.
        holdout_every: leave out the expressions of images whose id is a multiple of this (held out
            for evaluation, :func:`glip.data.coco.is_held_out`); 0 keeps all.

    Raises:
        DataError: for a malformed refexp file, an image of the refexp file that the instances file
            lists under another file name or size, or an ``ann_id`` that is not an instance of the
            expression's image.
    """

    kind = "grounding"

    def __init__(
        self,
        refexp: str | Path | RefExpDataset,
        instances: CocoDataset,
        transform: SampleTransform | None = None,
        *,
        seed: int = 0,
        masks: bool | None = None,
        holdout_every: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        self.refexp = refexp if isinstance(refexp, RefExpDataset) else load_refexp(refexp, check_files=False)
        self.instances = instances
        source = str(self.refexp.annotation_file)
        by_id = {int(a["id"]): a for a in instances.data.get("annotations", []) if "id" in a}
        images = {int(im["id"]): im for im in instances.images}
        self.refs: list[RefExp] = []
        self.images: list[dict[str, Any]] = []
        self.boxes: list[torch.Tensor] = []
        self.kept_annotations: list[list[dict[str, Any]]] = []
        held_out = 0
        for ref in self.refexp.refs:
            if is_held_out(ref.image_id, holdout_every):
                held_out += 1
                continue
            im = self._image(ref, images, source)
            anns = self._instances(ref, by_id, source)
            if not anns:
                continue
            boxes, keep = coco_boxes_to_xyxy([a["bbox"] for a in anns], im["width"], im["height"])
            self.issues[SKIP_THIN] += len(anns) - len(keep)
            if not keep:
                self.issues["expression whose every instance is a box of at most 1 px"] += 1
                continue
            self.refs.append(ref)
            self.images.append(im)
            self.boxes.append(boxes)
            self.kept_annotations.append([anns[i] for i in keep])
        if held_out:
            logger.info("%s: %d expression(s) held out", source, held_out)
        self.with_masks = resolve_masks(masks, self.kept_annotations, self.images, str(instances.annotation_file))
        missing = sorted({im["file_name"] for im in self.images if not instances.image_path(im).is_file()})
        if missing:
            raise DataError(
                f"{len(missing)} image(s) of {source} are missing under {instances.image_root}, e.g. {missing[:3]}; "
                "pass the right images folder"
            )
        self.issues = +self.issues
        self._log_issues(source)

    def _image(self, ref: RefExp, images: dict[int, dict[str, Any]], source: str) -> dict[str, Any]:
        """The instances file's record of the expression's image, checked against the refexp file's."""
        own = self.refexp.images[ref.image_id]
        im = images.get(ref.image_id)
        if im is None:
            raise DataError(
                f"{source}: ref_id {ref.ref_id}: image {ref.image_id} is not in {self.instances.annotation_file}: "
                "give the instances file of the same images"
            )
        if (own["file_name"], self.refexp.image_size(ref.image_id)) != (
            im["file_name"],
            (round(float(im["height"])), round(float(im["width"]))),
        ):
            raise DataError(
                f"{source}: image {ref.image_id} is {own['file_name']!r} ({own['width']}x{own['height']}) but "
                f"{self.instances.annotation_file} lists {im['file_name']!r} ({im['width']}x{im['height']}): "
                "give the instances file of the same images"
            )
        return im

    def _instances(self, ref: RefExp, by_id: dict[int, dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """The referred instances (file order, duplicates once), crowd regions left out."""
        if not ref.ann_ids:
            self.issues["expression without ann_ids (no instance to learn)"] += 1
            return []
        anns = []
        for ann_id in dict.fromkeys(ref.ann_ids):
            ann = by_id.get(ann_id)
            if ann is None or ann["image_id"] != ref.image_id:
                where = "no annotation" if ann is None else f"annotation of image {ann['image_id']}"
                raise DataError(
                    f"{source}: ref_id {ref.ref_id}: ann_id {ann_id} is {where} in {self.instances.annotation_file}, "
                    f"not an instance of image {ref.image_id}: give the instances file of the same images"
                )
            if ann.get("iscrowd", 0):
                self.issues["referred crowd region (ignored)"] += 1
                continue
            anns.append(ann)
        if not anns:
            self.issues["expression that refers only to crowd regions"] += 1
        return anns

    def __len__(self) -> int:
        return len(self.refs)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of the image of expression ``index``."""
        return int(self.images[index]["height"]), int(self.images[index]["width"])

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        """Load the image; the whole expression is the one entity of every referred box."""
        ref, im = self.refs[index], self.images[index]
        boxes = self.boxes[index]
        masks = self.instances.instance_masks(im, self.kept_annotations[index]) if self.with_masks else None
        return GroundingSample(
            image=open_checked(self.instances.image_path(im), im["width"], im["height"]),
            prompt=expression_prompt(ref.expression),
            boxes_xyxy=boxes,
            box_entities=[[0] for _ in range(boxes.shape[0])],
            entity_labels=[-1],
            kind=self.kind,
            image_id=im["id"],
            masks=masks,
        )


__all__ = ["RefExpGroundingDataset"]

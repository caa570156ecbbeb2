"""Training datasets that return :class:`~glip.structures.GroundingSample`.

* :class:`DetectionGroundingDataset` — a COCO-format detection dataset whose labels become a
  prompt of class names (:mod:`glip.data.od_to_grounding`);
* :class:`MdetrGroundingDataset` — phrase grounding in the MDETR format (Flickr30k, GoldG, RefCOCO);
* :class:`ImageTextDataset` — image-caption pairs with pseudo boxes (self-training input).

Boxes follow the official loader (``modulated_coco.py`` ``ConvertCocoPolysToMask`` l.426-429 and
``BoxList.clip_to_image``): ``xywh → xyxy`` with ``x2 = x + w - 1``, clipped to ``[0, W - 1] x
[0, H - 1]``, and a box with ``x2 <= x1`` or ``y2 <= y1`` afterwards is dropped (so boxes of one
pixel or less are dropped, as the official does). Crowd regions are skipped. All of this is done
once at construction; skipped records are counted in ``issues`` and logged once.

Instance masks (GLIPv2): a detection dataset whose every kept annotation has a segmentation gives
``GroundingSample.masks``, ``(M, H, W)`` bool aligned with the boxes (the same crowd, degenerate-box
and prompt-overflow filtering), decoded when the sample is loaded, never at construction.

Randomness: ``dataset[i]`` (or ``dataset[(i, epoch)]``, what :class:`glip.data.mixing.WeightedMixSampler`
yields) seeds a ``random.Random`` (prompt sampling) and a ``torch.Generator`` (transform) from
``(seed, epoch, i)`` only, so the sample does not depend on the worker that loads it and a resumed
run sees the same prompts and augmentations.

MDETR format (the ``final_*.json`` files of MDETR and GLIP)::

    {"images": [{"id": 0, "file_name": "1000092795.jpg", "height": 333, "width": 500,
                 "caption": "Two young guys with shaggy hair look at their hands ..."}, ...],
     "annotations": [{"id": 0, "image_id": 0, "bbox": [x, y, w, h], "iscrowd": 0,
                      "tokens_positive": [[0, 14]]}, ...]}

One ``images`` entry per (image, caption) pair (several entries may share a file). Each box lists
the character spans ``[start, end)`` of the caption that refer to it. Entities: one per distinct
span of the record (ordered by position); a box whose ``tokens_positive`` holds several spans (a
box referred to by several phrases) lists all of their entities, so its positive-map row is the
union of their tokens, exactly as the official ``create_positive_map``.

Image-text (pseudo-labelled) format: the same, plus ``"score"`` in [0, 1] on every annotation (the
teacher's confidence); boxes with ``score >= score_threshold`` are kept.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from glip.data.coco import CocoDataset, has_mask, is_held_out
from glip.data.mdetr import MdetrBox, MdetrFile, read_mdetr
from glip.data.mixing import few_shot_image_ids
from glip.data.od_to_grounding import ClassVocabulary, OdPromptOptions, convert_od_to_grounding
from glip.errors import DataError
from glip.processing import load_image
from glip.structures import GroundingSample
from glip.text import Prompt, clean_name

logger = logging.getLogger(__name__)

SampleTransform = Callable[[GroundingSample, torch.Generator], GroundingSample]
"""A transform of a sample given its generator (e.g. :class:`glip.data.transforms.TrainTransform`)."""

SKIP_THIN = "box of at most 1 px after x2 = x + w - 1 and clipping (the official drops it)"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index)`` (NumPy ``SeedSequence``)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index)]).generate_state(2)
    return (int(state[0]) << 31) ^ int(state[1])


def coco_boxes_to_xyxy(boxes_xywh: Sequence[Sequence[float]], width: int, height: int) -> tuple[torch.Tensor, list]:
    """Official conversion of COCO ``[x, y, w, h]`` boxes for training.

    Returns:
        ``(K, 4)`` float32 ``boxes_xyxy`` with ``x2 = x + w - 1`` clipped to the image, and the
        indices of the input boxes kept (``x2 > x1`` and ``y2 > y1`` after clipping).
    """
    boxes = torch.as_tensor(boxes_xywh, dtype=torch.float32).reshape(-1, 4)
    x1, y1, w, h = boxes.unbind(-1)
    xyxy = torch.stack((x1, y1, x1 + (w - 1).clamp(min=0), y1 + (h - 1).clamp(min=0)), dim=-1)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height - 1)
    keep = ((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])).nonzero().flatten().tolist()
    return xyxy[keep], keep


class GroundingDatasetBase(Dataset):
    """Common machinery: per-sample seeding, epochs, transform, image loading.

    Subclasses implement :meth:`__len__`, :meth:`raw_sample` and :meth:`image_size`.
    """

    kind = "detection"

    def __init__(self, transform: SampleTransform | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.issues: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (tuple indices carry their own epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        raise NotImplementedError

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        """The untransformed sample (PIL image, boxes in original pixels)."""
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of an image as listed in the annotations (for aspect grouping)."""
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> GroundingSample:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        seed = sample_seed(self.seed, epoch, index)
        sample = self.raw_sample(index, random.Random(seed))
        if self.transform is not None:
            sample = self.transform(sample, torch.Generator().manual_seed(seed))
        return sample

    def _log_issues(self, source: object) -> None:
        for reason, count in self.issues.items():
            logger.warning("%s: skipped %d record(s): %s", source, count, reason)


def open_checked(path: Path, width: int, height: int) -> Image.Image:
    """Open an image and check that it is the size its annotation gives (boxes refer to that size)."""
    image = load_image(path)
    if image.size != (int(width), int(height)):
        raise DataError(
            f"image {path} is {image.size[0]}x{image.size[1]} but its annotation says {width}x{height}: "
            "fix the width/height in the annotation file (boxes refer to the listed size)"
        )
    return image


class DetectionGroundingDataset(GroundingDatasetBase):
    """A COCO-format detection dataset as grounding samples (class-name prompts).

    Args:
        coco: the validated dataset (:meth:`glip.data.coco.CocoDataset.load`; crowd, empty and
            outside boxes are already skipped there, unknown category ids raise there).
        tokenizer: used only to count the tokens of class names (prompt budget).
        transform: applied to every sample with its generator.
        options: official conversion options (pretraining defaults: 85 negatives, 50 % full).
        prompt_overrides: ``{category name: prompt words}`` renames (``glip.evaluation.prompts``).
        caption_prompts: ODinW ``{"prefix", "name", "suffix"}`` per category (``all_classes`` mode).
        seed: base seed of the per-sample randomness.
        label_offset: added to category ids in ``entity_labels`` so that several datasets mixed in
            one run do not share label ids (GLIPv2 label propagation matches labels across images).
        remove_images_without_annotations: drop images as the official ``has_valid_annotation``
            (no annotation, or every box, crowd included, has ``w <= 1`` or ``h <= 1``).
        few_shot: keep ``k`` shots per category (:func:`glip.data.mixing.few_shot_image_ids`).
        few_shot_seed: shuffle before the greedy selection (the official grounding datasets do not).
        background_negative: official TSV quirk, ``__background__`` in the negative pool.
        extra_negatives: class names that never have boxes here but join the negative pool (e.g. the
            classes of the other datasets of a mixture, so that a raccoon photo also learns that it
            is not a "dog"); names equal to one of the dataset's own prompt names are ignored.
        masks: instance masks in the samples: None when every kept annotation has a segmentation
            (:func:`glip.data.coco.has_mask`), False never, True required (a DataError otherwise).
        holdout_every: leave out the images whose id is a multiple of this (held out for
            evaluation, :func:`glip.data.coco.is_held_out`); 0 keeps every image.
    """

    kind = "detection"
    # label ids of extra negative classes start here (far above any dataset's category ids)
    EXTRA_LABEL_BASE = 50_000

    def __init__(
        self,
        coco: CocoDataset,
        tokenizer: object,
        transform: SampleTransform | None = None,
        *,
        options: OdPromptOptions | None = None,
        prompt_overrides: Mapping[str, str] | None = None,
        caption_prompts: Sequence[Mapping[str, str]] | None = None,
        seed: int = 0,
        label_offset: int = 0,
        remove_images_without_annotations: bool = True,
        few_shot: int = 0,
        few_shot_seed: int | None = None,
        background_negative: bool = False,
        extra_negatives: Sequence[str] = (),
        masks: bool | None = None,
        holdout_every: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        self.coco = coco
        self.options = options or OdPromptOptions()
        self.label_offset = int(label_offset)
        own = ClassVocabulary.build(
            coco.category_ids, coco.category_names, tokenizer, prompt_overrides, caption_prompts, background_negative
        )
        extras = sorted({clean_name(n) for n in extra_negatives} - set(own.prompt_names) - {""})
        if extras:
            if caption_prompts is not None:
                raise DataError("extra_negatives cannot be combined with caption prompts (one entry per category)")
            ids = [*coco.category_ids, *(self.EXTRA_LABEL_BASE + i for i in range(len(extras)))]
            names = [*coco.category_names, *extras]
            renames = {**(prompt_overrides or {})}
            own = ClassVocabulary.build(ids, names, tokenizer, renames, None, background_negative)
        self.vocab = own
        images = [im for im in coco.images if not is_held_out(im["id"], holdout_every)]
        if len(images) < len(coco.images):
            logger.info("%s: %d image(s) held out", coco.annotation_file, len(coco.images) - len(images))
        if remove_images_without_annotations:
            raw: dict[Any, list] = defaultdict(list)
            for ann in coco.data.get("annotations", []):
                raw[ann["image_id"]].append(ann)
            images = [im for im in images if any(min(a["bbox"][2:]) > 1 for a in raw.get(im["id"], []))]
        if few_shot:
            cats: dict[Any, set[int]] = defaultdict(set)
            for ann in coco.data.get("annotations", []):
                cats[ann["image_id"]].add(int(ann["category_id"]))
            by_id = {im["id"]: im for im in images}
            chosen = few_shot_image_ids([im["id"] for im in images], cats, few_shot, coco.category_ids, few_shot_seed)
            images = [by_id[i] for i in chosen]
        self.images = images
        self.boxes: list[torch.Tensor] = []
        self.labels: list[list[int]] = []
        # per image, the annotations of its kept boxes (their segmentations are decoded per sample)
        self.kept_annotations: list[list[dict[str, Any]]] = []
        for im in images:
            anns = coco.annotations.get(im["id"], [])
            boxes, keep = coco_boxes_to_xyxy([a["bbox"] for a in anns], im["width"], im["height"])
            self.issues[SKIP_THIN] += len(anns) - len(keep)
            self.boxes.append(boxes)
            self.labels.append([int(anns[i]["category_id"]) for i in keep])
            self.kept_annotations.append([anns[i] for i in keep])
        self.with_masks = resolve_masks(masks, self.kept_annotations, images, str(coco.annotation_file))
        self.issues = +self.issues
        self._log_issues(coco.annotation_file)

    def __len__(self) -> int:
        return len(self.images)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of image ``index``."""
        return int(self.images[index]["height"]), int(self.images[index]["width"])

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        """Load the image and draw its prompt (see :func:`convert_od_to_grounding`)."""
        im = self.images[index]
        image = open_checked(self.coco.image_path(im), im["width"], im["height"])
        labels = self.labels[index]
        converted = convert_od_to_grounding(labels, self.vocab, self.options, rng)
        keep = torch.as_tensor(converted.keep, dtype=torch.long)
        masks = None
        if self.with_masks:
            anns = self.kept_annotations[index]
            masks = self.coco.instance_masks(im, [anns[i] for i in converted.keep])
        return GroundingSample(
            image=image,
            prompt=converted.prompt,
            boxes_xyxy=self.boxes[index][keep].reshape(-1, 4),
            box_entities=converted.box_entities,
            entity_labels=[label + self.label_offset for label in converted.entity_labels],
            kind=self.kind,
            image_id=im["id"],
            masks=masks,
        )


def resolve_masks(
    masks: bool | None, annotations: Sequence[Sequence[dict[str, Any]]], images: Sequence[dict[str, Any]], source: str
) -> bool:
    """Whether samples carry masks: ``masks`` (None: when every annotation has one), checked.

    Also checks that every RLE segmentation is the size of its image (the cheap part of decoding;
    polygons are checked when decoded).

    Raises:
        DataError: if masks are required and an annotation has none, or an RLE has another size.
    """
    if masks is False:
        return False
    flat = [(im, a) for im, anns in zip(images, annotations, strict=True) for a in anns]
    without = [a for _, a in flat if not has_mask(a)]
    if without:
        if masks:
            raise DataError(
                f"{source}: {len(without)} annotation(s) have no segmentation (e.g. id {without[0].get('id')}), "
                "but masks were required: set masks to null or false for this source"
            )
        if len(without) < len(flat):
            logger.info("%s: no masks (%d of %d annotations have none)", source, len(without), len(flat))
        return False
    for im, a in flat:
        seg = a["segmentation"]
        if isinstance(seg, dict) and seg["size"] != [round(float(im["height"])), round(float(im["width"]))]:
            raise DataError(
                f"{source}: annotation {a.get('id')}: segmentation.size {seg['size']!r} is not the size "
                f"[{im['height']}, {im['width']}] of image {im['id']}"
            )
    return bool(flat) or bool(masks)


class MdetrGroundingDataset(GroundingDatasetBase):
    """Phrase grounding in the MDETR format (see the module docstring).

    Args:
        annotation_file: the JSON file.
        images_dir: folder that ``file_name`` is relative to.
        transform: applied to every sample with its generator.
        seed: base seed of the per-sample randomness (used by the transform).
        keep_images_without_boxes: keep records left without boxes (official: dropped).
        check_files: fail at construction if an image file is missing.

    Raises:
        DataError: unreadable file, missing keys, spans outside the caption, annotations of unknown
            images, missing image files; naming the file and the record.
    """

    kind = "grounding"
    score_threshold: float | None = None

    def __init__(
        self,
        annotation_file: str | Path,
        images_dir: str | Path,
        transform: SampleTransform | None = None,
        *,
        seed: int = 0,
        keep_images_without_boxes: bool = False,
        check_files: bool = True,
    ) -> None:
        super().__init__(transform, seed)
        self.annotation_file = Path(annotation_file)
        self.images_dir = Path(images_dir)
        self.records: list[dict[str, Any]] = []
        self.boxes: list[torch.Tensor] = []
        self.box_spans: list[list[list[tuple[int, int]]]] = []
        self._load(keep_images_without_boxes, check_files)
        self.issues = +self.issues
        self._log_issues(self.annotation_file)

    def _load(self, keep_empty: bool, check_files: bool) -> None:
        path = self.annotation_file
        mdetr = read_mdetr(path, require_size=True)
        per_image: dict[Any, list[tuple[list[float], list[tuple[int, int]]]]] = defaultdict(list)
        for box in mdetr.boxes:
            item = self._check_box(box, mdetr)
            if item is not None:
                per_image[box.image_id].append(item)
        for image_id in sorted(mdetr.images, key=lambda k: (str(type(k)), k)):
            im, items = mdetr.images[image_id], per_image.get(image_id, [])
            boxes, keep = coco_boxes_to_xyxy([b for b, _ in items], im["width"], im["height"])
            self.issues[SKIP_THIN] += len(items) - len(keep)
            if not keep and not keep_empty:
                self.issues["record without usable boxes (the official drops it)"] += 1
                continue
            self.records.append(im)
            self.boxes.append(boxes)
            self.box_spans.append([items[k][1] for k in keep])
        if check_files:
            absent = sorted({r["file_name"] for r in self.records if not (self.images_dir / r["file_name"]).is_file()})
            if absent:
                raise DataError(
                    f"{len(absent)} image(s) listed in {path} are missing under {self.images_dir}, e.g. {absent[:3]}; "
                    "pass the right images folder"
                )

    def _check_box(self, box: MdetrBox, mdetr: MdetrFile) -> tuple[list[float], list[tuple[int, int]]] | None:
        """The box and its sorted distinct spans, or None (counted in ``issues``) if it is skipped."""
        fields, ann = mdetr.fields, box.record
        if box.spans is None:
            fields.fail(f"{box.where}.tokens_positive", "missing: training needs the caption spans each box grounds")
        if self.score_threshold is not None:
            if "score" not in ann:
                fields.fail(f"{box.where}.score", "missing: a pseudo-labelled box needs a numeric 'score'")
            score = fields.number(ann["score"], f"{box.where}.score")
            if score < self.score_threshold:
                self.issues[f"pseudo box with score below {self.score_threshold}"] += 1
                return None
        crowd = ann.get("iscrowd", 0)
        if type(crowd) not in (int, bool) or crowd not in (0, 1):
            fields.flag(crowd, f"{box.where}.iscrowd")
        if crowd:
            self.issues["crowd region"] += 1
            return None
        if not box.spans:
            self.issues["box without a phrase span"] += 1
            return None
        x, y, w, h = box.bbox_xywh
        im = mdetr.images[box.image_id]
        if w <= 0 or h <= 0:
            self.issues["box with zero or negative width/height"] += 1
            return None
        if x >= im["width"] or y >= im["height"] or x + w <= 0 or y + h <= 0:
            self.issues["box entirely outside its image"] += 1
            return None
        return [x, y, w, h], sorted(set(box.spans))

    def __len__(self) -> int:
        return len(self.records)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of record ``index``."""
        return int(self.records[index]["height"]), int(self.records[index]["width"])

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        """Load the image; entities are the distinct spans of the record."""
        record, box_spans = self.records[index], self.box_spans[index]
        caption = record["caption"]
        spans = sorted({span for spans in box_spans for span in spans})
        entity_of = {span: i for i, span in enumerate(spans)}
        prompt = Prompt(text=caption, spans=tuple((s,) for s in spans), labels=tuple(caption[s:e] for s, e in spans))
        return GroundingSample(
            image=open_checked(self.images_dir / record["file_name"], record["width"], record["height"]),
            prompt=prompt,
            boxes_xyxy=self.boxes[index],
            box_entities=[[entity_of[s] for s in spans_of_box] for spans_of_box in box_spans],
            entity_labels=[-1] * len(spans),
            kind=self.kind,
            image_id=record["id"],
        )


class ImageTextDataset(MdetrGroundingDataset):
    """Image-caption pairs with pseudo boxes: the MDETR format plus a ``score`` per box.

    Boxes with ``score >= score_threshold`` are kept; records left without boxes are dropped
    unless ``keep_images_without_boxes``. Samples have ``kind="image_text"``.
    """

    kind = "image_text"

    def __init__(
        self,
        annotation_file: str | Path,
        images_dir: str | Path,
        transform: SampleTransform | None = None,
        *,
        score_threshold: float = 0.5,
        seed: int = 0,
        keep_images_without_boxes: bool = False,
        check_files: bool = True,
    ) -> None:
        self.score_threshold = float(score_threshold)
        super().__init__(
            annotation_file,
            images_dir,
            transform,
            seed=seed,
            keep_images_without_boxes=keep_images_without_boxes,
            check_files=check_files,
        )

"""GLIPv2 understanding tasks as training samples: grounded VQA and (grounded) captions.

* :class:`VQAGroundingDataset` — one sample per question: the prompt is the question with
  ``[MASK]`` appended (:func:`glip.vl_tasks.vqa_prompt`'s form); its entities are the question's
  phrases (the records' ``question_phrases`` char spans) and the answer, on the ``[MASK]`` token.
  Boxes: every instance a phrase names (for that phrase) and every instance of ``answer_ann_ids``
  (for the answer); an instance named by both carries both. ``vqa_scores`` are the soft answer
  scores (``min(#annotators / 3, 1)``, or OK-VQA's scores) over the model's answer vocabulary.
  Records without phrases (real VQA v2 / OK-VQA questions) train the VQA head only (``ground=False``).
* :class:`CaptionGroundingDataset` — one sample per caption, read causally (``causal=True``): the
  language model learns the caption; grounded captions (``coco_mt`` ``grounded_captions_train.json``,
  DERIVED lexicon links) also ground each linked phrase to its instances; captions without links
  train the language model only.

Instance boxes come from the COCO instances file of the same images (``instances``), converted as
every training box (:func:`glip.data.grounding.coco_boxes_to_xyxy`). Crowd regions are never targets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glip.data.captions import load_captions, load_grounded_captions
from glip.data.coco import CocoDataset, is_held_out
from glip.data.grounding import GroundingDatasetBase, SampleTransform, coco_boxes_to_xyxy, open_checked
from glip.data.vqa import VQADataset, load_vqa
from glip.errors import DataError
from glip.evaluation.vqa import record_scores
from glip.structures import GroundingSample
from glip.text import Prompt
from glip.validation import read_json

MASK_TEXT = "[MASK]"


class _InstanceBoxes:
    """Boxes of COCO instances by annotation id, in training convention (crowd and thin boxes dropped)."""

    def __init__(self, instances: CocoDataset) -> None:
        self.instances = instances
        self.images = {int(im["id"]): im for im in instances.images}
        self.by_id = {int(a["id"]): a for a in instances.data.get("annotations", []) if "id" in a}

    def image(self, image_id: int, source: str) -> dict[str, Any]:
        im = self.images.get(int(image_id))
        if im is None:
            raise DataError(
                f"{source}: image {image_id} is not in {self.instances.annotation_file}: give the instances "
                "file of the same images"
            )
        return im

    def boxes(self, ann_ids: Sequence[int], image: dict[str, Any]) -> dict[int, torch.Tensor]:
        """``{ann_id: (4,) box}`` of the usable instances among ``ann_ids``."""
        anns = [self.by_id[a] for a in dict.fromkeys(ann_ids) if a in self.by_id]
        anns = [a for a in anns if a["image_id"] == image["id"] and not a.get("iscrowd", 0)]
        xyxy, keep = coco_boxes_to_xyxy([a["bbox"] for a in anns], image["width"], image["height"])
        return {int(anns[k]["id"]): xyxy[i] for i, k in enumerate(keep)}


def _sample(image_record: dict[str, Any], instances: CocoDataset, prompt: Prompt, groups: list[list[int]],
            boxes: _InstanceBoxes, kind: str) -> tuple[Any, torch.Tensor, list[list[int]]]:  # fmt: skip
    """The image, the boxes and, per box, the entities that name it (``groups[e]`` = entity e's ann ids)."""
    per_box: dict[int, list[int]] = {}
    found = boxes.boxes([a for g in groups for a in g], image_record)
    for entity, ann_ids in enumerate(groups):
        for a in ann_ids:
            if a in found and entity not in per_box.setdefault(a, []):
                per_box[a].append(entity)
    xyxy = torch.stack([found[a] for a in per_box]) if per_box else torch.zeros(0, 4)
    image = open_checked(instances.image_path(image_record), image_record["width"], image_record["height"])
    return image, xyxy, list(per_box.values())


def _is_grounded(path: str | Path) -> bool:
    """A ``coco_mt`` grounded captions file (top-level ``grounded_captions``) rather than COCO captions."""
    data = read_json(path, "captions file", DataError, mapping=True)
    return "grounded_captions" in data


class VQAGroundingDataset(GroundingDatasetBase):
    """Grounded VQA samples (see the module docstring).

    Args:
        vqa: a VQA file of the ``coco_mt`` formats (:func:`glip.data.vqa.load_vqa`) or a loaded one.
        instances: the COCO instances file of its images (boxes of the phrases and of the answer).
        answers: the model's answer vocabulary (``heads.vqa.answers``).
        transform, seed: as every training dataset.
        holdout_every: leave out the questions on images whose id is a multiple of this.

    Raises:
        DataError: for malformed files or an image missing from the instances file.
    """

    kind = "vqa"

    def __init__(
        self,
        vqa: str | Path | VQADataset,
        instances: CocoDataset,
        answers: Sequence[str],
        transform: SampleTransform | None = None,
        *,
        seed: int = 0,
        holdout_every: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        self.data = vqa if isinstance(vqa, VQADataset) else load_vqa(vqa, check_files=False)
        self.instances = instances
        self.answer_index = {a: i for i, a in enumerate(answers)}
        self.boxes = _InstanceBoxes(instances)
        source = str(self.data.annotation_file)
        self.records = [r for r in self.data.records if not is_held_out(r.image_id, holdout_every)]
        self.image_records = [self.boxes.image(r.image_id, source) for r in self.records]
        unknown = sum(1 for r in self.records if not any(a in self.answer_index for a in record_scores(r)))
        if unknown:
            self.issues["question whose answers are all outside the vocabulary (VQA target all zero)"] += unknown
        self.issues = +self.issues
        self._log_issues(source)

    def __len__(self) -> int:
        return len(self.records)

    def image_size(self, index: int) -> tuple[int, int]:
        im = self.image_records[index]
        return int(im["height"]), int(im["width"])

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        record, im = self.records[index], self.image_records[index]
        question = record.question.strip()
        text = f"{question} {MASK_TEXT}"
        spans = [((s, e),) for s, e in (p.char_span for p in record.question_phrases) if 0 <= s < e <= len(question)]
        groups = [list(p.ann_ids) for p in record.question_phrases if 0 <= p.char_span[0] < p.char_span[1]]
        spans.append(((len(text) - len(MASK_TEXT), len(text)),))
        groups.append(list(record.answer_ann_ids))
        labels = [question[s[0][0] : s[0][1]] for s in spans[:-1]] + ["answer"]
        prompt = Prompt(text=text, spans=tuple(spans), labels=tuple(labels))
        image, boxes, box_entities = _sample(im, self.instances, prompt, groups, self.boxes, self.kind)
        scores = torch.zeros(len(self.answer_index))
        for answer, score in record_scores(record).items():
            if answer in self.answer_index:
                scores[self.answer_index[answer]] = float(score)
        return GroundingSample(
            image=image, prompt=prompt, boxes_xyxy=boxes, box_entities=box_entities,
            entity_labels=[-1] * len(spans), kind=self.kind, image_id=im["id"], vqa_scores=scores,
            ground=bool(record.question_phrases),
        )  # fmt: skip


class CaptionGroundingDataset(GroundingDatasetBase):
    """Caption samples read causally (see the module docstring).

    Args:
        captions: a COCO captions file, or ``coco_mt``'s grounded captions (detected by its
            ``phrases`` field: each caption with its linked phrases).
        instances: the COCO instances file of the images (boxes of linked phrases).
        transform, seed, holdout_every: as :class:`VQAGroundingDataset`.
    """

    kind = "caption"

    def __init__(
        self,
        captions: str | Path,
        instances: CocoDataset,
        transform: SampleTransform | None = None,
        *,
        seed: int = 0,
        holdout_every: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        self.instances = instances
        self.boxes = _InstanceBoxes(instances)
        source = str(captions)
        self.items: list[tuple[str, list[tuple[tuple[int, int], list[int]]], dict[str, Any]]] = []
        if _is_grounded(captions):
            grounded = load_grounded_captions(captions, check_files=False)
            for g in grounded.records:
                if not is_held_out(g.image_id, holdout_every):
                    links = [(tuple(p.char_span), list(p.ann_ids)) for p in g.phrases]
                    self.items.append((g.caption, links, self.boxes.image(g.image_id, source)))  # type: ignore[arg-type]
        else:
            for rec in load_captions(captions, check_files=False).records:
                if not is_held_out(rec.image_id, holdout_every):
                    im = self.boxes.image(rec.image_id, source)
                    self.items.extend((c, [], im) for c in rec.captions)
        if not self.items:
            raise DataError(f"{source}: no caption left to train on (all held out?)")

    def __len__(self) -> int:
        return len(self.items)

    def image_size(self, index: int) -> tuple[int, int]:
        im = self.items[index][2]
        return int(im["height"]), int(im["width"])

    def raw_sample(self, index: int, rng: random.Random) -> GroundingSample:
        caption, links, im = self.items[index]
        text = caption.strip()
        offset = len(caption) - len(caption.lstrip())
        spans = [((s - offset, e - offset),) for (s, e), _ in links if 0 <= s - offset < e - offset <= len(text)]
        groups = [ann_ids for (s, e), ann_ids in links if 0 <= s - offset < e - offset <= len(text)]
        labels = [text[sp[0][0] : sp[0][1]] for sp in spans]
        if not spans:  # the language model only: one entity over the caption keeps the prompt valid
            spans, groups, labels = [((0, len(text)),)], [[]], [text]
        prompt = Prompt(text=text, spans=tuple(spans), labels=tuple(labels))
        image, boxes, box_entities = _sample(im, self.instances, prompt, groups, self.boxes, self.kind)
        return GroundingSample(
            image=image, prompt=prompt, boxes_xyxy=boxes, box_entities=box_entities,
            entity_labels=[-1] * len(spans), kind=self.kind, image_id=im["id"], causal=True,
            ground=bool(links),
        )  # fmt: skip


__all__ = ["CaptionGroundingDataset", "VQAGroundingDataset"]

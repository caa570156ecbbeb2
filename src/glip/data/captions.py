"""Readers of caption files: COCO captions and coco_mt grounded captions, shared by training and evaluation.

* **COCO captions** (:func:`load_captions`; ``coco_mt/annotations/captions_train.json``, REAL COCO
  captions, and the official ``captions_*2017.json``)::

      {"images": [{id, file_name, ...}, ...], "annotations": [{"id", "image_id", "caption"}, ...]}

  read into one :class:`CaptionRecord` per image that has at least one caption (images without
  captions are counted and left out).
* **Grounded captions** (:func:`load_grounded_captions`; ``coco_mt/annotations/grounded_captions_train.json``,
  DERIVED links over real captions, ``shared/data/README.md``)::

      {"info": {...}, "images": [...], "categories": [{id, name}, ...],
       "grounded_captions": [{"image_id", "caption_id", "caption",
                              "phrases": [{"char_span": [start, end], "text", "category_id", "ann_ids",
                                           "ambiguous"}, ...]}, ...]}

  ``char_span`` is ``[start, end)`` into the caption and ``caption[start:end]`` must equal ``text``;
  ``ann_ids`` are instance ids of ``coco_mt/annotations/instances_train.json``; ``ambiguous`` means the
  phrase refers to one unknown instance among ``ann_ids`` (category-level links).

Every field is checked; a malformed file raises a one-line :class:`~glip.errors.DataError` naming the
file and the field. Numbers on the DERIVED grounded captions are "coco_mt derived" numbers; caption
metrics on the real captions of ``coco_mt`` (945 captions on 189 images) are a smoke test, not a COCO
Captions (Karpathy split) result.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glip.data.coco import default_image_root
from glip.data.vqa import DERIVED_LABEL, _categories, _check_images, _description, _images, _int_list, _span
from glip.validation import Fields, read_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionRecord:
    """The reference captions of one image.

    Attributes:
        image_id: the image's id.
        image_path: the image file.
        captions: the captions, in file order.
        caption_ids: the annotation ``id`` of each caption.
    """

    image_id: int
    image_path: Path | None
    captions: tuple[str, ...]
    caption_ids: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of a caption linked to instances.

    Attributes:
        char_span: ``(start, end)``: ``caption[start:end] == text``.
        text: the phrase.
        ann_ids: the linked instance ids.
        category_id: the linked category, when given.
        ambiguous: the phrase names one unknown instance among ``ann_ids``.
    """

    char_span: tuple[int, int]
    text: str
    ann_ids: tuple[int, ...]
    category_id: int | None = None
    ambiguous: bool = False


@dataclass(frozen=True)
class GroundedCaption:
    """One caption with its linked phrases (none when nothing in it could be linked)."""

    caption_id: int | str
    image_id: int
    image_path: Path | None
    caption: str
    phrases: tuple[GroundedPhrase, ...] = ()


@dataclass
class CaptionDataset:
    """A validated caption file.

    Attributes:
        annotation_file: the JSON file.
        description: its ``info.description`` ("" when absent).
        records: one record per captioned image (:class:`CaptionRecord`) or per caption
            (:class:`GroundedCaption`), in file order.
        categories: category names by id (grounded captions).
    """

    annotation_file: Path
    description: str
    records: list[Any]
    categories: dict[int, str] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        """True when ``info.description`` says the file is DERIVED."""
        return re.search(r"\bderived\b", self.description, flags=re.IGNORECASE) is not None

    @property
    def name(self) -> str:
        """``<dataset folder> <file stem>``, + ``(coco_mt derived)`` for a DERIVED file."""
        path = self.annotation_file
        folder = path.parent.parent.name if path.parent.name == "annotations" else path.parent.name
        base = f"{folder} {path.stem}" if folder else path.stem
        return f"{base} ({DERIVED_LABEL})" if self.derived else base

    def __len__(self) -> int:
        return len(self.records)


def load_captions(
    annotation_file: str | Path, image_root: str | Path | None = None, check_files: bool = True
) -> CaptionDataset:
    """Read and validate a COCO captions file into one :class:`CaptionRecord` per captioned image.

    Args:
        annotation_file: the JSON file.
        image_root: the folder ``file_name`` s are relative to; default ``<dataset>/images`` for
            ``<dataset>/annotations/<file>``, else the file's folder.
        check_files: fail if a captioned image's file is missing.

    Raises:
        DataError: one line naming the file and the field (a caption of an unknown image, a duplicate
            id, an empty caption...).
    """
    path = Path(annotation_file)
    data = read_json(path, "captions file", mapping=True)
    fields = Fields(path)
    fields.require(data, ("images", "annotations"), "", "captions file")
    images = _images(fields, fields.array(data["images"], "images"))
    root = Path(image_root) if image_root is not None else default_image_root(path)
    captions: dict[int, list[tuple[int | str, str]]] = {}
    seen: dict[Any, str] = {}
    for i, ann in enumerate(fields.array(data["annotations"], "annotations")):
        where = f"annotations[{i}]"
        fields.require(fields.mapping(ann, where), ("id", "image_id", "caption"), where, "caption annotation")
        ann_id = fields.ident(ann["id"], f"{where}.id")
        fields.unique(ann_id, seen, f"{where}.id")
        image_id = fields.integer(ann["image_id"], f"{where}.image_id")
        if image_id not in images:
            fields.fail(f"{where}.image_id", f"unknown image id {image_id} (no record in 'images' has it)")
        captions.setdefault(image_id, []).append((ann_id, fields.string(ann["caption"], f"{where}.caption")))
    if not captions:
        fields.fail("annotations", "the list is empty: the file has no caption")
    records = [
        CaptionRecord(image_id, root / images[image_id], tuple(c for _, c in caps), tuple(k for k, _ in caps))
        for image_id, caps in sorted(captions.items())
    ]
    if len(records) < len(images):
        logger.info("%s: %d image(s) without captions left out", path, len(images) - len(records))
    if check_files:
        _check_images(records, path, root)
    return CaptionDataset(path, _description(fields, data), records)


def load_grounded_captions(
    annotation_file: str | Path, image_root: str | Path | None = None, check_files: bool = True
) -> CaptionDataset:
    """Read and validate a coco_mt grounded captions file into :class:`GroundedCaption` records.

    Args:
        annotation_file, image_root, check_files: as :func:`load_captions`.

    Raises:
        DataError: one line naming the file and the field (a span outside its caption, a span whose
            text differs from ``text``, an unknown image or category id, a duplicate ``caption_id``...).
    """
    path = Path(annotation_file)
    data = read_json(path, "grounded captions file", mapping=True)
    fields = Fields(path)
    fields.require(data, ("images", "grounded_captions"), "", "grounded captions file")
    images = _images(fields, fields.array(data["images"], "images"))
    categories = _categories(fields, fields.array(data.get("categories", []), "categories"))
    root = Path(image_root) if image_root is not None else default_image_root(path)
    items = fields.array(data["grounded_captions"], "grounded_captions")
    if not items:
        fields.fail("grounded_captions", "the list is empty: the file has no caption")
    seen: dict[Any, str] = {}
    records = []
    for i, rec in enumerate(items):
        where = f"grounded_captions[{i}]"
        fields.require(fields.mapping(rec, where), ("image_id", "caption_id", "caption"), where, "grounded caption")
        caption_id = fields.ident(rec["caption_id"], f"{where}.caption_id")
        fields.unique(caption_id, seen, f"{where}.caption_id")
        image_id = fields.integer(rec["image_id"], f"{where}.image_id")
        if image_id not in images:
            fields.fail(f"{where}.image_id", f"unknown image id {image_id} (no record in 'images' has it)")
        caption = fields.string(rec["caption"], f"{where}.caption")
        phrases = tuple(
            _phrase(fields, ph, f"{where}.phrases[{j}]", caption, categories)
            for j, ph in enumerate(fields.array(rec.get("phrases", []), f"{where}.phrases"))
        )
        records.append(GroundedCaption(caption_id, image_id, root / images[image_id], caption, phrases))
    if check_files:
        _check_images(records, path, root)
    return CaptionDataset(path, _description(fields, data), records, categories)


def _phrase(fields: Fields, ph: Any, where: str, caption: str, categories: dict[int, str]) -> GroundedPhrase:
    """One validated linked phrase of ``caption``."""
    fields.require(fields.mapping(ph, where), ("char_span", "ann_ids"), where, "phrase")
    start, end = _span(fields, ph["char_span"], f"{where}.char_span", caption)
    text = caption[start:end]
    if ph.get("text") is not None and fields.string(ph["text"], f"{where}.text") != text:
        fields.fail(
            f"{where}.text", f"{ph['text']!r} is not the caption's text at char_span [{start}, {end}] ({text!r})"
        )
    category_id = None
    if ph.get("category_id") is not None:
        category_id = fields.integer(ph["category_id"], f"{where}.category_id")
        if categories and category_id not in categories:
            fields.fail(f"{where}.category_id", f"unknown category id {category_id} (no record in 'categories' has it)")
    ambiguous = False
    if ph.get("ambiguous") is not None:
        if not isinstance(ph["ambiguous"], bool):
            fields.fail(f"{where}.ambiguous", f"expected true or false, got {ph['ambiguous']!r}")
        ambiguous = ph["ambiguous"]
    ann_ids = _int_list(fields, ph["ann_ids"], f"{where}.ann_ids")
    return GroundedPhrase((start, end), text, ann_ids, category_id, ambiguous)


__all__ = [
    "CaptionDataset",
    "CaptionRecord",
    "GroundedCaption",
    "GroundedPhrase",
    "load_captions",
    "load_grounded_captions",
]

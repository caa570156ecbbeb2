"""The one reader of MDETR-format grounding files, shared by training and evaluation.

MDETR (and GLIP) store phrase grounding (Flickr30k Entities, GoldG, RefCOCO) and our pseudo-labelled
image-text data as COCO-like JSON::

    {"images": [{"id": 0, "file_name": "1000092795.jpg", "height": 333, "width": 500,
                 "caption": "Two young guys with shaggy hair look at their hands ..."}, ...],
     "annotations": [{"id": 0, "image_id": 0, "bbox": [x, y, w, h], "iscrowd": 0,
                      "tokens_positive": [[0, 14]]}, ...]}

One ``images`` record per (image, caption) pair; each annotation is one box with the character
spans ``[start, end)`` of the caption that refer to it (``tokens_positive``, or ``tokens`` in some
exports) or, without spans, the ``phrase_ids`` of the phrases it grounds.

:func:`read_mdetr` checks the structure every consumer relies on and returns typed records:
image records with an ``id`` (integer or string, unique), a non-empty ``file_name`` and ``caption``
(and positive ``width``/``height`` when asked); annotations whose ``image_id`` names a record, whose
``bbox`` is 4 finite numbers and whose spans lie inside the caption. What to *keep* (crowd regions,
empty boxes, pseudo-box scores) is the consumer's decision:
:class:`glip.data.grounding.MdetrGroundingDataset` (training) and
:func:`glip.evaluation.grounding_data.parse_grounding_annotations` (evaluation).
Every problem raises :class:`~glip.errors.DataError` naming the file and the field
(``annotations[3].tokens_positive[0]: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glip.errors import DataError
from glip.text import Span
from glip.validation import Fields, is_box, is_int, read_json, show

EntryId = int | str
"""The ``id`` of an image record (one image-caption pair)."""


@dataclass(frozen=True, slots=True)
class MdetrBox:
    """One validated annotation.

    Attributes:
        index: its position in ``annotations`` (``where`` names it in messages).
        image_id: the id of its image record.
        bbox_xywh: ``(x, y, width, height)``, finite (width or height may be <= 0).
        spans: its ``tokens_positive`` in file order (possibly empty), or None when it has none.
        phrase_ids: its ``phrase_ids`` when it has no spans, else ``()``.
        record: the raw annotation (``iscrowd``, ``score``... are read by the consumers).
    """

    index: int
    image_id: EntryId
    bbox_xywh: tuple[float, float, float, float]
    spans: tuple[Span, ...] | None
    phrase_ids: tuple[int, ...]
    record: dict[str, Any]

    @property
    def where(self) -> str:
        """Path of the annotation in the file, e.g. ``annotations[3]``."""
        return f"annotations[{self.index}]"


@dataclass
class MdetrFile:
    """A validated MDETR-format file.

    Attributes:
        images: image records by id, in file order (the raw dicts).
        positions: index of each image record in ``images`` of the file.
        boxes: the annotations, in file order.
        fields: checker naming the file (for the consumers' own checks).
    """

    images: dict[EntryId, dict[str, Any]]
    positions: dict[EntryId, int]
    boxes: list[MdetrBox]
    fields: Fields


def read_mdetr(
    path: str | Path, *, require_size: bool = False, require_annotations: bool = False, what: str = "annotation file"
) -> MdetrFile:
    """Read and check an MDETR-format file (see the module docstring).

    Args:
        path: the JSON file.
        require_size: every image record needs positive ``width`` and ``height`` (training).
        require_annotations: the file needs an ``annotations`` list (else a missing one is empty).
        what: what the file is, for messages.

    Raises:
        DataError: missing, unreadable or invalid file, or a malformed record (naming the field).
    """
    data = read_json(path, what, DataError)
    return parse_mdetr(data, str(path), require_size=require_size, require_annotations=require_annotations)


def parse_mdetr(data: Any, source: str, *, require_size: bool = False, require_annotations: bool = False) -> MdetrFile:
    """:func:`read_mdetr` on already-parsed JSON (``source`` names it in messages)."""
    fields = Fields(source)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        fields.fail("", "has no 'images' list: is it an MDETR-format grounding file?")
    if require_annotations and not isinstance(data.get("annotations"), list):
        fields.fail("", "has no 'annotations' list: is it an MDETR-format grounding file?")
    annotations = fields.array(data.get("annotations", []), "annotations")
    keys = ("id", "file_name", "caption", *(("width", "height") if require_size else ()))
    images: dict[EntryId, dict[str, Any]] = {}
    positions: dict[EntryId, int] = {}
    seen: dict[Any, str] = {}
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        fields.require(fields.mapping(im, where), keys, where, "image record")
        entry_id = fields.ident(im["id"], f"{where}.id")
        fields.unique(entry_id, seen, f"{where}.id")
        fields.string(im["file_name"], f"{where}.file_name")
        fields.string(im["caption"], f"{where}.caption")
        if require_size:
            fields.size(im["width"], f"{where}.width")
            fields.size(im["height"], f"{where}.height")
        images[entry_id] = im
        positions[entry_id] = i
    boxes = [_box(ann, j, images, fields) for j, ann in enumerate(annotations)]
    return MdetrFile(images, positions, boxes, fields)


def _box(ann: Any, index: int, images: dict[EntryId, dict[str, Any]], fields: Fields) -> MdetrBox:
    # Fast checks first (this runs once per box of datasets with millions of boxes); messages are
    # built only when something is wrong.
    if type(ann) is not dict or "image_id" not in ann or "bbox" not in ann:
        where = f"annotations[{index}]"
        fields.require(fields.mapping(ann, where), ("image_id", "bbox"), where, "annotation")
    image_id = ann["image_id"]
    if type(image_id) not in (int, str) or image_id not in images:
        fields.fail(
            f"annotations[{index}].image_id", f"unknown image id {show(image_id)} (no record in 'images' has it)"
        )
    key = "tokens_positive" if "tokens_positive" in ann else "tokens" if "tokens" in ann else None
    spans = None
    if key is not None:
        caption = images[image_id]["caption"]
        spans = _plain_spans(ann[key], len(caption))
        if spans is None:
            spans = read_spans(ann[key], caption, f"annotations[{index}].{key}", fields, empty=True)
    phrase_ids: tuple[int, ...] = ()
    if spans is None:
        if "phrase_ids" not in ann:
            fields.fail(
                f"annotations[{index}]",
                "has neither 'tokens_positive' nor 'phrase_ids': cannot tell which phrase it grounds",
            )
        value = ann["phrase_ids"]
        ids = value if isinstance(value, list) else [value]
        if not ids or not all(is_int(v) for v in ids):
            where = f"annotations[{index}].phrase_ids"
            fields.fail(where, f"expected an integer or a list of integers, got {show(value)}")
        phrase_ids = tuple(int(v) for v in ids)
    value = ann["bbox"]
    if is_box(value):
        bbox = (float(value[0]), float(value[1]), float(value[2]), float(value[3]))
    else:
        bbox = fields.box_xywh(value, f"annotations[{index}].bbox")
    return MdetrBox(index, image_id, bbox, spans, phrase_ids, ann)


def _plain_spans(value: Any, length: int) -> tuple[Span, ...] | None:
    """The spans of a plain well-formed list of ``[start, end]`` pairs into a caption, else None."""
    if type(value) is not list:
        return None
    spans = []
    for span in value:
        if type(span) is not list or len(span) != 2:
            return None
        start, end = span
        if type(start) is not int or type(end) is not int or not 0 <= start < end <= length:
            return None
        spans.append((start, end))
    return tuple(spans)


def read_spans(value: Any, caption: str, where: str, fields: Fields, *, empty: bool = False) -> tuple[Span, ...]:
    """Check a list of ``[start, end)`` character spans into ``caption`` (non-empty unless ``empty``)."""
    if not isinstance(value, list) or (not value and not empty):
        fields.fail(where, f"expected a non-empty list of [start, end] character spans, got {show(value)}")
    spans = []
    for k, span in enumerate(value):
        ok = type(span) in (list, tuple) and len(span) == 2 and type(span[0]) is int and type(span[1]) is int
        if not ok or not 0 <= span[0] < span[1] <= len(caption):
            fields.fail(
                f"{where}[{k}]",
                f"expected [start, end] with 0 <= start < end <= {len(caption)} (a range inside the caption "
                f"{show(caption, 60)}), got {show(span)}",
            )
        spans.append((int(span[0]), int(span[1])))
    return tuple(spans)


__all__ = ["EntryId", "MdetrBox", "MdetrFile", "parse_mdetr", "read_mdetr", "read_spans"]

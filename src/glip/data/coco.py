"""COCO-format detection datasets: loading with validation that names the file and the record.

Three layouts are recognised by :func:`find_coco_splits`:

* ``<dataset>/annotations/<split>.json`` with ``file_name`` relative to ``<dataset>/images/``;
* Roboflow: ``<dataset>/<split>/_annotations.coco.json`` with ``file_name`` relative to the split folder;
* the ODinW download: ``<dataset>[/<version>]/<split>/annotations_without_background.json``.

:func:`split_role` tells training splits (``train``, ``train2017`` ...) from validation and test ones.

Problems that make a file unusable (invalid JSON, missing keys, duplicate ids, annotations of
unknown images or categories, missing image files) raise :class:`~glip.errors.DataError` with the
file and the record. Records that can be skipped safely (boxes with zero or negative size, boxes
that leave the image) are counted in :attr:`CocoDataset.issues` and logged once.

Instance masks: an annotation's ``segmentation`` (polygons, compressed or uncompressed RLE) is kept
as it is in the file and decoded only when asked for (:meth:`CocoDataset.instance_masks`, one
image at a time), so loading costs nothing more for masks. Its structure is checked at load time
(a list of polygons or an RLE mapping); its content when it is decoded.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glip.errors import DataError
from glip.masks import segmentation_to_mask
from glip.validation import Fields, is_box, is_number, read_json

logger = logging.getLogger(__name__)

ROBOFLOW_NAME = "_annotations.coco.json"


@dataclass
class CocoDataset:
    """A validated COCO-format detection dataset.

    Attributes:
        annotation_file: the JSON file.
        image_root: folder that ``file_name`` is relative to.
        data: the parsed JSON (what COCO evaluators receive; never modified).
        images: image records sorted by id.
        categories: category records sorted by id (their order defines the prompt order).
        annotations: per image id, its usable (non-crowd, positive-size) annotations.
        issues: counts of skipped records by reason.
    """

    annotation_file: Path
    image_root: Path
    data: dict[str, Any]
    images: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    issues: Counter = field(default_factory=Counter)

    @property
    def category_ids(self) -> list[int]:
        """Category ids in prompt order."""
        return [int(c["id"]) for c in self.categories]

    @property
    def category_names(self) -> list[str]:
        """Category names in prompt order, exactly as in the file."""
        return [str(c["name"]) for c in self.categories]

    def image_path(self, image: dict[str, Any]) -> Path:
        """Path of an image record's file."""
        return self.image_root / image["file_name"]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_masks(self) -> bool:
        """True when every usable annotation (and there is at least one) has a segmentation (:func:`has_mask`)."""
        anns = [a for image_anns in self.annotations.values() for a in image_anns]
        return bool(anns) and all(has_mask(a) for a in anns)

    def instance_masks(self, image: dict[str, Any], annotations: Sequence[dict[str, Any]]) -> Tensor:
        """Decode the segmentations of some annotations of one image.

        Args:
            image: the image record (its ``height`` and ``width`` give the mask size).
            annotations: annotations of that image, each with a segmentation.

        Returns:
            ``(K, height, width)`` bool masks in the stored image's pixels, in the order given.

        Raises:
            DataError: naming the file and the annotation, for a missing or malformed segmentation.
        """
        height, width = round(float(image["height"])), round(float(image["width"]))
        masks = torch.zeros((len(annotations), height, width), dtype=torch.bool)
        for k, ann in enumerate(annotations):
            if "segmentation" not in ann:
                raise DataError(f"{self.annotation_file}: annotation {ann.get('id')} has no 'segmentation'")
            try:
                masks[k] = segmentation_to_mask(ann["segmentation"], height, width)
            except DataError as e:
                raise DataError(
                    f"{self.annotation_file}: annotation {ann.get('id')} (image {image['id']}): segmentation: {e}"
                ) from e
        return masks

    @classmethod
    def load(
        cls, annotation_file: str | Path, image_root: str | Path | None = None, check_files: bool = True
    ) -> CocoDataset:
        """Read and validate a COCO-format file.

        Args:
            annotation_file: the JSON file.
            image_root: folder of the images; default: ``<dataset>/images`` for the
                ``annotations/<split>.json`` layout, the file's folder otherwise.
            check_files: fail if an image file is missing.

        Raises:
            DataError: if the file is missing, not JSON, or has malformed or inconsistent records.
        """
        path = Path(annotation_file)
        data = read_json(path, "annotation file", mapping=True)
        fields = Fields(path)
        for key in ("images", "categories"):
            if key not in data:
                fields.fail(key, "missing: a COCO-format file needs 'images', 'annotations' and 'categories' lists")
            fields.array(data[key], key)
        fields.array(data.get("annotations", []), "annotations")
        root = Path(image_root) if image_root is not None else default_image_root(path)
        ds = cls(path, root, data, *_validate(path, data))
        if check_files:
            missing = [im["file_name"] for im in ds.images if not ds.image_path(im).is_file()]
            if missing:
                raise DataError(
                    f"{len(missing)} image(s) listed in {path} are missing under {root}, e.g. {missing[:3]}; "
                    "pass the right images folder"
                )
        for reason, n in ds.issues.items():
            logger.warning("%s: skipped %d annotation(s): %s", path, n, reason)
        return ds


def has_mask(annotation: dict[str, Any]) -> bool:
    """Whether an annotation has a segmentation to train on: an RLE mapping, or at least one polygon
    of 3 points or more (Roboflow exports write ``"segmentation": []`` for box-only labels)."""
    seg = annotation.get("segmentation")
    if isinstance(seg, dict):
        return True
    return isinstance(seg, list) and any(isinstance(p, list) and len(p) >= 6 for p in seg)


def is_held_out(image_id: Any, every: int) -> bool:
    """The held-out rule of training recipes: image ids that are multiples of ``every`` (0: none)."""
    return every > 0 and isinstance(image_id, int) and image_id % every == 0


def default_image_root(annotation_file: Path) -> Path:
    """``<dataset>/images`` for ``<dataset>/annotations/<split>.json``, else the file's own folder."""
    if annotation_file.parent.name == "annotations" and (annotation_file.parent.parent / "images").is_dir():
        return annotation_file.parent.parent / "images"
    return annotation_file.parent


def _validate(path: Path, data: dict[str, Any]) -> tuple[list, list, dict, Counter]:
    """Check every record (see the module docstring); returns images, categories, usable boxes, skips."""
    fields = Fields(path)
    issues: Counter = Counter()
    images, seen_images = [], {}
    for i, im in enumerate(data["images"]):
        where = f"images[{i}]"
        fields.mapping(im, where)
        if "file_name" not in im and isinstance(im.get("coco_url"), str):
            # LVIS v1 lists images by URL only: <split>/<file> under the COCO image root
            im = {**im, "file_name": "/".join(im["coco_url"].split("/")[-2:])}
        fields.require(im, ("id", "file_name", "width", "height"), where, "image")
        fields.unique(fields.ident(im["id"], f"{where}.id", strings=False), seen_images, f"{where}.id")
        fields.string(im["file_name"], f"{where}.file_name")
        fields.size(im["width"], f"{where}.width")
        fields.size(im["height"], f"{where}.height")
        images.append(im)
    categories, seen_cats = [], {}
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        fields.require(fields.mapping(cat, where), ("id", "name"), where, "category")
        fields.unique(fields.ident(cat["id"], f"{where}.id", strings=False), seen_cats, f"{where}.id")
        fields.string(cat["name"], f"{where}.name")
        categories.append(cat)
    if not categories:
        fields.fail("categories", "the list is empty: define at least one category")
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    by_image: dict[int, list] = defaultdict(list)
    seen_anns: dict[Any, int] = {}
    for i, ann in enumerate(data.get("annotations", [])):
        if not _plain_annotation(ann, sizes, seen_cats, seen_anns):  # the fast check failed: find the field
            _check_annotation(fields, ann, i, sizes, seen_cats, seen_anns)
        if "id" in ann:
            seen_anns[ann["id"]] = i
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0):
            issues["crowd region (ignored for training, kept for evaluation)"] += 1
            continue
        if w <= 0 or h <= 0:
            issues["box with zero or negative width/height"] += 1
            continue
        iw, ih = sizes[ann["image_id"]]
        if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
            issues["box entirely outside its image"] += 1
            continue
        by_image[ann["image_id"]].append(ann)
    images.sort(key=lambda im: im["id"])
    categories.sort(key=lambda c: c["id"])
    return images, categories, dict(by_image), issues


def _plain_annotation(ann: Any, sizes: dict, categories: dict, seen: dict) -> bool:
    """Fast check of a plain well-formed annotation (JSON types); :func:`_check_annotation` decides otherwise."""
    return (
        type(ann) is dict
        and type(ann.get("image_id")) is int
        and ann["image_id"] in sizes
        and type(ann.get("category_id")) is int
        and ann["category_id"] in categories
        and is_box(ann.get("bbox"))
        and ("id" not in ann or (type(ann["id"]) is int and ann["id"] not in seen))
        and ("area" not in ann or (is_number(ann["area"]) and ann["area"] >= 0))
        and type(ann.get("iscrowd", 0)) in (int, bool)
        and ann.get("iscrowd", 0) in (0, 1)
        and _plain_segmentation(ann.get("segmentation", []))
    )


def _plain_segmentation(seg: Any) -> bool:
    return type(seg) is list or (type(seg) is dict and "size" in seg and "counts" in seg)


def _check_annotation(fields: Fields, ann: Any, i: int, sizes: dict, categories: dict, seen: dict) -> None:
    """Check every field of annotation ``i``; raise a DataError naming the first bad one."""
    where = f"annotations[{i}]"
    fields.require(fields.mapping(ann, where), ("image_id", "category_id", "bbox"), where, "annotation")
    if "id" in ann and fields.ident(ann["id"], f"{where}.id", strings=False) in seen:
        fields.fail(f"{where}.id", f"duplicate id {ann['id']} (already used by annotations[{seen[ann['id']]}].id)")
    if fields.ident(ann["image_id"], f"{where}.image_id", strings=False) not in sizes:
        fields.fail(f"{where}.image_id", f"unknown image id {ann['image_id']} (no record in 'images' has it)")
    if fields.ident(ann["category_id"], f"{where}.category_id", strings=False) not in categories:
        known = sorted(categories)
        fields.fail(
            f"{where}.category_id",
            f"unknown category id {ann['category_id']} (known: {known[:10]}{'...' if len(known) > 10 else ''})",
        )
    fields.box_xywh(ann["bbox"], f"{where}.bbox")
    if "area" in ann:
        fields.number(ann["area"], f"{where}.area", minimum=0)
    fields.flag(ann.get("iscrowd", 0), f"{where}.iscrowd")
    if "segmentation" in ann:
        seg = ann["segmentation"]
        if not isinstance(seg, (list, dict)):
            fields.fail(f"{where}.segmentation", "expected a list of polygons or an RLE mapping {'size', 'counts'}")
        if isinstance(seg, dict):
            fields.require(seg, ("size", "counts"), f"{where}.segmentation", "RLE mask")


@dataclass(frozen=True)
class SplitFile:
    """One split of a dataset found on disk."""

    dataset: str
    split: str
    annotation_file: Path
    image_root: Path


# Annotation files of a split folder, preferred first (ODinW download, Roboflow export).
SPLIT_FOLDER_FILES = ("annotations_without_background.json", ROBOFLOW_NAME)


def find_coco_splits(root: str | Path, splits: tuple[str, ...] | None = None) -> list[SplitFile]:
    """Every COCO-format split below ``root`` (one level of dataset folders), sorted by dataset then split.

    Layouts: ``<dataset>/annotations/<split>.json``; Roboflow ``<dataset>/<split>/_annotations.coco.json``;
    the ODinW download ``<dataset>[/<version>]/<split>/annotations_without_background.json`` (preferred
    over a Roboflow file in the same folder, as the official configs do). A dataset with several
    version folders gives one dataset per version, named ``<dataset>_<version>``.

    Args:
        root: a folder of datasets (e.g. ``shared/data`` or an ODinW download).
        splits: keep only these split names (e.g. ``("val", "valid", "test")``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    found = []
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        for ann in sorted((ds / "annotations").glob("*.json")) if (ds / "annotations").is_dir() else []:
            found.append(SplitFile(ds.name, ann.stem, ann, default_image_root(ann)))
        split_dirs = {ann.parent for name in SPLIT_FOLDER_FILES for ann in ds.glob(f"*/{name}")}
        versions = sorted({ann.parent.parent for name in SPLIT_FOLDER_FILES for ann in ds.glob(f"*/*/{name}")})
        for folder in sorted(split_dirs):
            found.append(_split_folder(ds.name, folder))
        for version in versions if not split_dirs else []:
            name = ds.name if len(versions) == 1 else f"{ds.name}_{version.name}"
            for folder in sorted({a.parent for n in SPLIT_FOLDER_FILES for a in version.glob(f"*/{n}")}):
                found.append(_split_folder(name, folder))
    if splits is not None:
        found = [s for s in found if s.split in splits]
    return found


def _split_folder(dataset: str, folder: Path) -> SplitFile:
    ann = next(folder / n for n in SPLIT_FOLDER_FILES if (folder / n).is_file())
    return SplitFile(dataset, folder.name, ann, folder)


_SPLIT = re.compile(
    r"^(?:instances[_-])?(train|training|trainval|val|valid|validation|minival|test|testing|test-dev)[_-]?(\d{2,4})?$"
)
SPLIT_ROLES = {
    "train": "train", "training": "train", "trainval": "train",
    "val": "val", "valid": "val", "validation": "val", "minival": "val",
    "test": "test", "testing": "test", "test-dev": "test",
}  # fmt: skip


def split_role(split: str) -> str | None:
    """``train``, ``val`` or ``test`` for a split name, None for anything else.

    ``train``, ``train2017``, ``train_2017``, ``instances_train2017``, ``training``, ``trainval`` are
    training splits; ``val``, ``valid``, ``validation``, ``minival``, ``val2017`` validation; ``test``,
    ``test2017``, ``test-dev`` test. Few-shot subsets (``train_10_3``, ``fewshot_train_shot1_seed3``)
    and other names are not recognised.
    """
    match = _SPLIT.match(split.strip().lower())
    return SPLIT_ROLES[match.group(1)] if match else None

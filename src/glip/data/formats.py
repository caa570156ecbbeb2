"""A labelled detection set in any common layout → a COCO-format file the trainer reads.

:func:`load_labelled_set` recognises, from the path alone:

* **COCO**: a ``.json`` file, or a folder holding ``annotations_without_background.json`` (ODinW)
  or ``_annotations.coco.json`` (Roboflow export); used as it is;
* **Pascal VOC**: a folder with ``Annotations/`` (``*.xml``) and ``JPEGImages/``, or a folder of
  ``*.xml`` files (images beside them, or ``--images``);
* **YOLO**: a ``data.yaml`` (``names`` + ``train`` / ``val`` image folders), a folder with
  ``images/`` and ``labels/``, or a folder of images with ``<stem>.txt`` labels beside them; the
  class names come from ``data.yaml``, ``classes.txt`` or ``*.names`` in the folder or above it.

VOC and YOLO labels are converted with :mod:`glip.data.importers` into ``<work_dir>/<split>.json``.
:func:`split_off` holds back part of a set for validation when no validation set is given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glip.data.coco import ROBOFLOW_NAME, CocoDataset, default_image_root
from glip.data.importers import IMAGE_SUFFIXES, load_yolo_names, voc_to_coco, write_coco_json, yolo_to_coco
from glip.errors import DataError
from glip.validation import read_yaml

logger = logging.getLogger(__name__)

COCO_FOLDER_FILES = ("annotations_without_background.json", ROBOFLOW_NAME)
YOLO_NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
LAYOUTS = (
    "a COCO .json file, a Roboflow/ODinW split folder (_annotations.coco.json), a VOC folder (Annotations/ + "
    "JPEGImages/, or *.xml), a YOLO data.yaml, or a YOLO folder (images/ + labels/, or images with .txt labels)"
)


@dataclass(frozen=True)
class LabelledSet:
    """A COCO-format annotation file and the folder its ``file_name`` entries are relative to.

    Attributes:
        annotation_file: the COCO file (the user's, or the converted one).
        image_root: the images folder.
        source_format: ``coco``, ``voc`` or ``yolo``.
        source: the path the user gave.
        num_images, num_boxes: counts of the file.
        class_names: category names in id order.
    """

    annotation_file: Path
    image_root: Path
    source_format: str
    source: Path
    num_images: int
    num_boxes: int
    class_names: tuple[str, ...]

    def describe(self) -> str:
        """``120 images, 940 boxes, 7 classes (YOLO, converted)``."""
        kind = self.source_format.upper() + (", converted" if self.source_format != "coco" else "")
        return f"{self.num_images} images, {self.num_boxes} boxes, {len(self.class_names)} classes ({kind})"


def load_labelled_set(
    path: str | Path,
    work_dir: str | Path,
    split: str = "train",
    images: str | Path | None = None,
    class_names: list[str] | None = None,
) -> LabelledSet:
    """Recognise the layout of ``path`` and return it as a COCO file (converted into ``work_dir``).

    Args:
        path: the labelled set (see the module docstring for the layouts).
        work_dir: where converted files go (``<work_dir>/<split>.json``).
        split: ``train`` or ``val``: which part of a YOLO ``data.yaml`` to read, and the file name.
        images: the images folder, for layouts that do not say where the images are.
        class_names: the category order to convert VOC labels with (a validation set must use the
            training set's; YOLO class indices follow the names file).

    Raises:
        DataError: if the path does not exist or is none of the layouts, or its labels are malformed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: give {LAYOUTS}")
    image_dir = Path(images) if images is not None else None
    work = Path(work_dir)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return _coco(path, image_dir, path)
        if suffix in (".yaml", ".yml"):
            image_folder, labels = _yolo_yaml_split(path, split)
            return _yolo(path, image_folder, labels, path, work / f"{split}.json")
        raise DataError(f"{path}: not a .json (COCO) or .yaml (YOLO) file; give {LAYOUTS}")
    for name in COCO_FOLDER_FILES:
        if (path / name).is_file():
            return _coco(path / name, image_dir or path, path)
    if (path / "Annotations").is_dir():
        jpeg = image_dir or next((path / d for d in ("JPEGImages", "images") if (path / d).is_dir()), path)
        return _voc(path / "Annotations", jpeg, path, work / f"{split}.json", class_names)
    if any(path.glob("*.xml")):
        return _voc(path, image_dir or path, path, work / f"{split}.json", class_names)
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return _yolo(_names_file(path), path / "images", path / "labels", path, work / f"{split}.json")
    if any(p.suffix == ".txt" and p.name != "classes.txt" for p in path.iterdir()) and _images_in(path):
        return _yolo(_names_file(path), path, path, path, work / f"{split}.json")
    if any((path / n).is_file() for n in ("data.yaml", "data.yml")):
        yaml_file = next(path / n for n in ("data.yaml", "data.yml") if (path / n).is_file())
        image_folder, labels = _yolo_yaml_split(yaml_file, split)
        return _yolo(yaml_file, image_folder, labels, path, work / f"{split}.json")
    if (path / "annotations").is_dir():
        found = sorted(p.name for p in (path / "annotations").glob("*.json"))
        raise DataError(
            f"{path} holds annotation files {found[:5]}: give the one to train on, e.g. {path}/annotations/train.json"
        )
    raise DataError(f"cannot tell the format of {path}: give {LAYOUTS}")


def _images_in(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


def _coco(annotation_file: Path, images: Path | None, source: Path) -> LabelledSet:
    root = images if images is not None else _find_image_root(annotation_file)
    try:
        dataset = CocoDataset.load(annotation_file, root)
    except DataError as e:
        if images is None and "missing under" in str(e):
            raise DataError(f"{e}, e.g. --images path/to/images") from e
        raise
    return _described(dataset, "coco", source)


def _find_image_root(annotation_file: Path) -> Path:
    """The folder the file's ``file_name`` entries are relative to: the usual one
    (:func:`~glip.data.coco.default_image_root`), else ``images/`` beside the file or one level up,
    whichever holds the first listed image."""
    default = default_image_root(annotation_file)
    try:
        first = json.loads(annotation_file.read_text())["images"][0]["file_name"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return default  # CocoDataset.load reports what is wrong with the file
    for root in (default, annotation_file.parent / "images", annotation_file.parent.parent / "images"):
        if isinstance(first, str) and (root / first).is_file():
            return root
    return default


def _described(dataset: CocoDataset, source_format: str, source: Path) -> LabelledSet:
    boxes = sum(len(anns) for anns in dataset.annotations.values())
    return LabelledSet(
        dataset.annotation_file, dataset.image_root, source_format, source, len(dataset), boxes,
        tuple(dataset.category_names),
    )  # fmt: skip


def _voc(annotations: Path, images: Path, source: Path, out: Path, class_names: list[str] | None) -> LabelledSet:
    data = voc_to_coco(annotations, images, class_names=class_names)
    write_coco_json(data, out)
    return _described(CocoDataset.load(out, images), "voc", source)


def _names_file(folder: Path) -> Path:
    """The YOLO class-name file in ``folder`` or up to two folders above it."""
    for where in (folder, folder.parent, folder.parent.parent):
        for name in YOLO_NAME_FILES:
            if (where / name).is_file():
                return where / name
        named = sorted(where.glob("*.names"))
        if named:
            return named[0]
    raise DataError(
        f"{folder}: YOLO labels need class names: put a data.yaml (names: [...]) or classes.txt in the folder "
        "or the one above it"
    )


def _yolo(names: Path, images: Path, labels: Path, source: Path, out: Path) -> LabelledSet:
    data = yolo_to_coco(images, labels, load_yolo_names(names))
    write_coco_json(data, out)
    return _described(CocoDataset.load(out, images), "yolo", source)


def _yolo_yaml_split(yaml_file: Path, split: str) -> tuple[Path, Path]:
    """The images and labels folders of ``split`` (``train`` / ``val``) in a YOLO ``data.yaml``."""
    data = read_yaml(yaml_file, "YOLO data file", DataError, mapping=True)
    keys = ("train",) if split == "train" else ("val", "valid", "test")
    key = next((k for k in keys if data.get(k)), None)
    if key is None:
        raise DataError(f"{yaml_file} names no {' or '.join(keys)} images: add '{keys[0]}: path/to/images'")
    entry = data[key]
    if not isinstance(entry, str):
        raise DataError(f"{yaml_file}: {key}: expected one images folder, got {entry!r}")
    base = yaml_file.parent / str(data.get("path") or "")
    images = (base / entry).resolve()
    if not images.is_dir():  # Roboflow exports write '../train/images' relative to the yaml's own folder
        alternative = (yaml_file.parent / entry.removeprefix("../")).resolve()
        images = alternative if alternative.is_dir() else images
    if not images.is_dir():
        raise DataError(f"{yaml_file}: {key}: images folder {images} does not exist")
    parts = list(images.parts)
    if "images" not in parts:
        return images, images
    i = len(parts) - 1 - parts[::-1].index("images")
    return images, Path(*parts[:i], "labels", *parts[i + 1 :])


def has_val_split(path: str | Path) -> bool:
    """Whether a YOLO ``data.yaml`` names validation images (``val`` / ``valid``)."""
    path = Path(path)
    yaml_file = (
        path if path.is_file() else next((path / n for n in ("data.yaml", "data.yml") if (path / n).is_file()), None)
    )
    if yaml_file is None or yaml_file.suffix.lower() not in (".yaml", ".yml"):
        return False
    data = read_yaml(yaml_file, "YOLO data file", DataError, mapping=True)
    return bool(data.get("val") or data.get("valid"))


def split_off(labelled: LabelledSet, fraction: float, work_dir: str | Path) -> tuple[LabelledSet, LabelledSet]:
    """Hold back every ``round(1 / fraction)``-th image (by id) of a set for validation.

    Returns:
        The training part and the validation part, written as ``train.json`` / ``val.json`` in
        ``work_dir`` (same image folder, same categories).

    Raises:
        DataError: if ``fraction`` is not in (0, 0.5] or either part would be empty.
    """
    if not 0.0 < fraction <= 0.5:
        raise DataError(f"validation fraction {fraction} must be in (0, 0.5]")
    data: dict[str, Any] = json.loads(Path(labelled.annotation_file).read_text())
    every = max(2, round(1 / fraction))
    images = sorted(data["images"], key=lambda im: (str(type(im["id"])), im["id"]))
    val_ids = {im["id"] for k, im in enumerate(images) if k % every == every - 1}
    if not val_ids or len(val_ids) == len(images):
        raise DataError(
            f"{labelled.source} has {len(images)} image(s): too few to hold back a validation part; give --val"
        )
    parts = []
    for name, keep in (("train", lambda i: i not in val_ids), ("val", lambda i: i in val_ids)):
        part = {
            **data,
            "images": [im for im in data["images"] if keep(im["id"])],
            "annotations": [a for a in data.get("annotations", []) if keep(a["image_id"])],
        }
        out = write_coco_json(part, Path(work_dir) / f"{name}.json")
        parts.append(_described(CocoDataset.load(out, labelled.image_root), labelled.source_format, labelled.source))
    logger.info("held back %d of %d images for validation (every %d-th)", len(val_ids), len(images), every)
    return parts[0], parts[1]

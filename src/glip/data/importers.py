"""Pascal VOC XML and YOLO txt annotations → COCO-format detection dicts (and JSON files).

Box conventions:

* **VOC** ``<bndbox>`` holds 1-based, inclusive pixel indices. A box covering pixels
  ``xmin..xmax`` becomes the continuous COCO box ``[xmin - 1, ymin - 1, xmax - xmin + 1,
  ymax - ymin + 1]`` (detectron2's convention; the one used to build ``shared/data``), so a box
  never leaves the image. Boxes with ``xmax <= xmin`` or ``ymax <= ymin`` are points or lines, not
  objects: they are dropped and counted (``drop_degenerate``).
* **YOLO** ``class cx cy w h`` is normalised by the image size and continuous: ``[(cx - w/2) W,
  (cy - h/2) H, w W, h H]``, no ±1. A line with more than 5 numbers is a YOLO segmentation polygon
  ``class x1 y1 x2 y2 ...``; its box is the polygon's extent.

Image sizes come from the VOC ``<size>`` element (or the image file when it is absent or 0) and
from the image file for YOLO. Image ids are ``1..N`` in file-name order, annotation ids ``1..M``,
category ids ``1..K`` in the order of ``class_names`` unless ``category_ids`` is given.
No third-party parser is needed: XML is read with :mod:`xml.etree.ElementTree` and YAML with
``yaml.safe_load``; nothing is evaluated.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from glip.errors import DataError
from glip.fileio import atomic_write_text
from glip.validation import one_line, read_text, read_yaml

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise DataError(one_line(f"cannot read image {path}: {err}")) from err


def _categories(names: Sequence[str], category_ids: Sequence[int] | None) -> list[dict[str, Any]]:
    ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
    if len(ids) != len(names) or len(set(ids)) != len(ids):
        raise DataError(f"category_ids {ids} must be distinct, one per class name ({len(names)})")
    return [{"id": int(i), "name": str(n)} for i, n in zip(ids, names, strict=True)]


def _text(node: ET.Element, tag: str, where: str) -> str:
    found = node.find(tag)
    if found is None or found.text is None or not found.text.strip():
        raise DataError(f"{where}: missing <{tag}>")
    return found.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float | int:
    value = _text(node, tag, where)
    try:
        number = float(value)
    except ValueError as err:
        raise DataError(f"{where}: <{tag}> is not a number: {value!r}") from err
    if not math.isfinite(number):
        raise DataError(f"{where}: <{tag}> is not finite: {value!r}")
    return int(number) if number.is_integer() else number  # integers stay integers in the JSON


def _parse_voc(path: Path) -> tuple[str, tuple[int, int] | None, list[tuple[str, list[float], bool]]]:
    """``(filename, (width, height) or None, [(name, [xmin, ymin, xmax, ymax], difficult)])``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path} is not valid XML: {err}") from err
    except OSError as err:
        raise DataError(one_line(f"cannot read VOC annotation {path}: {err.strerror or err}")) from err
    filename = root.findtext("filename", default="").strip() or f"{path.stem}.jpg"
    size = None
    if root.find("size") is not None:
        w, h = root.findtext("size/width", "0").strip(), root.findtext("size/height", "0").strip()
        try:
            width, height = int(float(w or 0)), int(float(h or 0))
        except (ValueError, OverflowError) as err:  # "abc", "nan", "inf"
            raise DataError(f"{path}: <size> is not a finite number ({w!r} x {h!r})") from err
        size = (width, height) if width > 0 and height > 0 else None
    objects = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{path}: object {k}"
        name = _text(obj, "name", where)
        box_node = obj.find("bndbox")
        if box_node is None:
            raise DataError(f"{where} ({name}) has no <bndbox>")
        box = [_number(box_node, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax")]
        difficult = obj.findtext("difficult", "0").strip() in ("1", "true")
        objects.append((name, box, difficult))
    return filename, size, objects


def voc_to_coco(
    annotations_dir: str | Path,
    images_dir: str | Path | None = None,
    *,
    image_set: str | Path | Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    file_name_prefix: str = "",
    skip_difficult: bool = False,
    drop_degenerate: bool = True,
) -> dict[str, Any]:
    """Convert a folder of VOC XML files to a COCO-format dict.

    Args:
        annotations_dir: folder of ``*.xml`` (e.g. ``VOC/Annotations``).
        images_dir: folder of the images (e.g. ``VOC/JPEGImages``); read only for sizes missing
            from the XML.
        image_set: the stems to convert: a list, or a VOC ``ImageSets/Main/<split>.txt`` file.
            Default: every XML file.
        class_names: category order; default: order of first appearance (files sorted by name).
            An object of another class raises.
        category_ids: ids of ``class_names`` (default ``1..K``).
        file_name_prefix: put before each ``file_name`` (e.g. ``"train/"``).
        skip_difficult: drop objects marked ``<difficult>1``.
        drop_degenerate: drop boxes with ``xmax <= xmin`` or ``ymax <= ymin`` (else they raise).

    Raises:
        DataError: unreadable XML, missing elements, unknown classes, missing sizes; naming the file.
    """
    folder = Path(annotations_dir)
    if not folder.is_dir():
        raise DataError(f"VOC annotation folder {folder} does not exist")
    if image_set is None:
        files = sorted(folder.glob("*.xml"))
    else:
        if isinstance(image_set, (str, Path)):
            set_file = Path(image_set)
            if not set_file.is_file():
                raise DataError(f"image set file {set_file} does not exist")
            text = read_text(set_file, "image set file")
            stems = [line.split()[0] for line in text.splitlines() if line.strip()]
        else:
            stems = list(image_set)
        files = [folder / f"{stem}.xml" for stem in stems]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise DataError(f"{len(absent)} annotation file(s) of the image set are missing in {folder}: {absent[:3]}")
    parsed = [(f, *_parse_voc(f)) for f in files]
    parsed.sort(key=lambda item: item[1])
    names = list(class_names) if class_names is not None else list(dict.fromkeys(o[0] for p in parsed for o in p[3]))
    categories = _categories(names, category_ids)
    name_to_id = {c["name"]: c["id"] for c in categories}
    issues: Counter = Counter()
    images, annotations = [], []
    for image_id, (xml_file, filename, size, objects) in enumerate(parsed, start=1):
        if size is None:
            if images_dir is None:
                raise DataError(f"{xml_file} has no usable <size>: pass images_dir so it can be read from the image")
            size = _image_size(Path(images_dir) / filename)
        images.append({"id": image_id, "file_name": file_name_prefix + filename, "width": size[0], "height": size[1]})
        for name, (x1, y1, x2, y2), difficult in objects:
            if name not in name_to_id:
                raise DataError(f"{xml_file}: object class {name!r} is not in class_names {names}")
            if difficult and skip_difficult:
                issues["difficult object"] += 1
                continue
            if x2 <= x1 or y2 <= y1:
                if not drop_degenerate:
                    raise DataError(f"{xml_file}: degenerate box {[x1, y1, x2, y2]} of {name!r}")
                issues["degenerate box (xmax <= xmin or ymax <= ymin)"] += 1
                continue
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": name_to_id[name],
                    "bbox": [x1 - 1, y1 - 1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    for reason, count in issues.items():
        logger.warning("%s: dropped %d object(s): %s", folder, count, reason)
    return {"images": images, "annotations": annotations, "categories": categories}


def load_yolo_names(source: str | Path | Sequence[str]) -> list[str]:
    """Class names from a list, a YOLO ``data.yaml`` (``names:`` list or ``{index: name}``), or a
    ``*.names`` / ``classes.txt`` file (one name per line)."""
    if not isinstance(source, (str, Path)):
        return [str(n) for n in source]
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(path, "class name file", DataError)
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            indices = {}
            for key, name in names.items():
                index = key if isinstance(key, int) and not isinstance(key, bool) else None
                if isinstance(key, str) and key.strip().isdecimal():
                    index = int(key)
                if index is None:
                    raise DataError(f"{path}: names: key {key!r} is not a class index (0, 1, 2...)")
                indices[index] = name
            keys = sorted(indices)
            if keys != list(range(len(keys))):
                raise DataError(f"{path}: names: indices must be 0..{len(keys) - 1}, got {keys[:10]}")
            names = [indices[k] for k in keys]
        if not isinstance(names, list):
            raise DataError(f"{path} has no 'names' list or mapping (names: [cat, dog] or names: {{0: cat, 1: dog}})")
        for i, name in enumerate(names):
            if not isinstance(name, (str, int, float)) or isinstance(name, bool) or not str(name).strip():
                raise DataError(f"{path}: names[{i}]: expected a class name, got {name!r}")
        return [str(n) for n in names]
    return [line.strip() for line in read_text(path, "class name file").splitlines() if line.strip()]


def _parse_yolo_line(values: list[str], where: str) -> tuple[int, list[float]]:
    try:
        cls = int(values[0])
        numbers = [float(v) for v in values[1:]]
    except ValueError as err:
        raise DataError(f"{where}: not 'class cx cy w h' numbers: {' '.join(values)!r}") from err
    if not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{where}: non-finite value in {' '.join(values)!r}")
    if len(numbers) == 4:
        return cls, numbers
    if len(numbers) >= 6 and len(numbers) % 2 == 0:  # segmentation polygon
        xs, ys = numbers[0::2], numbers[1::2]
        x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
        return cls, [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    raise DataError(f"{where}: expected 'class cx cy w h' (or a polygon), got {len(values)} values")


def yolo_to_coco(
    images_dir: str | Path,
    labels_dir: str | Path,
    names: str | Path | Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
    file_name_prefix: str = "",
) -> dict[str, Any]:
    """Convert YOLO txt labels to a COCO-format dict.

    Args:
        images_dir: folder of the images (every image file in it is listed; an image without a
            label file has no objects).
        labels_dir: folder of ``<image stem>.txt`` files.
        names: class names (list, ``data.yaml`` or a names file; see :func:`load_yolo_names`).
        category_ids: ids of the classes (default ``1..K`` for YOLO classes ``0..K-1``).
        file_name_prefix: put before each ``file_name`` (e.g. ``"train2017/"``).

    Raises:
        DataError: malformed lines, unknown class indices, label files without an image.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"YOLO folder {folder} does not exist")
    class_names = load_yolo_names(names)
    categories = _categories(class_names, category_ids)
    image_files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    stems = {p.stem for p in image_files}
    orphans = sorted(p.name for p in labels_dir.glob("*.txt") if p.stem not in stems and p.name != "classes.txt")
    if orphans:
        raise DataError(f"{len(orphans)} label file(s) in {labels_dir} have no image in {images_dir}: {orphans[:3]}")
    issues: Counter = Counter()
    images, annotations = [], []
    for image_id, path in enumerate(image_files, start=1):
        width, height = _image_size(path)
        images.append({"id": image_id, "file_name": file_name_prefix + path.name, "width": width, "height": height})
        label_file = labels_dir / f"{path.stem}.txt"
        if not label_file.is_file():
            continue
        for line_no, line in enumerate(read_text(label_file, "YOLO label file").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{label_file}:{line_no}"
            cls, (cx, cy, w, h) = _parse_yolo_line(line.split(), where)
            if not 0 <= cls < len(categories):
                raise DataError(f"{where}: class index {cls} outside 0..{len(categories) - 1}")
            if w <= 0 or h <= 0:
                issues["box with zero or negative width/height"] += 1
                continue
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[cls]["id"],
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    for reason, count in issues.items():
        logger.warning("%s: dropped %d label(s): %s", labels_dir, count, reason)
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write a COCO-format dict to ``path`` (parents created); returns the path."""
    return atomic_write_text(path, json.dumps(data))

"""Run a predictor over image files and write one JSON and one annotated picture per image."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from glip.errors import ImageError
from glip.predictor import GLIPPredictor
from glip.text import Prompt
from glip.visualize import draw_detections

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a sorted list of image paths.

    Raises:
        ImageError: if an input does not exist or a folder holds no images.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise ImageError(f"folder {p} contains no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise ImageError(f"{p} does not exist")
    if not paths:
        raise ImageError("no images were given")
    return paths


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


def predict_files(
    predictor: GLIPPredictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    prompt: str | Prompt | None = None,
    threshold: float = 0.3,
    progress: bool = True,
) -> list[Path]:
    """Detect in every image and write ``<stem>.json`` and ``<stem>.jpg`` (boxes drawn) into ``out_dir``.

    Returns:
        The JSON files written, in input order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    stems = _unique_stems(list(paths))
    iterator = predictor.iter_predict(paths, classes=classes, prompt=prompt, threshold=threshold)
    bar = tqdm(iterator, total=len(paths), desc="detecting", unit="img", disable=not progress)
    for stem, (path, image, det) in zip(stems, bar, strict=True):
        record = {
            "image": str(path),
            "width": image.width,
            "height": image.height,
            "threshold": threshold,
            "classes": list(classes) if classes is not None else None,
            "prompt": prompt.text if isinstance(prompt, Prompt) else prompt,
            "detections": det.to_list(),
        }
        json_path = out / f"{stem}.json"
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        draw_detections(image, det).save(out / f"{stem}.jpg", quality=92)
        written.append(json_path)
        logger.info("%s: %d detections", path.name, len(det))
    return written


__all__ = ["IMAGE_SUFFIXES", "ImageError", "collect_images", "predict_files"]

"""Run a predictor over image files and write one JSON and one annotated picture per image.

Safety rules (nothing the user did not produce with glip is ever overwritten or lost):

* ``out_dir`` must not hold any of the input images (writing pictures beside the photos they were
  made from is how inputs get overwritten);
* an output name that already exists is replaced only when it is a previous glip result (its JSON
  record says so); anything else stops the run before any work is done;
* every file is written atomically (:mod:`glip.fileio`);
* an image that cannot be read is reported and skipped; the others are processed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from glip.errors import ImageError, OutputError
from glip.fileio import atomic_write, atomic_write_text, disk_errors
from glip.images import printable_path, to_pil
from glip.predictor import GLIPPredictor, check_threshold
from glip.text import Prompt
from glip.visualize import draw_detections

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RECORD_KIND = "glip.detections"


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes:
        written: the JSON files written, in input order.
        skipped: ``(image, reason)`` of every input that could not be processed.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """``"N done, K skipped"``."""
        return f"{len(self.written)} done, {len(self.skipped)} skipped"


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive) into a list of image paths (folders sorted).

    Raises:
        ImageError: if an input does not exist or a folder holds no images.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        with disk_errors(p, "read"):
            if p.is_dir():
                found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
                if not found:
                    raise ImageError(f"folder {printable_path(p)} contains no images ({', '.join(IMAGE_SUFFIXES)})")
                paths.extend(found)
            elif p.is_file():
                paths.append(p)
            else:
                raise ImageError(f"{printable_path(p)} does not exist")
    if not paths:
        raise ImageError("no images were given")
    return paths


def unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        stems.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return stems


def _is_glip_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (record.get("kind") == RECORD_KIND or {"image", "detections"} <= set(record))


def _log_skip(path: Path, reason: str) -> None:
    logger.warning("skipped %s: %s", printable_path(path), reason)


def check_outputs(paths: Sequence[Path], out_dir: Path, stems: Sequence[str]) -> None:
    """Refuse an output folder that holds inputs or files glip did not write (before any work).

    Raises:
        OutputError: naming the input or file that would be overwritten and what to do.
    """
    with disk_errors(out_dir, "use"):
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputError(f"--out-dir {printable_path(out_dir)} is a file: give a folder")
        target = out_dir.resolve()
        for p in paths:
            if p.resolve().parent == target:
                raise OutputError(
                    f"--out-dir {printable_path(out_dir)} holds the input image {printable_path(p.name)}: "
                    "choose another folder (glip never writes beside its inputs)"
                )
        for stem in stems:
            json_path, jpg_path = out_dir / f"{stem}.json", out_dir / f"{stem}.jpg"
            if (json_path.exists() or jpg_path.exists()) and not _is_glip_record(json_path):
                clash = json_path if json_path.exists() else jpg_path
                raise OutputError(
                    f"{printable_path(clash)} exists and was not written by glip: choose another --out-dir "
                    "or move that file"
                )


def predict_files(
    predictor: GLIPPredictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    prompt: str | Prompt | None = None,
    threshold: float = 0.3,
    progress: bool = True,
    on_skip: Callable[[Path, str], None] | None = None,
    masks: bool = False,
) -> BatchResult:
    """Detect in every image and write ``<stem>.json`` and ``<stem>.jpg`` (boxes drawn) into ``out_dir``.

    With ``masks`` (a model with a mask head) every detection also gets its instance mask: a COCO
    RLE ``"mask"`` in the JSON record and a filled, outlined region in the picture.

    Images that cannot be read are skipped (see :class:`BatchResult`) and reported as they are met:
    ``on_skip(path, reason)`` when given, else a logged warning.

    Raises:
        OutputError: if ``out_dir`` is unsafe (see the module docstring) or cannot be written.
        PromptError: for a bad class list or prompt (checked before any image is read).
    """
    threshold = check_threshold(threshold)
    out = Path(out_dir)
    paths = list(paths)
    stems = unique_stems(paths)
    chunks = predictor.prompts_for(classes, prompt)
    if masks:
        predictor.model.require_head("mask")
    check_outputs(paths, out, stems)
    with disk_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    for stem, path in tqdm(list(zip(stems, paths, strict=True)), desc="detecting", unit="img", disable=not progress):
        try:
            image = to_pil(path)
        except ImageError as e:
            result.skipped.append((path, str(e)))
            (on_skip or _log_skip)(path, str(e))
            continue
        det = predictor.predict_chunks([image], chunks, masks=masks, mask_min_score=threshold)[0]
        det = det.above(threshold) if threshold > 0 else det
        record = {
            "kind": RECORD_KIND,
            "image": printable_path(path),
            "width": image.width,
            "height": image.height,
            "threshold": threshold,
            "classes": list(classes) if classes is not None else None,
            "prompt": prompt.text if isinstance(prompt, Prompt) else prompt,
            "detections": det.to_list(),
        }
        # the record first: a run killed between the two files leaves a picture-less record that the
        # next run recognises as its own and replaces
        json_path = atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=2) + "\n")
        picture = draw_detections(image, det)
        atomic_write(out / f"{stem}.jpg", lambda tmp, pic=picture: pic.save(tmp, format="JPEG", quality=92))
        result.written.append(json_path)
        logger.info("%s: %d detections", printable_path(path.name), len(det))
    return result


__all__ = ["IMAGE_SUFFIXES", "BatchResult", "check_outputs", "collect_images", "predict_files", "unique_stems"]

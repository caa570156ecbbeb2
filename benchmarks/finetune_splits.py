"""Write the held-back fine-tuning splits of the README's fine-tuning table (data the embedded model never saw).

The embedded model was trained on the *train* splits of coco128, raccoon, chess_pieces and bccd
(docs/default_model.md); it never saw a ``coco_mt`` image for detection, nor the val / test splits.
This script writes, under ``runs/finetune_data/<name>/annotations/<split>.json`` (gitignored;
``<name>/images`` is a link into shared/data):

* ``coco_mt_tableware/``: the coco_mt images with at least one of 7 dining classes the embedded
  model detects badly (zero-shot AP below 2 on them: dining table, bottle, cup, bowl, knife,
  wine glass, fork), only those classes' boxes; ``train`` = image ids
  not a multiple of 3 (64 images), ``test`` = multiples of 3 (31 images). The scenario of
  a user's own small set of unfamiliar classes.
* ``coco_mt_80/``: all 80 COCO classes; ``train`` = ids not a multiple of 5 (220 images),
  ``test`` = the multiples of 5 (55 images, the held-out split of the mask recipe).
* ``bccd_val_test/``: ``train`` = BCCD *val* (87 images), ``test`` = BCCD *test*
  (72 images): classes the model knows, splits it never trained on.

    python benchmarks/finetune_splits.py [--data ../shared/data] [--out runs/finetune_data]

Prints one JSON line per file with its image and box counts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TABLEWARE = ("dining table", "bottle", "cup", "bowl", "knife", "wine glass", "fork")


def subset(data: dict[str, Any], keep_image: Callable[[int], bool], classes: tuple[str, ...] | None) -> dict[str, Any]:
    """Images passing ``keep_image`` and the annotations of ``classes`` (None: all); with ``classes``,
    only images that keep at least one (non-crowd) box."""
    cats = [c for c in data["categories"] if classes is None or c["name"] in classes]
    cat_ids = {c["id"] for c in cats}
    anns = [a for a in data["annotations"] if a["category_id"] in cat_ids]  # crowd regions kept (ignored)
    if classes is not None:
        with_boxes = {a["image_id"] for a in anns if not a.get("iscrowd")}
        images = [im for im in data["images"] if im["id"] in with_boxes and keep_image(im["id"])]
    else:
        images = [im for im in data["images"] if keep_image(im["id"])]
    ids = {im["id"] for im in images}
    return {"images": images, "annotations": [a for a in anns if a["image_id"] in ids], "categories": cats}


def write(out: Path, name: str, split: str, data: dict[str, Any], images: Path) -> None:
    """``out/name/annotations/{split}.json`` and the ``out/name/images`` link (the shared/data layout,
    so ``glip odinw runs/finetune_data`` finds the splits); one JSON line of counts."""
    folder = out / name
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    path = folder / "annotations" / f"{split}.json"
    path.write_text(json.dumps(data))
    link = folder / "images"
    if not link.exists():
        os.symlink(os.path.relpath(images.resolve(), folder.resolve()), link)
    print(json.dumps({"file": str(path), "images": len(data["images"]), "boxes": len(data["annotations"])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "finetune_data", help="output folder")
    args = parser.parse_args()
    coco_mt = json.loads((args.data / "coco_mt" / "annotations" / "instances_train.json").read_text())
    images = args.data / "coco_mt" / "images"
    write(args.out, "coco_mt_tableware", "train", subset(coco_mt, lambda i: i % 3 != 0, TABLEWARE), images)
    write(args.out, "coco_mt_tableware", "test", subset(coco_mt, lambda i: i % 3 == 0, TABLEWARE), images)
    write(args.out, "coco_mt_80", "train", subset(coco_mt, lambda i: i % 5 != 0, None), images)
    write(args.out, "coco_mt_80", "test", subset(coco_mt, lambda i: i % 5 == 0, None), images)
    bccd = args.data / "bccd"
    for split, source in (("train", "val"), ("test", "test")):
        data = json.loads((bccd / "annotations" / f"{source}.json").read_text())
        write(args.out, "bccd_val_test", split, data, bccd / "images")


if __name__ == "__main__":
    main()

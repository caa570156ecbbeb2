"""Write the coco_mt evaluation files held out by the mask recipe (``glip train mask_shared_data``).

The recipe trains on the coco_mt images whose id is NOT a multiple of 5 (``holdout_every: 5``,
:func:`glip.data.coco.is_held_out`). This script writes the other images, unchanged, as files
``glip eval`` / ``glip eval-refseg`` read:

    runs/heldout/coco_mt/annotations/instances_heldout.json   55 images, their instances (crowd included)
    runs/heldout/coco_mt/annotations/refexp_heldout.json      the refexps on those images (DERIVED)
    runs/heldout/coco_mt/images -> shared/data/coco_mt/images

then, e.g.::

    glip eval --model runs/mask_shared_data/model --dataset runs/heldout/coco_mt/annotations/instances_heldout.json \
        --iou-type segm
    glip eval-refseg --model runs/mask_shared_data/model \
        --annotations runs/heldout/coco_mt/annotations/refexp_heldout.json

The refexp file keeps ``info.description`` (DERIVED): its numbers are "coco_mt derived", never
RefCOCO / PhraseCut numbers. Prints one JSON line with the counts.

    python benchmarks/mask_heldout_split.py [--data ../shared/data] [--out runs/heldout] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from glip.data.coco import is_held_out

REPO = Path(__file__).resolve().parents[1]


def held_out(data: dict[str, Any], every: int, records: str) -> dict[str, Any]:
    """A copy of a COCO-style file with only the held-out images and the ``records`` that refer to them."""
    images = [im for im in data["images"] if is_held_out(im["id"], every)]
    ids = {im["id"] for im in images}
    return {**data, "images": images, records: [r for r in data.get(records, []) if r["image_id"] in ids]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared/data folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "heldout", help="output folder (gitignored)")
    parser.add_argument("--every", type=int, default=5, help="held out: image ids that are multiples of this")
    args = parser.parse_args()
    source = args.data / "coco_mt"
    out = args.out / "coco_mt"
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    instances = held_out(json.loads((source / "annotations" / "instances_train.json").read_text()), args.every,
                         "annotations")  # fmt: skip
    refexp = held_out(json.loads((source / "annotations" / "refexp_train.json").read_text()), args.every, "refs")
    (out / "annotations" / "instances_heldout.json").write_text(json.dumps(instances))
    (out / "annotations" / "refexp_heldout.json").write_text(json.dumps(refexp))
    link = out / "images"
    if not link.exists():
        os.symlink(os.path.relpath((source / "images").resolve(), out.resolve()), link)
    print(json.dumps({
        "held_out_every": args.every, "images": len(instances["images"]),
        "instances": sum(1 for a in instances["annotations"] if not a.get("iscrowd", 0)),
        "crowd_regions": sum(1 for a in instances["annotations"] if a.get("iscrowd", 0)),
        "expressions": len(refexp["refs"]), "out": str(out),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

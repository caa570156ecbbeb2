"""Time COCO box evaluation of 1,000 images of detections with both backends (and check they agree).

    python benchmarks/eval_speed.py [--annotations ../shared/data/coco128/annotations/train2017.json]

Ground truth: the real coco128 annotations (80 categories) repeated to ``--images`` images. Detections:
100 per image, each real box jittered a few pixels (a near-hit) plus random boxes of random
categories as false positives, with random scores. Prints one JSON line per backend.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shlex
import sys
import time
from pathlib import Path

from glip.evaluation.coco_eval import evaluate_detections

REPO = Path(__file__).resolve().parents[1]


def build(gt: dict, n_images: int, per_image: int, seed: int) -> tuple[dict, list[dict]]:
    rng = random.Random(seed)
    src_images = gt["images"]
    anns_by = {}
    for a in gt["annotations"]:
        anns_by.setdefault(a["image_id"], []).append(a)
    cats = [c["id"] for c in gt["categories"]]
    images, anns, dets = [], [], []
    for i in range(n_images):
        src = src_images[i % len(src_images)]
        new_id = i + 1
        images.append({**src, "id": new_id})
        boxes = []
        for a in anns_by.get(src["id"], []):
            anns.append({**copy.deepcopy(a), "id": len(anns) + 1, "image_id": new_id})
            if not a.get("iscrowd", 0):
                boxes.append((a["category_id"], a["bbox"]))
        w, h = src["width"], src["height"]
        for cat, (x, y, bw, bh) in boxes[:per_image]:
            j = lambda v, s: v + rng.gauss(0, s)  # noqa: E731
            dets.append({"image_id": new_id, "category_id": cat, "score": rng.random(),
                         "bbox": [j(x, 2), j(y, 2), max(1.0, j(bw, 3)), max(1.0, j(bh, 3))]})  # fmt: skip
        for _ in range(per_image - min(per_image, len(boxes))):
            bw, bh = rng.uniform(5, w / 2), rng.uniform(5, h / 2)
            dets.append({"image_id": new_id, "category_id": rng.choice(cats), "score": rng.random() * 0.5,
                         "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]})  # fmt: skip
    return {**gt, "images": images, "annotations": anns}, dets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = REPO.parent / "shared" / "data" / "coco128" / "annotations" / "train2017.json"
    parser.add_argument("--annotations", type=Path, default=default)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gt, dets = build(json.loads(args.annotations.read_text()), args.images, args.per_image, args.seed)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stats = {}
    for backend in ("faster", "pycocotools"):
        t0 = time.perf_counter()
        m = evaluate_detections(gt, dets, backend)
        seconds = time.perf_counter() - t0
        stats[backend] = m.stats
        print(json.dumps({"benchmark": "coco_eval_speed", "backend": backend, "images": len(gt["images"]),
                          "detections": len(dets), "seconds": round(seconds, 3), "AP": m.stats["AP"],
                          "AP50": m.stats["AP50"], "command": command}))  # fmt: skip
    diff = max(abs(stats["faster"][k] - stats["pycocotools"][k]) for k in stats["faster"])
    print(json.dumps({"benchmark": "coco_eval_agreement", "max_abs_stat_difference": diff, "command": command}))


if __name__ == "__main__":
    main()

"""Cost of the GLIPv2 mask head on top of the detection path, in the same run.

    python benchmarks/mask_head_speed.py [--preset glip_t] [--batch-size 16] [--dtype bf16] [--cuda-graphs]
        [--detections 100] [--size 800 1333] [--iters 10]

GLIP-T (random weights, plus ``heads.mask``: 1 hourglass of 1 scale, 14x14 pooling, 28x28 masks) on
``--batch-size`` images of ``--size`` pixels, the 80 COCO class names as the prompt, the fast path in
``--dtype``. The head's bias is raised so that every image yields ``--detections`` detections (the
COCO evaluation setting: a mask for each of the 100 detections). Timed from preprocessed tensors, as
:meth:`glip.predictor.GLIPPredictor.predict_inputs` runs them, CUDA-synchronised, warm-up excluded:

* ``detect``: backbone, tower, heads, post-processing (what ``glip predict`` runs without ``--masks``);
* ``detect+masks``: the same call with ``masks=True``: the mask head on every detection's box (or on
  the ``--masks-per-image`` best ones, as a score threshold would keep), phrase logits, and pasting
  into the original image.

The last line gives the mask share ``(detect+masks - detect) / detect``. One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor
from vocab import COCO_CLASSES

COMMAND = "python " + " ".join(shlex.quote(a) for a in sys.argv)


def emit(record: dict) -> None:
    print(json.dumps({**record, "command": COMMAND}), flush=True)


def timed(fn, warmup: int, iters: int) -> tuple[float, float]:
    """Seconds per call and peak GiB."""
    for _ in range(warmup):
        fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return (time.perf_counter() - t0) / iters, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="glip_t")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--masks-per-image", type=int, default=0, help="masks for the K best detections (0: all)")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = GLIPConfig.from_preset(args.preset).replace(
        **{"heads.mask": {}, "postprocess.detections_per_image": args.detections}
    )
    model = GLIPModel(config, load_pretrained_parts=False).eval()
    with torch.no_grad():
        model.head.bias0.fill_(2.0)  # every location a candidate: each image gets its full set of detections
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = GLIPPredictor(model, device=device, dtype=args.dtype, cuda_graphs=args.cuda_graphs)
    h, w = args.size
    image = Image.new("RGB", (w, h))
    image.putdata([((x * 7) % 256, (x * 13) % 256, (x * 29) % 256) for x in range(w * h)])
    chunks = predictor.prompts_for(classes=COCO_CLASSES)
    inputs = predictor.processor([image] * args.batch_size, chunks[0]).to(predictor.device)
    dets = predictor.predict_inputs(inputs, chunks, masks=True)
    per_image = sum(len(d) for parts in dets for d in parts) / args.batch_size
    base = {"preset": args.preset, "batch": args.batch_size, "dtype": args.dtype, "cuda_graphs": args.cuda_graphs,
            "size": [h, w], "detections_per_image": per_image, "masks_per_image": args.masks_per_image or per_image,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}  # fmt: skip
    results = {}
    k = args.masks_per_image
    options = {"mask_min_score": 2.0, "mask_top_k": k} if k else {}  # scores are <= 1: only the top k
    for name, masks in (("detect", False), ("detect+masks", True)):
        seconds, peak = timed(
            lambda m=masks: predictor.predict_inputs(inputs, chunks, masks=m, **options), args.warmup, args.iters
        )
        results[name] = seconds
        emit({**base, "mode": name, "ms_per_batch": round(1000 * seconds, 2),
              "img_per_s": round(args.batch_size / seconds, 2), "peak_gib": round(peak, 2)})  # fmt: skip
    share = (results["detect+masks"] - results["detect"]) / results["detect"]
    extra_ms = 1000 * (results["detect+masks"] - results["detect"]) / args.batch_size
    emit({**base, "summary": True, "mask_share_of_detection": round(share, 4), "mask_ms_per_image": round(extra_ms, 3)})


if __name__ == "__main__":
    main()

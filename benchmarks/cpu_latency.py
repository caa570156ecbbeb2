"""CPU latency of the full predictor path (preprocess + model + post-process) per image.

Prints one JSON line per measurement, including the command line that produced it.

    python benchmarks/cpu_latency.py --preset glip_t --size 800 1333       # random weights
    python benchmarks/cpu_latency.py --model path/to/model_folder           # a saved model
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor
from glip.processing import GLIPProcessor

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="build this preset with random weights")
    src.add_argument("--model", help="a saved model folder or official .pth")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default: the config's)")
    parser.add_argument("--image", default=str(REPO / "assets" / "raccoon-72.jpg"), help="a real photo")
    parser.add_argument("--classes", default="raccoon,dog,person", help="comma-separated class names")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.preset:
        model = GLIPModel(GLIPConfig.from_preset(args.preset))
        processor = GLIPProcessor.from_config(model.config)
        predictor = GLIPPredictor(model, processor, device="cpu")
        name = f"{args.preset} (random weights)"
    else:
        predictor = GLIPPredictor.from_pretrained(args.model, device="cpu")
        name = args.model
    image = Image.open(args.image).convert("RGB")
    if args.size:
        h, w = args.size
        # an image of exactly this size passes the official resize unchanged when min/max allow it
        image = image.resize((w, h), Image.BILINEAR)
        predictor.processor.min_size, predictor.processor.max_size = min(h, w), max(h, w)
    classes = [c.strip() for c in args.classes.split(",")]
    times = []
    for i in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        det = predictor.predict(image, classes=classes)[0]
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    inputs = predictor.processor(image, classes)
    record = {
        "benchmark": "cpu_latency",
        "model": name,
        "parameters_M": round(predictor.model.num_parameters() / 1e6, 2),
        "input_hw": list(inputs.image_sizes[0]),
        "padded_hw": list(inputs.pixel_values.shape[-2:]),
        "tokens": int(inputs.input_ids.shape[1]),
        "threads": args.threads,
        "runs": len(times),
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "times_s": [round(t, 4) for t in times],
        "detections_last_run": len(det),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()

"""How far the reduced-precision fast path moves the outputs, on real images.

    python benchmarks/fast_path_accuracy.py --dataset DIR/annotations/val.json [--prompt-overrides Y]

For every image of a COCO-format split (the prompt: its class names, overrides applied as in
``glip eval``), the model runs once on the exact fp32 path and once per ``--dtypes`` on the fast
path (autocast + fused attention + fused DCN on CUDA). Printed per dtype (one JSON line): the max
and mean absolute difference of the grounding logits over all anchors and prompt tokens, the same
for the sigmoid scores, and the largest box-regression difference. ``--model`` defaults to the
embedded model; ``--preset glip_t`` uses random GLIP-T weights (same arithmetic, meaningless scores).
AP in fp32 vs bf16 comes from ``glip eval-suite --dtype ...`` (see docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from glip.config import GLIPConfig
from glip.data.coco import CocoDataset
from glip.evaluation.prompts import dataset_prompt, load_prompt_overrides
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor
from glip.processing import load_image

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMMAND = "python " + " ".join(shlex.quote(a) for a in sys.argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="COCO-format annotation JSON")
    parser.add_argument("--images", help="folder the file names are relative to (default: as glip eval finds it)")
    parser.add_argument("--model", help="model folder (default: the embedded model)")
    parser.add_argument("--preset", help="random weights of this preset instead of --model")
    parser.add_argument("--prompt-overrides", help="YAML of per-dataset class-name overrides")
    parser.add_argument("--name", help="dataset name for the overrides (default: the folder above annotations/)")
    parser.add_argument("--dtypes", nargs="+", default=["bf16"], choices=sorted(DTYPES))
    parser.add_argument("--max-images", type=int, default=0, help="0: all")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.preset:
        torch.manual_seed(0)
        predictor = GLIPPredictor(GLIPModel(GLIPConfig.from_preset(args.preset)), device=device)
    else:
        predictor = GLIPPredictor.from_pretrained(args.model, device=device)
    model, processor = predictor.model, predictor.processor
    dataset = CocoDataset.load(args.dataset, args.images)
    overrides = load_prompt_overrides(args.prompt_overrides) if args.prompt_overrides else {}
    key = args.name or Path(args.dataset).resolve().parents[1].name
    spec = dataset_prompt(dataset.category_names, overrides.get(key))
    caption = list(spec.caption_prompts) if spec.caption_prompts is not None else None
    chunks = predictor.prompts_for(list(spec.names), caption_prompts=caption)
    if len(chunks) != 1:
        raise SystemExit(f"{len(chunks)} prompt chunks: this check takes vocabularies that fit one prompt")
    images = dataset.images[: args.max_images] if args.max_images else dataset.images
    stats = {d: {"logit_max": 0.0, "logit_sum": 0.0, "score_max": 0.0, "box_max": 0.0, "count": 0} for d in args.dtypes}
    with torch.inference_mode():
        for record in images:
            inputs = processor(load_image(dataset.image_path(record)), chunks[0]).to(device)
            model.enable_fast_path(False)
            ref = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
            valid = inputs.attention_mask[:, None, :].bool().expand_as(ref.logits)
            for dtype in args.dtypes:
                model.enable_fast_path(True)
                amp = device == "cuda" or dtype == "bf16"  # no fp16 autocast on the CPU
                with torch.autocast(device, dtype=DTYPES[dtype]) if amp else nullcontext():
                    out = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
                diff = (out.logits.float() - ref.logits)[valid].abs()
                score = (out.logits.float().sigmoid() - ref.logits.sigmoid())[valid].abs()
                s = stats[dtype]
                s["logit_max"] = max(s["logit_max"], diff.max().item())
                s["logit_sum"] += diff.mean().item()
                s["score_max"] = max(s["score_max"], score.max().item())
                s["box_max"] = max(s["box_max"], (out.box_regression.float() - ref.box_regression).abs().max().item())
                s["count"] += 1
    model.enable_fast_path(False)
    for dtype, s in stats.items():
        record = {
            "dataset": args.dataset, "dtype": dtype,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "images": s["count"], "max_abs_logit_diff": round(s["logit_max"], 4),
            "mean_abs_logit_diff": round(s["logit_sum"] / max(1, s["count"]), 5),
            "max_abs_score_diff": round(s["score_max"], 5), "max_abs_box_regression_diff": round(s["box_max"], 4),
            "command": COMMAND,
        }  # fmt: skip
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""Recorded outputs of a fixed tiny model, so that any change that moves the numbers fails loudly.

``python tests/pinned_outputs.py --write`` re-records ``tests/fixtures/pinned_tiny.json``; do that only
for a change that is meant to change the model's numbers, and say why in the commit message.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel
from glip.processing import GLIPProcessor, load_image

HERE = Path(__file__).resolve().parent
PINNED = HERE / "fixtures" / "pinned_tiny.json"
IMAGE = HERE.parent / "assets" / "raccoon-72.jpg"
PROMPTS = {"detection": ["raccoon", "dog", "traffic light"], "sentence": "two raccoons sitting on a grey road"}
# Locations and token slots whose logits are recorded one by one (spread over all levels).
PROBE = [(0, 1), (17, 2), (500, 3), (1003, 5), (1260, 1), (1300, 4)]


def set_weights(model: torch.nn.Module, seed: int) -> None:
    """Give every floating-point parameter and buffer values from numpy's generator, by name.

    The values do not depend on torch's or transformers' initialisation code (which changes between
    releases), so the recorded outputs hold for every supported version: matrices ``N(0, 1/fan_in)``,
    norm weights ``1 + N(0, 0.1)``, every other vector and scalar ``N(0, 0.1)``.
    """
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    with torch.no_grad():
        for name in sorted(state):
            t = state[name]
            if not t.is_floating_point():
                continue
            if t.dim() >= 2:
                values = rng.standard_normal(t.shape) / np.sqrt(max(t[0].numel(), 1))
            elif "norm" in name and name.endswith("weight"):
                values = 1.0 + 0.1 * rng.standard_normal(t.shape)
            else:
                values = 0.1 * rng.standard_normal(t.shape)
            t.copy_(torch.from_numpy(values.astype(np.float32)))
        model.head.bias0.zero_()


def compute(preset: str) -> dict:
    """Run the seeded, perturbed tiny model on the sample image for both prompts."""
    model = GLIPModel(GLIPConfig.from_preset(preset)).eval()
    set_weights(model, seed=1234)
    processor = GLIPProcessor.from_config(model.config)
    image = load_image(IMAGE)
    result = {}
    for kind, prompt in PROMPTS.items():
        inputs = processor(image, prompt)
        with torch.inference_mode():
            out = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
            det = processor.post_process(out, inputs)[0]
        n = out.logits.shape[1]
        result[kind] = {
            "num_locations": n,
            "logits_probe": [out.logits[0, i % n, t].item() for i, t in PROBE],
            "logits_sum": out.logits[0, :, :16].sum().item(),
            "logits_abs_sum": out.logits[0, :, :16].abs().sum().item(),
            "box_regression_sum": out.box_regression.sum().item(),
            "box_regression_abs_sum": out.box_regression.abs().sum().item(),
            "centerness_sum": out.centerness.sum().item(),
            "num_detections": len(det),
            "top_boxes": det.boxes_xyxy[:5].tolist(),
            "top_scores": det.scores[:5].tolist(),
            "top_labels": det.label_names[:5],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="re-record tests/fixtures/pinned_tiny.json")
    args = parser.parse_args()
    data = {preset: compute(preset) for preset in ("tiny", "tiny_a")}
    if args.write:
        PINNED.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()

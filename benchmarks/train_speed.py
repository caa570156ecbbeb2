"""Training throughput and peak memory of a preset on one GPU (random weights, synthetic targets).

    python benchmarks/train_speed.py --preset glip_t --size 800 1333 --batch-size 2 --amp bf16

Each step: forward under autocast, GLIP losses (token focal, GIoU, centerness) in fp32, backward,
gradient clipping, AdamW step. Images are random tensors of the given padded size; every image
has 8 boxes tied to the phrases of an 80-class COCO prompt. Warm-up steps are excluded; timings
are CUDA-synchronised. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from glip.config import GLIPConfig
from glip.engine.config import OptimSpec
from glip.engine.optim import build_optimizer
from glip.modeling.criterion import GLIPCriterion
from glip.modeling.glip import GLIPModel
from glip.structures import GroundingTarget
from glip.text import detection_prompt, load_tokenizer, tokenize_prompt
from vocab import COCO_CLASSES


def batch(model: GLIPModel, b: int, h: int, w: int, device: torch.device):
    tok = load_tokenizer(model.config.text.tokenizer)
    prompt = detection_prompt(COCO_CLASSES)
    enc = tokenize_prompt(tok, prompt, model.config.text.max_query_len)
    t = model.config.text.max_query_len
    ids = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.long)
    ids[:, : len(enc.input_ids)] = torch.tensor(enc.input_ids)
    mask[:, : len(enc.input_ids)] = 1
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(b):
        xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 32 + torch.rand(8, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25])
        boxes = torch.cat([xy, xy + wh], dim=1)
        cls = torch.randint(0, len(COCO_CLASSES), (8,), generator=g)
        pos = torch.zeros(8, t)
        for i, c in enumerate(cls.tolist()):
            pos[i, enc.token_ids_per_entity[c]] = 1
        targets.append(GroundingTarget(boxes, pos, cls, torch.full((t,), -1), "detection", (h, w)).to(device))
    pixels = torch.randn(b, 3, h, w)
    return pixels.to(device), ids.to(device), mask.to(device), targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="glip_t")
    parser.add_argument("--size", nargs=2, type=int, default=(800, 1333), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.from_preset(args.preset)).to(device).train()
    model.tower.gradient_checkpointing = args.gradient_checkpointing
    criterion = GLIPCriterion.from_config(model.config, model.box_coder)
    optimizer = build_optimizer(model, OptimSpec())
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    h, w = args.size
    ph, pw = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    pixels, ids, mask, targets = batch(model, args.batch_size, ph, pw, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(pixels, ids, mask)
        for name in ("logits", "box_regression", "centerness"):
            setattr(out, name, getattr(out, name).float())
        losses = criterion(out, targets, mask)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        return float(total.detach())

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = 0.0
    for _ in range(args.steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    record = {
        "benchmark": "train_speed", "preset": args.preset, "input_hw": [ph, pw], "batch_size": args.batch_size,
        "amp": args.amp, "gradient_checkpointing": args.gradient_checkpointing, "steps": args.steps,
        "img_per_s": round(args.batch_size * args.steps / seconds, 3), "s_per_step": round(seconds / args.steps, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "last_loss": round(loss, 4), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }  # fmt: skip
    print(json.dumps(record))


if __name__ == "__main__":
    main()

"""Inference speed of GLIP-T against HF Grounding-DINO-T, side by side on one GPU.

    python benchmarks/infer_speed.py [--batch-sizes 1 8] [--dtypes fp32 bf16] [--lvis] [--profile]

Both models have random weights (the official architectures; speed does not depend on the values).
Inputs: 800x1333 images (random pixels, padded to 800x1344), the 80 COCO class names as the prompt.
GLIP-T is timed on its whole inference path from preprocessed tensors: backbone, text encoder (one
pass per batch, as the predictor does), tower, head and post-processing with GPU NMS; fp32 is the
exact official path, bf16/fp16 are autocast + the fused-attention fast path. Grounding-DINO-T
(``GroundingDinoForObjectDetection(GroundingDinoConfig())``) is timed on its forward pass only.
Warm-up iterations are excluded and every timing is CUDA-synchronised. ``--lvis`` also times a
1,203-class vocabulary per image (names from ``--lvis-names`` or 1,203 synthetic LVIS-length names;
the cost depends on the number of 256-token prompt chunks, not on the words). ``--flops`` counts
GLIP-T's FLOPs per image with ``torch.utils.flop_counter`` (plus a formula for the deformable
convolution, which the counter does not know). One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel
from glip.predictor import _stack_texts
from glip.processing import GLIPProcessor
from glip.text import chunk_vocabulary, detection_prompt
from vocab import COCO_CLASSES

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMMAND = "python " + " ".join(shlex.quote(a) for a in sys.argv)


def emit(record: dict) -> None:
    print(json.dumps({**record, "command": COMMAND}), flush=True)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, warmup: int, iters: int) -> tuple[float, float]:
    """Seconds per call and peak GiB (0 on the CPU)."""
    for _ in range(warmup):
        fn()
    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync()
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return (time.perf_counter() - t0) / iters, peak


def autocast(dtype: str):
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    return nullcontext() if DTYPES[dtype] is None else torch.autocast(kind, dtype=DTYPES[dtype])


class GlipRunner:
    """GLIP-T's inference path on preprocessed tensors."""

    def __init__(self, device: torch.device, preset: str = "glip_t") -> None:
        torch.manual_seed(0)
        self.model = GLIPModel(GLIPConfig.from_preset(preset)).to(device).eval()
        self.processor = GLIPProcessor.from_config(self.model.config)
        self.device = device

    def inputs(self, prompt):
        ids, mask, maps = self.processor.encode_prompts([prompt])
        return ids.to(self.device), mask.to(self.device), maps[0]

    @torch.inference_mode()
    def run(self, pixels: torch.Tensor, texts: list, dtype: str, text_cached: bool = False, group: int = 8) -> None:
        """Backbone once; tower + head once per group of prompt chunks (as the predictor batches them)."""
        b, h, w = pixels.shape[0], pixels.shape[2], pixels.shape[3]
        with autocast(dtype):
            feats = self.model.encode_image(pixels)
        for start in range(0, len(texts), group):
            part = texts[start : start + group]
            with autocast(dtype):
                encoded = [c if text_cached else self.model.encode_text(i, m) for i, m, _, c in part]
                text = _stack_texts(encoded, b)
                g = len(part)
                out = self.model.forward_features([f.repeat(g, 1, 1, 1) for f in feats] if g > 1 else feats, text)
            logits, boxes, ctr = out.logits.float(), out.box_regression.float(), out.centerness.float()
            for j, (_, _, emap, _) in enumerate(part):
                rows = slice(j * b, (j + 1) * b)
                self.processor.postprocessor(
                    logits[rows], boxes[rows], ctr[rows], out.anchors_xyxy, out.level_sizes, [emap] * b,
                    [(h, w)] * b, [(h, w)] * b,
                )  # fmt: skip

    @torch.inference_mode()
    def prepared(self, prompts: list, dtype: str) -> list:
        items = []
        for p in prompts:
            ids, mask, emap = self.inputs(p)
            with autocast(dtype):
                items.append((ids, mask, emap, self.model.encode_text(ids, mask)))
        return items


def glip_flops(runner: GlipRunner, pixels: torch.Tensor, texts: list) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    def deform_formula(input, weight, offset, mask, bias, *args, out_val=None, **kwargs) -> int:
        """Multiply-adds of the sampled 3x3 convolution (the counter passes shapes, not tensors)."""
        cout, cin, kh, kw = weight
        return 2 * input[0] * cout * cin * kh * kw * out_val[2] * out_val[3]

    mapping = {torch.ops.torchvision.deform_conv2d.default: deform_formula}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        runner.run(pixels, texts, "fp32")
    return counter.get_total_flops() / pixels.shape[0]


def lvis_names(path: str | None) -> list[str]:
    if path:
        data = json.loads(Path(path).read_text())
        cats = data["categories"] if isinstance(data, dict) else data
        return [c["name"] if isinstance(c, dict) else str(c) for c in cats]
    # 1,203 names of LVIS-like length (1-3 words drawn from COCO names): same chunk count as LVIS
    words = [w for c in COCO_CLASSES for w in c.split()]
    return [" ".join(words[(i * k) % len(words)] for k in (1, 7, 13)[: 1 + i % 3]) + f" {i}" for i in range(1203)]


def compiled(runner: GlipRunner, args: argparse.Namespace, coco: tuple, ph: int, pw: int, device: torch.device,
             glip_rate: dict) -> None:  # fmt: skip
    """GLIP-T bf16 with ``torch.compile`` on the tower and head (the first call includes compilation)."""
    runner.model.enable_fast_path(True)
    torch.backends.cuda.matmul.allow_tf32 = True
    eager = runner.model.forward_features
    runner.model.forward_features = torch.compile(eager)
    for b in args.batch_sizes:
        pixels = torch.randn(b, 3, ph, pw, device=device)
        t0 = time.perf_counter()
        runner.run(pixels, [(*coco, None)], "bf16")
        _sync()
        first = time.perf_counter() - t0
        sec, mem = timed(lambda: runner.run(pixels, [(*coco, None)], "bf16"), args.warmup, args.iters)  # noqa: B023
        emit({"model": "glip_t", "prompt": "coco80", "batch": b, "dtype": "bf16", "compiled": True,
              "img_per_s": round(b / sec, 2), "ms_per_batch": round(1000 * sec, 1), "peak_gib": round(mem, 2),
              "first_call_s": round(first, 1)})  # fmt: skip
        glip_rate[(b, "bf16")] = max(glip_rate.get((b, "bf16"), 0.0), b / sec)
    runner.model.forward_features = eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-peer", action="store_true", help="skip Grounding-DINO-T")
    parser.add_argument("--lvis", action="store_true", help="also time a 1,203-class vocabulary")
    parser.add_argument("--lvis-names", help="JSON with LVIS categories (default: synthetic names)")
    parser.add_argument("--lvis-chunk", type=int, default=40, help="classes per chunk (official LVIS: 40)")
    parser.add_argument("--flops", action="store_true")
    parser.add_argument("--profile", action="store_true", help="top CUDA kernels of GLIP-T bf16 at the largest batch")
    parser.add_argument("--preset", default="glip_t", help="GLIP preset (glip_t; tiny for a smoke test)")
    parser.add_argument("--compile", action="store_true", help="also time bf16 with torch.compile'd tower and head")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    h, w = args.size
    ph, pw = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    emit({"device": name, "torch": torch.__version__, "preset": args.preset})
    runner = GlipRunner(device, args.preset)
    coco = runner.inputs(detection_prompt(list(COCO_CLASSES)))
    glip_rate: dict[tuple[int, str], float] = {}
    for dtype in args.dtypes:
        runner.model.enable_fast_path(dtype != "fp32")
        # as GLIPPredictor: reduced precision also lets the remaining fp32 GEMMs use TF32
        torch.backends.cuda.matmul.allow_tf32 = dtype != "fp32"
        texts = [(*coco, None)]
        for b in args.batch_sizes:
            pixels = torch.randn(b, 3, ph, pw, device=device)
            try:
                sec, mem = timed(lambda: runner.run(pixels, texts, dtype), args.warmup, args.iters)  # noqa: B023
            except torch.OutOfMemoryError:
                emit({"model": "glip_t", "batch": b, "dtype": dtype, "error": "out of memory"})
                continue
            glip_rate[(b, dtype)] = b / sec
            emit({"model": "glip_t", "prompt": "coco80", "batch": b, "dtype": dtype, "img_per_s": round(b / sec, 2),
                  "ms_per_batch": round(1000 * sec, 1), "peak_gib": round(mem, 2)})  # fmt: skip
    if args.flops:
        runner.model.enable_fast_path(False)
        torch.backends.cuda.matmul.allow_tf32 = False
        flops = glip_flops(runner, torch.randn(1, 3, ph, pw, device=device), [(*coco, None)])
        best = {k: v for k, v in glip_rate.items()}
        emit({"model": "glip_t", "gflops_per_image": round(flops / 1e9, 1),
              "achieved_tflops": {f"b{b}_{d}": round(flops * r / 1e12, 1) for (b, d), r in best.items()}})  # fmt: skip
    if args.lvis:
        names = lvis_names(args.lvis_names)
        chunks = chunk_vocabulary(runner.processor.tokenizer, names, max_classes_per_chunk=args.lvis_chunk)
        for dtype in args.dtypes:
            runner.model.enable_fast_path(dtype != "fp32")
            torch.backends.cuda.matmul.allow_tf32 = dtype != "fp32"
            texts = runner.prepared(chunks, dtype)  # text features cached: one encoder pass per chunk, ever
            pixels = torch.randn(1, 3, ph, pw, device=device)
            sec, mem = timed(lambda: runner.run(pixels, texts, dtype, text_cached=True), 1, max(2, args.iters // 3))  # noqa: B023
            base = glip_rate.get((1, dtype))
            emit({"model": "glip_t", "prompt": f"lvis{len(names)}", "chunks": len(chunks), "batch": 1, "dtype": dtype,
                  "img_per_s": round(1 / sec, 3), "ms_per_image": round(1000 * sec, 1), "peak_gib": round(mem, 2),
                  "cost_vs_coco80": round(base * sec, 2) if base else None})  # fmt: skip
    if args.profile and device.type == "cuda":
        b, dtype = max(args.batch_sizes), "bf16"
        runner.model.enable_fast_path(True)
        torch.backends.cuda.matmul.allow_tf32 = True
        pixels = torch.randn(b, 3, ph, pw, device=device)
        texts = [(*coco, None)]
        runner.run(pixels, texts, dtype)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            runner.run(pixels, texts, dtype)
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
        total = sum(e.device_time_total for e in events)
        for e in events[:15]:
            ms = round(e.device_time_total / 1e3, 2)
            emit({"profile": f"glip_t b{b} {dtype}", "kernel": e.key[:90], "cuda_ms": ms,
                  "share": round(e.device_time_total / total, 3), "calls": e.count})  # fmt: skip
    if args.no_peer:
        if args.compile:
            compiled(runner, args, coco, ph, pw, device, glip_rate)
        return
    runner.model.to("cpu")
    torch.cuda.empty_cache()
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(0)
    peer = GroundingDinoForObjectDetection(GroundingDinoConfig()).to(device).eval()
    ids, mask = coco[0], coco[1]
    n = int(mask.sum())
    ids, mask = ids[:, :n], mask[:, :n]  # the unpadded prompt (Grounding-DINO pads to its own longest)
    for dtype in args.dtypes:
        torch.backends.cuda.matmul.allow_tf32 = dtype != "fp32"  # the same treatment as GLIP-T
        for b in args.batch_sizes:
            pixels = torch.randn(b, 3, ph, pw, device=device)

            @torch.inference_mode()
            def step(pixels: torch.Tensor = pixels, b: int = b, dtype: str = dtype) -> None:
                with autocast(dtype):
                    peer(pixel_values=pixels, input_ids=ids.expand(b, -1), attention_mask=mask.expand(b, -1))

            try:
                sec, mem = timed(step, args.warmup, args.iters)
            except torch.OutOfMemoryError:
                emit({"model": "grounding_dino_t", "batch": b, "dtype": dtype, "error": "out of memory"})
                continue
            rate = b / sec
            ours = glip_rate.get((b, dtype))
            emit({"model": "grounding_dino_t", "prompt": "coco80", "batch": b, "dtype": dtype,
                  "img_per_s": round(rate, 2), "ms_per_batch": round(1000 * sec, 1), "peak_gib": round(mem, 2),
                  "glip_t_ratio": round(ours / rate, 2) if ours else None})  # fmt: skip
    if args.compile:  # last: compilation takes minutes
        peer.to("cpu")
        torch.cuda.empty_cache()
        runner.model.to(device)
        compiled(runner, args, coco, ph, pw, device, glip_rate)


if __name__ == "__main__":
    main()

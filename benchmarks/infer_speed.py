"""Inference speed of GLIP-T against HF Grounding-DINO-T, side by side on one GPU.

    python benchmarks/infer_speed.py [--batch-sizes 1 8] [--dtypes fp32 bf16 fp16] [--cuda-graphs]
        [--compile] [--text-per-batch] [--lvis] [--flops] [--profile] [--no-peer]

Both models have random weights (the official architectures; speed does not depend on the values).
Inputs: 800x1333 images (random pixels, padded to 800x1344), the 80 COCO class names as the prompt.
GLIP-T is timed on its whole inference path from preprocessed tensors, as ``GLIPPredictor`` runs
it: backbone, tower, head and post-processing with GPU NMS, the prompt's text features cached
(``--text-per-batch`` also times re-encoding it every batch); fp32 is the exact official path,
bf16/fp16 the fast path, optionally replayed from CUDA graphs (``--cuda-graphs``) and compiled
(``--compile``, last: compilation takes minutes). Grounding-DINO-T
(``GroundingDinoForObjectDetection(GroundingDinoConfig())``) is timed on its forward pass under the
same autocast. Warm-up iterations are excluded and every timing is CUDA-synchronised. ``--lvis``
also times a 1,203-class vocabulary per image (names from ``--lvis-names`` or 1,203 synthetic
LVIS-length names; the cost depends on the number of 256-token prompt chunks, not on the words).
``--flops`` counts GLIP-T's FLOPs per image with ``torch.utils.flop_counter`` (plus a formula for
the deformable convolution, which the counter does not know). One JSON line per measurement; the
last line has the best rate per batch and dtype and the ratios to Grounding-DINO-T.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from glip.config import GLIPConfig
from glip.cuda_graphs import GraphedFunction
from glip.modeling.glip import GLIPModel, TextFeatures
from glip.pipelining import OverlappedPostprocess
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
    """GLIP-T's inference path on preprocessed tensors, as :class:`glip.predictor.GLIPPredictor` runs it."""

    def __init__(self, device: torch.device, preset: str = "glip_t") -> None:
        torch.manual_seed(0)
        self.model = GLIPModel(GLIPConfig.from_preset(preset)).to(device).eval()
        self.processor = GLIPProcessor.from_config(self.model.config)
        self.device = device
        self.dtype = "fp32"
        self.graphed = False
        self.image, self.heads = self._image, self._heads

    def inputs(self, prompt):
        ids, mask, maps = self.processor.encode_prompts([prompt])
        return ids.to(self.device), mask.to(self.device), maps[0]

    def _image(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return self.model.encode_image(pixels)

    def _heads(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_features(list(args[:-2]), TextFeatures(args[-2], args[-1]))
        return out.logits, out.box_regression, out.centerness

    def configure(self, dtype: str, compile: bool = False, graphs: bool = False) -> None:
        """Exact fp32 path, or the fast path in ``dtype``; optionally compiled and/or CUDA-graphed."""
        self.dtype = dtype
        self.graphed = graphs
        self.model.enable_fast_path(dtype != "fp32")
        # as GLIPPredictor: reduced precision also lets the remaining fp32 GEMMs use TF32
        torch.backends.cuda.matmul.allow_tf32 = dtype != "fp32"
        image, heads = self._image, self._heads
        if compile:
            image, heads = torch.compile(image), torch.compile(heads)
        if graphs:
            self.image, self.heads = GraphedFunction(image, DTYPES[dtype]), GraphedFunction(heads, DTYPES[dtype])
        else:
            self.image, self.heads = _autocasting(image, dtype), _autocasting(heads, dtype)

    @torch.inference_mode()
    def run(
        self, pixels: torch.Tensor, texts: list, text_cached: bool = True, group: int = 8, postprocess: bool = True
    ) -> None:
        """Backbone once; tower + head once per group of prompt chunks; post-processing with GPU NMS,
        one call per group, overlapped with the next group's GPU work (as the predictor does).

        ``texts``: ``(ids, mask, entity_map, cached TextFeatures)`` per chunk; ``text_cached=False``
        runs the text encoder on every call instead of using the cache; ``postprocess=False`` stops
        after the head (to see what post-processing costs).
        """
        b, h, w = pixels.shape[0], pixels.shape[2], pixels.shape[3]
        feats = list(self.image(pixels))
        level_sizes = [(f.shape[-2], f.shape[-1]) for f in feats]
        anchors = self.model.anchors(level_sizes, pixels.device)
        pipe = OverlappedPostprocess(pixels.device, copy_outputs=self.graphed)
        for start in range(0, len(texts), group):
            part = texts[start : start + group]
            with autocast(self.dtype):
                encoded = [c if text_cached else self.model.encode_text(i, m) for i, m, _, c in part]
            text = _stack_texts(encoded, b)
            g = len(part)
            inputs = [f.repeat(g, 1, 1, 1) for f in feats] if g > 1 else feats
            out = self.heads(*inputs, text.hidden, text.mask)
            if not postprocess:
                continue
            maps = [emap for _, _, emap, _ in part for _ in range(b)]  # chunk-major rows, as the predictor

            def job(out: Sequence[torch.Tensor], maps: list = maps, rows: int = g * b) -> None:
                logits, boxes, ctr = (t.float() for t in out)
                self.processor.postprocessor(
                    logits, boxes, ctr, anchors, level_sizes, maps, [(h, w)] * rows, [(h, w)] * rows
                )  # fmt: skip

            pipe.submit(out, job)  # post-processed on a side stream while the next group runs
        pipe.flush()

    @torch.inference_mode()
    def prepared(self, prompts: list, dtype: str) -> list:
        """Chunks with their text features computed once (the predictor's text cache)."""
        items = []
        for p in prompts:
            ids, mask, emap = self.inputs(p)
            with autocast(dtype):
                items.append((ids, mask, emap, self.model.encode_text(ids, mask)))
        return items


def _autocasting(fn, dtype: str):
    def call(*args):
        with autocast(dtype):
            return fn(*args)

    return call


def glip_flops(runner: GlipRunner, pixels: torch.Tensor, texts: list) -> float:
    """FLOPs per image of the per-image work (backbone, tower, head; the prompt's text features cached)."""
    from torch.utils.flop_counter import FlopCounterMode

    def deform_formula(input, weight, offset, mask, bias, *args, out_val=None, **kwargs) -> int:
        """Multiply-adds of the sampled 3x3 convolution (the counter passes shapes, not tensors)."""
        cout, cin, kh, kw = weight
        return 2 * input[0] * cout * cin * kh * kw * out_val[2] * out_val[3]

    mapping = {torch.ops.torchvision.deform_conv2d.default: deform_formula}
    runner.configure("fp32")
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        runner.run(pixels, texts)
    return counter.get_total_flops() / pixels.shape[0]


def lvis_names(path: str | None) -> list[str]:
    if path:
        data = json.loads(Path(path).read_text())
        cats = data["categories"] if isinstance(data, dict) else data
        return [c["name"] if isinstance(c, dict) else str(c) for c in cats]
    # 1,203 names of LVIS-like length (1-3 words drawn from COCO names): same chunk count as LVIS
    words = [w for c in COCO_CLASSES for w in c.split()]
    return [" ".join(words[(i * k) % len(words)] for k in (1, 7, 13)[: 1 + i % 3]) + f" {i}" for i in range(1203)]


def measure(runner: GlipRunner, args: argparse.Namespace, texts: list, ph: int, pw: int, rates: dict,
            label: dict, text_cached: bool = True) -> None:  # fmt: skip
    """Time GLIP-T at every batch size as configured; one JSON line each."""
    dtype = runner.dtype
    for b in args.batch_sizes:
        pixels = torch.randn(b, 3, ph, pw, device=runner.device)
        t0 = time.perf_counter()
        try:
            runner.run(pixels, texts, text_cached)
            _sync()
            first = time.perf_counter() - t0
            sec, mem = timed(lambda: runner.run(pixels, texts, text_cached), args.warmup, args.iters)  # noqa: B023
        except torch.OutOfMemoryError:
            emit({"model": "glip_t", "batch": b, "dtype": dtype, **label, "error": "out of memory"})
            continue
        if text_cached:
            rates[(b, dtype)] = max(rates.get((b, dtype), 0.0), b / sec)
            rates[(b, dtype, label["mode"])] = b / sec
        emit({"model": "glip_t", "prompt": "coco80", "batch": b, "dtype": dtype, **label,
              "text": "cached" if text_cached else "encoded per batch", "img_per_s": round(b / sec, 2),
              "ms_per_batch": round(1000 * sec, 1), "peak_gib": round(mem, 2),
              "first_call_s": round(first, 1)})  # fmt: skip


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
    parser.add_argument("--cuda-graphs", action="store_true", help="also time the reduced dtypes with CUDA graphs")
    parser.add_argument("--text-per-batch", action="store_true", help="also time bf16 re-encoding the prompt")
    parser.add_argument(
        "--compile", action="store_true", help="also time the first reduced dtype compiled (+ CUDA graphs if asked)"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    h, w = args.size
    ph, pw = (h + 31) // 32 * 32, (w + 31) // 32 * 32
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    emit({"device": name, "torch": torch.__version__, "preset": args.preset})
    runner = GlipRunner(device, args.preset)
    rates: dict[tuple[int, str], float] = {}
    coco = {d: runner.prepared([detection_prompt(list(COCO_CLASSES))], d) for d in args.dtypes}
    for dtype in args.dtypes:
        runner.configure(dtype)
        measure(runner, args, coco[dtype], ph, pw, rates, {"mode": "eager"})
    reduced = [d for d in args.dtypes if d != "fp32"]
    if args.text_per_batch and reduced:
        runner.configure(reduced[0])
        measure(runner, args, coco[reduced[0]], ph, pw, {}, {"mode": "eager"}, text_cached=False)
    if args.cuda_graphs and device.type == "cuda":
        for dtype in reduced:
            runner.configure(dtype, graphs=True)
            measure(runner, args, coco[dtype], ph, pw, rates, {"mode": "cuda_graphs"})
    if args.flops:
        flops = glip_flops(runner, torch.randn(1, 3, ph, pw, device=device), coco[args.dtypes[0]])
        emit({"model": "glip_t", "gflops_per_image": round(flops / 1e9, 1),
              "achieved_tflops": {"b" + "_".join(map(str, k)): round(flops * r / 1e12, 1) for k, r in rates.items()
                                  if len(k) == 3}})  # fmt: skip
    if args.lvis:
        names = lvis_names(args.lvis_names)
        chunks = chunk_vocabulary(runner.processor.tokenizer, names, max_classes_per_chunk=args.lvis_chunk)
        modes = [(d, False) for d in args.dtypes] + [(d, True) for d in reduced if args.cuda_graphs]
        for dtype, graphs in modes:
            runner.configure(dtype, graphs=graphs)
            texts = runner.prepared(chunks, dtype)  # text features cached: one encoder pass per chunk, ever
            pixels = torch.randn(1, 3, ph, pw, device=device)
            sec, mem = timed(lambda: runner.run(pixels, texts), 1, max(2, args.iters // 3))  # noqa: B023
            bare, _ = timed(lambda: runner.run(pixels, texts, postprocess=False), 1, max(2, args.iters // 3))  # noqa: B023
            base = rates.get((1, dtype, "cuda_graphs" if graphs else "eager"))  # one image, same mode
            emit({"model": "glip_t", "prompt": f"lvis{len(names)}", "chunks": len(chunks), "batch": 1, "dtype": dtype,
                  "mode": "cuda_graphs" if graphs else "eager", "img_per_s": round(1 / sec, 3),
                  "ms_per_image": round(1000 * sec, 1), "ms_without_postprocess": round(1000 * bare, 1),
                  "peak_gib": round(mem, 2),
                  "cost_vs_coco80_same_mode": round(base * sec, 2) if base else None})  # fmt: skip
    if args.profile and device.type == "cuda" and reduced:
        b, dtype = max(args.batch_sizes), reduced[0]
        runner.configure(dtype)
        pixels = torch.randn(b, 3, ph, pw, device=device)
        runner.run(pixels, coco[dtype])
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            runner.run(pixels, coco[dtype])
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)
        total = sum(e.device_time_total for e in events)
        emit({"profile": f"glip_t b{b} {dtype}", "total_cuda_ms": round(total / 1e3, 1)})
        for e in events[:15]:
            emit({"profile": f"glip_t b{b} {dtype}", "kernel": e.key[:90],
                  "cuda_ms": round(e.device_time_total / 1e3, 2), "share": round(e.device_time_total / total, 3),
                  "calls": e.count})  # fmt: skip
    runner.configure("fp32")  # drops the graphs and their memory
    peer_rates: dict[tuple[int, str], float] = {}
    if not args.no_peer:
        runner.model.to("cpu")
        torch.cuda.empty_cache()
        peer_rates = peer(args, coco[args.dtypes[0]][0], ph, pw, device, rates)
        runner.model.to(device)
    if args.compile:  # last: compilation takes minutes
        dtype = reduced[0] if reduced else "bf16"  # with --cuda-graphs: compiled and replayed from graphs
        runner.configure(dtype, compile=True, graphs=args.cuda_graphs)
        measure(runner, args, runner.prepared([detection_prompt(list(COCO_CLASSES))], dtype), ph, pw, rates,
                {"mode": "compiled" + (" + cuda_graphs" if args.cuda_graphs else "")})  # fmt: skip
    best = {f"b{k[0]}_{k[1]}": round(r, 2) for k, r in sorted(rates.items(), key=str) if len(k) == 2}
    ratios = {f"b{k[0]}_{k[1]}": round(rates[k[:2]] / r, 2) for k, r in peer_rates.items() if k[:2] in rates}
    emit({"model": "glip_t", "best_img_per_s": best, "ratio_to_grounding_dino_t": ratios})


def peer(args: argparse.Namespace, coco: tuple, ph: int, pw: int, device: torch.device, rates: dict) -> dict:
    """HF Grounding-DINO-T (random weights) on the same inputs; ratio to GLIP-T's best rate so far.

    Returns its img/s per ``(batch, dtype)`` (the final summary line also compares with the
    compiled runs, which come after).
    """
    measured: dict[tuple[int, str], float] = {}
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).to(device).eval()
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
                    model(pixel_values=pixels, input_ids=ids.expand(b, -1), attention_mask=mask.expand(b, -1))

            try:
                sec, mem = timed(step, args.warmup, args.iters)
            except torch.OutOfMemoryError:
                emit({"model": "grounding_dino_t", "batch": b, "dtype": dtype, "error": "out of memory"})
                continue
            rate = b / sec
            measured[(b, dtype)] = rate
            ours = rates.get((b, dtype))
            emit({"model": "grounding_dino_t", "prompt": "coco80", "batch": b, "dtype": dtype,
                  "img_per_s": round(rate, 2), "ms_per_batch": round(1000 * sec, 1), "peak_gib": round(mem, 2),
                  "glip_t_best_ratio": round(ours / rate, 2) if ours else None})  # fmt: skip
    model.to("cpu")
    torch.cuda.empty_cache()
    return measured


if __name__ == "__main__":
    main()

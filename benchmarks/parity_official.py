"""Numerical parity with the official GLIP implementation, stage by stage.

    python benchmarks/parity_official.py --reference /tmp/glip_ref --preset glip_t

The official code (microsoft/GLIP, a checkout outside this repository) is made to run on the CPU
by ``official_shim.py`` without editing its files. The script builds the official model from its
own config with a fixed seed, perturbs the constant-initialised parameters so every weight matters
(see ``perturb``), saves the state dict in the official checkpoint format, converts it with
``glip convert``, loads it into glip, runs both in fp32 on a real image with a detection prompt and
with a sentence prompt, and prints one JSON line per stage:

    {"preset", "prompt", "stage", "shape", "max_abs", "max_rel", "ref_max"}

``max_rel`` is ``max_abs / max(|reference|)``. The last line per prompt compares the final
detections (count, labels, boxes in original-image pixels, scores) after sorting both by score.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import official_shim  # noqa: E402

REPO = HERE.parent
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "coco128" / "images" / "train2017" / "000000000073.jpg"
DEFAULT_SENTENCE = "a man in a red shirt rides a motorcycle past a parked car and two people on the street"


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Give every constant-initialised parameter (norms, biases, layer scales, bias_lang, ...) random values.

    A freshly built GLIP has many parameters that start as 0 or 1; left that way, a wrong index or a
    swapped pair would go unnoticed. ``bias0`` is set to 0 so that token probabilities are near 0.5
    and the post-processor has thousands of candidates to rank, suppress and cut.
    """
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and float(p.std()) > 0:
                continue
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        model.rpn.head.bias0.zero_()


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


class Recorder:
    """Forward hooks that keep a copy of module outputs under a name."""

    def __init__(self) -> None:
        self.out: dict[str, object] = {}
        self.handles = []

    def add(self, module: torch.nn.Module, name: str) -> None:
        self.handles.append(module.register_forward_hook(lambda m, a, o, n=name: self.out.__setitem__(n, _clone(o))))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _diff(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    ours, ref = ours.double(), ref.double()
    if ours.shape != ref.shape:
        raise SystemExit(f"shape mismatch: ours {tuple(ours.shape)} vs official {tuple(ref.shape)}")
    err = (ours - ref).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return {"shape": list(ref.shape), "max_abs": err, "max_rel": err / scale if scale else 0.0, "ref_max": scale}


def _flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)


def official_inputs(off_cfg, image: Image.Image):
    from maskrcnn_benchmark.data.transforms import build_transforms
    from maskrcnn_benchmark.structures.image_list import to_image_list

    tensor = build_transforms(off_cfg, is_train=False)(image)  # returns the image alone without a target
    return to_image_list([tensor], off_cfg.DATALOADER.SIZE_DIVISIBILITY)


def official_detection_prompt(off_cfg, names: list[str]):
    from maskrcnn_benchmark.engine.inference import create_queries_and_maps

    return create_queries_and_maps(list(range(1, len(names) + 1)), names, cfg=off_cfg)


def official_sentence_map(tokenizer, caption: str, spans: list[list[tuple[int, int]]]):
    from maskrcnn_benchmark.data.datasets.modulated_coco import create_positive_map
    from maskrcnn_benchmark.engine.inference import create_positive_map_label_to_token_from_positive_map

    tokenized = tokenizer(caption, return_tensors="pt")
    positive = create_positive_map(tokenized, spans)
    return create_positive_map_label_to_token_from_positive_map(positive, plus=1)


def self_check(preset: str) -> list[dict]:
    """The stand-in DCN kernel against torchvision, with large offsets that sample outside the map.

    Equal-size case: the kernel emulation and ``torchvision.ops.deform_conv2d`` must agree (same
    sampling and boundary rules). Prefix case: a 5x6 output fed the 9x11 offset map of a finer level;
    the emulation reads raw buffers, glip slices the prefix and calls torchvision.
    """
    from torchvision.ops import deform_conv2d

    from glip.modeling.dyhead import _prefix

    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 9, 11, generator=g)
    coarse = torch.randn(2, 8, 5, 6, generator=g)
    w, b = torch.randn(6, 8, 3, 3, generator=g), torch.randn(6, generator=g)
    offset_mask = torch.randn(2, 27, 9, 11, generator=g) * 3.0
    off, msk = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
    out = []
    for stride, inp in ((1, x), (2, torch.randn(2, 8, 18, 22, generator=g))):
        emu = official_shim.emulated_modulated_dcn(inp, w, b, off, msk, stride, 1, 1)
        tv = deform_conv2d(inp, off, w, b, stride=stride, padding=1, mask=msk)
        out.append(
            {"preset": preset, "prompt": "-", "stage": f"dcn_standin_vs_torchvision_stride{stride}", **_diff(tv, emu)}
        )
    emu = official_shim.emulated_modulated_dcn(coarse, w, b, off, msk, 1, 1, 1)
    ours = deform_conv2d(coarse, _prefix(off, 5, 6), w, b, padding=1, mask=_prefix(msk, 5, 6))
    out.append({"preset": preset, "prompt": "-", "stage": "dcn_coarser_branch_prefix", **_diff(ours, emu)})
    for rec in out:
        print(json.dumps(rec), flush=True)
    return out


def compare(args: argparse.Namespace) -> list[dict]:
    from glip.cli import main as glip_main
    from glip.modeling.glip import GLIPModel
    from glip.processing import GLIPProcessor, load_image
    from glip.text import Prompt, caption_prompt, detection_prompt, load_tokenizer

    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(sys.stderr):  # the official code prints freely
        official, off_cfg = official_shim.build_official(args.reference, args.preset)
    perturb(official, args.seed)
    work = Path(tempfile.mkdtemp(prefix="glip_parity_"))
    ckpt = work / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in official.state_dict().items()}, "iteration": 0}, ckpt)
    if glip_main(["convert", str(ckpt), str(work / "converted"), "--preset", args.preset]) != 0:
        raise SystemExit("glip convert failed")
    ours = GLIPModel.from_pretrained(work / "converted").eval()
    tokenizer = load_tokenizer()
    processor = GLIPProcessor.from_config(ours.config, tokenizer)
    image = load_image(args.image)
    names = [c["name"] for c in json.loads(args.categories.read_text())["categories"]]

    records: list[dict] = []

    def emit(prompt: str, stage: str, d: dict) -> None:
        rec = {"preset": args.preset, "prompt": prompt, "stage": stage, **d}
        records.append(rec)
        print(json.dumps(rec), flush=True)

    off_images = official_inputs(off_cfg, image)
    with contextlib.redirect_stdout(sys.stderr):
        query, off_map = official_detection_prompt(off_cfg, names)
    det_prompt = detection_prompt(names, label_ids=list(range(1, len(names) + 1)))
    found = caption_prompt(args.sentence)
    # phrase k is label k + 1 on both sides (the official grounding map uses plus=1)
    sentence = Prompt(found.text, found.spans, found.labels, tuple(range(1, found.num_entities + 1)))
    sent_map = official_sentence_map(tokenizer, sentence.text, [list(s) for s in sentence.spans])
    prompts: list[tuple[str, Prompt, str, dict]] = [
        ("detection", det_prompt, query, off_map),
        ("sentence", sentence, sentence.text, sent_map),
    ]
    for kind, prompt, off_text, off_label_map in prompts:
        inputs = processor(image, prompt)
        if kind == "detection" and prompt.text != off_text:
            raise SystemExit(f"prompt text differs:\n ours: {prompt.text!r}\n official: {off_text!r}")
        ours_map = {lab: toks for lab, toks in zip(prompt.label_ids, inputs.entity_maps[0].token_ids, strict=True)}
        off_norm = {int(k): sorted(int(t) for t in v) for k, v in off_label_map.items()}
        same_map = {k: sorted(v) for k, v in ours_map.items() if v} == off_norm
        emit(kind, "prompt_token_map", {"identical": same_map, "entities": len(ours_map)})
        emit(kind, "input_pixels", _diff(inputs.pixel_values, off_images.tensors))

        rec_o, rec_g = Recorder(), Recorder()
        rec_o.add(official.backbone.body, "body")
        rec_o.add(official.backbone.fpn, "fpn")
        rec_o.add(official.language_backbone, "lang")
        rec_o.add(official.rpn.head, "head")
        for i, m in enumerate(official.rpn.head.dyhead_tower):
            rec_o.add(m, f"tower{i}")
        rec_g.add(ours.backbone.body, "body")
        rec_g.add(ours.backbone.fpn, "fpn")
        rec_g.add(ours.text_encoder, "lang")
        for i, blk in enumerate(ours.tower.blocks):
            for part in ("fusion", "text_layer", "dyconv"):
                if getattr(blk, part) is not None:
                    rec_g.add(getattr(blk, part), f"{part}{i}")
        t0 = time.perf_counter()
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            off_result = official(off_images, captions=[off_text], positive_map=off_label_map)[0]
        t_off = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            out = ours(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
            dets = processor.post_process(out, inputs)[0]
        t_ours = time.perf_counter() - t0
        rec_o.remove()
        rec_g.remove()
        o, g = rec_o.out, rec_g.out

        for s, (mine, theirs) in enumerate(zip(g["body"], list(o["body"])[-3:], strict=True)):
            emit(kind, f"swin_stage{s + 1}", _diff(mine, theirs))
        for lvl, (mine, theirs) in enumerate(zip(g["fpn"], o["fpn"], strict=True)):
            emit(kind, f"fpn_P{lvl + 3}", _diff(mine, theirs))
        emit(kind, "text_encoder", _diff(g["lang"], o["lang"]["hidden"]))
        early = ours.config.tower.early_fusion
        for i in range(ours.config.tower.num_blocks):
            if early:
                fv, fl = g[f"fusion{i}"]
                ov = o[f"tower{3 * i}"]
                emit(kind, f"fusion{i}_image", _diff(_flatten_levels(fv), _flatten_levels(ov["visual"])))
                emit(kind, f"fusion{i}_text", _diff(fl, ov["lang"]["hidden"]))
                if f"text_layer{i}" in g:
                    emit(kind, f"text_layer{i}", _diff(g[f"text_layer{i}"], o[f"tower{3 * i + 1}"]["lang"]["hidden"]))
                dy_official = o[f"tower{3 * i + 2}"]["visual"]
            else:
                dy_official = o[f"tower{i}"]["visual"]
            emit(kind, f"dyconv{i}", _diff(_flatten_levels(g[f"dyconv{i}"]), _flatten_levels(dy_official)))
        head = o["head"]
        n_tok = out.logits.shape[-1]
        emit(kind, "logits", _diff(out.logits, torch.cat(head[6], dim=1)[..., :n_tok]))
        emit(kind, "box_regression", _diff(out.box_regression, _flatten_levels(head[1])))
        emit(kind, "centerness", _diff(out.centerness, _flatten_levels(head[2])[..., 0]))

        oh, ow = inputs.original_sizes[0]
        off_result = off_result.resize((ow, oh))
        order = off_result.get_field("scores").argsort(descending=True, stable=True)
        off_boxes = off_result.bbox[order]
        off_scores = off_result.get_field("scores")[order]
        off_labels = off_result.get_field("labels")[order]
        same_count = len(dets) == len(off_scores)
        rec = {"count_ours": len(dets), "count_official": len(off_scores), "same_labels": False}
        if same_count:
            rec.update(
                same_labels=dets.labels.tolist() == off_labels.tolist(),
                boxes_max_abs_px=_diff(dets.boxes_xyxy, off_boxes)["max_abs"] if len(dets) else 0.0,
                scores_max_abs=_diff(dets.scores, off_scores)["max_abs"] if len(dets) else 0.0,
            )
        rec.update(seconds_official=round(t_off, 2), seconds_ours=round(t_ours, 2))
        emit(kind, "detections", rec)
    return records


def summary(records: list[dict], tol: float) -> dict:
    """Pass/fail against the acceptance bar: logits, boxes, centerness within ``tol``; identical detections."""
    heads = [r for r in records if r["stage"] in ("logits", "box_regression", "centerness")]
    dets = [r for r in records if r["stage"] == "detections"]
    maps = [r for r in records if r["stage"] == "prompt_token_map"]
    ok_heads = all(r["max_abs"] <= tol for r in heads)
    ok_dcn = all(r["max_abs"] <= 1e-4 for r in records if r["stage"].startswith("dcn_"))
    ok_dets = all(
        r["count_ours"] == r["count_official"] and r["same_labels"] and r.get("boxes_max_abs_px", 0) <= 1e-3
        for r in dets
    )
    return {
        "stage": "summary",
        "preset": records[0]["preset"],
        "worst_head_max_abs": max(r["max_abs"] for r in heads),
        "worst_stage": max((r for r in records if "max_abs" in r), key=lambda r: r["max_rel"])["stage"],
        "worst_stage_max_rel": max(r["max_rel"] for r in records if "max_rel" in r),
        "token_maps_identical": all(r["identical"] for r in maps),
        "heads_within_tolerance": ok_heads,
        "detections_identical": ok_dets,
        "dcn_standin_agrees": ok_dcn,
        "passed": ok_heads and ok_dets and ok_dcn and all(r["identical"] for r in maps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="official microsoft/GLIP checkout")
    parser.add_argument("--preset", default="glip_t", choices=sorted(official_shim.CONFIGS))
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--categories", type=Path, default=DEFAULT_IMAGE.parents[2] / "annotations" / "train2017.json",
                        help="COCO-format file whose category names make the detection prompt")  # fmt: skip
    parser.add_argument("--sentence", default=DEFAULT_SENTENCE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # the official code's deprecated APIs
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    from glip.modeling.language import minilm_path

    official_shim.install(args.reference.resolve(), minilm_path())
    print(
        json.dumps(
            {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "patches": official_shim.PATCHES}
        )
    )
    records = self_check(args.preset) + compare(args)
    result = summary(records, args.tolerance)
    print(json.dumps(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()

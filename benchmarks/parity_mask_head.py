"""Parity of glip's GLIPv2 mask head with the official pieces on identical weights and inputs.

    python benchmarks/parity_mask_head.py --official-root /tmp/glip_official

The official ``ROIMaskHead`` (``HourglassFPNFeatureExtractor`` + ``VLMaskRCNNC4Predictor`` +
``MaskRCNNLossComputation(vl_version=True)`` + ``MaskPostProcessor`` with its ``Masker``) is built
from the official default config with the ``ROI_MASK_HEAD`` fields below, imported from an
unmodified checkout through ``official_shim`` (no CUDA extension needed: the official ``ROIAlign``
already calls torchvision's when torchvision is importable). Our :class:`glip.modeling.mask_head.MaskHead`
gets random weights (biases, ``bias_lang`` and ``log_scale`` included), which are copied into the
official modules through an explicit key map (strict load: 0 missing, 0 unexpected).

Inputs: a random 5-level pyramid for two images, random fused text (256 tokens), boxes of every
size (each pyramid level gets some), three labelled phrases, and per image a few GT instances given
as polygons (official targets) and as the bitmasks pycocotools rasterises from them (ours).
The official predictor broadcasts one text over all boxes, so it runs image by image; glip runs
the two images as one batch.

One JSON line per quantity ``{"preset", "quantity", "max_abs", "ref_max"}``:

* ``mask_logits``: per-token mask logits ``(R, 256, M, M)``;
* ``phrase_mask_probs``: sigmoid of each box's phrase mask (official ``convert_mask_grounding_to_od_logits``
  then the label's channel);
* ``pasted_masks``: binary masks pasted in the image (official ``Masker``), with the count of differing pixels;
* ``loss_same_targets``: our ``mask_loss`` on the official matched token maps and mask targets, per image,
  and ``loss_grad_same_targets``: its gradient with respect to every weight;
* ``loss``: our whole training path (``mask_targets`` with ROIAlign on bitmasks, then ``mask_loss``) per
  image, and ``loss_batch`` for the two images at once against the box-weighted official mean;
* ``target_pixels``: share of mask-target pixels where ROIAlign-on-bitmask differs from the official
  polygon rasterisation (information, not a parity criterion: the two target recipes differ by design).

The run passes when every ``max_abs`` except ``loss`` / ``loss_batch`` (whose targets differ) is at most
``--tolerance`` and no pasted pixel differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from glip.modeling.mask_head import MaskHead

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import official_shim  # noqa: E402

# hourglass settings of the two GLIPv2 sizes (paper); the official repository has no mask config
PRESETS = {
    "t": {"channels": 256, "num_hourglasses": 1, "hourglass_scales": 1, "pooler_resolution": 14},
    "h": {"channels": 384, "num_hourglasses": 4, "hourglass_scales": 2, "pooler_resolution": 16},
}
SCALES = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128)
SAMPLING_RATIO = 2
TEXT_DIM, NUM_TOKENS = 768, 256
PHRASE_TOKENS = {1: [1, 2], 2: [4], 3: [6, 7, 8]}  # label -> token positions
IMAGE_SIZES = ((500, 620), (470, 640))  # (height, width) of each image; pyramid over the padded 512 x 640
PADDED = (512, 640)


def official_key(name: str) -> str:
    """Our state-dict key → the official ``ROIMaskHead`` key."""
    if name.startswith("hourglasses."):
        _, index, rest = name.split(".", 2)
        return f"feature_extractor.mask_hg{int(index) + 1}.{rest}"
    head = {"deconv": "conv5_mask", "text_proj": "dot_product_projection_text"}
    first, _, rest = name.partition(".")
    return f"predictor.{head.get(first, first)}" + (f".{rest}" if rest else "")


def build_official(preset: dict) -> torch.nn.Module:
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.roi_heads.mask_head.mask_head import build_roi_mask_head

    c = preset["channels"]
    config = cfg.clone()
    config.merge_from_list([
        "MODEL.MASK_ON", True,
        "MODEL.ROI_HEADS.USE_FPN", True,
        "MODEL.BACKBONE.OUT_CHANNELS", c,
        "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR", "HourglassFPNFeatureExtractor",
        "MODEL.ROI_MASK_HEAD.PREDICTOR", "VLMaskRCNNC4Predictor",
        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", preset["pooler_resolution"],
        "MODEL.ROI_MASK_HEAD.POOLER_SCALES", SCALES,
        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", SAMPLING_RATIO,
        "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (c,) * preset["num_hourglasses"],
        "MODEL.ROI_MASK_HEAD.HG_SCALE", preset["hourglass_scales"],
        "MODEL.ROI_MASK_HEAD.RESOLUTION", 2 * preset["pooler_resolution"],
        "MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR", False,
        "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", True,
        "MODEL.LANGUAGE_BACKBONE.LANG_DIM", TEXT_DIM,
        "MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN", NUM_TOKENS,
        "TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM", len(PHRASE_TOKENS),
    ])  # fmt: skip
    return build_roi_mask_head(config)


def build_ours(preset: dict, gen: torch.Generator) -> MaskHead:
    from glip.modeling.mask_head import MaskHead

    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    c = preset["channels"]
    head = MaskHead(c, c, TEXT_DIM, preset["num_hourglasses"], preset["hourglass_scales"],
                    preset["pooler_resolution"], SCALES, SAMPLING_RATIO)  # fmt: skip
    with torch.no_grad():  # constant-initialised tensors get noise so a swapped one cannot hide
        for name, p in head.named_parameters():
            if name.endswith("bias") or name == "bias_lang":
                p.normal_(0.0, 0.1, generator=gen)
    return head.eval()


def random_boxes(gen: torch.Generator, height: int, width: int, count: int) -> torch.Tensor:
    """Boxes of sqrt-area 8 to 4096 px (log-uniform, so every pyramid level gets some), aspect 1:2 to 2:1,
    centred in the image; the large ones cross its border."""
    size = torch.exp2(torch.empty(count).uniform_(3, 12, generator=gen))
    aspect = torch.exp2(torch.empty(count).uniform_(-1, 1, generator=gen))
    side = torch.stack((size * aspect.sqrt(), size / aspect.sqrt()), dim=1)
    centre = torch.rand(count, 2, generator=gen) * torch.tensor([width, height])
    return torch.cat((centre - side / 2, centre + side / 2), dim=1)


def random_instances(
    gen: torch.Generator, height: int, width: int, count: int
) -> tuple[list[list[list[float]]], torch.Tensor, torch.Tensor]:
    """GT polygons (star shapes), their boxes and pycocotools bitmasks ``(count, height, width)``."""
    import pycocotools.mask as mask_utils

    polys, boxes, masks = [], [], []
    for _ in range(count):
        cx, cy = float(torch.rand(1, generator=gen)) * width, float(torch.rand(1, generator=gen)) * height
        radius = 20 + float(torch.rand(1, generator=gen)) * 120
        angles = torch.linspace(0, 2 * math.pi, 13)[:-1]
        r = radius * (0.5 + 0.5 * torch.rand(12, generator=gen))
        xs = (cx + r * torch.cos(angles)).clamp(0, width - 1)
        ys = (cy + r * torch.sin(angles)).clamp(0, height - 1)
        poly = torch.stack((xs, ys), dim=1).flatten().tolist()
        polys.append([poly])
        boxes.append([min(xs).item(), min(ys).item(), max(xs).item(), max(ys).item()])
        rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
        masks.append(torch.from_numpy(mask_utils.decode(rle)))
    return polys, torch.tensor(boxes), torch.stack(masks)


def jitter(gen: torch.Generator, boxes: torch.Tensor, amount: float) -> torch.Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + (torch.rand(boxes.shape, generator=gen) - 0.5) * 2 * amount * wh


def record(out: list[dict], preset: str, quantity: str, ours: torch.Tensor, ref: torch.Tensor, **extra) -> None:
    diff = (ours.double() - ref.double()).abs()
    row = {"preset": preset, "quantity": quantity, "max_abs": float(diff.max()) if diff.numel() else 0.0,
           "ref_max": float(ref.double().abs().max()) if ref.numel() else 0.0, **extra}  # fmt: skip
    out.append(row)
    print(json.dumps(row), flush=True)


def compare(name: str, preset: dict, seed: int) -> list[dict]:
    from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import convert_mask_grounding_to_od_logits
    from maskrcnn_benchmark.structures.bounding_box import BoxList
    from maskrcnn_benchmark.structures.segmentation_mask import SegmentationMask

    from glip.modeling.mask_head import map_levels, mask_loss, mask_targets, paste_masks, phrase_mask_logits

    gen = torch.Generator().manual_seed(seed)
    ours = build_ours(preset, gen)
    official = build_official(preset)
    missing, unexpected = official.load_state_dict({official_key(k): v for k, v in ours.state_dict().items()})
    assert not missing and not unexpected, (missing, unexpected)
    official.eval()

    c, m = preset["channels"], ours.mask_resolution
    feats = [torch.randn(2, c, PADDED[0] // 2**k, PADDED[1] // 2**k, generator=gen) for k in range(3, 8)]
    text = torch.randn(2, NUM_TOKENS, TEXT_DIM, generator=gen)
    count = 24 if name == "t" else 8
    boxes = [random_boxes(gen, h, w, count) for h, w in IMAGE_SIZES]
    labels = [torch.randint(1, len(PHRASE_TOKENS) + 1, (count,), generator=gen) for _ in IMAGE_SIZES]
    token_ids = [PHRASE_TOKENS[k] for k in sorted(PHRASE_TOKENS)]
    with torch.no_grad():  # calibrate the temperature so that mask logits spread around 0 (std ~2.5)
        std = ours(feats, boxes, text).std()
        ours.log_scale.fill_(math.log(float(std) / 2.5))
        official.predictor.log_scale.copy_(ours.log_scale)
    out: list[dict] = []

    # ---- inference: token logits, phrase probabilities, pasted masks
    captured: list[torch.Tensor] = []
    official.predictor.register_forward_hook(lambda mod, inp, res: captured.append(res.detach()))
    with torch.no_grad():
        logits = ours(feats, boxes, text)
        ref_logits, ref_probs, ref_pasted = [], [], []
        for b, (h, w) in enumerate(IMAGE_SIZES):
            props = BoxList(boxes[b], (w, h), mode="xyxy")
            props.add_field("labels", labels[b])
            lang = {"hidden": text[b : b + 1]}
            _, result, _ = official([f[b : b + 1] for f in feats], [props], language_dict_features=lang,
                                    positive_map_label_to_token=PHRASE_TOKENS)  # fmt: skip
            ref_logits.append(captured[-1])
            od = convert_mask_grounding_to_od_logits(captured[-1], PHRASE_TOKENS, len(PHRASE_TOKENS))
            ref_probs.append(od[torch.arange(count), labels[b]])
            ref_pasted.append(result[0].get_field("mask")[:, 0])
        levels = map_levels(torch.cat(boxes), ours.k_min, ours.k_max)
        record(
            out,
            name,
            "mask_logits",
            logits,
            torch.cat(ref_logits),
            shape=list(logits.shape),
            boxes_per_level=torch.bincount(levels, minlength=len(SCALES)).tolist(),
        )
        probs = phrase_mask_logits(logits, token_ids, torch.cat(labels) - 1).sigmoid()
        record(out, name, "phrase_mask_probs", probs, torch.cat(ref_probs))
        per_image = probs.split(count)
        pasted = [paste_masks(p, bx, size) for p, bx, size in zip(per_image, boxes, IMAGE_SIZES, strict=True)]
        differing = sum(int((a != r).sum()) for a, r in zip(pasted, ref_pasted, strict=True))
        record(out, name, "pasted_masks", torch.cat([p.flatten() for p in pasted]).float(),
               torch.cat([r.flatten() for r in ref_pasted]).float(), differing_pixels=differing,
               foreground_pixels=sum(int(r.sum()) for r in ref_pasted))  # fmt: skip

    # ---- training: matched token maps, mask targets and the loss
    official.train()
    captured_targets: list[tuple] = []
    evaluator = official.loss_evaluator
    prepare = evaluator.prepare_targets
    evaluator.prepare_targets = lambda p, t: captured_targets.append(prepare(p, t)) or captured_targets[-1]
    gt, rois, own_losses, ref_losses, npos = [], [], [], [], []
    for b, (h, w) in enumerate(IMAGE_SIZES):
        polys, gt_boxes, bitmasks = random_instances(gen, h, w, 4)
        pmap = torch.zeros(len(polys), NUM_TOKENS)
        for i, lab in enumerate(torch.randint(1, len(PHRASE_TOKENS) + 1, (len(polys),), generator=gen).tolist()):
            pmap[i, PHRASE_TOKENS[lab]] = 1.0
        roi = torch.cat((jitter(gen, gt_boxes, 0.08), jitter(gen, gt_boxes, 0.15), random_boxes(gen, h, w, 4) / 4))
        target = BoxList(gt_boxes, (w, h), mode="xyxy")
        target.add_field("positive_map", pmap)
        target.add_field("masks", SegmentationMask(polys, (w, h)))
        props = BoxList(roi, (w, h), mode="xyxy")
        props.add_field("labels", torch.ones(len(roi), dtype=torch.long))
        captured.clear()
        official.zero_grad()
        ours.zero_grad()
        _, _, losses = official([f[b : b + 1] for f in feats], [props], [target],
                                language_dict_features={"hidden": text[b : b + 1]})  # fmt: skip
        losses["loss_mask"].backward()
        ref_losses.append(losses["loss_mask"].detach())
        ref_labels, ref_targets, ref_maps = captured_targets[-1]
        keep = ref_labels[0] > 0
        npos.append(int(keep.sum()))
        roi_logits = ours([f[b : b + 1] for f in feats], [roi], text[b : b + 1])
        same = mask_loss(roi_logits[keep], ref_maps[0][keep], ref_targets[0])
        same.backward()
        record(out, name, f"loss_same_targets_image{b}", same.detach(), ref_losses[-1])
        ref_params = dict(official.named_parameters())
        grads = [(p.grad.flatten(), ref_params[official_key(k)].grad.flatten()) for k, p in ours.named_parameters()]
        record(out, name, f"loss_grad_same_targets_image{b}", torch.cat([g[0] for g in grads]),
               torch.cat([g[1] for g in grads]))  # fmt: skip
        roi_logits = roi_logits.detach()
        with torch.no_grad():
            pos_map, targets = mask_targets([roi], [gt_boxes], [bitmasks], [pmap], m)
            own_losses.append(mask_loss(roi_logits, pos_map, targets))
            record(out, name, f"loss_image{b}", own_losses[-1], ref_losses[-1])
            assert torch.equal(pos_map[keep], ref_maps[0][keep]) and not pos_map[~keep].any()
            mismatch = (targets[keep] != ref_targets[0]).float().mean()
            out.append({"preset": name, "quantity": f"target_pixels_image{b}", "differing_share": float(mismatch)})
            print(json.dumps(out[-1]), flush=True)
        gt.append((gt_boxes, bitmasks, pmap))
        rois.append(roi)
    with torch.no_grad():
        batch_logits = ours(feats, rois, text)
        pos_map, targets = mask_targets(rois, [g[0] for g in gt], [g[1] for g in gt], [g[2] for g in gt], m)
        batch = mask_loss(batch_logits, pos_map, targets)
    weighted = sum(n * x for n, x in zip(npos, own_losses, strict=True)) / sum(npos)
    record(out, name, "batch_vs_per_image_loss", batch, weighted)
    official_mean = sum(n * x for n, x in zip(npos, ref_losses, strict=True)) / sum(npos)
    record(out, name, "loss_batch", batch, official_mean)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", type=Path, required=True, help="unpacked microsoft/GLIP tree")
    parser.add_argument("--presets", default="t,h", help="comma-separated: t (T/B sizes), h (H sizes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for category in (FutureWarning, SyntaxWarning, UserWarning):  # the official code's deprecated APIs
        warnings.filterwarnings("ignore", category=category)
    torch.set_num_threads(args.threads)
    from glip.modeling.language import minilm_path

    official_shim.install(args.official_root.resolve(), minilm_path())
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(json.dumps({"command": command, "patches": official_shim.PATCHES}))
    records = []
    for name in args.presets.split(","):
        records += compare(name, PRESETS[name], args.seed)
    inexact = ("loss_image", "loss_batch", "target_pixels")
    checked = [r for r in records if "max_abs" in r and not r["quantity"].startswith(inexact)]
    worst = max(r["max_abs"] for r in checked)
    pasted_ok = all(r.get("differing_pixels", 0) == 0 for r in records)
    passed = worst <= args.tolerance and pasted_ok
    print(
        json.dumps(
            {"worst_max_abs": worst, "pasted_identical": pasted_ok, "tolerance": args.tolerance, "passed": passed}
        )
    )
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

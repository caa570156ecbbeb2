"""Loss parity with the official GLIP ``ATSSLossComputation`` on identical head outputs.

    python benchmarks/parity_losses.py --reference /tmp/glip_ref --preset glip_t

Our model (random weights, fixed seed) runs once on two real COCO128 images with their real boxes
and a detection prompt per image built as the official ``od_to_grounding`` does (the image's class
names plus a few negatives, shuffled, ``". "``-separated). Its logits, box regression, centerness,
anchors, pre-fusion FPN features and text embedding are converted to the official per-level
formats, and the official ``ATSSLossComputation`` (built from the preset's official config, its
shallow-contrastive projections set to our model's) and :class:`glip.modeling.GLIPCriterion` compute
the losses. One JSON line per loss ``{"preset", "loss", "official", "ours", "abs_diff", "rel_diff"}``, then a
summary; the bar is ``--tolerance`` (1e-4).

* ``token``, ``box``, ``centerness`` come from one official call on the real targets.
* ``contrastive``: the official code drops the anchors assigned to GT #0 from the contrastive
  positives (``nonzero(anchors_to_gt_indexs)``); we do not. For a like-for-like comparison the
  second official call gets, in front of each image's boxes, a dummy box ``[0, 0, 1, 1]`` that no
  anchor can match, so every real box has index >= 1. Its ``random.sample`` is redirected to
  :func:`glip.modeling.losses.random_subset` with a generator seeded like ours, so both sides draw
  the same subsampled positives and negative pads.
* ``--perturb s`` adds Gaussian noise (``s`` times 4 / 3 / 2) to the logits, box deltas and
  centerness before both sides see them, for inputs far from a fresh model's.
* ``mlm``: our :func:`glip.text.mlm.mask_tokens` against the official ``random_word`` fed the same
  uniform draws (``random.random`` / ``random.choice`` redirected), and the MLM loss on our logits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import random
import shlex
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import official_shim  # noqa: E402

REPO = HERE.parent
COCO = REPO.parent / "shared" / "data" / "coco128"
# head outputs that --perturb adds noise to, with the noise scale of each
PERTURBED = {"logits": 4.0, "box_regression": 3.0, "centerness": 2.0}
DEFAULT_IMAGES = ("000000000049.jpg", "000000000074.jpg")  # both name "person": cross-image positives


def build_samples(image_names: list[str], num_negatives: int, seed: int):
    """Per image: the PIL image, xyxy boxes (+1 convention, clipped), category ids, and a Prompt."""
    from glip.processing import load_image
    from glip.structures import xywh_to_xyxy
    from glip.text import detection_prompt

    data = json.loads((COCO / "annotations" / "train2017.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    rng = random.Random(seed)
    samples = []
    for file_name in image_names:
        record = next(im for im in data["images"] if im["file_name"].endswith(file_name))
        anns = [a for a in data["annotations"] if a["image_id"] == record["id"] and not a.get("iscrowd", 0)]
        w, h = record["width"], record["height"]
        boxes = xywh_to_xyxy(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32))
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
        labels = torch.tensor([a["category_id"] for a in anns])
        present = sorted(set(labels.tolist()))
        negatives = rng.sample([c for c in names if c not in present], num_negatives)
        order = present + negatives
        rng.shuffle(order)
        prompt = detection_prompt([names[c] for c in order], label_ids=order)
        samples.append((load_image(COCO / "images" / record["file_name"]), boxes, labels, prompt))
    return samples


def make_targets(samples, inputs, max_len: int):
    """Our GroundingTargets (boxes resized as the official ``BoxList.resize``) and the official fields."""
    from glip.structures import GroundingTarget
    from glip.text import build_positive_map

    ours, extra = [], []
    for (image, boxes, labels, prompt), entity_map, (nh, nw) in zip(
        samples, inputs.entity_maps, inputs.image_sizes, strict=True
    ):
        ratio = torch.tensor([nw / image.width, nh / image.height] * 2)
        resized = boxes * ratio
        entity_of = {lab: k for k, lab in enumerate(prompt.label_ids)}
        rows = [entity_map.token_ids[entity_of[int(c)]] for c in labels]
        positive_map = build_positive_map(rows, max_len)
        token_labels = torch.full((max_len,), -1, dtype=torch.long)
        for lab, toks in zip(prompt.label_ids, entity_map.token_ids, strict=True):
            token_labels[toks] = lab
        ours.append(GroundingTarget(resized, positive_map, labels.clone(), token_labels, "detection", (nh, nw)))
        spans = [[list(prompt.spans[entity_of[int(c)]][0])] for c in labels]
        extra.append({"size": (nw, nh), "spans": spans, "text": prompt.text})
    return ours, extra


def official_targets(ours, extra, dummy: bool):
    """BoxLists with the fields the official loss reads; with ``dummy`` a box no anchor matches goes first."""
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    out, maps = [], []
    for t, e in zip(ours, extra, strict=True):
        boxes, labels, pmap, spans = t.boxes_xyxy, t.box_labels, t.positive_map, list(e["spans"])
        od_labels = t.box_labels.clone()
        if dummy:
            boxes = torch.cat((torch.tensor([[0.0, 0.0, 1.0, 1.0]]), boxes))
            labels = torch.cat((torch.tensor([1]), labels))
            od_labels = torch.cat((torch.tensor([-10]), od_labels))
            pmap = torch.cat((torch.zeros(1, pmap.shape[1]), pmap))
            spans = [[], *spans]
        bl = BoxList(boxes, e["size"], mode="xyxy")
        bl.add_field("labels", labels)
        bl.add_field("original_od_label", od_labels)
        bl.add_field("positive_map_for_od_labels", t.token_labels.float())
        bl.add_field("tokens_positive", spans)
        out.append(bl)
        maps.append(pmap)
    return out, torch.cat(maps).float()


def per_level(x, level_sizes):
    """``(B, N, C)`` → per level ``(B, C, H, W)``."""
    out, start = [], 0
    for h, w in level_sizes:
        out.append(x[:, start : start + h * w].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous())
        start += h * w
    return out


def split_levels(x, level_sizes):
    """``(B, N, ...)`` → per level ``(B, H_l * W_l, ...)``."""
    return list(torch.split(x, [h * w for h, w in level_sizes], dim=1))


def official_loss_module(args, model, contrastive: bool):
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.rpn.loss import ATSSLossComputation
    from maskrcnn_benchmark.modeling.rpn.vldyhead import BoxCoder

    c = cfg.clone()
    c.merge_from_file(str(args.reference / official_shim.CONFIGS["glip_t"]))
    f = "MODEL.DYHEAD.FUSE_CONFIG."
    opts = [f + "USE_SHALLOW_CONTRASTIVE_LOSS", contrastive, f + "SHALLOW_MAX_POSITIVE_ANCHORS", args.max_positives,
            "MODEL.DYHEAD.CHANNELS", model.config.tower.channels,
            "MODEL.LANGUAGE_BACKBONE.LANG_DIM", model.config.text.hidden_size,
            f + "SHALLOW_CONTRASTIVE_HIDDEN_DIM", model.config.loss.contrastive_dim]  # fmt: skip
    c.merge_from_list(opts)
    c.freeze()
    module = ATSSLossComputation(c, BoxCoder(c))
    if not contrastive:
        return module
    with torch.no_grad():
        module.shallow_contrastive_projection_image.load_state_dict(model.contrastive_image.state_dict())
        module.shallow_contrastive_projection_text.load_state_dict(model.contrastive_text.state_dict())
    return module


@contextlib.contextmanager
def patched_random(**fns):
    saved = {k: getattr(random, k) for k in fns}
    for k, fn in fns.items():
        setattr(random, k, fn)
    try:
        yield
    finally:
        for k, fn in saved.items():
            setattr(random, k, fn)


def mlm_parity(inputs, targets, tokenizer, vocab_size: int, seed: int) -> dict:
    """``mask_tokens`` vs the official ``random_word`` on the same draws."""
    from maskrcnn_benchmark.modeling.detector.generalized_vl_rcnn import random_word

    from glip.text.mlm import mask_tokens

    ids, mask = inputs.input_ids, inputs.attention_mask
    greenlight = torch.stack([(t.positive_map.sum(0) > 0).float() for t in targets])  # 1 on the boxes' names
    ours_ids, ours_labels = mask_tokens(
        ids, mask, vocab_size, tokenizer.mask_token_id, (), 0.15, torch.Generator().manual_seed(seed), greenlight
    )
    gen = torch.Generator().manual_seed(seed)  # the draws mask_tokens made, in its order
    draws = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(vocab_size, ids.shape, generator=gen, dtype=ids.dtype)
    flat_draws = iter(draws.flatten().tolist())
    ratio = draws / 0.15
    chosen = (draws < 0.15) & (ratio >= 0.8) & (ratio < 0.9) & (mask > 0)
    flat_choices = iter(random_ids[chosen].tolist())
    with patched_random(random=lambda: next(flat_draws), choice=lambda seq: next(flat_choices)):
        off_ids, off_labels = random_word(
            ids.clone(), tokenizer.mask_token_id, list(range(vocab_size)), tokenizer.pad_token_id, greenlight
        )
    return {
        "masked_ids_identical": bool(torch.equal(ours_ids, off_ids)),
        "labels_identical": bool(torch.equal(ours_labels, off_labels)),
        "num_masked": int((ours_ids != ids).sum()),
        "num_scored": int((ours_labels != -100).sum()),
        "labels": ours_labels,
        "masked_ids": ours_ids,
    }


def compare(args: argparse.Namespace) -> list[dict]:
    from glip.config import GLIPConfig
    from glip.modeling.criterion import GLIPCriterion
    from glip.modeling.glip import GLIPModel
    from glip.modeling.losses import random_subset
    from glip.processing import GLIPProcessor
    from glip.text import load_tokenizer

    torch.manual_seed(args.seed)
    config = GLIPConfig.from_preset(args.preset).replace(
        **{"loss.contrastive": True, "loss.mlm": True, "loss.contrastive_max_positives": args.max_positives}
    )
    model = GLIPModel(config).eval()
    tokenizer = load_tokenizer()
    processor = GLIPProcessor.from_config(config, tokenizer)
    samples = build_samples(list(args.images), args.negatives, args.seed)
    inputs = processor([s[0] for s in samples], [s[3] for s in samples])
    targets, extra = make_targets(samples, inputs, inputs.input_ids.shape[1])
    mlm = mlm_parity(inputs, targets, tokenizer, config.text.vocab_size, args.seed)
    with torch.no_grad():
        out = model(inputs.pixel_values, mlm["masked_ids"], inputs.attention_mask)
        if args.perturb > 0:  # harder inputs for both sides: large logits, poor boxes, some inverted
            g = torch.Generator().manual_seed(args.seed + 1)
            noise = {k: torch.randn(getattr(out, k).shape, generator=g) * args.perturb for k in PERTURBED}
            out = dataclasses.replace(out, **{k: getattr(out, k) + PERTURBED[k] * n for k, n in noise.items()})
    criterion = GLIPCriterion.from_config(config, model.box_coder)
    with torch.no_grad():
        ours = criterion(out, targets, inputs.attention_mask, mlm["labels"],
                         generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    module = official_loss_module(args, model, contrastive=False)
    sizes = out.level_sizes
    b = out.logits.shape[0]
    anchors = [[_boxlist(a, e["size"]) for a in split_levels(out.anchors_xyxy[None], sizes)] for e in extra]
    common = {
        "box_cls": [x.new_zeros(b, 1, *x.shape[-2:]) for x in per_level(out.centerness[..., None], sizes)],
        "box_regression": per_level(out.box_regression, sizes),
        "centerness": per_level(out.centerness[..., None], sizes),
        "anchors": anchors,
        "captions": [e["text"] for e in extra],
        "dot_product_logits": split_levels(out.logits, sizes),
        "text_masks": inputs.attention_mask,
    }
    records = []

    def emit(loss: str, official: float, mine: float) -> None:
        rec = {
            "preset": args.preset,
            "loss": loss,
            "official": official,
            "ours": mine,
            "abs_diff": abs(official - mine),
            "rel_diff": abs(official - mine) / max(abs(official), 1e-12),
        }
        records.append(rec)
        print(json.dumps(rec), flush=True)

    captured = {}
    real_prepare = module.prepare_targets

    def recording_prepare(*a, **k):
        captured["result"] = real_prepare(*a, **k)
        return captured["result"]

    module.prepare_targets = recording_prepare
    off_targets, off_map = official_targets(targets, extra, dummy=False)
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        off = module(targets=off_targets, positive_map=off_map, **common)
    labels, _, token_labels = captured["result"][:3]
    matched = criterion.assign(out, targets)
    same_pos = all(torch.equal(lab > 0, m >= 0) for lab, m in zip(labels, matched, strict=True))
    same_tok = torch.equal(torch.stack(token_labels), criterion.token_targets(matched, targets, out.logits.shape[-1]))
    check = {
        "preset": args.preset,
        "check": "assignment",
        "positives_identical": same_pos,
        "token_targets_identical": bool(same_tok),
        "num_positives": int(ours["num_positives"]),
        "official_contrastive_would_drop_gt0_anchors": int(sum((m == 0).sum() for m in matched)),
    }
    print(json.dumps(check))
    emit("loss_token", float(off[5]), float(ours["loss_token"]))
    emit("loss_box", float(off[1]), float(ours["loss_box"]))
    emit("loss_centerness", float(off[2]), float(ours["loss_centerness"]))

    off_targets, off_map = official_targets(targets, extra, dummy=True)
    gen = torch.Generator().manual_seed(args.seed)
    feats = [f.flatten(2).transpose(1, 2) for f in out.fpn_features]
    sample = lambda pop, k: random_subset(torch.as_tensor(pop, dtype=torch.long), k, gen).tolist()  # noqa: E731
    module = official_loss_module(args, model, contrastive=True)
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr), patched_random(sample=sample):
        off2 = module(targets=off_targets, positive_map=off_map, proj_tokens=out.text_embedding,
                      shallow_img_emb_feats=feats, **common)  # fmt: skip
    emit("loss_contrastive", float(off2[6]), float(ours["loss_contrastive"]))
    emit("loss_token_with_dummy_gt", float(off2[5]), float(ours["loss_token"]))

    flat_logits = out.mlm_logits.reshape(-1, out.mlm_logits.shape[-1])
    off_mlm = torch.nn.CrossEntropyLoss(ignore_index=-100)(flat_logits, mlm["labels"].reshape(-1))
    emit("loss_mlm", float(off_mlm), float(ours["loss_mlm"]))
    print(json.dumps({"preset": args.preset, "check": "mlm_masking",
                      **{k: v for k, v in mlm.items() if k not in ("labels", "masked_ids")}}))  # fmt: skip
    records.append({"check": "flags", "ok": same_pos and bool(same_tok) and mlm["masked_ids_identical"]
                    and mlm["labels_identical"]})  # fmt: skip
    return records


def _boxlist(anchors, size):
    from maskrcnn_benchmark.structures.bounding_box import BoxList

    return BoxList(anchors[0], size, mode="xyxy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="official microsoft/GLIP checkout")
    parser.add_argument("--preset", default="glip_t", help="our model preset (glip_t, tiny, ...)")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES), help="COCO128 train2017 file names")
    parser.add_argument("--negatives", type=int, default=3, help="negative class names per prompt")
    parser.add_argument("--max-positives", type=int, default=100, help="contrastive positives per image")
    parser.add_argument("--perturb", type=float, default=0.0, help="add this much Gaussian noise to the outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    args.reference = args.reference.resolve()
    logging.basicConfig(level=logging.WARNING)
    for category in (FutureWarning, SyntaxWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    from glip.modeling.language import minilm_path

    official_shim.install(args.reference, minilm_path())
    print(json.dumps({"command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}))
    records = compare(args)
    losses = [r for r in records if "abs_diff" in r]
    flags = all(r["ok"] for r in records if r.get("check") == "flags")
    worst = max(r["abs_diff"] for r in losses)
    passed = worst <= args.tolerance and flags
    print(json.dumps({"preset": args.preset, "summary": True, "worst_abs_diff": worst, "checks_ok": flags,
                      "passed": passed}))  # fmt: skip
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

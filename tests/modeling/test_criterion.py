"""GLIPCriterion: end to end on the tiny model, empty images, token targets, normalisation, two ranks."""

import dataclasses
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glip.config import GLIPConfig
from glip.modeling.criterion import GLIPCriterion
from glip.modeling.glip import GLIPModel, GLIPOutput
from glip.modeling.losses import centerness_targets, giou_loss, token_sigmoid_focal_loss
from glip.structures import GroundingTarget
from glip.text.mlm import mask_tokens

T = 16
CONFIG = GLIPConfig.tiny().replace(**{"loss.contrastive": True, "loss.mlm": True, "text.max_query_len": T})


def _target(boxes, token_lists, labels, token_labels, kind="detection"):
    pmap = torch.zeros(len(boxes), T)
    for row, toks in enumerate(token_lists):
        pmap[row, toks] = 1.0
    tl = torch.full((T,), -1, dtype=torch.long)
    for toks, lab in token_labels:
        tl[toks] = lab
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return GroundingTarget(boxes_t, pmap, torch.tensor(labels, dtype=torch.long), tl, kind, (64, 96))


def _targets():
    person = ([1], 1)
    return [
        # "person. dog" with a person and a dog
        _target([[10, 8, 50, 60], [40, 20, 90, 62]], [[1], [3]], [1, 18], [person, ([3], 18)]),
        # "cat. person" with one cat
        _target([[5, 5, 30, 40]], [[1]], [17], [([1], 17), ([3], 1)]),
    ]


def _inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, 64, 96, generator=g)
    ids = torch.randint(1000, 2000, (batch, T), generator=g)
    mask = torch.zeros(batch, T, dtype=torch.long)
    mask[:, :6] = 1
    return pixels, ids, mask


def _model(seed=0):
    torch.manual_seed(seed)
    return GLIPModel(CONFIG)


def test_end_to_end_on_the_tiny_model_reaches_every_parameter():
    model = _model().train()
    pixels, ids, mask = _inputs()
    masked, labels = mask_tokens(ids, mask, CONFIG.text.vocab_size, 103, (), 0.5, torch.Generator().manual_seed(0))
    out = model(pixels, masked, mask)
    criterion = GLIPCriterion.from_config(CONFIG, model.box_coder)
    losses = criterion(out, _targets(), mask, labels)
    names = {"loss_token", "loss_box", "loss_centerness", "loss_contrastive", "loss_mlm"}
    assert names <= set(losses)
    for name in names:
        assert torch.isfinite(losses[name]) and losses[name].item() > 0, name
    assert losses["num_positives"].item() > 3
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert model.contrastive_image.weight.grad.abs().sum() > 0
    assert model.mlm_head.decoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("which", ["all", "one"])
def test_images_without_boxes_give_finite_losses_and_zero_box_losses(which):
    model = _model().train()
    pixels, ids, mask = _inputs()
    out = model(pixels, ids, mask)
    empty = _target([], [], [], [])
    targets = [empty, empty] if which == "all" else [empty, _targets()[1]]
    criterion = GLIPCriterion.from_config(CONFIG.replace(**{"loss.mlm": False}), model.box_coder)
    losses = criterion(out, targets, mask)
    for name, value in losses.items():
        assert torch.isfinite(value), name
    if which == "all":
        assert losses["loss_box"].item() == 0.0 and losses["loss_centerness"].item() == 0.0
        assert losses["loss_contrastive"].item() == 0.0 and losses["num_positives"].item() == 0
        assert losses["num_positives_avg"].item() == 1.0  # clamped like the official max(num_pos, 1)
    else:
        assert losses["loss_box"].item() > 0
    assert losses["loss_token"].item() > 0
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    # every loss stays connected to its head even without positives (DDP needs no unused parameters)
    for module in (model.head.bbox_pred, model.head.centerness, model.contrastive_image, model.contrastive_text):
        assert module.weight.grad is not None


def test_token_targets_and_the_vestigial_no_object_slot():
    matched = torch.tensor([[0, -1, 1, -1]])
    target = _target([[0, 0, 9, 9], [0, 0, 9, 9]], [[1, 2], [4]], [1, 2], [])
    crit = GLIPCriterion(no_object_token=T - 1)
    out = crit.token_targets(matched, [target], T)
    assert out[0, 0].nonzero().flatten().tolist() == [1, 2]
    assert out[0, 2].nonzero().flatten().tolist() == [4]
    assert out[0, 1].nonzero().flatten().tolist() == [T - 1]  # unmatched: only the last slot
    assert GLIPCriterion(no_object_token=None).token_targets(matched, [target], T)[0, 1].sum() == 0
    # a slot outside the token axis is ignored (e.g. prompts padded to the longest, not to 256)
    assert GLIPCriterion(no_object_token=255).token_targets(matched, [target], T)[0, 1].sum() == 0


def test_losses_follow_the_official_normalisation():
    model = _model().eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(pixels, ids, mask)
    targets = _targets()
    crit = GLIPCriterion(model.box_coder, box_weight=2.0, token_weight=0.5, no_object_token=T - 1)
    losses = crit(out, targets, mask)
    matched = crit.assign(out, targets)
    pos = matched >= 0
    num_pos = pos.sum().item()
    assert losses["num_positives"].item() == num_pos
    focal = token_sigmoid_focal_loss(out.logits, crit.token_targets(matched, targets, T), mask, 0.25, 2.0)
    assert losses["loss_token"].item() == pytest.approx(0.5 * focal.item() / num_pos, rel=1e-5)
    img, anc = pos.nonzero(as_tuple=True)
    gts = torch.cat([t.boxes_xyxy[matched[i, pos[i]]] for i, t in enumerate(targets)])
    ctr = centerness_targets(out.anchors_xyxy[anc], gts)
    pred = model.box_coder.decode(out.box_regression[img, anc], out.anchors_xyxy[anc])
    assert losses["loss_box"].item() == pytest.approx(2 * giou_loss(pred, gts, ctr).item() / ctr.sum().item(), rel=1e-5)


def test_from_config_reads_weights_and_missing_inputs_raise():
    cfg = CONFIG.replace(**{"loss.box_weight": 3.0, "loss.contrastive_weight": 0.1})
    crit = GLIPCriterion.from_config(cfg)
    assert crit.weight_dict["loss_box"] == 3.0 and crit.weight_dict["loss_contrastive"] == 0.1
    assert crit.no_object_token == T - 1 and crit.topk == cfg.loss.atss_topk
    model = _model().eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(pixels, ids, mask)
    with pytest.raises(ValueError, match="mlm_labels"):
        crit(out, _targets(), mask, None)
    with pytest.raises(ValueError, match="text_mask"):
        crit(out, _targets(), mask[:, :4])


def test_half_precision_outputs_give_float32_losses():
    model = _model().eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(pixels, ids, mask)
    crit = GLIPCriterion.from_config(CONFIG.replace(**{"loss.mlm": False}), model.box_coder)
    full = crit(out, _targets(), mask, generator=torch.Generator().manual_seed(0))
    half = dataclasses.replace(
        out,
        logits=out.logits.bfloat16(),
        box_regression=out.box_regression.bfloat16(),
        centerness=out.centerness.bfloat16(),
        region_embeddings=out.region_embeddings.bfloat16(),
        token_embeddings=out.token_embeddings.bfloat16(),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = crit(half, _targets(), mask, generator=torch.Generator().manual_seed(0))
    for name in ("loss_token", "loss_box", "loss_centerness", "loss_contrastive"):
        assert low[name].dtype == torch.float32
        assert low[name].item() == pytest.approx(full[name].item(), rel=0.05), name


# ----------------------------------------------------------------------------- two ranks (gloo)
def _slice(out: GLIPOutput, i: int) -> GLIPOutput:
    def pick(x):
        return None if x is None else x[i : i + 1]

    return dataclasses.replace(
        out,
        logits=pick(out.logits),
        box_regression=pick(out.box_regression),
        centerness=pick(out.centerness),
        text_embedding=pick(out.text_embedding),
        region_embeddings=pick(out.region_embeddings),
        token_embeddings=pick(out.token_embeddings),
        mlm_logits=pick(out.mlm_logits),
    )


def _same_box_targets():
    # Same boxes in both images (so both have the same number of positives and no negatives are
    # sampled), different prompts: image 1's prompt names "person" at another position.
    boxes, labels = [[10, 8, 50, 60], [40, 20, 90, 62]], [1, 18]
    return [
        _target(boxes, [[1], [3]], labels, [([1], 1), ([3], 18)]),
        _target(boxes, [[2], [4]], labels, [([2], 18), ([4], 1)]),
    ]


def _losses_of(rank: int | None):
    model = _model().eval()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(pixels, ids, mask)
    crit = GLIPCriterion.from_config(CONFIG.replace(**{"loss.mlm": False}), model.box_coder)
    targets = _same_box_targets()
    if rank is None:
        return crit(out, targets, mask)
    return crit(_slice(out, rank), targets[rank : rank + 1], mask[rank : rank + 1])


def _worker(rank: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        losses = _losses_of(rank)
        torch.save({k: v.detach() for k, v in losses.items()}, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_average_to_the_single_process_losses(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _losses_of(None)
    assert ranks[0]["num_positives_avg"].item() == single["num_positives"].item() / 2
    for name in ("loss_token", "loss_box", "loss_centerness", "loss_contrastive"):
        mean = (ranks[0][name] + ranks[1][name]).item() / 2  # DDP averages the ranks' gradients
        assert mean == pytest.approx(single[name].item(), rel=1e-5), name
        assert math.isfinite(mean)

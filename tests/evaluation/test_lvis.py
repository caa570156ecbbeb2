"""LVIS Fixed-AP evaluation: federated semantics by hand, top-k, agreement with the ``lvis`` package."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from glip.errors import DataError
from glip.evaluation.lvis import (
    LvisGroundTruth,
    LvisMetrics,
    LvisResultCollector,
    evaluate_lvis,
    fixed_ap_topk,
    load_lvis_ground_truth,
    xyxy_to_lvis_xywh,
)

APPLE, BANANA, CHERRY, DATE = 1, 2, 3, 4  # frequencies r, c, f, f
SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR", "ARs", "ARm", "ARl")


def _img(img_id: int, neg: list[int], not_exhaustive: list[int]) -> dict[str, Any]:
    return {
        "id": img_id,
        "width": 200,
        "height": 200,
        "neg_category_ids": neg,
        "not_exhaustive_category_ids": not_exhaustive,
    }


def _ann(ann_id: int, img_id: int, cat: int, bbox: list[float]) -> dict[str, Any]:
    return {"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3]}


def _det(img_id: int, cat: int, bbox: list[float], score: float) -> dict[str, Any]:
    return {"image_id": img_id, "category_id": cat, "bbox": list(bbox), "score": score}


@pytest.fixture
def gt() -> dict[str, Any]:
    """4 images, 4 categories (r, c, f, f); small, medium and large boxes; negative and not-exhaustive ids."""
    names = ["apple", "banana", "cherry", "date"]
    return {
        "images": [
            _img(1, neg=[BANANA], not_exhaustive=[CHERRY]),
            _img(2, neg=[APPLE, DATE], not_exhaustive=[]),
            _img(3, neg=[CHERRY], not_exhaustive=[DATE]),
            _img(4, neg=[BANANA], not_exhaustive=[CHERRY]),  # CHERRY: not exhaustive but not annotated
        ],
        "categories": [
            {"id": i + 1, "name": n, "synonyms": [n], "frequency": f}
            for i, (n, f) in enumerate(zip(names, "rcff", strict=True))
        ],
        "annotations": [
            _ann(1, 1, APPLE, [10, 10, 20, 20]),  # small
            _ann(2, 1, CHERRY, [50, 50, 120, 120]),  # large
            _ann(3, 2, BANANA, [20, 20, 50, 50]),  # medium
            _ann(4, 2, CHERRY, [100, 100, 50, 50]),  # medium
            _ann(5, 3, DATE, [10, 10, 40, 40]),  # medium
            _ann(6, 3, APPLE, [100, 100, 60, 60]),  # medium
        ],
    }


def _perfect(gt: dict[str, Any]) -> list[dict[str, Any]]:
    return [_det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt["annotations"]]


# ---------------------------------------------------------------------------------------------
# The lvis package as oracle (its eval uses np.float, removed in NumPy 1.24).


def _official_topk(results: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """``LvisEvaluatorFixedAP._summarize_fixed``: per category, sorted by score (reverse), first k."""
    by_cat: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_cat[r["category_id"]].append(r)
    out: list[dict[str, Any]] = []
    for anns in by_cat.values():
        out.extend(sorted(anns, key=lambda x: x["score"], reverse=True)[:k])
    return out


def _lvis_oracle(
    gt: dict[str, Any], results: list[dict[str, Any]], tmp_path: Path, fixed_ap: bool, k: int, max_dets: int = 300
) -> tuple[dict[str, float], dict[int, float]]:
    pytest.importorskip("lvis")
    from lvis import LVIS, LVISEval, LVISResults

    path = tmp_path / "oracle_gt.json"
    path.write_text(json.dumps(gt))
    lvis_gt = LVIS(str(path))
    res = copy.deepcopy(results)
    with warnings.catch_warnings():  # lvis calls the deprecated Logger.warn
        warnings.simplefilter("ignore", DeprecationWarning)
        lvis_dt = (
            LVISResults(lvis_gt, _official_topk(res, k), max_dets=-1)
            if fixed_ap
            else LVISResults(lvis_gt, res, max_dets)
        )
    ev = LVISEval(lvis_gt, lvis_dt, iou_type="bbox")
    if fixed_ap:
        ev.params.max_dets = -1  # as LvisEvaluatorFixedAP
    with contextlib.redirect_stdout(io.StringIO()):
        ev.run()
    suffix = f"@{ev.params.max_dets}"
    stats = {k_: float(ev.results[k_ + suffix if k_.startswith("AR") else k_]) for k_ in SUMMARY}
    per_cat = {}
    for idx, cat in enumerate(ev.params.cat_ids):
        p = ev.eval["precision"][:, :, idx, 0]
        if (p > -1).any():
            per_cat[cat] = float(p[p > -1].mean())
    return stats, per_cat


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(np, "float", float, raising=False)
    return lambda gt, res, **kw: _lvis_oracle(gt, res, tmp_path, **kw)


def _random_case(seed: int, num_images: int = 50, num_cats: int = 8) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random LVIS set: jittered true positives, random false positives, tied scores, zero-area boxes."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}", "synonyms": [], "frequency": "rcf"[c % 3]} for c in range(1, num_cats + 1)]
    images, anns, dets = [], [], []
    for i in range(num_images):
        img_id, size = 7 + 3 * i, float(rng.integers(200, 700))
        pos = rng.choice(np.arange(1, num_cats + 1), size=int(rng.integers(0, 4)), replace=False).tolist()
        rest = [c for c in range(1, num_cats + 1) if c not in pos]
        neg = rng.choice(rest, size=int(rng.integers(0, 3)), replace=False).tolist()
        nel = [c for c in pos if rng.random() < 0.3] + ([int(rng.choice(rest))] if rng.random() < 0.2 else [])
        images.append(_img(img_id, neg=sorted(neg), not_exhaustive=sorted(set(nel))))
        for c in pos:
            for _ in range(int(rng.integers(1, 4))):
                s = float(np.exp(rng.uniform(np.log(8), np.log(300))))
                w, h, x, y = s * rng.uniform(0.5, 1.5), s * rng.uniform(0.5, 1.5), *rng.uniform(0, size, 2)
                anns.append({**_ann(len(anns) + 1, img_id, c, [x, y, w, h]), "area": w * h * rng.uniform(0.4, 1)})
                for _ in range(3):
                    j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                    dets.append(_det(img_id, c, [x + j[0], y + j[1], max(w + j[2], 0), h + abs(j[3])], rng.random()))
        for _ in range(6):
            s = float(np.exp(rng.uniform(np.log(4), np.log(400))))
            box = [*rng.uniform(0, size, 2), s * rng.uniform(0.5, 2), s * rng.uniform(0.5, 2)]
            dets.append(_det(img_id, int(rng.integers(1, num_cats + 1)), box, rng.random()))
    for n, d in enumerate(dets):
        d["score"] = round(float(d["score"]), 1) if rng.random() < 0.2 else float(d["score"])  # ties
        if n % 37 == 0:
            d["bbox"][2] = 0.0  # degenerate box: the lvis package drops it
    anns[0]["area"] = 0.0  # likewise for ground truth
    return {"images": images, "categories": cats, "annotations": anns}, dets


# ---------------------------------------------------------------------------------------------


def test_perfect_detections_give_ap_one(gt):
    m = evaluate_lvis(gt, _perfect(gt))
    assert isinstance(m, LvisMetrics)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR"):
        assert getattr(m, name) == pytest.approx(1.0), name
    assert m.per_category_ap == pytest.approx({APPLE: 1.0, BANANA: 1.0, CHERRY: 1.0, DATE: 1.0})
    assert m.num_detections == m.num_input_detections == 6
    d = m.to_dict()
    assert d["AP"] == pytest.approx(1.0) and d["fixed_ap"] is True and set(d["per_category_ap"]) == {1, 2, 3, 4}
    json.dumps(d)


def test_no_detections_give_ap_zero(gt):
    m = evaluate_lvis(gt, [])
    assert m.AP == 0.0 and m.APr == 0.0 and m.num_detections == 0


def test_undefined_groups_are_minus_one(gt):
    gt["categories"][0]["frequency"] = "c"  # no rare category left
    assert evaluate_lvis(gt, _perfect(gt)).APr == -1.0


CHERRY_A = _det(1, CHERRY, [50, 50, 120, 120], 0.9)  # true positive
CHERRY_B = _det(1, CHERRY, [0, 150, 30, 30], 0.8)  # unmatched, CHERRY not exhaustive in image 1: ignored
CHERRY_C = _det(3, CHERRY, [0, 0, 30, 30], 0.7)  # CHERRY negative in image 3: false positive
CHERRY_D = _det(4, CHERRY, [0, 0, 30, 30], 0.95)  # image 4: not exhaustive, no GT, not negative: dropped
CHERRY_E = _det(2, CHERRY, [100, 100, 50, 50], 0.6)  # true positive


def test_federated_semantics_hand_computed(gt, oracle):
    """Evaluated order: A (TP), B (ignored), C (FP), E (TP); D is dropped.

    cumulative TP = [1, 1, 1, 2], FP = [0, 0, 1, 1] over 2 GT: recall [.5, .5, .5, 1], precision
    [1, 1, .5, 2/3] -> interpolated [1, 1, 2/3, 2/3]. Recall points 0.00..0.50 (51) take 1, the 50
    above take 2/3; the boxes are exact, so every IoU threshold agrees: AP = (51 + 50 * 2/3) / 101.
    """
    dets = [CHERRY_A, CHERRY_B, CHERRY_C, CHERRY_D, CHERRY_E]
    dets.append(_det(3, BANANA, [0, 0, 60, 60], 0.99))  # BANANA neither annotated nor negative in 3: dropped
    dets.append(_det(2, BANANA, [20, 20, 50, 50], 0.5))
    m = evaluate_lvis(gt, dets)
    assert m.per_category_ap[CHERRY] == pytest.approx(253 / 303, abs=1e-12)
    assert m.per_category_ap[BANANA] == pytest.approx(1.0)
    assert m.per_category_ap[APPLE] == 0.0 and m.per_category_ap[DATE] == 0.0
    stats, per_cat = oracle(gt, dets, fixed_ap=True, k=10_000)
    assert per_cat == pytest.approx(m.per_category_ap, abs=1e-12)
    assert stats == pytest.approx({k: getattr(m, k) for k in SUMMARY}, abs=1e-12)


def test_not_exhaustive_and_negative_change_the_answer(gt):
    """Controls for the case above: each federated rule matters."""
    dets = [CHERRY_A, CHERRY_B, CHERRY_C, CHERRY_D, CHERRY_E]
    exhaustive = copy.deepcopy(gt)
    exhaustive["images"][0]["not_exhaustive_category_ids"] = []  # B becomes a false positive
    # TP, FP, FP, TP: precision [1, .5, 1/3, .5] -> [1, .5, .5, .5]; AP = (51 + 50 * .5) / 101
    assert evaluate_lvis(exhaustive, dets).per_category_ap[CHERRY] == pytest.approx(76 / 101, abs=1e-12)
    negative = copy.deepcopy(gt)
    negative["images"][3]["neg_category_ids"].append(CHERRY)  # D (highest score) becomes a false positive
    negative["images"][3]["not_exhaustive_category_ids"] = []
    # FP, TP, (B ignored), FP, TP: interpolated precision is 0.5 at every recall point
    assert evaluate_lvis(negative, dets).per_category_ap[CHERRY] == pytest.approx(0.5, abs=1e-12)


def test_zero_area_detection_is_dropped(gt):
    dets = [*_perfect(gt), _det(2, APPLE, [5, 5, 0, 10], 0.99)]  # APPLE is negative in image 2
    assert pytest.approx(1.0) == evaluate_lvis(gt, dets).AP


def test_fixed_ap_topk_stable_ties_and_no_image_cap():
    r = [_det(1, 1, [0, 0, 1, 1], s) for s in (0.5, 0.7, 0.5, 0.2)] + [_det(2, 2, [0, 0, 1, 1], 0.1)]
    kept = fixed_ap_topk(r, k=2)
    assert kept == [r[0], r[1], r[4]]  # the first of the tied 0.5 scores wins; input order kept
    assert all(a is b for a, b in zip(kept, [r[0], r[1], r[4]], strict=True))
    same_image = [_det(1, 1, [0, 0, 1, 1], 0.1 * i) for i in range(500)]
    assert len(fixed_ap_topk(same_image, k=400)) == 400  # no 300-per-image cap
    with pytest.raises(ValueError):
        fixed_ap_topk(r, k=0)


def test_topk_cuts_across_images_before_federated_filtering(gt, oracle):
    """APPLE: D4 (0.95, dropped later: APPLE not verified in image 4), N2 (0.9, FP: negative in 2),
    T1 (0.5, TP), T3 (0.4, TP). The top-k counts D4 although the evaluation drops it."""
    dets = [
        _det(1, APPLE, [10, 10, 20, 20], 0.5),
        _det(4, APPLE, [0, 0, 40, 40], 0.95),
        _det(3, APPLE, [100, 100, 60, 60], 0.4),
        _det(2, APPLE, [0, 0, 40, 40], 0.9),
    ]
    expected = {
        2: 0.0,  # D4, N2: no true positive
        3: (51 * 0.5) / 101,  # FP, TP: precision .5 up to recall .5, nothing beyond
        4: 2 / 3,  # FP, TP, TP: interpolated precision 2/3 everywhere
    }
    for k, ap in expected.items():
        m = evaluate_lvis(gt, dets, topk_per_category=k)
        assert m.per_category_ap[APPLE] == pytest.approx(ap, abs=1e-12), k
        assert m.num_detections == k and m.num_input_detections == 4
        stats, per_cat = oracle(gt, dets, fixed_ap=True, k=k)
        assert per_cat[APPLE] == pytest.approx(ap, abs=1e-12)
        assert stats["AP"] == pytest.approx(m.AP, abs=1e-12)


def test_collector_streams_the_same_topk(gt):
    """Batch-by-batch collection (pruned often) keeps exactly what fixed_ap_topk keeps on the whole list."""
    gen = torch.Generator().manual_seed(0)
    collector, flat = LvisResultCollector(k=7), []
    collector._prune_at = 10  # prune after nearly every image
    for img_id in [1, 2, 3, 4] * 3:
        xy = torch.rand(6, 2, generator=gen) * 100
        boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=gen) * 80 + 1], dim=1)  # float32, as the model's
        scores = (torch.rand(6, generator=gen) * 4).round() / 4  # many ties
        labels = torch.randint(1, 5, (6,), generator=gen)
        collector.update(img_id, boxes, scores, labels)
        xywh = xyxy_to_lvis_xywh(boxes).tolist()  # the official export: float32 arithmetic, then .tolist()
        flat += [_det(img_id, c, b, s) for b, s, c in zip(xywh, scores.tolist(), labels.tolist(), strict=True)]
    assert collector.num_seen == len(flat) == 72
    assert collector.results() == fixed_ap_topk(flat, k=7)
    streamed, direct = evaluate_lvis(gt, collector.results()), evaluate_lvis(gt, flat, topk_per_category=7)
    assert streamed.num_input_detections == 28 and direct.num_input_detections == 72
    assert replace(streamed, num_input_detections=72) == direct


def test_standard_protocol_caps_per_image(gt):
    dets = [_det(1, APPLE, [150, 150, 10, 10], 0.99 - 0.01 * i) for i in range(3)] + _perfect(gt)
    assert evaluate_lvis(gt, dets).per_category_ap[APPLE] < 1.0  # Fixed AP: the 3 FPs count
    m = evaluate_lvis(gt, dets, fixed_ap=False, max_dets_per_image=2)  # image 1 keeps only 2 FPs
    assert m.num_detections == 2 + 2 + 2
    # CHERRY: the hit in image 1 was cut, image 2's is kept: precision 1 up to recall .5, then nothing
    assert m.per_category_ap[CHERRY] == pytest.approx(51 / 101, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("fixed_ap", "k"), [(True, 10_000), (True, 25), (False, 10_000)])
def test_agrees_with_lvis_package(seed, fixed_ap, k, oracle):
    gt, dets = _random_case(seed)
    m = evaluate_lvis(gt, copy.deepcopy(dets), fixed_ap=fixed_ap, topk_per_category=k, max_dets_per_image=6)
    stats, per_cat = oracle(gt, dets, fixed_ap=fixed_ap, k=k, max_dets=6)
    for name in SUMMARY:
        assert getattr(m, name) == pytest.approx(stats[name], abs=1e-6), name
    assert m.per_category_ap.keys() == per_cat.keys()
    assert m.per_category_ap == pytest.approx(per_cat, abs=1e-6)
    assert 0.05 < m.AP < 0.6  # a non-trivial case


def test_paths_and_wrapped_ground_truth(gt, tmp_path):
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(_perfect(gt)))
    loaded = load_lvis_ground_truth(gt_path)
    assert isinstance(loaded, LvisGroundTruth) and loaded.source == str(gt_path)
    assert loaded.image_ids == [1, 2, 3, 4] and loaded.frequency == {1: "r", 2: "c", 3: "f", 4: "f"}
    assert pytest.approx(1.0) == evaluate_lvis(loaded, res_path).AP
    assert pytest.approx(1.0) == evaluate_lvis(str(gt_path), _perfect(gt)).AP


def test_xyxy_to_lvis_xywh_has_no_plus_one():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(xyxy_to_lvis_xywh(boxes), torch.tensor([[10.0, 20.0, 20.0, 40.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(boxes[0], torch.tensor([10.0, 20.0, 30.0, 60.0]))  # input untouched
    arr = np.array([[1.5, 2.0, 4.0, 3.0]])
    np.testing.assert_array_equal(xyxy_to_lvis_xywh(arr), [[1.5, 2.0, 2.5, 1.0]])
    with pytest.raises(ValueError):
        xyxy_to_lvis_xywh(torch.zeros(4))


def _break(key: str, index: int, field: str, value: Any):
    def edit(gt: dict[str, Any]) -> None:
        if value is _DELETE:
            del gt[key][index][field]
        else:
            gt[key][index][field] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_break("images", 1, "neg_category_ids", _DELETE), "images[1] (id 2)"),
        (_break("images", 0, "not_exhaustive_category_ids", [99]), "not_exhaustive_category_ids"),
        (_break("images", 2, "id", 1), "repeats id 1"),
        (_break("categories", 2, "frequency", "x"), "categories[2] (id 3)"),
        (_break("categories", 0, "synonyms", "apple"), "synonyms"),
        (_break("annotations", 3, "image_id", 42), "annotations[3] (id 4)"),
        (_break("annotations", 0, "category_id", 9), "category_id 9"),
        (_break("annotations", 1, "bbox", [1, 2, 3]), "'bbox'"),
        (_break("annotations", 1, "bbox", [1, 2, -3, 4]), "'bbox'"),
        (_break("annotations", 2, "area", None), "'area'"),
        (_break("annotations", 2, "iscrowd", 1), "crowd"),
        (lambda gt: gt.pop("categories"), "'categories'"),
    ],
)
def test_malformed_ground_truth_raises_data_error(gt, tmp_path, edit, expected):
    edit(gt)
    path = tmp_path / "broken_lvis.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"broken_lvis\.json") as info:
        load_lvis_ground_truth(path)
    assert expected in str(info.value)
    with pytest.raises(DataError):
        evaluate_lvis(gt, [])


def test_unreadable_files_raise_data_error(gt, tmp_path):
    with pytest.raises(DataError, match=r"missing\.json"):
        load_lvis_ground_truth(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        load_lvis_ground_truth(tmp_path / "bad.json")
    (tmp_path / "res.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match=r"res\.json"):
        evaluate_lvis(gt, tmp_path / "res.json")


@pytest.mark.parametrize(
    "bad",
    [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")},
        {"image_id": 1.0, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
        {"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},
        [1, 1, 0, 0, 1, 1, 0.5],
    ],
)
def test_malformed_results_raise_data_error(gt, bad):
    results = [*_perfect(gt), bad]
    with pytest.raises(DataError, match=r"results\[6\]"):
        evaluate_lvis(gt, results)

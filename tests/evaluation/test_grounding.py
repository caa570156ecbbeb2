"""Phrase-grounding evaluation: MDETR annotation loading, Recall@k / upper bound, ANY vs MERGED box."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from glip.errors import ConfigError, DataError
from glip.evaluation.grounding import (
    GroundingMetrics,
    PhraseGrounding,
    evaluate_grounding,
    evaluate_grounding_model,
    flickr_box_iou,
    merge_boxes,
    predict_grounding,
)
from glip.evaluation.grounding_data import (
    SKIPPED_EMPTY_BOX,
    load_grounding_annotations,
    parse_flickr_sentence,
    parse_grounding_annotations,
)

CAPTION = "A man in a red hat walks two dogs"
MAN, HAT, DOGS = (0, 5), (9, 18), (25, 33)  # "A man", "a red hat", "two dogs"

GT_MAN = [10, 10, 40, 90]  # xywh → xyxy (10, 10, 50, 100)
GT_HAT = [20, 0, 20, 10]  # (20, 0, 40, 10)
GT_DOG1 = [100, 50, 20, 20]  # (100, 50, 120, 70)
GT_DOG2 = [140, 50, 20, 20]  # (140, 50, 160, 70)
MISS = [300.0, 300.0, 310.0, 310.0]


def mdetr_json(**entry_extra) -> dict:
    """One Flickr-style entry: three phrases, the last with two boxes (the MDETR layout)."""
    image = {
        "id": 7,
        "file_name": "img.jpg",
        "height": "200",
        "width": "300",
        "caption": CAPTION,
        "dataset_name": "flickr",
        "tokens_negative": [[0, len(CAPTION)]],
        "sentence_id": 0,
        "original_img_id": 1234,
        "tokens_positive_eval": [[list(MAN)], [list(HAT)], [list(DOGS)]],
        **entry_extra,
    }
    anns = [
        {"id": 1, "image_id": 7, "bbox": GT_MAN, "tokens_positive": [list(MAN)], "category_id": 1, "iscrowd": 0},
        {"id": 2, "image_id": 7, "bbox": GT_HAT, "tokens_positive": [list(HAT)], "category_id": 1, "iscrowd": 0},
        {"id": 3, "image_id": 7, "bbox": GT_DOG1, "tokens_positive": [list(DOGS)], "category_id": 1, "iscrowd": 0},
        {"id": 4, "image_id": 7, "bbox": GT_DOG2, "tokens_positive": [list(DOGS)], "category_id": 1, "iscrowd": 0},
    ]
    return {"images": [image], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def ranked(hit_box: list[float], rank: int | None, n: int = 12) -> torch.Tensor:
    """``n`` ranked boxes that all miss, except ``hit_box`` at 1-based ``rank`` (None: never)."""
    boxes = [MISS] * n
    if rank is not None:
        boxes = boxes.copy()
        boxes[rank - 1] = hit_box
    return torch.tensor(boxes, dtype=torch.float64)


# ----------------------------------------------------------------------------- loading
def test_loader_reads_phrases_boxes_and_metadata(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(mdetr_json()))
    ds = load_grounding_annotations(path)
    assert len(ds) == 1 and ds.num_phrases == 3
    entry = ds[0]
    assert (entry.id, entry.file_name, entry.original_img_id, entry.sentence_id) == (7, "img.jpg", 1234, 0)
    assert [p.text for p in entry.phrases] == ["A man", "a red hat", "two dogs"]
    assert entry.phrases[0].boxes_xyxy.tolist() == [[10, 10, 50, 100]]  # x2 = x + w: the Flickr XML box
    assert entry.phrases[2].boxes_xyxy.tolist() == [[100, 50, 120, 70], [140, 50, 160, 70]]
    prompt = entry.prompt()
    assert prompt.text == CAPTION and prompt.label_ids == (0, 1, 2)
    assert prompt.entity_texts() == [["A man"], ["a red hat"], ["two dogs"]]


def test_box_listing_spans_of_two_phrases_grounds_both():
    # MDETR writes into tokens_positive the spans of every phrase of the box's entity
    # ("a man ... he"): the box is ground truth of both phrases, as the official entity-id match.
    caption = "a man says he is tired"
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "caption": caption, "tokens_positive_eval": [[[0, 5]], [[11, 13]]]}],
        "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "tokens_positive": [[0, 5], [11, 13]]}],
    }
    phrases = parse_grounding_annotations(data)[0].phrases
    assert [p.boxes_xyxy.shape[0] for p in phrases] == [1, 1]


def test_mixed_file_without_tokens_positive_eval_and_phrase_ids_fallback():
    caption = "a cat on a mat"
    mixed = {
        "images": [{"id": 3, "file_name": "m.jpg", "caption": caption}],
        "annotations": [
            {"image_id": 3, "bbox": [0, 0, 5, 5], "tokens_positive": [[11, 14]]},
            {"image_id": 3, "bbox": [1, 1, 5, 5], "tokens_positive": [[0, 5]]},
            {"image_id": 3, "bbox": [2, 2, 5, 5], "tokens_positive": [[0, 5]]},
        ],
    }
    phrases = parse_grounding_annotations(mixed)[0].phrases
    assert [(p.text, p.boxes_xyxy.shape[0]) for p in phrases] == [("a cat", 2), ("mat", 1)]
    by_ids = {
        "images": [{"id": 3, "file_name": "m.jpg", "caption": caption, "tokens_positive_eval": [[[0, 5]], [[11, 14]]]}],
        "annotations": [
            {"image_id": 3, "bbox": [0, 0, 5, 5], "phrase_ids": 41},
            {"image_id": 3, "bbox": [1, 1, 5, 5], "phrase_ids": 40},
        ],
    }
    phrases = parse_grounding_annotations(by_ids)[0].phrases
    assert [p.boxes_xyxy[:, 0].tolist() for p in phrases] == [[1.0], [0.0]]  # rank of the id = phrase index


def _broken(edit) -> dict:
    data = mdetr_json()
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("annotations"), "no 'annotations' list"),
        (lambda d: d["images"][0].pop("caption"), "images[0].caption: missing"),
        (lambda d: d["annotations"][1].pop("bbox"), "annotations[1].bbox: missing"),
        (lambda d: d["images"][0].update(tokens_positive_eval=[[[0, 5]], [[30, 40]]]), "inside the caption"),
        (lambda d: d["images"][0].update(tokens_positive_eval=[[[5, 5]]]), "[5, 5]"),
        (
            lambda d: d["annotations"][0].update(tokens_positive=[[0, 99]]),
            "annotations[0].tokens_positive[0]: expected [start, end]",
        ),
        (lambda d: d["annotations"][2].update(image_id=99), "annotations[2].image_id: unknown image id 99"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox: expected [x, y, width, height]"),
        (lambda d: d["images"].append(dict(d["images"][0])), "images[1].id: duplicate id 7"),
        (lambda d: [a.pop("tokens_positive") for a in d["annotations"]], "neither 'tokens_positive' nor 'phrase_ids'"),
        (lambda d: d["images"][0].update(phrase_types=["people"]), "one entry per phrase"),
    ],
)
def test_loader_rejects_malformed_records_naming_file_and_record(tmp_path, edit, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(edit)))
    with pytest.raises(DataError) as err:
        load_grounding_annotations(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_loader_errors_for_missing_file_and_invalid_json(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_grounding_annotations(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_grounding_annotations(tmp_path / "x.json")


def test_degenerate_boxes_are_skipped_counted_and_logged(tmp_path, caplog):
    data = mdetr_json()
    data["annotations"][3]["bbox"] = [140, 50, 0, 20]  # zero width
    data["annotations"][0]["bbox"] = [10, 10, 40, -1]  # negative height
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        ds = load_grounding_annotations(path)
    assert ds.issues[SKIPPED_EMPTY_BOX] == 2
    assert [p.boxes_xyxy.shape[0] for p in ds[0].phrases] == [0, 1, 1]
    assert "skipped 2 annotation(s)" in caplog.text


# ----------------------------------------------------------------------------- metrics
def test_box_iou_has_no_plus_one_and_merge_encloses():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert flickr_box_iou(a, b).item() == pytest.approx(50 / 150)
    merged = merge_boxes(torch.tensor([[0.0, 5.0, 10.0, 10.0], [20.0, 0.0, 30.0, 8.0]]))
    assert merged.tolist() == [[0.0, 0.0, 30.0, 10.0]]


def _dataset():
    return parse_grounding_annotations(mdetr_json(phrase_types=["people", ["clothing", "other"], "animals"]))


def test_recall_at_k_and_upper_bound_for_hits_at_rank_1_3_7_never():
    ds = _dataset()
    man, hat, dog1 = [10, 10, 50, 100], [20, 0, 40, 10], [100, 50, 120, 70]
    preds = {7: [ranked(man, 1), ranked(hat, 3), ranked(dog1, 7)]}
    m = evaluate_grounding(preds, ds)
    assert m.recall == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3), 10: pytest.approx(3 / 3)}
    assert m.upper_bound == 1.0
    assert (m.num_phrases, m.num_entries, m.num_phrases_without_boxes) == (3, 1, 0)

    preds = {7: [ranked(man, 1), ranked(hat, 3), ranked(dog1, None)]}  # the dogs are never found
    m = evaluate_grounding(preds, ds)
    assert m.recall == {1: pytest.approx(1 / 3), 5: pytest.approx(2 / 3), 10: pytest.approx(2 / 3)}
    assert m.upper_bound == pytest.approx(2 / 3)
    assert m.recall_by_type["people"] == {1: 1.0, 5: 1.0, 10: 1.0}
    assert m.recall_by_type["clothing"] == m.recall_by_type["other"] == {1: 0.0, 5: 1.0, 10: 1.0}
    assert m.upper_bound_by_type == {"animals": 0.0, "clothing": 1.0, "other": 1.0, "people": 1.0}
    d = m.to_dict()
    assert d["Recall@1_all"] == pytest.approx(1 / 3) and d["Upper_bound_animals"] == 0.0
    assert d["num_phrases"] == 3 and d["num_phrases_clothing"] == 1
    assert "R@1" in m.summary()


def test_hit_beyond_10_counts_only_in_upper_bound_and_empty_list_is_a_miss():
    ds = _dataset()
    preds = {7: [ranked([10, 10, 50, 100], 12), PhraseGrounding(torch.zeros(0, 4), torch.zeros(0)), []]}
    m = evaluate_grounding(preds, ds, ks=(1, 10))
    assert m.recall == {1: 0.0, 10: 0.0}
    assert m.upper_bound == pytest.approx(1 / 3)


def test_any_box_and_merged_box_disagree_on_a_two_box_phrase():
    ds = _dataset()
    one_dog = [100.0, 50.0, 120.0, 70.0]  # IoU 1 with the first dog, 400/1200 with their enclosing box
    both_dogs = [100.0, 50.0, 160.0, 70.0]  # the enclosing box: IoU 1 merged, 1/3 with either dog
    for box, any_hit, merged_hit in [(one_dog, 1.0, 0.0), (both_dogs, 0.0, 1.0)]:
        preds = {7: [[], [], [box]]}
        any_m = evaluate_grounding(preds, ds, protocol="any")
        merged_m = evaluate_grounding(preds, ds, protocol="merged")
        assert any_m.recall_by_type["animals"][1] == any_hit
        assert merged_m.recall_by_type["animals"][1] == merged_hit
    assert evaluate_grounding({7: [[], [], [one_dog]]}, ds, protocol="separate").protocol == "any"


def test_iou_exactly_at_the_threshold_is_a_hit():
    ds = _dataset()
    gt = torch.tensor([[10.0, 10.0, 50.0, 100.0]])
    exact = [10.0, 10.0, 50.0, 55.0]  # half the GT: IoU exactly 0.5 in binary floating point
    assert flickr_box_iou(torch.tensor([exact]), gt).item() == 0.5
    below = [10.0, 10.0, 50.0, 54.9]
    assert evaluate_grounding({7: [[exact], [], []]}, ds).recall[1] == pytest.approx(1 / 3)
    assert evaluate_grounding({7: [[below], [], []]}, ds).recall[1] == 0.0
    assert evaluate_grounding({7: [[below], [], []]}, ds, iou=0.45).recall[1] == pytest.approx(1 / 3)


def test_phrases_without_boxes_are_skipped_and_bad_predictions_rejected():
    data = mdetr_json()
    data["annotations"] = data["annotations"][1:]  # "A man" loses its box
    ds = parse_grounding_annotations(data)
    m = evaluate_grounding({7: [[], [[20, 0, 40, 10]], []]}, ds)
    assert (m.num_phrases, m.num_phrases_without_boxes, m.recall[1]) == (2, 1, 0.5)
    with pytest.raises(DataError, match="no predictions for 1 entries"):
        evaluate_grounding({}, ds)
    with pytest.raises(DataError, match="predictions for 2 phrases, expected 3"):
        evaluate_grounding({7: [[], []]}, ds)
    with pytest.raises(DataError, match="not in the dataset"):
        evaluate_grounding({7: [[], [], []], 8: []}, ds)
    with pytest.raises(ConfigError, match="unknown grounding protocol"):
        evaluate_grounding({7: [[], [], []]}, ds, protocol="union")
    with pytest.raises(ConfigError, match="positive"):
        evaluate_grounding({7: [[], [], []]}, ds, ks=(0,))


# ----------------------------------------------------------------------------- Flickr sentence files
def test_flickr_sentence_types_are_attached(tmp_path):
    line = "[/EN#1/people A man] in [/EN#2/clothing/other a red hat] walks [/EN#3/animals two dogs]"
    sentence, phrases = parse_flickr_sentence(line)
    assert sentence == CAPTION
    assert [(p.span, p.entity_id, p.phrase_type) for p in phrases] == [
        (MAN, "1", ("people",)),
        (HAT, "2", ("clothing", "other")),
        (DOGS, "3", ("animals",)),
    ]
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Sentences" / "1234.txt").write_text(line + "\n")
    (tmp_path / "ann.json").write_text(json.dumps(mdetr_json()))
    ds = load_grounding_annotations(tmp_path / "ann.json", sentences_dir=tmp_path / "Sentences")
    assert [p.phrase_type for p in ds[0].phrases] == [("people",), ("clothing", "other"), ("animals",)]
    (tmp_path / "Sentences" / "1234.txt").write_text("[/EN#1/people A woman] sleeps\n")
    with pytest.raises(DataError, match="differs from the sentence file"):
        load_grounding_annotations(tmp_path / "ann.json", sentences_dir=tmp_path / "Sentences")


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_predictor():
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel
    from glip.predictor import GLIPPredictor

    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny()).eval()
    with torch.no_grad():
        model.head.bias0.fill_(3.0)  # every location becomes a candidate
    return GLIPPredictor(model, device="cpu")


def test_predict_and_evaluate_end_to_end_on_a_real_image(tmp_path, sample_image: Path, tiny_predictor):
    caption = "two raccoons sitting on a road"
    data = {
        "images": [
            {
                "id": 0,
                "file_name": sample_image.name,
                "caption": caption,
                "tokens_positive_eval": [[[0, 12]], [[24, 30]]],
            },
            {"id": 1, "file_name": sample_image.name, "caption": caption, "tokens_positive_eval": [[[0, 12]]]},
            {"id": 2, "file_name": sample_image.name, "caption": caption, "tokens_positive_eval": []},
        ],
        "annotations": [
            {"id": 1, "image_id": 0, "bbox": [30, 40, 120, 150], "tokens_positive": [[0, 12]]},
            {"id": 2, "image_id": 0, "bbox": [160, 60, 80, 120], "tokens_positive": [[0, 12]]},
            {"id": 3, "image_id": 0, "bbox": [0, 200, 300, 60], "tokens_positive": [[24, 30]]},
            {"id": 4, "image_id": 1, "bbox": [30, 40, 120, 150], "tokens_positive": [[0, 12]]},
        ],
    }
    ann = tmp_path / "final_flickr_separateGT_test.json"
    ann.write_text(json.dumps(data))
    ds = load_grounding_annotations(ann)
    preds = predict_grounding(tiny_predictor, ds, sample_image.parent, progress=False)
    assert set(preds) == {0, 1}  # the entry without phrases is skipped
    assert [len(preds[0]), len(preds[1])] == [2, 1]
    total = 0
    for per_phrase in preds.values():
        for pg in per_phrase:
            assert pg.boxes_xyxy.ndim == 2 and pg.boxes_xyxy.shape[1] == 4
            assert pg.scores.shape == (len(pg),)
            assert pg.scores.tolist() == sorted(pg.scores.tolist(), reverse=True)
            total += len(pg)
    assert 0 < total <= 2 * tiny_predictor.max_detections

    for protocol in ("any", "merged"):
        m = evaluate_grounding_model(tiny_predictor, ann, sample_image.parent, protocol=protocol, progress=False)
        assert isinstance(m, GroundingMetrics)
        assert (m.num_phrases, m.num_entries) == (3, 2)
        assert all(0.0 <= m.recall[k] <= m.recall[k2] <= m.upper_bound <= 1.0 for k, k2 in [(1, 5), (5, 10)])
        json.dumps(m.to_dict())

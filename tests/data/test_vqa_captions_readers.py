"""Readers of VQA (coco_mt, official VQA v2) and caption (COCO, coco_mt grounded) files; the held-out split."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from glip.data.captions import load_captions, load_grounded_captions
from glip.data.coco import is_held_out
from glip.data.vqa import VQARecord, held_out_split, load_vqa, load_vqa_v2, write_vqa_v2
from glip.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
ANNOTATIONS = SHARED / "coco_mt" / "annotations"
needs_data = pytest.mark.skipif(
    not (ANNOTATIONS / "vqa_train.json").is_file(), reason="shared/data/coco_mt is not present"
)


# ------------------------------------------------------------------------------------ real files
@needs_data
def test_derived_vqa_file() -> None:
    ds = load_vqa(ANNOTATIONS / "vqa_train.json")  # checks every image file too
    assert len(ds) == 1381 and ds.derived and ds.name == "coco_mt vqa_train (coco_mt derived)"
    assert Counter(r.answer_type for r in ds.records) == {"number": 548, "yes/no": 548, "other": 285}
    assert Counter(r.answers[0] for r in ds.records if r.answer_type == "yes/no") == {"yes": 274, "no": 274}
    assert Counter(r.template for r in ds.records)["largest_object"] == 166
    assert len({r.image_id for r in ds.records}) == 275
    first = ds.records[0]
    assert first.question == "How many people are there?" and first.answers == ("4",) * 10
    assert first.question[slice(*first.question_phrases[0].char_span)] == "people"
    assert first.answer_ann_ids == (7, 8, 9, 10) and first.category_id == 1
    assert first.image_path == SHARED / "coco_mt" / "images" / "train" / "000000000790.jpg"

    coco128 = load_vqa(SHARED / "coco128" / "annotations" / "vqa_train2017.json")
    assert len(coco128) == 651 and coco128.derived


@needs_data
def test_real_vqa_file() -> None:
    ds = load_vqa(ANNOTATIONS / "vqa_real_train.json")
    assert len(ds) == 170 and not ds.derived and "derived" not in ds.name
    by_source = Counter((r.source, r.image_set) for r in ds.records)
    assert by_source == {
        ("VQAv2", "coco_mt"): 85,
        ("VQAv2", "coco128"): 63,
        ("OK-VQA", "coco_mt"): 10,
        ("OK-VQA", "coco128"): 12,
    }
    assert len({(r.image_set, r.image_id) for r in ds.records}) == 109
    v2 = [r for r in ds.records if r.source == "VQAv2"]
    assert all(len(r.answers) == 10 and r.answer_ids == tuple(range(1, 11)) and r.question_type for r in v2)
    ok = [r for r in ds.records if r.source == "OK-VQA"]
    assert all(not r.answers and r.answer_scores and r.answer_type is None for r in ok)
    assert ds.records[0].image_path == SHARED / "coco128" / "images" / "train2017" / "000000000025.jpg"


@needs_data
def test_caption_files() -> None:
    captions = load_captions(ANNOTATIONS / "captions_train.json")
    assert len(captions) == 189 and sum(len(r.captions) for r in captions.records) == 945
    assert all(len(r.captions) == 5 for r in captions.records) and not captions.derived
    grounded = load_grounded_captions(ANNOTATIONS / "grounded_captions_train.json")
    assert len(grounded) == 945 and grounded.derived and "(coco_mt derived)" in grounded.name
    phrases = [p for r in grounded.records for p in r.phrases]
    assert len(phrases) == 1288 and sum(p.ambiguous for p in phrases) == 316
    assert sum(1 for r in grounded.records if r.phrases) == 815
    assert len({p.category_id for p in phrases}) == 75
    assert all(r.caption[slice(*p.char_span)] == p.text for r in grounded.records for p in r.phrases)
    # the grounded captions are the same captions as the COCO captions file
    assert sorted(r.caption for r in grounded.records) == sorted(c for r in captions.records for c in r.captions)


@needs_data
def test_held_out_split_follows_the_training_rule() -> None:
    ds = load_vqa(ANNOTATIONS / "vqa_train.json", check_files=False)
    split = held_out_split(ds.records, 5)
    assert len(split.train) + len(split.held_out) == 1381 and len(split.held_out) == 279
    assert all(r.image_id % 5 == 0 and is_held_out(r.image_id, 5) for r in split.held_out)
    assert not any(is_held_out(r.image_id, 5) for r in split.train)
    assert held_out_split(ds.records, 0).held_out == []
    captions = held_out_split(load_captions(ANNOTATIONS / "captions_train.json", check_files=False).records, 5)
    assert {r.image_id % 5 for r in captions.held_out} == {0}


# ------------------------------------------------------------------------------------ VQA v2
@needs_data
def test_vqa_v2_round_trip(tmp_path: Path) -> None:
    real = [r for r in load_vqa(ANNOTATIONS / "vqa_real_train.json", check_files=False).records if r.answers]
    qfile, afile = write_vqa_v2(real, tmp_path / "q.json", tmp_path / "a.json", data_subtype="train2014")
    back = load_vqa_v2(qfile, afile, image_root=tmp_path / "images")
    assert len(back) == 148
    for a, b in zip(real, back.records, strict=True):
        assert (a.question_id, a.image_id, a.question, a.answers) == (b.question_id, b.image_id, b.question, b.answers)
        assert (a.answer_confidences, a.answer_ids, a.multiple_choice_answer) == (
            b.answer_confidences,
            b.answer_ids,
            b.multiple_choice_answer,
        )
        assert (a.answer_type, a.question_type) == (b.answer_type, b.question_type)
    assert back.records[0].image_path == tmp_path / "images" / f"COCO_train2014_{real[0].image_id:012d}.jpg"
    with pytest.raises(DataError, match="missing under"):
        load_vqa_v2(qfile, afile, image_root=tmp_path, check_files=True)
    # derived records (string answers) get the VQA v2 defaults; the test split has no annotations
    derived = load_vqa(ANNOTATIONS / "vqa_train.json", check_files=False).records[:3]
    qfile, afile = write_vqa_v2(derived, tmp_path / "q2.json", tmp_path / "a2.json")
    annotation = json.loads(afile.read_text())["annotations"][0]
    assert annotation["answers"][9] == {"answer": "4", "answer_confidence": "yes", "answer_id": 10}
    test_split = load_vqa_v2(qfile)
    assert [r.answers for r in test_split.records] == [(), (), ()] and test_split.records[0].image_path is None
    with pytest.raises(DataError, match="cannot be written in the VQA v2 format"):
        write_vqa_v2(
            [VQARecord(1, 1, None, "q?", answer_scores={"a": 1.0})], tmp_path / "q3.json", tmp_path / "a3.json"
        )


def _v2_files(tmp_path: Path, questions: Any, annotations: Any) -> tuple[Path, Path]:
    qfile, afile = tmp_path / "questions.json", tmp_path / "annotations.json"
    qfile.write_text(json.dumps(questions))
    afile.write_text(json.dumps(annotations))
    return qfile, afile


def _v2_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    answers = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]
    questions = {"questions": [{"image_id": 9, "question": "Is it?", "question_id": 90}]}
    annotation = {"question_id": 90, "image_id": 9, "answers": answers, "multiple_choice_answer": "yes"}
    annotations = {"annotations": [{**annotation, "answer_type": "yes/no", "question_type": "is it"}]}
    return questions, annotations


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda q, a: q["questions"][0].pop("question"), r"questions\.json: questions\[0\]\.question: missing"),
        (lambda q, a: q["questions"].append(dict(q["questions"][0])), r"questions\[1\]\.question_id: duplicate id 90"),
        (
            lambda q, a: a["annotations"][0].update(question_id=91),
            r"annotations\[0\]\.question_id: unknown question id 91",
        ),
        (lambda q, a: a["annotations"][0].update(image_id=8), r"annotations\[0\]\.image_id: 8 differs"),
        (
            lambda q, a: a["annotations"][0]["answers"][3].update(answer=4),
            r"annotations\[0\]\.answers\[3\]\.answer: expected a string",
        ),
        (
            lambda q, a: a["annotations"][0]["answers"][3].pop("answer_id"),
            r"answers: answer_id is given for some answers only",
        ),
        (lambda q, a: a["annotations"][0].pop("answer_type"), r"annotations\[0\]\.answer_type: missing"),
        (lambda q, a: a.update(annotations=[]), r"1 question\(s\) have no annotation"),
        (lambda q, a: q.update(questions={}), r"questions: expected a list"),
    ],
)
def test_malformed_vqa_v2_files(tmp_path: Path, edit: Any, message: str) -> None:
    questions, annotations = _v2_pair()
    edit(questions, annotations)
    with pytest.raises(DataError, match=message) as info:
        load_vqa_v2(*_v2_files(tmp_path, questions, annotations))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ malformed coco_mt files
def _vqa_file() -> dict[str, Any]:
    return {
        "info": {"description": "DERIVED test"},
        "images": [{"id": 1, "file_name": "train/a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "person"}],
        "questions": [{"question_id": 1, "image_id": 1, "question": "How many people are there?", "answers": ["2"] * 10,
                       "answer_type": "number", "question_phrases": [{"char_span": [9, 15], "ann_ids": [1, 2]}],
                       "answer_ann_ids": [1, 2], "category_id": 1, "template": "count"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("questions"), r"questions: missing"),
        (lambda d: d["questions"][0].pop("question"), r"questions\[0\]\.question: missing"),
        (lambda d: d["questions"][0].update(image_id=2), r"questions\[0\]\.image_id: unknown image id 2"),
        (lambda d: d["questions"][0].update(answers=[]), r"questions\[0\]\.answers: missing or empty"),
        (lambda d: d["questions"][0].update(answers="2"), r"questions\[0\]\.answers: expected a list"),
        (
            lambda d: d["questions"][0].update(answer_scores={"a": 2}),
            r"answer_scores\.a: expected a score between 0 and 1",
        ),
        (
            lambda d: d["questions"][0]["question_phrases"][0].update(char_span=[9, 99]),
            r"question_phrases\[0\]\.char_span: \[9, 99\] is not",
        ),
        (lambda d: d["questions"][0].update(answer_ann_ids=[1, "x"]), r"answer_ann_ids\[1\]: expected an integer"),
        (lambda d: d["questions"][0].update(category_id=7), r"category_id: unknown category id 7"),
        (
            lambda d: d["questions"].append(copy.deepcopy(d["questions"][0])),
            r"questions\[1\]\.question_id: duplicate id 1",
        ),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\]\.file_name: missing"),
        (lambda d: d.pop("images"), r"questions\[0\]\.file_name: missing"),
    ],
)
def test_malformed_vqa_files(tmp_path: Path, edit: Any, message: str) -> None:
    data = _vqa_file()
    edit(data)
    path = tmp_path / "vqa.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as info:
        load_vqa(path, check_files=False)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_vqa_file_checks_images(tmp_path: Path) -> None:
    path = tmp_path / "annotations" / "vqa.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_vqa_file()))
    assert load_vqa(path, check_files=False).derived
    with pytest.raises(DataError, match=r"1 image\(s\) that .* are missing"):
        load_vqa(path)


def _grounded_file() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 18, "name": "dog"}],
        "grounded_captions": [{"image_id": 1, "caption_id": 1, "caption": "a dog on grass",
                               "phrases": [{"char_span": [0, 5], "text": "a dog", "category_id": 18, "ann_ids": [3],
                                            "ambiguous": False}]}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["grounded_captions"][0]["phrases"][0].update(text="a cat"), r"phrases\[0\]\.text: 'a cat' is not"),
        (
            lambda d: d["grounded_captions"][0]["phrases"][0].update(char_span=[5, 2]),
            r"phrases\[0\]\.char_span: \[5, 2\]",
        ),
        (
            lambda d: d["grounded_captions"][0]["phrases"][0].update(ambiguous="no"),
            r"phrases\[0\]\.ambiguous: expected true",
        ),
        (lambda d: d["grounded_captions"][0]["phrases"][0].pop("ann_ids"), r"phrases\[0\]\.ann_ids: missing"),
        (
            lambda d: d["grounded_captions"][0]["phrases"][0].update(category_id=1),
            r"category_id: unknown category id 1",
        ),
        (lambda d: d["grounded_captions"][0].update(caption=""), r"grounded_captions\[0\]\.caption: must not be empty"),
        (
            lambda d: d["grounded_captions"][0].update(image_id=4),
            r"grounded_captions\[0\]\.image_id: unknown image id 4",
        ),
    ],
)
def test_malformed_grounded_captions(tmp_path: Path, edit: Any, message: str) -> None:
    data = _grounded_file()
    edit(data)
    path = tmp_path / "grounded.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        load_grounded_captions(path, check_files=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"][0].update(caption=3), r"annotations\[0\]\.caption: expected a string"),
        (lambda d: d["annotations"][0].update(image_id=2), r"annotations\[0\]\.image_id: unknown image id 2"),
        (lambda d: d["annotations"][1].update(id=1), r"annotations\[1\]\.id: duplicate id 1"),
        (lambda d: d.update(annotations=[]), r"annotations: the list is empty"),
        (lambda d: d.pop("images"), r"images: missing"),
    ],
)
def test_malformed_caption_files(tmp_path: Path, edit: Any, message: str) -> None:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 5, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A dog."}, {"id": 2, "image_id": 1, "caption": "A pet."}],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    records = load_captions(path, check_files=False).records
    assert len(records) == 1 and records[0].captions == ("A dog.", "A pet.")  # image 5 has no caption
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        load_captions(path, check_files=False)

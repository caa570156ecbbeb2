"""VQA accuracy as the official vqaEval.py computes it, soft scores and the answer vocabulary.

The expected values are worked out by hand from the official rules (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py, current version).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glip.data.vqa import VQARecord, load_vqa
from glip.errors import DataError
from glip.evaluation.vqa import (
    AnswerVocabulary,
    compute_vqa_metrics,
    evaluate_vqa,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    read_vqa_results,
    record_scores,
    soft_scores,
    vqa_accuracy,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
VQA_DERIVED = SHARED / "coco_mt" / "annotations" / "vqa_train.json"
VQA_REAL = SHARED / "coco_mt" / "annotations" / "vqa_real_train.json"


# ------------------------------------------------------------------------------------ normalisation
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes!", "yes "),  # "!" touches no space: replaced by a space
        ("hello, world", "hello world"),  # ", " occurs: every comma is removed
        ("t-shirt", "t shirt"),
        ("1,000", "1000"),  # digit,digit in the text: punctuation removed, not spaced
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("5.", "5"),
        ("u.s.", "us"),
        ("dog's", "dog's"),  # the apostrophe is not in the official list
        ("(red)", " red "),
        ("." * 40 + "a", "." * 8 + "a"),  # the official sub() removes at most 32 periods (count=re.UNICODE)
    ],
)
def test_process_punctuation(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("eleven", "eleven"),  # the manual map stops at ten
        ("the dog", "dog"),
        ("An Apple a day", "apple day"),
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("Im", "im"),  # the official key "Im" never matches after lower-casing
        ("somebody'd", "somebodyd"),  # the official map's reversed entry
        ("  many   spaces ", "many spaces"),
    ],
)
def test_process_digit_article(text: str, expected: str) -> None:
    assert process_digit_article(text) == expected


def test_normalize_answer_chains_the_official_steps() -> None:
    assert normalize_answer(" The Two dogs!\n") == "2 dogs"
    assert normalize_answer("Yes.") == "yes"
    assert normalize_answer("dont") == "don't"


# ------------------------------------------------------------------------------------ accuracy
def _answers(matching: int, other: str = "no") -> list[str]:
    return ["yes"] * matching + [other] * (10 - matching)


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        (0, 0.0),
        (1, 0.3),  # 9 subsets keep the match (1/3), 1 loses it: 9/30
        (2, 0.6),  # 8 subsets x 2/3 + 2 subsets x 1/3 = 6/10
        (3, 0.9),  # 7 x 1 + 3 x 2/3 = 9/10
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_leave_one_out_accuracy_of_ten_answers(matching: int, expected: float) -> None:
    assert vqa_accuracy("yes", _answers(matching)) == pytest.approx(expected)


def test_identical_answers_are_not_normalised_as_officially() -> None:
    answers = ["2"] * 10
    assert vqa_accuracy("2", answers) == 1.0
    assert vqa_accuracy(" 2\n", answers) == 1.0  # stripped in every case
    assert vqa_accuracy("two", answers) == 0.0  # the official quirk
    assert vqa_accuracy("Two.", answers, always_normalize=True) == 1.0


def test_differing_answers_are_normalised() -> None:
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("Two.", answers) == pytest.approx(0.9)
    assert vqa_accuracy("the 3!", answers) == pytest.approx(1.0)
    # the humans' answers are normalised too: 3 of 4 match, leave-one-out mean (3 x 2/3 + 1) / 4
    assert vqa_accuracy("2", ["two", "two", "2", "3"]) == pytest.approx(0.75)


def test_fewer_than_ten_answers_use_the_same_formula() -> None:
    # leave out "a": 1 match (1/3), twice; leave out "b": 2 matches (2/3): mean 4/9
    assert vqa_accuracy("a", ["a", "a", "b"]) == pytest.approx(4 / 9)
    assert vqa_accuracy("a", ["a"]) == 0.0  # no other answer is left in the only subset


def test_ok_vqa_scores_are_used_directly() -> None:
    scores = {"bouquet": 1, "colorful flowers": 0.667, "roses": 0.667}
    assert vqa_accuracy("Roses", answer_scores=scores) == pytest.approx(0.667)
    assert vqa_accuracy("the bouquet.", answer_scores=scores) == 1.0
    assert vqa_accuracy("colorful flowers", answer_scores=scores) == pytest.approx(0.667)
    assert vqa_accuracy("tulips", answer_scores=scores) == 0.0
    with pytest.raises(ValueError, match="human answers or answer scores"):
        vqa_accuracy("x")


def test_soft_scores() -> None:
    assert soft_scores(["yes"] * 2 + ["no"] * 8) == pytest.approx({"yes": 2 / 3, "no": 1.0})
    assert soft_scores(["Two", "2", "2 ", "3"]) == pytest.approx({"2": 1.0, "3": 1 / 3})
    assert soft_scores(["Two", "2"], normalize=False) == pytest.approx({"Two": 1 / 3, "2": 1 / 3})


def _record(qid: int, image_id: int, answers: list[str], answer_type: str, template: str | None = None) -> VQARecord:
    return VQARecord(qid, image_id, None, f"q{qid}?", tuple(answers), answer_type=answer_type, template=template)


def test_metrics_overall_per_type_and_template() -> None:
    records = [
        _record(1, 5, ["yes"] * 10, "yes/no", "exists"),
        _record(2, 6, ["2"] * 10, "number", "count"),
        _record(3, 10, _answers(2, "red"), "other", "color"),
    ]
    metrics = compute_vqa_metrics(records, {1: "yes", 2: "3", 3: "yes"})
    assert metrics.accuracy == pytest.approx((1.0 + 0.0 + 0.6) / 3)
    assert metrics.per_answer_type == pytest.approx({"number": 0.0, "other": 0.6, "yes/no": 1.0})
    assert metrics.per_template == pytest.approx({"color": 0.6, "count": 0.0, "exists": 1.0})
    assert metrics.per_question == pytest.approx({1: 1.0, 2: 0.0, 3: 0.6})
    summary = metrics.summary()
    assert summary["overall"] == pytest.approx(53.33) and summary["perAnswerType"]["other"] == 60.0
    assert json.dumps(metrics.to_dict())

    report = evaluate_vqa(records, {1: "yes", 2: "3", 3: "yes"}, holdout_every=5, name="toy")
    assert report.held_out is not None and report.train is not None
    assert report.held_out.num_questions == 2  # image ids 5 and 10
    assert report.held_out.accuracy == pytest.approx(0.8)
    assert report.train.accuracy == 0.0
    assert set(report.summary()) == {"all", "train", "held_out"}

    with pytest.raises(DataError, match="question 2 has no predicted answer"):
        compute_vqa_metrics(records, {1: "yes", 3: "no"})
    with pytest.raises(DataError, match="not evaluated"):
        evaluate_vqa(records, {1: "yes", 2: "2", 3: "no", 99: "x"})


def test_read_vqa_results(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "2"}]))
    assert read_vqa_results(path) == {1: "yes", 2: "2"}
    path.write_text(json.dumps([{"question_id": 1, "answer": 3}]))
    with pytest.raises(DataError, match=r"\[0\]\.answer: expected a string"):
        read_vqa_results(path)
    path.write_text(json.dumps([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}]))
    with pytest.raises(DataError, match=r"\[1\]\.question_id: duplicate id"):
        read_vqa_results(path)


# ------------------------------------------------------------------------------------ vocabulary
def _vocab_records() -> list[VQARecord]:
    return [
        _record(1, 1, ["yes"] * 10, "yes/no"),
        _record(2, 2, ["no"] * 9 + ["yes"], "yes/no"),
        _record(3, 3, ["Two"] * 5 + ["2"] * 5, "number"),
        _record(4, 4, ["2"] * 10, "number"),
        _record(5, 5, ["red"] * 10, "other"),
        VQARecord(6, 6, None, "q?", answer_scores={"blue": 1.0, "The Red": 0.667}),
    ]


def test_vocabulary_counts_questions_in_a_deterministic_order(tmp_path: Path) -> None:
    vocab = AnswerVocabulary.build(_vocab_records())
    assert vocab.answers == ("2", "red", "yes", "blue", "no")  # count desc, then alphabetical
    assert vocab.counts == (2, 2, 2, 1, 1)
    assert AnswerVocabulary.build(reversed(_vocab_records())) == vocab
    assert AnswerVocabulary.build(_vocab_records(), min_count=2).answers == ("2", "red", "yes")
    assert AnswerVocabulary.build(_vocab_records(), max_size=2).answers == ("2", "red")
    assert vocab.index("Two") == 0 and vocab.index("purple") is None and "the red" in vocab
    assert vocab.targets(_vocab_records()[1]) == pytest.approx({4: 1.0, 2: 1 / 3})
    assert vocab.targets(_vocab_records()[5]) == pytest.approx({3: 1.0, 1: 0.667})

    path = vocab.save(tmp_path / "sub" / "answers.json")
    assert AnswerVocabulary.load(path) == vocab
    with pytest.raises(ValueError, match="min_count"):
        AnswerVocabulary.build([], min_count=0)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "must hold a JSON object"),
        ({"answers": [], "counts": []}, "format: missing"),
        ({"format": "other", "answers": [], "counts": []}, "format: expected 'glip.vqa_answer_vocabulary'"),
        ({"format": "glip.vqa_answer_vocabulary", "answers": ["a"], "counts": []}, "counts: 0 counts for 1 answers"),
        ({"format": "glip.vqa_answer_vocabulary", "answers": ["a", "a"], "counts": [1, 1]}, r"answers\[1\]: duplicate"),
        ({"format": "glip.vqa_answer_vocabulary", "answers": [3], "counts": [1]}, r"answers\[0\]: expected a string"),
        ({"format": "glip.vqa_answer_vocabulary", "answers": ["a"], "counts": [-1]}, r"counts\[0\]: must be at least"),
        ({"format": "glip.vqa_answer_vocabulary", "version": 2, "answers": [], "counts": []}, "version: unsupported"),
    ],
)
def test_malformed_vocabulary_files(tmp_path: Path, payload: object, message: str) -> None:
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=message) as info:
        AnswerVocabulary.load(path)
    assert "\n" not in str(info.value)


def test_vocabulary_file_not_json_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "answers.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        AnswerVocabulary.load(path)
    with pytest.raises(DataError, match="does not exist"):
        AnswerVocabulary.load(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------ real files
@pytest.mark.skipif(not VQA_DERIVED.is_file(), reason="shared/data/coco_mt is not present")
def test_real_files_ground_truth_answers_score_as_expected() -> None:
    derived = load_vqa(VQA_DERIVED, check_files=False)
    perfect = compute_vqa_metrics(derived.records, {r.question_id: r.answers[0] for r in derived.records})
    assert perfect.accuracy == 1.0
    assert set(perfect.per_template) == {
        "count",
        "count_absent",
        "exists",
        "not_exists",
        "largest_object",
        "leftmost_object",
    }
    assert "coco_mt derived" in derived.name

    real = load_vqa(VQA_REAL, check_files=False)
    best = {
        r.question_id: r.multiple_choice_answer if r.answers else max(r.answer_scores, key=r.answer_scores.get)
        for r in real.records
    }
    metrics = compute_vqa_metrics(real.records, best)
    ok_vqa = [r for r in real.records if not r.answers]
    assert len(ok_vqa) == 22
    assert all(metrics.per_question[r.question_id] == max(r.answer_scores.values()) for r in ok_vqa)
    # the humans' most common answer: at least one human gave it (>= 0.3), 96.96% on average
    vqa_v2 = [r for r in real.records if r.answers]
    assert len(vqa_v2) == 148 and min(metrics.per_question[r.question_id] for r in vqa_v2) >= 0.3 - 1e-9
    mc = compute_vqa_metrics(vqa_v2, best)
    assert mc.summary()["overall"] == 96.96 and mc.summary()["perAnswerType"]["yes/no"] == 100.0
    assert set(metrics.per_answer_type) == {"yes/no", "number", "other"}
    vocab = AnswerVocabulary.build(derived.records)
    assert vocab.answers[:2] == ("no", "yes") and vocab.counts[:2] == (274, 274)
    assert all(record_scores(r) for r in real.records)

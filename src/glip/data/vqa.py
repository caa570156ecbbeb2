"""Readers (and a writer) of VQA files, shared by training and evaluation, and the held-out split.

Two formats are read into the same records (:class:`VQARecord`):

* the **coco_mt** format (``shared/data/README.md``), :func:`load_vqa`::

      {"info": {...}, "images": [{id, file_name, width, height}, ...], "categories": [{id, name}, ...],
       "questions": [{"question_id", "image_id", "question", "answers": ["4", ... x10],
                      "multiple_choice_answer", "answer_type", "question_phrases": [{"char_span", "ann_ids"}],
                      "answer_ann_ids", "category_id", "template"}, ...]}

  (``vqa_train.json``, ``coco128/annotations/vqa_train2017.json``: DERIVED, templated) and its variant
  without ``images`` whose questions give ``image_set``, ``file_name`` relative to the data root that
  holds the dataset folders, ``source`` and either the 10 human ``answers`` as VQA v2 dicts
  (``{answer, answer_confidence, answer_id}``, with ``question_type``) or OK-VQA's ``answer_scores``
  (answer → soft score) (``vqa_real_train.json``: REAL VQA v2 / OK-VQA questions). ``answers`` may be
  strings or dicts in either.
* the **official VQA v2** format, :func:`load_vqa_v2` (and :func:`write_vqa_v2`): a questions file
  ``{"questions": [{image_id, question, question_id}], "data_subtype"?: "val2014"}`` and an
  annotations file ``{"annotations": [{question_id, image_id, answers: [{answer, answer_confidence,
  answer_id}], multiple_choice_answer, answer_type, question_type}]}``.

Every field is checked; a malformed file raises a one-line :class:`~glip.errors.DataError` naming the
file and the field. Files whose ``info.description`` says DERIVED are named "coco_mt derived": their
numbers are not VQA v2 numbers.

:func:`held_out_split` splits any records with an ``image_id`` by the training recipes' held-out rule
(:func:`glip.data.coco.is_held_out`: image ids that are multiples of ``every``), so that training skips
and evaluation reports the same images. In ``vqa_real_train.json`` the ids are those of each question's
``image_set`` (coco_mt or coco128), so the rule holds out the same images as training on that set.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from glip.data.coco import default_image_root, is_held_out
from glip.errors import DataError
from glip.fileio import atomic_write_text
from glip.validation import Fields, is_number, read_json

DERIVED_LABEL = "coco_mt derived"


@dataclass(frozen=True)
class QuestionPhrase:
    """A span of the question grounded to instances: ``question[start:end]`` refers to ``ann_ids``."""

    char_span: tuple[int, int]
    ann_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class VQARecord:
    """One question with its ground truth.

    Attributes:
        question_id: the record's id.
        image_id: the image's id (in ``vqa_real_train.json``: the id within ``image_set``).
        image_path: the image file (None when the reader was given no image folder).
        question: the question text.
        answers: the human answers as given (10 in VQA v2; the templated answer 10 times in the derived
            files); empty for OK-VQA records and for VQA v2 test questions.
        answer_scores: OK-VQA's answer → soft score (empty when ``answers`` are given).
        answer_type: ``"yes/no"``, ``"number"`` or ``"other"`` when given.
        template: the template that generated a derived question (``"count"``...), when given.
        question_phrases: spans of the question grounded to instance ids (derived files).
        answer_ann_ids: the instances that ground the answer (derived files).
        multiple_choice_answer, question_type, category_id, image_set, source: as the file gives them.
        answer_confidences, answer_ids: of the VQA v2 answer dicts (empty for string answers).
    """

    question_id: int | str
    image_id: int
    image_path: Path | None
    question: str
    answers: tuple[str, ...] = ()
    answer_scores: dict[str, float] = field(default_factory=dict)
    answer_type: str | None = None
    template: str | None = None
    question_phrases: tuple[QuestionPhrase, ...] = ()
    answer_ann_ids: tuple[int, ...] = ()
    multiple_choice_answer: str | None = None
    question_type: str | None = None
    category_id: int | None = None
    image_set: str | None = None
    source: str | None = None
    answer_confidences: tuple[str, ...] = ()
    answer_ids: tuple[int, ...] = ()


@dataclass
class VQADataset:
    """A validated VQA file (or VQA v2 questions + annotations pair).

    Attributes:
        annotation_file: the file read (the annotations file for VQA v2, else the questions file).
        description: the file's ``info.description`` ("" when absent).
        records: the questions, in file order.
        categories: category names by id (coco_mt files; empty otherwise).
    """

    annotation_file: Path
    description: str
    records: list[VQARecord]
    categories: dict[int, str] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        """True when ``info.description`` says the file is DERIVED (templated language)."""
        return re.search(r"\bderived\b", self.description, flags=re.IGNORECASE) is not None

    @property
    def name(self) -> str:
        """``<dataset folder> <file stem>``, + ``(coco_mt derived)`` for a DERIVED file."""
        path = self.annotation_file
        folder = path.parent.parent.name if path.parent.name == "annotations" else path.parent.name
        base = f"{folder} {path.stem}" if folder else path.stem
        return f"{base} ({DERIVED_LABEL})" if self.derived else base

    def __len__(self) -> int:
        return len(self.records)


# ------------------------------------------------------------------------------------ held-out split
class _HasImageId(Protocol):
    @property
    def image_id(self) -> int: ...


R = TypeVar("R", bound=_HasImageId)


@dataclass
class HeldOutSplit(Generic[R]):
    """Records split by the held-out rule: ``train`` (kept for training) and ``held_out``."""

    train: list[R]
    held_out: list[R]


def held_out_split(records: Iterable[R], every: int) -> HeldOutSplit[R]:
    """Split records by image id with :func:`glip.data.coco.is_held_out` (ids that are multiples of
    ``every`` are held out; 0 holds out nothing). Order is kept within each part."""
    train: list[R] = []
    held_out: list[R] = []
    for record in records:
        (held_out if is_held_out(record.image_id, every) else train).append(record)
    return HeldOutSplit(train, held_out)


# ------------------------------------------------------------------------------------ coco_mt format
def load_vqa(annotation_file: str | Path, image_root: str | Path | None = None, check_files: bool = True) -> VQADataset:
    """Read and validate a coco_mt VQA file (``vqa_train.json`` or ``vqa_real_train.json``).

    Args:
        annotation_file: the JSON file.
        image_root: the folder that ``file_name`` s are relative to. Default: ``<dataset>/images`` for a
            file with an ``images`` list; the data root holding the dataset folders (``<root>/<dataset>/
            annotations/<file>``) for a file whose questions carry ``file_name``.
        check_files: fail if an image a question refers to is missing.

    Raises:
        DataError: one line naming the file and the field.
    """
    path = Path(annotation_file)
    data = read_json(path, "VQA file", mapping=True)
    fields = Fields(path)
    fields.require(data, ("questions",), "", "VQA file")
    description = _description(fields, data)
    images: dict[int, str] | None = None
    if "images" in data:
        images = _images(fields, fields.array(data["images"], "images"))
        root = Path(image_root) if image_root is not None else default_image_root(path)
    elif image_root is not None:
        root = Path(image_root)
    else:
        root = path.parent.parent.parent if path.parent.name == "annotations" else path.parent
    categories = _categories(fields, fields.array(data.get("categories", []), "categories"))
    questions = fields.array(data["questions"], "questions")
    if not questions:
        fields.fail("questions", "the list is empty: the file has no question")
    seen: dict[Any, str] = {}
    records = [_question(fields, q, f"questions[{i}]", images, categories, root, seen) for i, q in enumerate(questions)]
    if check_files:
        _check_images(records, path, root)
    return VQADataset(path, description, records, categories)


def _description(fields: Fields, data: dict[str, Any]) -> str:
    info = data.get("info", {})
    if isinstance(info, dict) and "description" in info:
        return fields.string(info["description"], "info.description", blank=True)
    return ""


def _images(fields: Fields, records: list[Any]) -> dict[int, str]:
    images: dict[int, str] = {}
    seen: dict[Any, str] = {}
    for i, im in enumerate(records):
        where = f"images[{i}]"
        fields.require(fields.mapping(im, where), ("id", "file_name"), where, "image")
        fields.unique(fields.integer(im["id"], f"{where}.id"), seen, f"{where}.id")
        images[im["id"]] = fields.string(im["file_name"], f"{where}.file_name")
    return images


def _categories(fields: Fields, records: list[Any]) -> dict[int, str]:
    categories: dict[int, str] = {}
    seen: dict[Any, str] = {}
    for i, cat in enumerate(records):
        where = f"categories[{i}]"
        fields.require(fields.mapping(cat, where), ("id", "name"), where, "category")
        fields.unique(fields.integer(cat["id"], f"{where}.id"), seen, f"{where}.id")
        categories[cat["id"]] = fields.string(cat["name"], f"{where}.name")
    return categories


def _optional_string(fields: Fields, rec: dict[str, Any], key: str, where: str) -> str | None:
    return None if rec.get(key) is None else fields.string(rec[key], f"{where}.{key}")


def _int_list(fields: Fields, value: Any, where: str) -> tuple[int, ...]:
    return tuple(fields.integer(a, f"{where}[{j}]") for j, a in enumerate(fields.array(value, where)))


def _answers(fields: Fields, value: Any, where: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """``(answers, confidences, answer ids)`` from a list of strings or of VQA v2 answer dicts."""
    answers, confidences, ids = [], [], []
    for j, item in enumerate(fields.array(value, where)):
        at = f"{where}[{j}]"
        if isinstance(item, str):
            answers.append(fields.string(item, at, blank=True))
            continue
        fields.require(fields.mapping(item, at), ("answer",), at, "answer")
        answers.append(fields.string(item["answer"], f"{at}.answer", blank=True))
        if item.get("answer_confidence") is not None:
            confidences.append(fields.string(item["answer_confidence"], f"{at}.answer_confidence"))
        if item.get("answer_id") is not None:
            ids.append(fields.integer(item["answer_id"], f"{at}.answer_id"))
    if confidences and len(confidences) != len(answers):
        fields.fail(where, "answer_confidence is given for some answers only")
    if ids and len(ids) != len(answers):
        fields.fail(where, "answer_id is given for some answers only")
    return tuple(answers), tuple(confidences), tuple(ids)


def _scores(fields: Fields, value: Any, where: str) -> dict[str, float]:
    scores: dict[str, float] = {}
    for answer, score in fields.mapping(value, where).items():
        if not is_number(score) or not 0 <= score <= 1:
            fields.fail(f"{where}.{answer}", f"expected a score between 0 and 1, got {json.dumps(score)}")
        scores[answer] = float(score)
    return scores


def _phrases(fields: Fields, value: Any, where: str, question: str) -> tuple[QuestionPhrase, ...]:
    phrases = []
    for j, ph in enumerate(fields.array(value, where)):
        at = f"{where}[{j}]"
        fields.require(fields.mapping(ph, at), ("char_span",), at, "question phrase")
        phrases.append(
            QuestionPhrase(
                _span(fields, ph["char_span"], f"{at}.char_span", question),
                _int_list(fields, ph.get("ann_ids", []), f"{at}.ann_ids"),
            )
        )
    return tuple(phrases)


def _span(fields: Fields, value: Any, where: str, text: str) -> tuple[int, int]:
    """A ``[start, end)`` character span inside ``text``."""
    span = fields.array(value, where)
    if len(span) != 2:
        fields.fail(where, f"expected [start, end] (2 integers), got {json.dumps(span)}")
    start, end = (fields.integer(v, f"{where}[{k}]", minimum=0) for k, v in enumerate(span))
    if not start < end <= len(text):
        fields.fail(where, f"[{start}, {end}] is not a non-empty span of the {len(text)}-character text")
    return start, end


def _question(
    fields: Fields,
    q: Any,
    where: str,
    images: dict[int, str] | None,
    categories: dict[int, str],
    root: Path,
    seen: dict[Any, str],
) -> VQARecord:
    """One validated coco_mt question record."""
    keys = ("question_id", "image_id", "question") + (() if images is not None else ("file_name",))
    fields.require(fields.mapping(q, where), keys, where, "question")
    question_id = fields.ident(q["question_id"], f"{where}.question_id")
    fields.unique(question_id, seen, f"{where}.question_id")
    image_id = fields.integer(q["image_id"], f"{where}.image_id")
    if images is not None:
        if image_id not in images:
            fields.fail(f"{where}.image_id", f"unknown image id {image_id} (no record in 'images' has it)")
        file_name = images[image_id]
    else:
        file_name = fields.string(q["file_name"], f"{where}.file_name")
    question = fields.string(q["question"], f"{where}.question")
    answers, confidences, ids = _answers(fields, q.get("answers", []), f"{where}.answers")
    scores = _scores(fields, q["answer_scores"], f"{where}.answer_scores") if "answer_scores" in q else {}
    if not answers and not scores:
        fields.fail(f"{where}.answers", "missing or empty (every question needs 'answers' or 'answer_scores')")
    category_id = None
    if q.get("category_id") is not None:
        category_id = fields.integer(q["category_id"], f"{where}.category_id")
        if categories and category_id not in categories:
            fields.fail(f"{where}.category_id", f"unknown category id {category_id} (no record in 'categories' has it)")
    return VQARecord(
        question_id=question_id,
        image_id=image_id,
        image_path=root / file_name,
        question=question,
        answers=answers,
        answer_scores=scores,
        answer_type=_optional_string(fields, q, "answer_type", where),
        template=_optional_string(fields, q, "template", where),
        question_phrases=_phrases(fields, q.get("question_phrases", []), f"{where}.question_phrases", question),
        answer_ann_ids=_int_list(fields, q.get("answer_ann_ids", []), f"{where}.answer_ann_ids"),
        multiple_choice_answer=_optional_string(fields, q, "multiple_choice_answer", where),
        question_type=_optional_string(fields, q, "question_type", where),
        category_id=category_id,
        image_set=_optional_string(fields, q, "image_set", where),
        source=_optional_string(fields, q, "source", where),
        answer_confidences=confidences,
        answer_ids=ids,
    )


def _check_images(records: Iterable[Any], path: Path, root: Path) -> None:
    """Fail if a record's ``image_path`` is not a file."""
    missing = sorted({str(r.image_path) for r in records if r.image_path is not None and not r.image_path.is_file()})
    if missing:
        raise DataError(
            f"{len(missing)} image(s) that {path} refers to are missing under {root}, e.g. {missing[:3]}; "
            "pass the right images folder"
        )


# ------------------------------------------------------------------------------------ VQA v2 format
def load_vqa_v2(
    questions_file: str | Path,
    annotations_file: str | Path | None = None,
    image_root: str | Path | None = None,
    image_name_format: str | None = None,
    check_files: bool = False,
) -> VQADataset:
    """Read the official VQA v2 questions (+ annotations) files.

    Args:
        questions_file: ``{"questions": [{image_id, question, question_id}, ...]}``.
        annotations_file: ``{"annotations": [{question_id, image_id, answers, multiple_choice_answer,
            answer_type, question_type}, ...]}``; None (test split): questions without answers.
        image_root: the COCO images folder; None leaves ``image_path`` None.
        image_name_format: the image file name, formatted with ``image_id`` and ``data_subtype`` (the
            questions file's); default ``COCO_{data_subtype}_{image_id:012d}.jpg`` (the VQA v2 naming) when
            the questions file gives ``data_subtype``, else ``{image_id:012d}.jpg``.
        check_files: fail if an image file is missing (needs ``image_root``).

    Raises:
        DataError: one line naming the file and the field; every annotation must match a question
            (same ``image_id``) and, given an annotations file, every question must have one.
    """
    qpath = Path(questions_file)
    qdata = read_json(qpath, "VQA questions file", mapping=True)
    qfields = Fields(qpath)
    qfields.require(qdata, ("questions",), "", "VQA questions file")
    subtype = qfields.string(qdata["data_subtype"], "data_subtype") if qdata.get("data_subtype") else None
    fmt = image_name_format or ("COCO_{data_subtype}_{image_id:012d}.jpg" if subtype else "{image_id:012d}.jpg")
    questions: dict[Any, tuple[int, str]] = {}
    seen: dict[Any, str] = {}
    for i, q in enumerate(qfields.array(qdata["questions"], "questions")):
        where = f"questions[{i}]"
        qfields.require(qfields.mapping(q, where), ("image_id", "question", "question_id"), where, "question")
        qid = qfields.ident(q["question_id"], f"{where}.question_id")
        qfields.unique(qid, seen, f"{where}.question_id")
        questions[qid] = (
            qfields.integer(q["image_id"], f"{where}.image_id"),
            qfields.string(q["question"], f"{where}.question"),
        )
    if not questions:
        qfields.fail("questions", "the list is empty: the file has no question")
    annotations = _v2_annotations(Path(annotations_file), questions) if annotations_file is not None else {}
    root = Path(image_root) if image_root is not None else None
    records = []
    for qid, (image_id, question) in questions.items():
        path = root / fmt.format(image_id=image_id, data_subtype=subtype) if root is not None else None
        records.append(
            VQARecord(
                question_id=qid, image_id=image_id, image_path=path, question=question, **annotations.get(qid, {})
            )
        )
    if check_files and root is not None:
        _check_images(records, qpath, root)
    source = Path(annotations_file) if annotations_file is not None else qpath
    return VQADataset(source, _description(qfields, qdata), records)


def _v2_annotations(path: Path, questions: dict[Any, tuple[int, str]]) -> dict[Any, dict[str, Any]]:
    data = read_json(path, "VQA annotations file", mapping=True)
    fields = Fields(path)
    fields.require(data, ("annotations",), "", "VQA annotations file")
    out: dict[Any, dict[str, Any]] = {}
    seen: dict[Any, str] = {}
    keys = ("question_id", "image_id", "answers", "multiple_choice_answer", "answer_type", "question_type")
    for i, a in enumerate(fields.array(data["annotations"], "annotations")):
        where = f"annotations[{i}]"
        fields.require(fields.mapping(a, where), keys, where, "annotation")
        qid = fields.ident(a["question_id"], f"{where}.question_id")
        fields.unique(qid, seen, f"{where}.question_id")
        if qid not in questions:
            fields.fail(f"{where}.question_id", f"unknown question id {qid!r} (not in the questions file)")
        image_id = fields.integer(a["image_id"], f"{where}.image_id")
        if image_id != questions[qid][0]:
            fields.fail(f"{where}.image_id", f"{image_id} differs from the question's image id {questions[qid][0]}")
        answers, confidences, ids = _answers(fields, a["answers"], f"{where}.answers")
        if not answers:
            fields.fail(f"{where}.answers", "the list is empty: every annotation needs the human answers")
        out[qid] = {
            "answers": answers,
            "answer_confidences": confidences,
            "answer_ids": ids,
            "multiple_choice_answer": fields.string(
                a["multiple_choice_answer"], f"{where}.multiple_choice_answer", blank=True
            ),
            "answer_type": fields.string(a["answer_type"], f"{where}.answer_type"),
            "question_type": fields.string(a["question_type"], f"{where}.question_type"),
        }
    missing = [qid for qid in questions if qid not in out]
    if missing:
        raise DataError(f"{path}: {len(missing)} question(s) have no annotation, e.g. question ids {missing[:5]}")
    return out


def write_vqa_v2(
    records: Sequence[VQARecord],
    questions_file: str | Path,
    annotations_file: str | Path,
    data_subtype: str | None = None,
) -> tuple[Path, Path]:
    """Write records as official VQA v2 questions and annotations files (atomically), e.g. to run the
    official evaluation tools. Missing fields get the VQA v2 defaults: ``answer_confidence`` "yes",
    ``answer_id`` 1..n, ``multiple_choice_answer`` the most frequent answer, ``answer_type`` "other",
    ``question_type`` "none of the above".

    Raises:
        DataError: if a record has no human answers (OK-VQA soft scores cannot be written as VQA v2).
    """
    questions, annotations = [], []
    for r in records:
        if not r.answers:
            raise DataError(
                f"question {r.question_id!r} has no human answers: it cannot be written in the VQA v2 format"
            )
        confidences = r.answer_confidences or ("yes",) * len(r.answers)
        ids = r.answer_ids or tuple(range(1, len(r.answers) + 1))
        answers = [
            {"answer": a, "answer_confidence": c, "answer_id": i}
            for a, c, i in zip(r.answers, confidences, ids, strict=True)
        ]
        mc = (
            r.multiple_choice_answer
            if r.multiple_choice_answer is not None
            else Counter(r.answers).most_common(1)[0][0]
        )
        questions.append({"image_id": r.image_id, "question": r.question, "question_id": r.question_id})
        annotations.append(
            {
                "question_id": r.question_id,
                "image_id": r.image_id,
                "answers": answers,
                "multiple_choice_answer": mc,
                "answer_type": r.answer_type or "other",
                "question_type": r.question_type or "none of the above",
            }
        )
    qdata: dict[str, Any] = {"questions": questions}
    if data_subtype:
        qdata["data_subtype"] = data_subtype
    qpath = atomic_write_text(questions_file, json.dumps(qdata, ensure_ascii=False))
    apath = atomic_write_text(annotations_file, json.dumps({"annotations": annotations}, ensure_ascii=False))
    return qpath, apath


__all__ = [
    "DERIVED_LABEL",
    "HeldOutSplit",
    "QuestionPhrase",
    "VQADataset",
    "VQARecord",
    "held_out_split",
    "load_vqa",
    "load_vqa_v2",
    "write_vqa_v2",
]

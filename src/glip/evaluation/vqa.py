"""VQA accuracy exactly as the official VQA evaluation computes it, soft-score targets and the answer vocabulary.

**Accuracy** (:func:`vqa_accuracy`) follows ``vqaEval.py`` of the official VQA API (GT-Vision-Lab/VQA,
the current version, which EvalAI's VQA v2 server runs):

1. the predicted and the human answers are stripped (newlines and tabs become spaces);
2. **only when the human answers are not all identical**, every one of them and the prediction are
   normalised (:func:`normalize_answer`): :func:`process_punctuation` (the official ``punct`` list is
   removed where it touches a space or where the text has a ``digit,digit``, else replaced by a space;
   periods not followed by a digit are removed, at most 32 of them, as the official call passes
   ``re.UNICODE`` (= 32) as the ``count`` argument), then :func:`process_digit_article` (lower case,
   number words "none", "zero" ... "ten" → digits, articles "a", "an", "the" dropped, the official
   ``contractions`` map, e.g. "dont" → "don't"). So when all 10 humans wrote "2", the prediction
   "two" scores 0, as officially (``always_normalize=True`` normalises in every case instead);
3. accuracy = the mean over the leave-one-out subsets (leave each human answer out in turn) of
   ``min(#matches among the others / 3, 1)``; e.g. 2 of 10 humans agreeing with the prediction give
   (2 x 1/3 + 8 x 2/3) / 10 = 0.6, 3 of 10 give 0.9 and 4 or more give 1. Records with fewer answers
   use the same formula over what exists (one answer always scores 0: no other answer is left).
   Answers are left out by position (the official code compares answer dicts, which carry unique
   ``answer_id`` s, so the result is the same on official files).

Records with OK-VQA ``answer_scores`` (the raw answers are not available) score the soft score of the
normalised prediction (0 when absent); the score keys are normalised the same way.

Overall accuracy is the mean over questions; per ``answer_type``, per ``question_type`` and per
``template`` (derived files) the mean over that group's questions (the official code's averages).
:meth:`VQAMetrics.summary` gives them as the official ``VQAEval.accuracy`` dict (percent, 2 decimals).

**Training targets**: :func:`soft_scores` (answer → ``min(#humans / 3, 1)``, the VQA convention for the
BCE targets) and :class:`AnswerVocabulary` (the most frequent normalised answers of a training file).

Numbers on DERIVED files (``vqa_train.json``, ``coco128/annotations/vqa_train2017.json``) are "coco_mt
derived" numbers, never VQA v2 numbers; the 170 real questions of ``vqa_real_train.json`` are a smoke test.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glip.data.vqa import VQARecord, held_out_split
from glip.errors import DataError
from glip.fileio import atomic_write_text
from glip.validation import Fields, read_json

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ official tables
def _table(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by white space."""
    return {key: value for key, _, value in (pair.partition("=") for pair in text.split())}


#: ``contractions`` of the official ``vqaEval.py`` (apostrophes as in its current version). Keys with
#: capitals ("Im", "Ive") never match after lower-casing, and "somebody'd" → "somebodyd" is reversed:
#: both kept as they are, since they are part of the official computation.
CONTRACTIONS: dict[str, str] = _table(
    """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've couldnt've=couldn't've
    didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't
    havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's Id've=I'd've
    I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am
    mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
    neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at
    shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
    shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
    somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
    someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
    somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's thered=there'd
    thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've
    they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've
    we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's
    whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll
    whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
    wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
    y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
    youre=you're youve=you've
    """
)
#: ``manualMap``: number words → digits.
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
MANUAL_MAP |= {"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
#: ``punct``, in the official order (the order matters: each is tested against the original text).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official pattern, with its quirk: "(?!<=\d)" is a lookahead for the literal "<=" + digit, not a
# lookbehind, so every period that is not followed by a digit is removed ("5." → "5", "u.s." → "us").
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_COUNT = int(re.UNICODE)  # the official call passes re.UNICODE (32) as `count`: at most 32 periods go


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` (see the module docstring)."""
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        out = out.replace(p, "" if p + " " in text or " " + p in text or digit_comma else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower case, number words → digits, articles out, contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """An answer normalised as the official evaluation does it (strip, punctuation, digits, articles)."""
    return process_digit_article(process_punctuation(_clean(answer)))


# ------------------------------------------------------------------------------------ accuracy
def vqa_accuracy(
    prediction: str,
    answers: Sequence[str] = (),
    answer_scores: Mapping[str, float] | None = None,
    *,
    always_normalize: bool = False,
) -> float:
    """The VQA accuracy of one predicted answer, in [0, 1] (see the module docstring).

    Args:
        prediction: the predicted answer.
        answers: the human answers (10 in VQA v2).
        answer_scores: OK-VQA's answer → soft score, used when ``answers`` is empty.
        always_normalize: normalise even when all human answers are identical (not official).

    Raises:
        ValueError: if neither ``answers`` nor ``answer_scores`` is given.
    """
    if answers:
        truth = [_clean(a) for a in answers]
        pred = _clean(prediction)
        if always_normalize or len(set(truth)) > 1:
            truth = [process_digit_article(process_punctuation(a)) for a in truth]
            pred = process_digit_article(process_punctuation(pred))
        matches = sum(a == pred for a in truth)
        return sum(min(1.0, (matches - (a == pred)) / 3) for a in truth) / len(truth)
    if answer_scores:
        return normalized_scores(answer_scores).get(normalize_answer(prediction), 0.0)
    raise ValueError("a question needs human answers or answer scores to be scored")


def record_accuracy(prediction: str, record: VQARecord, *, always_normalize: bool = False) -> float:
    """:func:`vqa_accuracy` of a prediction for a :class:`~glip.data.vqa.VQARecord`."""
    return vqa_accuracy(prediction, record.answers, record.answer_scores, always_normalize=always_normalize)


def normalized_scores(answer_scores: Mapping[str, float]) -> dict[str, float]:
    """Soft scores with normalised answers (two answers that normalise alike keep the larger score)."""
    out: dict[str, float] = {}
    for answer, score in answer_scores.items():
        key = normalize_answer(answer)
        out[key] = max(out.get(key, 0.0), float(score))
    return out


def soft_scores(answers: Iterable[str], normalize: bool = True) -> dict[str, float]:
    """The BCE training targets of one question: answer → ``min(#humans who gave it / 3, 1)``.

    Args:
        answers: the human answers.
        normalize: count :func:`normalize_answer` forms (so "Two" and "2" count together).
    """
    counts = Counter(normalize_answer(a) if normalize else a for a in answers)
    return {a: min(c / 3, 1.0) for a, c in counts.items()}


def record_scores(record: VQARecord) -> dict[str, float]:
    """The normalised soft scores of a record: from its human answers, or its OK-VQA ``answer_scores``."""
    return soft_scores(record.answers) if record.answers else normalized_scores(record.answer_scores)


# ------------------------------------------------------------------------------------ vocabulary
VOCAB_FORMAT = "glip.vqa_answer_vocabulary"


@dataclass(frozen=True)
class AnswerVocabulary:
    """The answers a VQA classifier head predicts (normalised), most frequent first.

    Attributes:
        answers: the answers; the class index of ``answers[i]`` is ``i``.
        counts: for each answer, the number of training questions with a positive soft score for it.
        min_count: the least count an answer needed.
    """

    answers: tuple[str, ...]
    counts: tuple[int, ...]
    min_count: int = 1
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.counts):
            raise ValueError(f"{len(self.answers)} answers but {len(self.counts)} counts")
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.answers)})
        if len(self._index) != len(self.answers):
            raise ValueError("the answers of a vocabulary must be unique")

    @classmethod
    def build(cls, records: Iterable[VQARecord], min_count: int = 1, max_size: int | None = None) -> AnswerVocabulary:
        """The answers of training records with a count of at least ``min_count``, at most ``max_size`` of them.

        An answer's count is the number of questions for which it has a positive soft score
        (:func:`record_scores`: given by at least one human, or listed in ``answer_scores``), so that the
        derived files' 10 identical answers count once. Order: count descending, then the answer (so
        the vocabulary is the same for the same records in any order).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        counts: Counter = Counter()
        for record in records:
            counts.update(a for a, s in record_scores(record).items() if s > 0 and a)
        ranked = sorted((item for item in counts.items() if item[1] >= min_count), key=lambda kv: (-kv[1], kv[0]))
        ranked = ranked[:max_size] if max_size is not None else ranked
        return cls(tuple(a for a, _ in ranked), tuple(c for _, c in ranked), min_count)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return isinstance(answer, str) and normalize_answer(answer) in self._index

    def index(self, answer: str) -> int | None:
        """The class index of an answer (normalised first), None when it is not in the vocabulary."""
        return self._index.get(normalize_answer(answer))

    def targets(self, record: VQARecord) -> dict[int, float]:
        """``{class index: soft score}`` of a record's answers that are in the vocabulary (the BCE target)."""
        out: dict[int, float] = {}
        for answer, score in record_scores(record).items():
            i = self._index.get(answer)
            if i is not None and score > 0:
                out[i] = score
        return out

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (atomically)."""
        payload = {"format": VOCAB_FORMAT, "version": 1, "min_count": self.min_count,
                   "answers": list(self.answers), "counts": list(self.counts)}  # fmt: skip
        return atomic_write_text(path, json.dumps(payload, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            DataError: one line naming the file and the field, for a missing or malformed file.
        """
        data = read_json(path, "answer vocabulary", mapping=True)
        fields = Fields(path)
        fields.require(data, ("format", "answers", "counts"), "", "answer vocabulary")
        if data["format"] != VOCAB_FORMAT:
            fields.fail("format", f"expected {VOCAB_FORMAT!r}, got {data['format']!r}: not an answer vocabulary")
        if data.get("version", 1) != 1:
            fields.fail("version", f"unsupported version {data['version']!r} (this glip reads version 1)")
        answers = fields.array(data["answers"], "answers")
        counts = fields.array(data["counts"], "counts")
        if len(answers) != len(counts):
            fields.fail("counts", f"{len(counts)} counts for {len(answers)} answers: one count per answer")
        seen: dict[Any, str] = {}
        for i, (answer, count) in enumerate(zip(answers, counts, strict=True)):
            fields.unique(fields.string(answer, f"answers[{i}]"), seen, f"answers[{i}]")
            fields.integer(count, f"counts[{i}]", minimum=0)
        min_count = fields.integer(data.get("min_count", 1), "min_count", minimum=1)
        return cls(tuple(answers), tuple(counts), min_count)


# ------------------------------------------------------------------------------------ metrics
@dataclass
class VQAMetrics:
    """VQA accuracy of a set of questions (fractions in [0, 1]).

    Attributes:
        num_questions: how many questions were scored.
        accuracy: the mean accuracy.
        per_answer_type, per_question_type, per_template: the mean accuracy of each group (records
            without the field are left out of that breakdown).
        per_question: each question's accuracy, by question id.
    """

    num_questions: int
    accuracy: float
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question_type: dict[str, float] = field(default_factory=dict)
    per_template: dict[str, float] = field(default_factory=dict)
    per_question: dict[Any, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The official ``VQAEval.accuracy`` dict (percent, rounded to 2 decimals) + ``perTemplate``."""

        def pct(groups: dict[str, float]) -> dict[str, float]:
            return {k: round(100 * v, 2) for k, v in groups.items()}

        return {"overall": round(100 * self.accuracy, 2), "perQuestionType": pct(self.per_question_type),
                "perAnswerType": pct(self.per_answer_type), "perTemplate": pct(self.per_template)}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (question ids as strings)."""
        data = asdict(self)
        data["per_question"] = {str(k): v for k, v in self.per_question.items()}
        return data


def compute_vqa_metrics(
    records: Sequence[VQARecord], predictions: Mapping[Any, str], *, always_normalize: bool = False
) -> VQAMetrics:
    """Score one predicted answer per question.

    Args:
        records: the questions.
        predictions: question id → predicted answer, for every record.
        always_normalize: see :func:`vqa_accuracy`.

    Raises:
        DataError: if a question has no prediction or a prediction is not a string.
    """
    per_question: dict[Any, float] = {}
    groups: dict[str, defaultdict[str, list[float]]] = {k: defaultdict(list) for k in ("answer", "question", "tpl")}
    for r in records:
        if r.question_id not in predictions:
            raise DataError(f"question {r.question_id!r} has no predicted answer: predict every question")
        pred = predictions[r.question_id]
        if not isinstance(pred, str):
            raise DataError(f"the predicted answer of question {r.question_id!r} is not a string: {pred!r}")
        acc = record_accuracy(pred, r, always_normalize=always_normalize)
        per_question[r.question_id] = acc
        for key, value in (("answer", r.answer_type), ("question", r.question_type), ("tpl", r.template)):
            if value is not None:
                groups[key][value].append(acc)

    def means(g: Mapping[str, list[float]]) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in sorted(g.items())}

    n = len(per_question)
    overall = sum(per_question.values()) / n if n else 0.0
    return VQAMetrics(
        n, overall, means(groups["answer"]), means(groups["question"]), means(groups["tpl"]), per_question
    )


@dataclass
class VQAReport:
    """VQA accuracy over all questions and, with a held-out rule, over training and held-out images.

    Attributes:
        name: the data set's name ("(coco_mt derived)" included where it applies).
        holdout_every: the held-out rule (image ids that are multiples of it are held out); 0: none.
        all: the metrics over every question.
        train, held_out: the metrics over the questions of the two parts (None without a rule or when
            a part is empty).
    """

    name: str
    holdout_every: int
    all: VQAMetrics
    train: VQAMetrics | None = None
    held_out: VQAMetrics | None = None

    def summary(self) -> dict[str, Any]:
        """``{"all": {...}, "train": {...}, "held_out": {...}}`` of :meth:`VQAMetrics.summary`, with counts."""
        parts = {"all": self.all, "train": self.train, "held_out": self.held_out}
        return {k: {"questions": m.num_questions, **m.summary()} for k, m in parts.items() if m is not None}


def evaluate_vqa(
    records: Sequence[VQARecord],
    predictions: Mapping[Any, str],
    holdout_every: int = 0,
    name: str = "",
    *,
    always_normalize: bool = False,
) -> VQAReport:
    """VQA accuracy of predictions, overall and (with ``holdout_every``) train vs held-out images.

    Args:
        records: the questions (:func:`glip.data.vqa.load_vqa` / :func:`~glip.data.vqa.load_vqa_v2`).
        predictions: question id → predicted answer, for every record (extra ids are an error).
        holdout_every: the training recipe's held-out rule (:func:`glip.data.vqa.held_out_split`); 0: none.
        name: the data set's name (use :attr:`VQADataset.name`, which says "coco_mt derived").
        always_normalize: see :func:`vqa_accuracy`.

    Raises:
        DataError: for a missing prediction or a prediction of an unknown question.
    """
    ids = {r.question_id for r in records}
    extra = [k for k in predictions if k not in ids]
    if extra:
        raise DataError(f"{len(extra)} predicted answer(s) name questions that are not evaluated, e.g. {extra[:5]}")
    report = VQAReport(
        name, holdout_every, compute_vqa_metrics(records, predictions, always_normalize=always_normalize)
    )
    if holdout_every > 0:
        split = held_out_split(records, holdout_every)
        if split.train:
            report.train = compute_vqa_metrics(split.train, predictions, always_normalize=always_normalize)
        if split.held_out:
            report.held_out = compute_vqa_metrics(split.held_out, predictions, always_normalize=always_normalize)
    logger.info("VQA %s: %s", name, {k: v["overall"] for k, v in report.summary().items()})
    return report


def read_vqa_results(path: str | Path) -> dict[Any, str]:
    """Read an official VQA results file: ``[{"question_id": ..., "answer": str}, ...]``.

    Raises:
        DataError: one line naming the field, for a malformed file or a question answered twice.
    """
    data = read_json(path, "VQA results file")
    fields = Fields(path)
    out: dict[Any, str] = {}
    seen: dict[Any, str] = {}
    for i, rec in enumerate(fields.array(data, "top level")):
        where = f"[{i}]"
        fields.require(fields.mapping(rec, where), ("question_id", "answer"), where, "result")
        qid = fields.ident(rec["question_id"], f"{where}.question_id")
        fields.unique(qid, seen, f"{where}.question_id")
        out[qid] = fields.string(rec["answer"], f"{where}.answer", blank=True)
    return out


__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "MANUAL_MAP",
    "PUNCTUATION",
    "AnswerVocabulary",
    "VQAMetrics",
    "VQAReport",
    "compute_vqa_metrics",
    "evaluate_vqa",
    "normalize_answer",
    "normalized_scores",
    "process_digit_article",
    "process_punctuation",
    "read_vqa_results",
    "record_accuracy",
    "record_scores",
    "soft_scores",
    "vqa_accuracy",
]

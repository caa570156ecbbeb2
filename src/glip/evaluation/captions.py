"""Caption metrics as the COCO caption evaluation computes them: BLEU-1..4 and CIDEr-D, pure Python.

The numbers match ``pycocoevalcap`` (the Python 3 port of the COCO caption evaluation code,
``coco-caption``), which the tests use as the oracle:

* **BLEU-n** (:func:`bleu`): ``pycocoevalcap.bleu.Bleu(4)``: corpus-level BLEU (n-gram matches and
  candidate n-gram counts summed over the images; a candidate n-gram count is clipped by its largest
  count in any one reference), the brevity penalty over the summed "closest" reference lengths (per
  image, the reference length nearest the candidate's, the shorter one on a tie), and the scorer's
  smoothing constants (``1e-15`` added to matches, ``1e-9`` to counts). Per-image scores as well.
* **CIDEr-D** (:func:`cider_d`): ``pycocoevalcap.cider.Cider`` (what the COCO server reports as
  "CIDEr" is this CIDEr-D): TF-IDF vectors of 1- to 4-grams whose document frequencies come from the
  references of the evaluated set (``idf = log(#images) - log(max(1, df))``), the candidate's
  weights clipped by each reference's, cosine similarity per n averaged over n = 1..4 and over the
  references, the Gaussian length penalty ``exp(-delta² / (2 sigma²))`` with ``sigma = 6``, and x10.
  Kept quirk: ``delta`` is the difference of the two sentences' **bigram** counts (the official code
  adds up the term frequencies of the ``n == 1`` index, i.e. bigrams), which equals the difference in
  words except when a sentence has fewer than 2 words.
* **Tokenisation** (:func:`ptb_tokenize`): the official code runs Stanford CoreNLP 3.4.1's Java
  ``PTBTokenizer -preserveLines -lowerCase`` on every caption, then drops the tokens of its punctuation
  list (:data:`PTB_PUNCTUATIONS`). Ours is a Python re-implementation of the rules that matter for
  captions: lower case; ``"`` quotes, brackets (as ``-lrb-`` ... tokens, which the official list, written
  in upper case, does not remove), ``, ; : ! ? % $ # *``, runs of ``!``/``?``, ``...`` and dashes split off;
  a word's final period split off unless the word is an abbreviation (``mr.``, ``st.``, ``u.s.``, a single
  letter); clitics (``n't 's 're 've 'll 'd 'm``) and ``cannot / gonna / gotta / wanna`` split; curly quotes,
  em dashes and ``…`` normalised; then the official punctuation list removed. On the 945 real COCO
  captions of ``coco_mt`` it gives the same tokens as the Java tokenizer (a test checks this where Java
  is installed); rare constructs (HTML entities, emoticons, e-mail and web addresses with trailing
  punctuation, abbreviations that PTBLexer knows and this list does not) may tokenise differently.

METEOR and SPICE are not provided: the official ones are Java programs (METEOR 1.5 with its paraphrase
tables, SPICE with CoreNLP models), and NLTK's METEOR needs the WordNet data, which no pip package
installs (``nltk.download`` fetches it at run time) and which in any case does not reproduce METEOR 1.5
(no paraphrase module, other parameters). ROUGE-L is not part of this module either.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glip.data.captions import CaptionRecord
from glip.data.vqa import held_out_split
from glip.errors import DataError
from glip.validation import Fields, read_json

logger = logging.getLogger(__name__)

#: Tokens that ``pycocoevalcap.tokenizer.ptbtokenizer`` removes after tokenising (exactly its list).
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# ------------------------------------------------------------------------------------ tokenisation
_ABBREVIATIONS = frozenset(
    re.findall(
        r"\S+",
        """
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
    mr mrs ms mx dr drs prof profs sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl
    pvt mt capt st ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det mme mlle
    inc co cos corp pty ltd plc rt bancorp dept bhd assn univ intl sys tel est ext sq jr sr bros blvd rd esq
    etc al seq bldg pls wrt orig incl vs alex wm jos cie cf ca fig figs prop no nos art pp op
    ala ariz az ark calif colo conn ct dak del fla ga ill ind kan kans ky la mass md mich minn miss mo mont
    neb nev okla ore pa penn tenn tex va vt wash wis wisc wyo
    """,
    )
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_UNICODE = str.maketrans(
    {"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "‚": "'", "—": " -- ", "–": " -- ", "…": " ... ", "\xa0": " "}
)
_SPECIAL_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"], "wanna": ["wan", "na"]}
_SPECIAL_WORDS |= {"gimme": ["gim", "me"], "lemme": ["lem", "me"]}
# one token: a run of ! or ?, ..., a run of 2+ dashes, a quote, a bracket, or a symbol that PTB splits off
_SPLIT = re.compile(r"""([!?]+|\.\.\.+|--+|["`(){}\[\];%$#*&]|,(?!\d)|(?<!\d),|:(?!\d)|(?<!\d):)""")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_ACRONYM = re.compile(r"^([a-z]\.)+[a-z]?$|^[a-z]$")


def ptb_tokenize(text: str) -> str:
    """A caption as the COCO caption evaluation sees it: PTB tokens, lower case, punctuation removed,
    joined by single spaces (see the module docstring for how this follows the Java PTBTokenizer).

    >>> ptb_tokenize("A man's dog doesn't like (red) cars.")
    "a man 's dog does n't like -lrb- red -rrb- cars"
    """
    tokens: list[str] = []
    for chunk in text.translate(_UNICODE).lower().split():
        for piece in _SPLIT.split(chunk):
            if piece:
                tokens.extend(_word_tokens(piece))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def _word_tokens(piece: str) -> list[str]:
    """PTB tokens of one piece of a whitespace chunk (separators are already split off)."""
    if piece in _BRACKETS:
        return [_BRACKETS[piece]]
    if piece.startswith("--") or piece.startswith("...") or piece in ('"', "`"):
        return ["--" if piece.startswith("--") else "..." if piece.startswith("...") else "''"]
    tail: list[str] = []
    stripped = piece.rstrip(".")
    if stripped and stripped != piece and (len(piece) - len(stripped) > 1 or not _is_abbreviation(piece)):
        piece, tail = stripped, ["."] * (len(piece) - len(stripped))
    head: list[str] = []
    if piece.startswith("'") and len(piece) > 1 and not re.fullmatch(r"'(\d\ds|s|re|ve|ll|d|m|em|n')", piece):
        piece, head = piece[1:], ["`"]
    if piece.endswith("'") and len(piece) > 1 and not piece.endswith("n'"):
        piece, tail = piece[:-1], ["'", *tail]
    if piece.startswith("/") and len(piece) > 1:
        piece, head = piece[1:], [*head, "/"]
    if piece.endswith("/") and len(piece) > 1:
        piece, tail = piece[:-1], ["/", *tail]
    if piece in _SPECIAL_WORDS:
        return [*head, *_SPECIAL_WORDS[piece], *tail]
    match = _CLITIC.match(piece)
    if match and not piece.startswith("'"):
        stem, clitic = match.groups()
        if clitic == "n't" or stem.isalnum() or "-" in stem:
            return [*head, stem, clitic, *tail]
    return [*head, piece, *tail] if piece else [*head, *tail]


def _is_abbreviation(word: str) -> bool:
    """True for a word whose final period PTBTokenizer keeps (``mr.``, ``u.s.``, ``j.``)."""
    stem = word[:-1]
    return stem in _ABBREVIATIONS or _ACRONYM.match(stem) is not None or stem == "p.m" or stem == "a.m"


# ------------------------------------------------------------------------------------ n-grams
def _ngrams(sentence: str, n: int) -> Counter:
    """Counts of the 1- to ``n``-grams of a tokenised sentence (tuples of words)."""
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _pairs(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], tokenize: bool
) -> list[tuple[Hashable, str, list[str]]]:
    """``(key, candidate, references)`` per image, tokenised, in the references' order; checks the keys."""
    missing = [k for k in references if k not in candidates]
    extra = [k for k in candidates if k not in references]
    if missing or extra:
        raise DataError(
            f"the captions to score and the references disagree: {len(missing)} image(s) without a candidate "
            f"(e.g. {missing[:3]}), {len(extra)} candidate(s) without references (e.g. {extra[:3]})"
        )
    out = []
    for key, refs in references.items():
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise DataError(f"image {key!r} has no reference caption")
        cand = candidates[key]
        if not isinstance(cand, str):
            raise DataError(f"the candidate caption of image {key!r} is not a string: {cand!r}")
        if tokenize:
            cand, refs = ptb_tokenize(cand), [ptb_tokenize(r) for r in refs]
        out.append((key, cand, refs))
    return out


# ------------------------------------------------------------------------------------ BLEU
@dataclass
class BleuScores:
    """BLEU-1..n.

    Attributes:
        corpus: ``[BLEU-1, ..., BLEU-n]`` over the whole set (what the COCO evaluation reports).
        per_image: the same per image key (sentence-level, with the same smoothing constants).
    """

    corpus: list[float]
    per_image: dict[Hashable, list[float]] = field(default_factory=dict)


_TINY, _SMALL = 1e-15, 1e-9  # the official scorer's constants: a zero match count gives ~0, not an error


def bleu(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], n: int = 4, tokenize: bool = True
) -> BleuScores:
    """Corpus BLEU-1..``n`` with the "closest" reference length, as ``pycocoevalcap.bleu.Bleu``.

    Args:
        references: image key → its reference captions (at least one).
        candidates: image key → the one candidate caption (the same keys).
        n: the largest n-gram order.
        tokenize: run :func:`ptb_tokenize` on every caption first (False: captions are already
            tokenised; words are split on whitespace).

    Raises:
        DataError: if the keys of the two mappings differ or an image has no reference.
    """
    totals_correct, totals_guess = [0] * n, [0] * n
    test_total = ref_total = 0
    per_image: dict[Hashable, list[float]] = {}
    for key, cand, refs in _pairs(references, candidates, tokenize):
        counts = _ngrams(cand, n)
        max_ref: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for ref in refs:
            ref_lens.append(len(ref.split()))
            for gram, count in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref.get(gram, 0), count)
        test_len = len(cand.split())
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
        per_image[key] = _bleu_from_counts(correct, guess, test_len, ref_len)
        test_total, ref_total = test_total + test_len, ref_total + ref_len
        for k in range(n):
            totals_correct[k] += correct[k]
            totals_guess[k] += guess[k]
    corpus = _bleu_from_counts(totals_correct, totals_guess, test_total, ref_total)
    return BleuScores(corpus, per_image)


def _bleu_from_counts(correct: Sequence[int], guess: Sequence[int], test_len: float, ref_len: float) -> list[float]:
    """BLEU-1..n from n-gram matches and counts (the geometric mean of the first k precisions, x BP)."""
    scores, product = [], 1.0
    for k, (c, g) in enumerate(zip(correct, guess, strict=True)):
        product *= (float(c) + _TINY) / (float(g) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ------------------------------------------------------------------------------------ CIDEr-D
def cider_d(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    n: int = 4,
    sigma: float = 6.0,
    tokenize: bool = True,
) -> tuple[float, dict[Hashable, float]]:
    """CIDEr-D as ``pycocoevalcap.cider.Cider`` (see the module docstring).

    Args:
        references, candidates, tokenize: as :func:`bleu`.
        n: the largest n-gram order.
        sigma: the standard deviation of the Gaussian length penalty.

    Returns:
        ``(corpus score, {image key: score})``: the corpus score is the mean of the per-image scores.
        With one image every IDF weight is 0 (``log 1``), so every score is 0, as officially.
    """
    pairs = _pairs(references, candidates, tokenize)
    if not pairs:
        return 0.0, {}
    cooked = [(key, _ngrams(cand, n), [_ngrams(r, n) for r in refs]) for key, cand, refs in pairs]
    document_frequency: Counter = Counter()
    for _, _, refs in cooked:
        document_frequency.update({gram for ref in refs for gram in ref})
    log_images = math.log(float(len(cooked)))

    def vectorise(counts: Counter) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_images - math.log(max(1.0, document_frequency[gram])))
            vec[k][gram] = weight
            norm[k] += weight**2
            if k == 1:  # the official "length" counts bigrams (kept quirk, see the module docstring)
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    per_image: dict[Hashable, float] = {}
    for key, cand, refs in cooked:
        vec, norm, length = vectorise(cand)
        total = [0.0] * n
        for ref in refs:
            vec_ref, norm_ref, length_ref = vectorise(ref)
            penalty = math.exp(-(float(length - length_ref) ** 2) / (2 * sigma**2))
            for k in range(n):
                value = sum(min(w, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_ref[k] != 0:
                    value /= norm[k] * norm_ref[k]
                total[k] += value * penalty
        per_image[key] = sum(total) / n / len(refs) * 10.0
    return sum(per_image.values()) / len(per_image), per_image


# ------------------------------------------------------------------------------------ evaluation
@dataclass
class CaptionMetrics:
    """Caption metrics of one set of images.

    Attributes:
        num_images: how many images were scored.
        bleu: ``[BLEU-1, BLEU-2, BLEU-3, BLEU-4]`` (corpus level, in [0, 1]).
        cider_d: CIDEr-D (x10 scale: 1.0 is "100" in papers' tables, as the COCO evaluation reports it).
        per_image: ``{image key: {"BLEU-4": ..., "CIDEr-D": ...}}``.
    """

    num_images: int
    bleu: list[float]
    cider_d: float
    per_image: dict[Hashable, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """``{"BLEU-1": ..., "BLEU-4": ..., "CIDEr-D": ...}``."""
        out = {f"BLEU-{k + 1}": v for k, v in enumerate(self.bleu)}
        out["CIDEr-D"] = self.cider_d
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (per-image keys as strings)."""
        data = asdict(self)
        data["per_image"] = {str(k): v for k, v in self.per_image.items()}
        return data


def compute_caption_metrics(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], tokenize: bool = True
) -> CaptionMetrics:
    """BLEU-1..4 and CIDEr-D of ``candidates`` against ``references`` (see :func:`bleu`, :func:`cider_d`)."""
    if not references:
        return CaptionMetrics(0, [0.0] * 4, 0.0)
    bleu_scores = bleu(references, candidates, 4, tokenize)
    cider, cider_per_image = cider_d(references, candidates, tokenize=tokenize)
    per_image = {k: {"BLEU-4": bleu_scores.per_image[k][3], "CIDEr-D": cider_per_image[k]} for k in references}
    return CaptionMetrics(len(references), bleu_scores.corpus, cider, per_image)


@dataclass
class CaptionReport:
    """Caption metrics over all images and, with a held-out rule, over the training and held-out images.

    Attributes:
        name: the data set's name (with "(coco_mt derived)" where that applies).
        holdout_every: the held-out rule (image ids that are multiples of it); 0: none.
        all: the metrics over every image.
        train, held_out: the metrics over the two parts (None without a held-out rule or when a part
            is empty). CIDEr-D's document frequencies come from each part's own references.
    """

    name: str
    holdout_every: int
    all: CaptionMetrics
    train: CaptionMetrics | None = None
    held_out: CaptionMetrics | None = None

    def summary(self) -> dict[str, Any]:
        """``{"all": {...}, "train": {...}, "held_out": {...}}`` of :meth:`CaptionMetrics.summary`, with counts."""
        parts = {"all": self.all, "train": self.train, "held_out": self.held_out}
        return {k: {"images": m.num_images, **m.summary()} for k, m in parts.items() if m is not None}


def evaluate_captions(
    records: Sequence[CaptionRecord],
    predictions: Mapping[Any, str],
    holdout_every: int = 0,
    name: str = "",
    tokenize: bool = True,
) -> CaptionReport:
    """Score one predicted caption per image against the image's reference captions.

    Args:
        records: the images with their reference captions (:func:`glip.data.captions.load_captions`).
        predictions: image id → predicted caption, for every record's image.
        holdout_every: also report the images with ids that are multiples of it (held out of training
            by the same rule, :func:`glip.data.vqa.held_out_split`) apart from the others; 0: only "all".
        name: the data set's name for the report.
        tokenize: as :func:`bleu`.

    Raises:
        DataError: if an image has no prediction or a prediction names an image that is not in ``records``.
    """

    def metrics(part: Sequence[CaptionRecord]) -> CaptionMetrics:
        refs = {r.image_id: list(r.captions) for r in part}
        return compute_caption_metrics(refs, {k: predictions[k] for k in refs}, tokenize)

    _check_predictions(records, predictions)
    report = CaptionReport(name, holdout_every, metrics(records))
    if holdout_every > 0:
        split = held_out_split(records, holdout_every)
        report.train = metrics(split.train) if split.train else None
        report.held_out = metrics(split.held_out) if split.held_out else None
    logger.info("captions %s: %s", name or "", report.summary())
    return report


def _check_predictions(records: Sequence[CaptionRecord], predictions: Mapping[Any, str]) -> None:
    ids = {r.image_id for r in records}
    missing = sorted(i for i in ids if i not in predictions)
    extra = [k for k in predictions if k not in ids]
    if missing:
        raise DataError(f"{len(missing)} image(s) have no predicted caption, e.g. image ids {missing[:5]}")
    if extra:
        raise DataError(f"{len(extra)} predicted caption(s) name images that are not evaluated, e.g. {extra[:5]}")


def read_caption_results(path: str | Path) -> dict[int, str]:
    """Read a COCO caption results file: ``[{"image_id": int, "caption": str}, ...]``.

    Raises:
        DataError: one line naming the field, for a malformed file or an image id given twice.
    """
    data = read_json(path, "caption results file")
    fields = Fields(path)
    out: dict[int, str] = {}
    seen: dict[Any, str] = {}
    for i, rec in enumerate(fields.array(data, "top level")):
        where = f"[{i}]"
        fields.require(fields.mapping(rec, where), ("image_id", "caption"), where, "result")
        image_id = fields.integer(rec["image_id"], f"{where}.image_id")
        fields.unique(image_id, seen, f"{where}.image_id")
        out[image_id] = fields.string(rec["caption"], f"{where}.caption", blank=True)
    return out


def references_of(records: Iterable[CaptionRecord]) -> dict[int, list[str]]:
    """``{image id: reference captions}`` of caption records (the input of :func:`compute_caption_metrics`)."""
    return {r.image_id: list(r.captions) for r in records}


__all__ = [
    "PTB_PUNCTUATIONS",
    "BleuScores",
    "CaptionMetrics",
    "CaptionReport",
    "bleu",
    "cider_d",
    "compute_caption_metrics",
    "evaluate_captions",
    "ptb_tokenize",
    "read_caption_results",
    "references_of",
]

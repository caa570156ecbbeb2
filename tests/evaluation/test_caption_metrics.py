"""BLEU-1..4 and CIDEr-D as the COCO caption evaluation (pycocoevalcap) computes them, and its tokenisation.

Hand-computed corpora first; then ``pycocoevalcap``'s Python ``Bleu`` and ``Cider`` scorers as the
oracle (dev extra) on the real COCO captions of coco_mt, and the Java PTBTokenizer it ships, where
Java is installed.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest

from glip.data.captions import CaptionRecord, load_captions
from glip.errors import DataError
from glip.evaluation.captions import (
    PTB_PUNCTUATIONS,
    bleu,
    cider_d,
    compute_caption_metrics,
    evaluate_captions,
    ptb_tokenize,
    read_caption_results,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CAPTIONS = SHARED / "coco_mt" / "annotations" / "captions_train.json"
needs_captions = pytest.mark.skipif(not CAPTIONS.is_file(), reason="shared/data/coco_mt is not present")


# ------------------------------------------------------------------------------------ tokenisation
# expected outputs: Stanford CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase (the jar pycocoevalcap
# ships), then the official punctuation list removed
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man's dog doesn't like it, isn't it?", "a man 's dog does n't like it is n't it"),
        (
            "They're here; we've gone: I'm sure. You'll see! He'd go...",
            "they 're here we 've gone i 'm sure you 'll see he 'd go",
        ),
        ('A (red) car [blue] "quoted" text', "a -lrb- red -rrb- car -lsb- blue -rsb- quoted text"),
        ("The black-and-white cat -- sits - on a mat.", "the black-and-white cat sits on a mat"),
        (
            "U.S. troops at 3 p.m. on Jan. 5, 1,000 people paid $5.50",
            "u.s. troops at 3 p.m. on jan. 5 1,000 people paid $ 5.50",
        ),
        ("A/B test of 50% and 3*4 items", "a/b test of 50 % and 3 * 4 items"),
        ("Mr. Smith went to Washington. Then he left.", "mr. smith went to washington then he left"),
        ("“Curly quotes” and it’s here — dash … ellipsis", "curly quotes and it 's here dash ellipsis"),
        ("hello!!! what?? yes?! ok..", "hello !!! what ?? yes ?! ok"),
        ("Cannot won't can't gonna", "can not wo n't ca n't gon na"),
        ("The boys' toys and James' car.", "the boys toys and james car"),
        ("a 3.5 inch screen and 5. items, it is 5:30", "a 3.5 inch screen and 5 items it is 5:30"),
        ("A man  with\nnew line .", "a man with new line"),
    ],
)
def test_ptb_tokenize(text: str, expected: str) -> None:
    assert ptb_tokenize(text) == expected


# ------------------------------------------------------------------------------------ BLEU by hand
def test_bleu_by_hand() -> None:
    # unigrams 5/6 (the x2, cat, on, mat), bigrams 3/5, trigrams 1/4, 4-grams 0/3; same lengths
    refs = {1: ["the cat is on the mat"]}
    scores = bleu(refs, {1: "the cat sat on the mat"}, tokenize=False)
    p4 = (0 + 1e-15) / (3 + 1e-9)  # the official smoothing of a zero match count
    expected = [
        5 / 6,
        math.sqrt(5 / 6 * 3 / 5),
        (5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3),
        (5 / 6 * 3 / 5 * 1 / 4 * p4) ** 0.25,
    ]
    assert scores.corpus == pytest.approx(expected, rel=1e-8)
    assert scores.corpus[2] == pytest.approx(0.5)
    assert scores.per_image[1] == pytest.approx(expected, rel=1e-8)


def test_bleu_of_an_identical_caption_is_one() -> None:
    refs = {1: ["a man riding a wave on top of a surfboard", "someone surfing"], 2: ["two dogs play in the snow"]}
    scores = bleu(refs, {1: "A man riding a wave on top of a surfboard.", 2: "two dogs play in the snow"})
    assert scores.corpus == pytest.approx([1.0] * 4, abs=1e-8)


def test_bleu_brevity_penalty_uses_the_closest_reference_length() -> None:
    # candidate 3 words; references of 5 and 7 words: the closest is 5, BP = exp(1 - 5/3)
    scores = bleu({1: ["a b c d e", "a b c d e f g"]}, {1: "a b c"}, tokenize=False)
    assert scores.corpus[0] == pytest.approx(math.exp(1 - 5 / 3), rel=1e-8)
    # a tie (4 and 6 words around 5) takes the shorter reference: no penalty (the longer: exp(1 - 6/5))
    assert bleu({1: ["a b c d", "a b c d e g"]}, {1: "a b c d e"}, tokenize=False).corpus[0] == pytest.approx(1.0)


def test_bleu_is_corpus_level_not_a_mean_of_sentences() -> None:
    refs = {1: ["a b c d"], 2: ["e f"]}
    scores = bleu(refs, {1: "a b x y", 2: "e f"}, tokenize=False)
    assert scores.corpus[0] == pytest.approx((2 + 2) / (4 + 2))  # summed matches / summed counts
    assert scores.per_image[1][0] == pytest.approx(0.5) and scores.per_image[2][0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ CIDEr-D by hand
def test_cider_d_by_hand() -> None:
    # two images with one reference each: every n-gram has df 1, so every weight is log(2)
    refs = {"A": ["a b"], "B": ["c d"]}
    score, per_image = cider_d(refs, {"A": "a b", "B": "c d"}, tokenize=False)
    # cosine 1 for n = 1, 2; no 3-, 4-grams (0); mean over n = 0.5; x10
    assert per_image == pytest.approx({"A": 5.0, "B": 5.0}) and score == pytest.approx(5.0)

    refs = {"A": ["a b c d"], "B": ["e f"]}
    score, per_image = cider_d(refs, {"A": "a b", "B": "e f"}, tokenize=False)
    # n=1: cos = 2 / (sqrt 2 * 2) = 1/sqrt 2; n=2: 1/sqrt 3; bigram counts 1 vs 3: penalty exp(-4 / 72)
    expected_a = (1 / math.sqrt(2) + 1 / math.sqrt(3)) / 4 * math.exp(-4 / 72) * 10
    assert per_image["A"] == pytest.approx(expected_a) and score == pytest.approx((expected_a + 5.0) / 2)


def test_cider_d_clips_repeated_words_and_is_zero_for_one_image() -> None:
    refs = {"A": ["a b"], "B": ["c d"]}
    _, repeated = cider_d(refs, {"A": "a a a b", "B": "c d"}, tokenize=False)
    _, plain = cider_d(refs, {"A": "a b", "B": "c d"}, tokenize=False)
    assert repeated["A"] < plain["A"]
    assert cider_d({1: ["a b"]}, {1: "a b"}, tokenize=False) == (0.0, {1: 0.0})  # idf = log(1) = 0


def test_key_mismatch_is_an_error() -> None:
    with pytest.raises(DataError, match=r"1 image\(s\) without a candidate"):
        bleu({1: ["a"], 2: ["b"]}, {1: "a"})
    with pytest.raises(DataError, match="no reference caption"):
        cider_d({1: []}, {1: "a"})


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_captions_with_held_out_images(tmp_path: Path) -> None:
    records = [
        CaptionRecord(i, None, (f"a photo of {w} on a table", f"{w} on a table"))
        for i, w in [(1, "a cat"), (5, "a dog"), (7, "cake"), (10, "a cup")]
    ]
    predictions = {1: "a cat on a table", 5: "a dog on a table", 7: "a bird", 10: "a cup on a table"}
    report = evaluate_captions(records, predictions, holdout_every=5, name="toy")
    assert report.held_out is not None and report.held_out.num_images == 2
    assert report.train is not None and report.train.num_images == 2
    assert report.held_out.bleu[3] == pytest.approx(1.0, abs=1e-8)
    assert report.all.summary()["BLEU-4"] < 1.0 and set(report.summary()) == {"all", "train", "held_out"}
    assert json.dumps(report.all.to_dict())
    with pytest.raises(DataError, match="have no predicted caption"):
        evaluate_captions(records, {1: "x"})
    with pytest.raises(DataError, match="not evaluated"):
        evaluate_captions(records, {**predictions, 99: "x"})

    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": k, "caption": v} for k, v in predictions.items()]))
    assert read_caption_results(path) == predictions
    path.write_text(json.dumps([{"image_id": "1", "caption": "x"}]))
    with pytest.raises(DataError, match=r"\[0\]\.image_id: expected an integer"):
        read_caption_results(path)


# ------------------------------------------------------------------------------------ oracle
def _real_references() -> dict[int, list[str]]:
    return {r.image_id: list(r.captions) for r in load_captions(CAPTIONS, check_files=False).records}


@needs_captions
@pytest.mark.parametrize("perturb", ["leave_one_out", "shuffle", "truncate"])
def test_bleu_and_cider_match_pycocoevalcap(perturb: str) -> None:
    oracle_bleu_module = pytest.importorskip("pycocoevalcap.bleu.bleu")
    oracle_cider_module = pytest.importorskip("pycocoevalcap.cider.cider")
    rng = random.Random(0)
    gts, res = {}, {}
    for key, caps in _real_references().items():
        caps = [ptb_tokenize(c) for c in caps]
        words = caps[0].split()
        if perturb == "shuffle":
            rng.shuffle(words)
        elif perturb == "truncate":
            words = words[: rng.randint(1, len(words))]
        gts[key], res[key] = caps[1:], [" ".join(words)]
    oracle_bleu, oracle_bleu_images = oracle_bleu_module.Bleu(4).compute_score(gts, res, verbose=0)
    oracle_cider, oracle_cider_images = oracle_cider_module.Cider().compute_score(gts, res)
    candidates = {k: v[0] for k, v in res.items()}
    ours = bleu(gts, candidates, tokenize=False)
    cider, cider_images = cider_d(gts, candidates, tokenize=False)
    assert ours.corpus == pytest.approx(oracle_bleu, rel=1e-12, abs=1e-15)
    for n in range(4):
        assert [ours.per_image[k][n] for k in gts] == pytest.approx(oracle_bleu_images[n], rel=1e-12, abs=1e-15)
    assert cider == pytest.approx(oracle_cider, rel=1e-12)
    assert [cider_images[k] for k in gts] == pytest.approx(list(oracle_cider_images), rel=1e-12, abs=1e-12)


@needs_captions
@pytest.mark.skipif(shutil.which("java") is None, reason="the official tokenizer is a Java program (no java here)")
def test_ptb_tokenize_matches_the_java_tokenizer_on_real_captions() -> None:
    tokenizer_module = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    refs = _real_references()
    official = tokenizer_module.PTBTokenizer().tokenize({k: [{"caption": c} for c in caps] for k, caps in refs.items()})
    ours = {k: [ptb_tokenize(c) for c in caps] for k, caps in refs.items()}
    assert sum(len(v) for v in ours.values()) == 945
    assert ours == official
    assert "-LRB-" in PTB_PUNCTUATIONS  # upper case in the official list: lower-cased brackets stay


@needs_captions
def test_compute_caption_metrics_on_real_captions() -> None:
    refs = _real_references()
    metrics = compute_caption_metrics({k: v[1:] for k, v in refs.items()}, {k: v[0] for k, v in refs.items()})
    assert metrics.num_images == 189
    assert 0.5 < metrics.bleu[0] < 0.8 and 0.1 < metrics.bleu[3] < 0.3 and 0.5 < metrics.cider_d < 1.5

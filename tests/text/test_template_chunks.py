"""Templated class prompts ("a photo of a {}", ODinW caption prompts) are chunked like plain class lists."""

from __future__ import annotations

import json

import pytest
from test_text_chunking import lvis_like_names

from glip.cli import main
from glip.errors import PromptError
from glip.text import chunk_vocabulary, count_tokens, detection_prompt, tokenize_prompt
from glip.text.positive_map import MAX_QUERY_LEN

TEMPLATE = ("a photo of a ", "")


def _captions(names: list[str], prefix: str = TEMPLATE[0], suffix: str = TEMPLATE[1]) -> list[dict[str, str]]:
    return [{"prefix": prefix, "name": n, "suffix": suffix} for n in names]


def test_a_template_on_1203_names_gives_prompts_that_fit_and_cover_every_class(tokenizer) -> None:
    names = lvis_like_names()
    chunks = chunk_vocabulary(tokenizer, names, caption_prompts=_captions(names))
    assert len(chunks) > 20
    assert [i for c in chunks for i in c.label_ids] == list(range(len(names)))
    for chunk in chunks:
        assert count_tokens(tokenizer, chunk.text) <= MAX_QUERY_LEN
        assert chunk.text.startswith("a photo of a ")
        # every span is exactly the class name, after its own "a photo of a "
        for (start, end), label in zip((s[0] for s in chunk.spans), chunk.labels, strict=True):
            assert chunk.text[start:end] == label
            assert chunk.text[start - len(TEMPLATE[0]) : start] == TEMPLATE[0]
        tokenize_prompt(tokenizer, chunk)  # every span maps to tokens


def test_a_templated_prompt_that_fits_is_the_official_single_prompt(tokenizer) -> None:
    names = ["raccoon", "traffic light", "hair drier"]
    captions = _captions(names, "there is a ", " in the photo")
    (only,) = chunk_vocabulary(tokenizer, names, caption_prompts=captions, label_ids=[4, 5, 6])
    assert only == detection_prompt(names, caption_prompts=captions, label_ids=[4, 5, 6])


def test_chunks_keep_each_class_s_own_caption_prompt(tokenizer) -> None:
    names = [f"class{i}" for i in range(60)]
    captions = [{"prefix": f"p{i} ", "name": n, "suffix": f" s{i}"} for i, n in enumerate(names)]
    chunks = chunk_vocabulary(tokenizer, names, caption_prompts=captions, max_classes_per_chunk=7)
    assert len(chunks) == 9
    for chunk in chunks:
        for (start, end), label_id in zip((s[0] for s in chunk.spans), chunk.label_ids, strict=True):
            assert chunk.text[start - len(f"p{label_id} ") : end + len(f" s{label_id}")] == (
                f"p{label_id} class{label_id} s{label_id}"
            )


def test_one_templated_class_too_long_alone_is_a_one_line_error(tokenizer) -> None:
    with pytest.raises(PromptError, match=r"alone needs \d+ tokens") as err:
        chunk_vocabulary(tokenizer, ["cat", "dog"], caption_prompts=_captions(["cat", "dog"], "word " * 300))
    assert "\n" not in str(err.value)


def test_wrong_number_of_caption_prompts_is_an_error(tokenizer) -> None:
    with pytest.raises(PromptError, match=r"one \{'prefix', 'name', 'suffix'\} entry per class"):
        chunk_vocabulary(tokenizer, ["cat", "dog"], caption_prompts=_captions(["cat"]))


def test_glip_eval_with_a_template_on_the_80_coco_names(tiny_model_dir, sample_image, tmp_path, capsys) -> None:
    """The README's example: a template on 80 names is 514 tokens, now evaluated in chunks."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from vocab import COCO_CLASSES

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(sample_image.read_bytes())
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(COCO_CLASSES)]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 384, "height": 288}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [70, 30, 115, 190], "iscrowd": 0}],
        "categories": cats,
    }
    ann = tmp_path / "coco80.json"
    ann.write_text(json.dumps(data))
    code = main([
        "eval", "--dataset", str(ann), "--images", str(tmp_path / "images"), "--model", str(tiny_model_dir),
        "--prompt-template", "a photo of a {}", "--out-dir", str(tmp_path / "out"), "-q", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(next((tmp_path / "out").glob("*_report.json")).read_text())
    assert report["prompt"].startswith("a photo of a [person]")

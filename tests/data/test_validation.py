"""Malformed annotation files end in a one-line DataError/ConfigError that names the file and the field.

Hand-made bad files in ``tmp_path`` for every reader of users' data: COCO detection, MDETR grounding
(training and evaluation), image-text pseudo labels, LVIS, prompt-override YAML, YOLO class names,
VOC XML, and the shared JSON/YAML reading (decoding, syntax, nesting, top-level kind).
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from glip.cli import main
from glip.data.coco import CocoDataset
from glip.data.grounding import ImageTextDataset, MdetrGroundingDataset
from glip.data.importers import load_yolo_names, voc_to_coco
from glip.errors import ConfigError, DataError, GLIPError
from glip.evaluation.grounding_data import load_grounding_annotations
from glip.evaluation.lvis import load_lvis_ground_truth
from glip.evaluation.prompts import dataset_prompt, load_prompt_overrides
from glip.validation import closest, read_json, read_yaml


def _coco() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2, 2, 4, 4]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _mdetr() -> dict[str, Any]:
    return {
        "images": [{"id": 0, "file_name": "a.jpg", "width": 20, "height": 10, "caption": "a cat and a dog"}],
        "annotations": [
            {"id": 1, "image_id": 0, "bbox": [1, 1, 5, 5], "tokens_positive": [[2, 5]], "score": 0.9},
            {"id": 2, "image_id": 0, "bbox": [2, 2, 4, 4], "tokens_positive": [[12, 15]], "score": 0.8},
        ],
    }


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))  # NaN and Infinity are written as the JSON extensions Python reads
    return path


def _error(err: pytest.ExceptionInfo, path: Path | str, field: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert field in message, message
    return message


# ------------------------------------------------------------------------------ reading JSON / YAML
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b'{"images": [', "is not valid JSON (line 1"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[1, 2]", "must hold a JSON object"),
        (b"1" * 5000, "not valid JSON"),
    ],
)
def test_unreadable_json_is_one_line(tmp_path, content, message):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_json(path, "annotation file", mapping=True)
    _error(err, path, message)
    with pytest.raises(DataError) as err:  # the same through a dataset loader
        CocoDataset.load(path)
    _error(err, path, message)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(DataError, match="is a folder"):
        read_json(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: [1, 2\n", "is not valid YAML (line 2"),
        (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"d: 2024-13-45\n", "has a value YAML cannot read"),
        (b"- 1\n", "must be a mapping"),
        (b"a: \xff\n", "not UTF-8"),
    ],
)
def test_unreadable_yaml_is_one_line(tmp_path, content, message):
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        read_yaml(path, "recipe", mapping=True)
    _error(err, path, message)


def test_closest_key_by_spelling_and_initials():
    assert closest("learning_rate", ["lr", "steps"]) == "; did you mean 'lr'?"
    assert closest("max_iter", ["max_iters", "seed"]) == "; did you mean 'max_iters'?"
    assert closest("zzz", ["lr"]) == ""


# ------------------------------------------------------------------------------ COCO detection
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            lambda d: d["annotations"][0].update(bbox="abc"),
            'annotations[0].bbox: expected [x, y, width, height] (4 finite numbers), got "abc"',
        ),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "annotations[0].bbox: expected [x, y"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("inf"), 4]), "got [1, 2, Infinity, 4]"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, True, 4]), "annotations[0].bbox"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 1e30, 4]), "annotations[0].bbox: coordinates must be pixels"),
        (
            lambda d: d["annotations"][1].update(category_id=[2]),
            "annotations[1].category_id: expected an integer id, got [2]",
        ),
        (lambda d: d["annotations"][1].update(category_id=7), "annotations[1].category_id: unknown category id 7"),
        (lambda d: d["annotations"][1].update(image_id="1"), "annotations[1].image_id: expected an integer id"),
        (lambda d: d["annotations"][1].update(image_id=5), "annotations[1].image_id: unknown image id 5"),
        (
            lambda d: d["annotations"][1].update(id=1),
            "annotations[1].id: duplicate id 1 (already used by annotations[0].id)",
        ),
        (lambda d: d["annotations"][0].update(iscrowd="yes"), 'annotations[0].iscrowd: expected 0 or 1, got "yes"'),
        (lambda d: d["annotations"][0].update(area=-3), "annotations[0].area: must be at least 0"),
        (lambda d: d["annotations"][0].pop("bbox"), "annotations[0].bbox: missing"),
        (lambda d: d["annotations"].__setitem__(0, [1, 2]), "annotations[0]: expected an object"),
        (lambda d: d["images"][0].update(width="20"), 'images[0].width: expected a finite number, got "20"'),
        (lambda d: d["images"][0].update(height=-1), "images[0].height: must be positive"),
        (lambda d: d["images"][0].update(file_name=3), "images[0].file_name: expected a string, got 3"),
        (lambda d: d["images"][0].update(id=None), "images[0].id: expected an integer id, got null"),
        (lambda d: d["images"].append(dict(d["images"][0])), "images[1].id: duplicate id 1"),
        (lambda d: d["categories"][1].update(name=["dog"]), 'categories[1].name: expected a string, got ["dog"]'),
        (lambda d: d["categories"][1].update(name=" "), "categories[1].name: must not be empty"),
        (lambda d: d["categories"][1].update(id={"x": 1}), "categories[1].id: expected an integer id"),
        (lambda d: d.update(categories=[]), "categories: the list is empty"),
        (lambda d: d.update(images={"id": 1}), "images: expected a list"),
        (lambda d: d.update(annotations="none"), "annotations: expected a list"),
    ],
)
def test_coco_fields_are_checked(tmp_path, edit, field):
    data = _coco()
    edit(data)
    path = _write(tmp_path / "val.json", data)
    with pytest.raises(DataError) as err:
        CocoDataset.load(path, check_files=False)
    _error(err, path, field)


def test_coco_boxes_without_size_are_skipped_and_logged_not_fatal(tmp_path, caplog):
    data = _coco()
    data["annotations"][1]["bbox"] = [2, 2, 0, -4]
    with caplog.at_level(logging.WARNING):
        ds = CocoDataset.load(_write(tmp_path / "val.json", data), check_files=False)
    assert [a["id"] for a in ds.annotations[1]] == [1]
    assert ds.issues["box with zero or negative width/height"] == 1
    assert "skipped 1 annotation(s)" in caplog.text


# ------------------------------------------------------------------------------ MDETR / image-text
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["images"][0].update(caption=5), "images[0].caption: expected a string, got 5"),
        (lambda d: d["images"][0].update(id=[0]), "images[0].id: expected an integer or a string id"),
        (lambda d: d["images"][0].pop("file_name"), "images[0].file_name: missing"),
        (lambda d: d["annotations"][0].update(bbox={"x": 1}), "annotations[0].bbox: expected [x, y, width, height]"),
        (
            lambda d: d["annotations"][0].update(tokens_positive="2-5"),
            "annotations[0].tokens_positive: expected a non-empty list",
        ),
        (
            lambda d: d["annotations"][0].update(tokens_positive=[[True, 5]]),
            "annotations[0].tokens_positive[0]: expected [start, end]",
        ),
        (lambda d: d["annotations"][1].update(image_id={"a": 1}), "annotations[1].image_id: unknown image id"),
        (
            lambda d: d["annotations"][1].update(phrase_ids=1) or d["annotations"][1].pop("tokens_positive"),
            "annotations[1].tokens_positive: missing",
        ),
        (lambda d: d["annotations"][0].update(iscrowd=[1]), "annotations[0].iscrowd: expected 0 or 1"),
    ],
)
def test_mdetr_training_fields_are_checked(tmp_path, edit, field):
    data = _mdetr()
    edit(data)
    path = _write(tmp_path / "final.json", data)
    with pytest.raises(DataError) as err:
        MdetrGroundingDataset(path, tmp_path, check_files=False)
    _error(err, path, field)


@pytest.mark.parametrize(
    ("score", "field"),
    [("high", 'annotations[0].score: expected a finite number, got "high"'), (float("nan"), "annotations[0].score")],
)
def test_image_text_scores_are_checked(tmp_path, score, field):
    data = _mdetr()
    data["annotations"][0]["score"] = score
    path = _write(tmp_path / "pseudo.json", data)
    with pytest.raises(DataError) as err:
        ImageTextDataset(path, tmp_path, check_files=False)
    _error(err, path, field)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["images"][0].update(tokens_positive_eval="x"), "images[0].tokens_positive_eval: expected a list"),
        (lambda d: d["images"][0].update(tokens_positive_eval=[[[0, 99]]]), "images[0].tokens_positive_eval[0][0]"),
        (lambda d: d["images"][0].update(sentence_id="2"), 'images[0].sentence_id: expected an integer, got "2"'),
        (lambda d: d["images"][0].update(phrase_types=[["people"], 3]), "images[0].phrase_types"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, 1, float("nan")]), "annotations[0].bbox"),
        (lambda d: d.update(annotations={}), "has no 'annotations' list"),
    ],
)
def test_mdetr_evaluation_fields_are_checked(tmp_path, edit, field):
    data = _mdetr()
    edit(data)
    path = _write(tmp_path / "test.json", data)
    with pytest.raises(DataError) as err:
        load_grounding_annotations(path)
    _error(err, path, field)


def test_training_and_evaluation_read_the_same_file(tmp_path):
    path = _write(tmp_path / "final.json", _mdetr())
    train = MdetrGroundingDataset(path, tmp_path, check_files=False)
    evaluation = load_grounding_annotations(path)
    assert train.box_spans == [[[(2, 5)], [(12, 15)]]]
    assert [p.spans for p in evaluation[0].phrases] == [((2, 5),), ((12, 15),)]


# ------------------------------------------------------------------------------ LVIS, prompts, YOLO, VOC
def test_lvis_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "lvis.json"
    path.write_bytes(b"\x80\x81")
    with pytest.raises(DataError) as err:
        load_lvis_ground_truth(path)
    _error(err, path, "not UTF-8")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("bccd: {categories: [RBC]}\n", "bccd.categories: expected an object"),
        ("bccd: {categories: {RBC: [red]}}\n", 'bccd.categories.RBC: expected a string, got ["red"]'),
        ("bccd: {catgories: {RBC: red}}\n", "bccd.catgories: unknown key; did you mean 'categories'?"),
        ("pot: {caption_prompt: [hole]}\n", "pot.caption_prompt[0]: expected an object"),
        ("pot: {caption_prompt: [{prefix: a}]}\n", "pot.caption_prompt[0].name: missing"),
        ("pot: {caption_prompt: {name: hole}}\n", "pot.caption_prompt: expected a list"),
        ("r: {template: a photo}\n", "r.template: prompt template 'a photo' must contain exactly one '{}'"),
        ("r: {template: 3}\n", "r.template: expected a string, got 3"),
        ("r: [1]\n", "r: expected an object"),
        ("r: {template: 'a {}'\n", "is not valid YAML"),
    ],
)
def test_prompt_override_files_are_checked(tmp_path, text, field):
    path = tmp_path / "prompts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_prompt_overrides(path)
    _error(err, path, field)


def test_prompt_overrides_from_python_are_checked_too():
    with pytest.raises(ConfigError, match=r"caption_prompt\[0\]\.name: expected a string"):
        dataset_prompt(["cat"], {"caption_prompt": [{"name": None}]})
    with pytest.raises(ConfigError, match="exactly one"):
        dataset_prompt(["cat"], None, "no slot")
    assert dataset_prompt(["1"], {"categories": {1: 2}}).names == ("2",)  # YAML numbers are names too


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: {a: cat}\n", "key 'a' is not a class index"),
        ("names: [cat, null]\n", "names[1]"),
        ("names: [\n", "YAML"),
    ],
)
def test_yolo_name_files_are_checked(tmp_path, text, message):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_yolo_names(path)
    _error(err, path, message)


def test_voc_size_that_is_not_finite(tmp_path):
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>inf</width><height>5</height></size></annotation>"
    )
    with pytest.raises(DataError) as err:
        voc_to_coco(tmp_path)
    _error(err, tmp_path / "a.xml", "<size> is not a finite number")


# ------------------------------------------------------------------------------ through the CLI
@pytest.mark.parametrize(
    ("content", "field"),
    [
        (json.dumps({**_coco(), "annotations": [{"image_id": 1, "category_id": 1, "bbox": "abc"}]}), "bbox"),
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ],
)
def test_glip_eval_with_a_bad_annotation_file_prints_one_error_line(tmp_path, capsys, content, field):
    path = tmp_path / "val.json"
    path.write_text(content)
    code = main(["eval", "--dataset", str(path), "--images", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and field in err and "Traceback" not in err


def test_all_errors_are_glip_errors():
    assert issubclass(DataError, GLIPError) and issubclass(ConfigError, GLIPError)


# ------------------------------------------------------------------------------ seeded fuzz
_JUNK: list[Any] = ["abc", "", [], {}, None, True, float("nan"), float("inf"), -1, 0, 10**30, 1.5, [1, 2], {"a": 1}]


def _mutate(obj: Any, rng: random.Random) -> Any:
    """A copy of ``obj`` with one or two fields replaced by junk, removed, or duplicated."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 2)):
        paths, stack = [], [((), obj)]
        while stack:
            path, node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, child in items:
                paths.append((*path, key))
                stack.append(((*path, key), child))
        if not paths:
            break
        path = rng.choice(sorted(paths, key=str))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(_JUNK))
    return obj


@pytest.mark.parametrize(
    ("reader", "base", "suffix"),
    [
        ("coco", _coco(), ".json"),
        ("mdetr_train", _mdetr(), ".json"),
        ("mdetr_eval", _mdetr(), ".json"),
        ("prompts", {"bccd": {"categories": {"RBC": "red"}}, "pot": {"caption_prompt": [{"name": "hole"}]}}, ".yaml"),
        ("recipe", {"data": {"train": [{"name": "a", "annotations": "a.json"}]}, "optim": {"lr": 1e-4}}, ".yaml"),
    ],
)
def test_seeded_fuzz_of_readers_ends_in_one_line_errors(tmp_path, reader, base, suffix):
    from glip.engine.config import TrainConfig

    load = {
        "coco": lambda p: CocoDataset.load(p, check_files=False),
        "mdetr_train": lambda p: ImageTextDataset(p, tmp_path, check_files=False),
        "mdetr_eval": load_grounding_annotations,
        "prompts": load_prompt_overrides,
        "recipe": TrainConfig.from_yaml,
    }[reader]
    rng = random.Random(reader)
    for seed in range(60):
        path = tmp_path / f"{seed}{suffix}"
        data = _mutate(base, rng)
        path.write_text(yaml.safe_dump(data) if suffix == ".yaml" else json.dumps(data))
        try:
            load(path)
        except GLIPError as e:  # anything else fails the test with its traceback
            assert "\n" not in str(e) and str(path) in str(e), str(e)

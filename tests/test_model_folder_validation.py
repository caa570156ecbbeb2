"""Model folders and checkpoints: corrupt config.json, weight manifests and weight files, NaN/inf
weights and mismatched shapes are refused at load with one-line ConfigError/CheckpointError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from glip.cli import main
from glip.config import GLIPConfig
from glip.errors import CheckpointError, ConfigError
from glip.modeling.glip import GLIPModel


@pytest.fixture()
def folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny saved model."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _edit_config(folder: Path, edit: Any) -> None:
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))


def _message(err: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b'{"vision": ', "is not valid JSON (line 1"),
        (b"[1, 2]", "must hold a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_config_json(folder, content, message):
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ConfigError) as err:
        GLIPModel.from_pretrained(folder)
    _message(err, str(folder / "config.json"), message)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["tower"].update(num_blocks="two"), 'tower.num_blocks: expected an integer, got "two"'),
        (lambda d: d["tower"].update(num_block=2), "tower.num_block: unknown key; did you mean 'num_blocks'?"),
        (lambda d: d.update(vison={}), "vison: unknown key; did you mean 'vision'?"),
        (lambda d: d.update(vision=[1]), "vision: expected an object"),
        (lambda d: d["text"].update(layer_norm_eps=None), "text.layer_norm_eps: expected a number, got null"),
        (lambda d: d["head"].update(anchor_strides=[8, 16]), "head.anchor_strides="),
        (lambda d: d["input"].update(pixel_std=[1, 1, 0]), "input.pixel_std[2]=0.0 must be positive"),
        (lambda d: d.update(preset="glip_x"), "unknown preset"),
        (lambda d: d["tower"].update(num_blocks=10**12), "tower.num_blocks=1000000000000 must be in [1, 256]"),
        (lambda d: d["text"].update(hidden_act="gleu"), "did you mean 'gelu'?"),
    ],
)
def test_config_fields_are_checked(folder, edit, field):
    _edit_config(folder, edit)
    with pytest.raises(ConfigError) as err:
        GLIPModel.from_pretrained(folder)
    _message(err, f"{folder / 'config.json'}: ", field)


def test_config_that_does_not_fit_the_weights_is_refused_before_building(folder):
    _edit_config(folder, lambda d: d["tower"].update(fusion_embed_dim=4096, num_blocks=3))
    with pytest.raises(CheckpointError) as err:
        GLIPModel.from_pretrained(folder)
    _message(err, "do not match its config", "shape mismatches", "missing")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_with_their_names(folder, value):
    state = load_file(str(folder / "model.safetensors"))
    state["head.bias0"] = torch.full_like(state["head.bias0"], value)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        GLIPModel.from_pretrained(folder)
    _message(err, "model.safetensors", "NaN or infinite", "head.bias0")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.safetensors", b"\x00\x01garbage", "is not a safetensors file"),
        ("weights.json", b"{not json", "weight manifest"),
        ("weights.json", b'{"excluded_prefixes": "text."}', "excluded_prefixes must be a list"),
    ],
)
def test_corrupt_weight_files(folder, name, content, message):
    (folder / name).write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        GLIPModel.from_pretrained(folder)
    _message(err, str(folder), message)


def test_official_checkpoint_with_non_finite_values(tmp_path):
    from official_keys import write_official_checkpoint

    path = tmp_path / "official.pth"
    model = write_official_checkpoint(GLIPConfig.tiny(), path, with_extras=False)
    key = next(k for k in model if k.endswith("rpn.head.bbox_pred.weight"))
    model[key] = torch.full_like(model[key], float("nan"))
    torch.save({"model": model}, path)
    with pytest.raises(CheckpointError) as err:
        GLIPModel.from_pretrained(path)
    _message(err, str(path), "head.bbox_pred.weight")


def test_official_checkpoint_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": {"a": 1}}, path)
    with pytest.raises(CheckpointError, match="not named tensors"):
        GLIPModel.from_pretrained(path)


def test_replace_suggests_the_closest_key():
    with pytest.raises(ConfigError, match="did you mean 'num_blocks'"):
        GLIPConfig.tiny().replace(**{"tower.num_block": 2})
    with pytest.raises(ConfigError, match=r"tower\.num_blocks: expected an integer"):
        GLIPConfig.tiny().replace(**{"tower.num_blocks": "x"})


def test_glip_predict_with_a_nan_model_prints_one_error_line(folder, sample_image, tmp_path, capsys):
    state = load_file(str(folder / "model.safetensors"))
    state["head.log_scale"] = torch.full_like(state["head.log_scale"], float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    args = ["predict", str(sample_image), "--classes", "raccoon", "--model", str(folder), "-q"]
    code = main([*args, "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "head.log_scale" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

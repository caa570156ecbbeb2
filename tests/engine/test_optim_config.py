"""Optimiser groups, LR schedule, recipes and --set overrides, checkpoint files."""

import math

import pytest
import torch

from glip.config import GLIPConfig
from glip.engine.checkpoint import atomic_save, latest_checkpoint, load_checkpoint, save_checkpoint
from glip.engine.config import OptimSpec, TrainConfig, apply_override
from glip.engine.modes import apply_mode, build_model
from glip.engine.optim import build_optimizer, lr_factor, parameter_groups
from glip.errors import CheckpointError, ConfigError
from glip.modeling.glip import GLIPModel


def test_official_parameter_groups():
    model = GLIPModel(GLIPConfig.tiny())
    spec = OptimSpec(lr=1e-4, text_lr=1e-5, weight_decay=0.05, bias_lr_factor=2.0, bias_weight_decay=0.0)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in parameter_groups(model, spec) for n in g["names"]}
    assert by_name["text_encoder.bert.encoder.layer.0.attention.self.query.weight"] == (1e-5, 0.05)
    assert by_name["text_encoder.bert.encoder.layer.0.attention.self.query.bias"] == (2e-5, 0.0)
    assert by_name["tower.blocks.0.text_layer.query.weight"] == (1e-4, 0.05)  # tower BERT layers use lr
    assert by_name["head.bias0"] == (2e-4, 0.0) and by_name["head.bias_lang"] == (2e-4, 0.0)
    assert by_name["head.text_proj.weight"] == (1e-4, 0.05)
    assert len(by_name) == sum(1 for _ in model.parameters())


def test_warmup_step_and_cosine_schedules():
    spec = OptimSpec(warmup_iters=10, warmup_factor=0.1, steps=(0.5, 0.75), gamma=0.1)
    assert lr_factor(0, spec, 100) == pytest.approx(0.1)
    assert lr_factor(5, spec, 100) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_factor(10, spec, 100) == pytest.approx(1.0)
    assert lr_factor(49, spec, 100) == pytest.approx(1.0)
    assert lr_factor(50, spec, 100) == pytest.approx(0.1)
    assert lr_factor(75, spec, 100) == pytest.approx(0.01)
    cos = OptimSpec(schedule="cosine", warmup_iters=0, min_lr_factor=0.0)
    assert lr_factor(0, cos, 100) == pytest.approx(1.0)
    assert lr_factor(50, cos, 100) == pytest.approx(0.5)
    assert lr_factor(100, cos, 100) == pytest.approx(0.0, abs=1e-9)
    assert math.isclose(lr_factor(25, cos, 100), 0.5 * (1 + math.cos(math.pi / 4)))


def test_modes_select_the_official_trainable_sets():
    model = build_model(TrainConfig().model.__class__(preset="tiny"), "prompt")
    apply_mode(model, "prompt")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt_offset"]
    assert torch.equal(model.prompt_offset, torch.zeros_like(model.prompt_offset))
    model = GLIPModel(GLIPConfig.tiny())
    apply_mode(model, "linear_probe")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "head.bbox_pred.weight", "head.bbox_pred.bias", "head.centerness.weight", "head.centerness.bias",
        "head.text_proj.weight", "head.text_proj.bias", "head.log_scale", "head.bias_lang", "head.bias0",
    }  # fmt: skip
    apply_mode(model, "full", freeze=["text", "body"])
    assert not any(
        p.requires_grad for n, p in model.named_parameters() if n.startswith(("text_encoder.", "backbone.body."))
    )
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("tower."))
    assert build_optimizer(model, OptimSpec()).param_groups
    with pytest.raises(ConfigError, match="unknown part"):
        apply_mode(model, "full", freeze=["wheels"])


def test_recipe_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {preset: tiny}\n"
        "data:\n  train:\n    - {name: a, annotations: a.json}\n  batch_size: 2\n"
        "optim: {lr: 0.001}\nrun: {max_iters: 5}\n"
    )
    cfg = TrainConfig.from_yaml(path, ["optim.lr=2e-4", "run.amp=none", "model.overrides.loss.mlm=true"])
    assert cfg.optim.lr == 2e-4 and cfg.run.amp == "none" and cfg.data.batch_size == 2
    assert cfg.model.overrides == {"loss.mlm": True}
    assert cfg.data.train[0].name == "a" and cfg.data.train[0].kind == "detection"
    cfg.to_yaml(tmp_path / "out.yaml")
    assert TrainConfig.from_yaml(tmp_path / "out.yaml") == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="key=value"):
        apply_override({}, "optim.lr")
    with pytest.raises(ConfigError, match=r"run\.amp"):
        TrainConfig.from_dict({"run": {"amp": "fp8"}})


def test_checkpoints_are_atomic_and_pointed_to(tmp_path):
    folder = tmp_path / "ckpt"
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}}
    save_checkpoint(folder, 1, state, keep=2)
    save_checkpoint(folder, 2, state, keep=2)
    save_checkpoint(folder, 3, state, keep=2)
    assert sorted(p.name for p in folder.glob("ckpt_*.pt")) == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    assert latest_checkpoint(folder).name == "ckpt_00000003.pt"
    loaded = load_checkpoint(latest_checkpoint(folder))
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert not list(folder.glob("*.tmp"))

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"x": Boom()}, folder / "ckpt_00000003.pt")
    assert load_checkpoint(folder / "ckpt_00000003.pt")["step"] == 3  # the old file is intact
    assert not list(folder.glob("*.tmp"))
    (folder / "last_checkpoint").write_text("ckpt_00000009.pt\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        latest_checkpoint(folder)

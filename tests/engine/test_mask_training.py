"""GLIPv2 mask training: the ``mask`` mode, adding a mask head to a saved model, refexp sources, the shipped recipe."""

import json
from pathlib import Path

import pytest
import torch
from test_trainer import _dataset

from glip.config import GLIPConfig
from glip.engine.config import ModelSpec, TrainConfig
from glip.engine.metrics_log import read_metrics
from glip.engine.modes import apply_mode, build_model, resolve_init, set_train_mode
from glip.engine.trainer import Trainer
from glip.errors import ConfigError
from glip.modeling.glip import GLIPModel
from glip.recipes import resolve

REPO = Path(__file__).resolve().parents[2]
MASK_HEAD = {"heads.mask": {"pooler_resolution": 8}}


def with_masks(det: Path) -> Path:
    """A copy of a COCO file (beside it) whose every box has a diamond polygon inside it."""
    data = json.loads(det.read_text())
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]
    path = det.with_name(f"{det.stem}_masks.json")
    path.write_text(json.dumps(data))
    return path


def refexp_over(det: Path) -> Path:
    """A refexp file over a COCO file: per image, "all raccoons" (every box) and "the first raccoon"."""
    data = json.loads(det.read_text())
    refs = []
    for im in data["images"]:
        ids = [a["id"] for a in data["annotations"] if a["image_id"] == im["id"]]
        empty = {"size": [im["height"], im["width"]], "counts": [im["height"] * im["width"]]}
        for expression, ann_ids in (("all raccoons", ids), ("the first raccoon", ids[:1])):
            refs.append({"ref_id": len(refs) + 1, "image_id": im["id"], "expression": expression,
                         "ann_ids": ann_ids, "segmentation": empty})  # fmt: skip
    path = det.with_name("refexp.json")
    path.write_text(json.dumps({"images": data["images"], "categories": data["categories"], "refs": refs}))
    return path


def _recipe(det: Path, out: Path, mode: str = "mask", refexp: bool = False, **run) -> TrainConfig:
    train = [{"name": "det", "annotations": str(det), "masks": True}]
    if refexp:
        train.append({"name": "ref", "kind": "refexp", "annotations": str(refexp_over(det)), "instances": str(det),
                      "images": str(det.parent), "masks": True})  # fmt: skip
    return TrainConfig.from_dict(
        {
            "model": {"preset": "tiny", "overrides": {"text.pad_to_max": False, **MASK_HEAD}},
            "data": {"train": train, "batch_size": 2, "num_workers": 0, "min_sizes": [64, 80], "max_size": 112},
            "optim": {"lr": 2e-3, "warmup_iters": 0, "clip_grad_norm": None},
            "run": {"output_dir": str(out), "amp": "none", "log_every": 1, "eval_every": 0, "checkpoint_every": 0,
                    "device": "cpu", "mode": mode, "max_iters": 1, **run},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def mask_json(tmp_path_factory, sample_image) -> Path:
    return with_masks(_dataset(tmp_path_factory.mktemp("data"), sample_image))


def test_mode_mask_trains_only_the_mask_head_and_keeps_the_rest_in_eval_mode():
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny().replace(**MASK_HEAD))
    frozen = apply_mode(model, "mask")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("mask_head.") for n in trainable)
    assert trainable == {n for n, _ in model.mask_head.named_parameters(prefix="mask_head")}
    set_train_mode(model, frozen)
    assert model.mask_head.training and all(m.training for m in model.mask_head.modules())
    others = [m for n, m in model.named_modules() if n and not n.startswith("mask_head")]
    assert others and not any(m.training for m in others)
    apply_mode(model, "full")  # full trains everything, the mask head included
    assert all(p.requires_grad for p in model.parameters())


def test_mode_mask_needs_a_mask_head():
    with pytest.raises(ConfigError, match=r"run.mode mask .* has none: add one with model.overrides"):
        apply_mode(GLIPModel(GLIPConfig.tiny()), "mask")


def test_build_model_adds_a_mask_head_to_a_saved_model_without_one(tiny_model_dir):
    base = GLIPModel.from_pretrained(tiny_model_dir)
    assert base.mask_head is None
    model = build_model(ModelSpec(init=str(tiny_model_dir), overrides=MASK_HEAD), "mask")
    assert model.mask_head is not None and model.config.heads.mask.pooler_resolution == 8
    own = model.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(own[key], value), key  # every trained tensor carried over
    assert any(k.startswith("mask_head.") for k in set(own) - set(base.state_dict()))


def test_init_embedded_names_the_packaged_default_model():
    from glip.assets import default_model_path

    assert resolve_init("embedded") == str(default_model_path())
    assert resolve_init("some/folder") == "some/folder"


def test_one_mask_mode_step_changes_only_the_mask_head(mask_json, tmp_path):
    trainer = Trainer(_recipe(mask_json, tmp_path / "run", refexp=True))
    assert trainer.criterion.mask
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = next(trainer.data.batches(0))
    assert all(t.masks is not None and t.masks.shape[0] == t.boxes_xyxy.shape[0] for t in batch.targets)
    values = trainer.train_step(batch)
    assert "loss_mask" in values and all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert values["loss_mask"] > 0
    moved = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("mask_head.") for k in moved), sorted(moved)[:5]
    assert "mask_head.text_proj.weight" in moved


def test_refexp_source_in_a_full_run_trains_with_masks(mask_json, tmp_path):
    trainer = Trainer(_recipe(mask_json, tmp_path / "run", mode="full", refexp=True))
    ref = trainer.data.loader.dataset.dataset.datasets[1]
    assert len(ref) == 12 and ref.with_masks
    sample = ref[0]  # "all raccoons": every box of image 1, one entity
    assert sample.prompt.text == "all raccoons" and sample.box_entities == [[0]] * sample.boxes_xyxy.shape[0]
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    values = trainer.train_step(next(trainer.data.batches(0)))
    assert torch.isfinite(torch.tensor(values["loss_mask"]))
    moved = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("mask_head.") for k in moved) and any(k.startswith("tower.") for k in moved)


def test_the_shipped_mask_recipe_is_valid():
    config = TrainConfig.from_yaml(resolve("mask_shared_data"), ["run.max_iters=2", "run.device=cpu"])
    assert config.run.mode == "mask" and config.model.init == "embedded"
    assert config.model.overrides == {"heads.mask": {"pooler_resolution": 14}}
    kinds = [(s.name, s.kind, s.holdout_every) for s in config.data.train]
    assert ("coco_mt", "detection", 5) in kinds and ("coco_mt_refexp", "refexp", 5) in kinds
    assert {s.kind for s in config.data.train} == {"detection", "refexp"}
    assert all(s.masks for s in config.data.train)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"kind": "refexp"}, r"data.train\[0\].instances: a refexp source needs the COCO instances file"),
        ({"instances": "x.json"}, r"data.train\[0\].instances: only refexp(, vqa, caption)? sources read an"),
        ({"kind": "grounding", "holdout_every": 5}, r"holdout_every: applies to detection(, refexp, vqa)? and"),
        ({"kind": "grounding", "masks": True}, r"masks: only detection and refexp sources have masks"),
        ({"holdout_every": -1}, r"holdout_every: must be at least 0"),
        ({"kind": "refexps"}, r"kind: expected one of .*refexp"),
    ],
)
def test_source_fields_of_masks_and_refexps_are_checked(source, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict({"data": {"train": [{"name": "a", "annotations": "a.json", **source}]}})
    with pytest.raises(ConfigError, match=r"run.mode: expected one of full, prompt, linear_probe, mask"):
        TrainConfig.from_dict({"run": {"mode": "masks"}})


@pytest.mark.slow
@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "coco_mt").is_dir(), reason="shared/data is not present")
def test_the_shipped_mask_recipe_runs_on_the_cpu(tmp_path, monkeypatch):
    """The real recipe (embedded model, the four mask sources) for 2 steps on the CPU, batches of 2."""
    monkeypatch.chdir(REPO)  # the recipe's paths are relative to the repository root
    overrides = ["run.max_iters=2", "data.num_workers=0", "run.device=cpu", "run.amp=none", "data.batch_size=2",
                 f"run.output_dir={tmp_path / 'run'}", "run.log_every=1"]  # fmt: skip
    trainer = Trainer(TrainConfig.from_yaml(resolve("mask_shared_data"), overrides))
    trunk = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.startswith("mask_head.")}
    trainer.train()
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss_mask" in r]
    assert [r["step"] for r in records] == [1, 2] and all(0 < r["loss_mask"] < 10 for r in records)
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in trunk.items())
    saved = GLIPModel.from_pretrained(tmp_path / "run" / "model")
    assert saved.mask_head is not None and saved.config.heads.mask.pooler_resolution == 14

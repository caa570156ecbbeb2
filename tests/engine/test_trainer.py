"""The trainer on CPU with the tiny preset: it learns and it resumes exactly (torchrun: ``test_resume_exact``)."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from glip.engine.config import TrainConfig
from glip.engine.metrics_log import read_metrics
from glip.engine.trainer import Trainer


def _dataset(root: Path, sample_image: Path, n: int = 6) -> Path:
    """A small COCO-format dataset of real photos (flipped/cropped copies of the sample image)."""
    (root / "images").mkdir(parents=True)
    base = Image.open(sample_image).convert("RGB")
    images, anns = [], []
    for i in range(n):
        img = base.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else base
        img = img.crop((0, 0, 384 - 16 * (i % 3), 288))
        img.save(root / "images" / f"{i}.jpg")
        w = img.width
        boxes = [[70, 30, 115, 190], [150, 135, 150, 115]]
        if i % 2:
            boxes = [[384 - x - bw, y, bw, bh] for x, y, bw, bh in boxes]
        boxes = [[x, y, min(bw, w - x - 1), bh] for x, y, bw, bh in boxes if x < w - 2]
        images.append({"id": i + 1, "file_name": f"images/{i}.jpg", "width": w, "height": 288})
        for b in boxes:
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            )
    cats = [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "road"}, {"id": 3, "name": "tree"}]
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _recipe(ann: Path, out: Path, **run) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"preset": "tiny"},
            "data": {"train": [{"name": "r", "annotations": str(ann)}], "batch_size": 2, "num_workers": 0,
                     "min_sizes": [64, 80], "max_size": 112},
            "optim": {"lr": 2e-3, "warmup_iters": 2, "steps": [0.9]},
            "run": {"output_dir": str(out), "amp": "none", "log_every": 1, "eval_every": 0, "checkpoint_every": 3,
                    "device": "cpu", **run},
        }
    )  # fmt: skip


@pytest.fixture()
def train_json(tmp_path, sample_image):
    return _dataset(tmp_path / "data", sample_image)


def test_one_step_gives_finite_losses_and_moves_the_weights(train_json, tmp_path):
    trainer = Trainer(_recipe(train_json, tmp_path / "run", max_iters=1))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    values = trainer.train_step(next(trainer.data.batches(0)))
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert {"loss_token", "loss_box", "loss_centerness"} <= set(values)
    moved = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("tower.") for k in moved) and any(k.startswith("text_encoder.") for k in moved)


def test_resume_after_a_kill_continues_with_identical_losses(train_json, tmp_path):
    full = tmp_path / "full"
    Trainer(_recipe(train_json, full, max_iters=7)).train()
    reference = {r["step"]: r for r in read_metrics(full / "metrics.jsonl") if "loss" in r}

    killed = tmp_path / "killed"
    trainer = Trainer(_recipe(train_json, killed, max_iters=7))
    original = trainer.train_step

    def dying_step(batch):
        if trainer.step == 4:  # steps 1-4 done, checkpoint written at 3: killed in the middle of step 5
            raise KeyboardInterrupt
        return original(batch)

    trainer.train_step = dying_step
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = Trainer(_recipe(train_json, killed, max_iters=7), resume=True)
    assert resumed.step == 3
    resumed.train()
    got = {r["step"]: r for r in read_metrics(killed / "metrics.jsonl") if "loss" in r}
    for step in (4, 5, 6, 7):
        for key in ("loss", "loss_token", "loss_box", "loss_centerness"):
            assert got[step][key] == reference[step][key], (step, key)  # bit-identical on the CPU
    a, b = (torch.load(p / "checkpoints" / "ckpt_00000007.pt", weights_only=True)["model"] for p in (full, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_when_overfitting_a_fixed_batch(train_json, tmp_path):
    trainer = Trainer(_recipe(train_json, tmp_path / "run", max_iters=30))
    batch = next(trainer.data.batches(0))
    losses = [trainer.train_step(batch)["loss"] for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_image_without_boxes_gives_zero_box_losses(train_json, tmp_path, sample_image):
    data = json.loads(train_json.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]
    train_json.write_text(json.dumps(data))
    cfg = _recipe(train_json, tmp_path / "run", max_iters=1)
    trainer = Trainer(cfg)
    batch = next(trainer.data.batches(0))
    empty = type(batch.targets[0])(
        torch.zeros(0, 4), torch.zeros(0, batch.input_ids.shape[1]), torch.zeros(0, dtype=torch.long),
        batch.targets[0].token_labels, "detection", batch.targets[0].image_size,
    )  # fmt: skip
    batch.targets = [empty, empty]
    values = trainer.train_step(batch)
    assert values["loss_box"] == 0.0 and values["loss_centerness"] == 0.0
    assert values["loss_token"] > 0 and torch.isfinite(torch.tensor(values["loss_token"]))

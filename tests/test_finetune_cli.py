"""``glip finetune``: one command from a small labelled set (COCO, VOC or YOLO) to a fine-tuned model, on the CPU.

The labelled set is built here from the sample photo (flipped / cropped copies with two raccoon
boxes each), as a user would have it: a COCO file, a VOC folder or a YOLO folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from glip.cli import main
from glip.engine.finetune import FinetuneOptions, build_recipe, prepare_data
from glip.predictor import GLIPPredictor

BOXES = [[70, 30, 115, 190], [150, 135, 150, 115]]  # x, y, w, h in the 384x288 sample photo


def _photos(folder: Path, sample_image: Path, n: int) -> list[tuple[str, int, int, list[list[float]]]]:
    """``n`` photos in ``folder``: (file name, width, height, boxes xywh)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(sample_image).convert("RGB")
    out = []
    for i in range(n):
        flip = i % 2 == 1
        img = base.transpose(Image.FLIP_LEFT_RIGHT) if flip else base
        img.save(folder / f"img{i}.jpg")
        boxes = [[384 - x - w, y, w, h] if flip else [x, y, w, h] for x, y, w, h in BOXES]
        out.append((f"img{i}.jpg", img.width, img.height, boxes))
    return out


def coco_set(root: Path, sample_image: Path, n: int = 6) -> Path:
    photos = _photos(root / "images", sample_image, n)
    images = [{"id": i + 1, "file_name": f, "width": w, "height": h} for i, (f, w, h, _) in enumerate(photos)]
    anns = [
        {"id": 10 * i + k + 1, "image_id": i + 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, (*_, boxes) in enumerate(photos)
        for k, b in enumerate(boxes)
    ]
    cats = [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "tree"}]
    path = root / "labels.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def voc_set(root: Path, sample_image: Path, n: int = 6) -> Path:
    photos = _photos(root / "JPEGImages", sample_image, n)
    (root / "Annotations").mkdir()
    for name, w, h, boxes in photos:
        objects = "".join(
            f"<object><name>raccoon</name><bndbox><xmin>{x + 1:.0f}</xmin><ymin>{y + 1:.0f}</ymin>"
            f"<xmax>{x + bw:.0f}</xmax><ymax>{y + bh:.0f}</ymax></bndbox></object>"
            for x, y, bw, bh in boxes
        )
        xml = f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height></size>{objects}"
        (root / "Annotations" / f"{Path(name).stem}.xml").write_text(xml + "</annotation>")
    return root


def yolo_set(root: Path, sample_image: Path, n: int = 6) -> Path:
    photos = _photos(root / "images", sample_image, n)
    (root / "labels").mkdir()
    for name, w, h, boxes in photos:
        lines = [f"0 {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}" for x, y, bw, bh in boxes]
        (root / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("raccoon\ntree\n")
    return root


def _args(train: Path, out: Path, model: Path | None, *extra: str) -> list[str]:
    args = ["finetune", str(train), "--out", str(out), "--device", "cpu", "--batch-size", "2", *extra]
    return args + (["--model", str(model)] if model is not None else [])


@pytest.mark.parametrize("layout", ["coco", "voc", "yolo"])
def test_finetune_any_layout_with_a_held_back_validation_part(layout, tiny_model_dir, sample_image, tmp_path, capsys):
    builder = {"coco": coco_set, "voc": voc_set, "yolo": yolo_set}[layout]
    train = builder(tmp_path / "data", sample_image, 10)
    out = tmp_path / "run"
    code = main(_args(train, out, tiny_model_dir, "--iters", "4", "--amp", "none"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["iterations"] == 4 and report["mode"] == "full"
    assert "8 images" in report["train"] and f"({layout.upper()}" in report["train"]
    assert "2 images" in report["val"]  # every 5th image held back (--val-fraction 0.2)
    assert report["history"][0]["step"] == 0  # the starting model was validated first
    assert (out / "best_model" / "model.safetensors").is_file() and (out / "model" / "model.safetensors").is_file()
    assert not (out / "checkpoints").exists()  # checkpoint_every 0: none written
    assert "| before (the starting model) |" in captured.out and "best model:" in captured.out
    assert "CPU training with" in captured.err and "validation" in captured.err  # log lines above the bar
    GLIPPredictor.from_pretrained(out / "best_model", device="cpu")  # a usable model folder


def test_prompt_mode_with_a_validation_file_and_few_shots(tiny_model_dir, sample_image, tmp_path, capsys):
    train = coco_set(tmp_path / "train", sample_image, 6)
    val = coco_set(tmp_path / "val", sample_image, 2)
    out = tmp_path / "run"
    extra = ("--val", str(val), "--mode", "prompt", "--iters", "3", "--shots", "1", "--amp", "none")
    assert main(_args(train, out, tiny_model_dir, *extra)) == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert "mode: prompt" in config and "class_prompt: fixed" in config and "prompt_lr: 0.05" in config
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "prompt" and "2 images" in report["val"]


def test_recipe_defaults_per_mode_and_device(sample_image, tmp_path):
    import torch

    train = coco_set(tmp_path / "d", sample_image, 8)
    opts = FinetuneOptions(train=str(train), out=str(tmp_path / "run"), mode="linear")
    train_set, val_set = prepare_data(opts, tmp_path / "run" / "data")
    config = build_recipe(opts, train_set, val_set, torch.device("cpu"))
    assert config.model.init == "embedded" and config.run.mode == "linear_probe" and config.optim.lr == 1e-3
    assert config.data.min_sizes == [320, 352, 384, 416, 448] and config.data.max_size == 512  # the model's size
    assert config.run.max_iters == 20 and config.run.keep_best and config.run.eval_at_start  # 10 epochs, min 20
    assert config.run.export_exclude == ["text"] and config.data.num_workers == 1
    prompt = build_recipe(
        FinetuneOptions(train=str(train), mode="prompt", epochs=40), train_set, None, torch.device("cpu")
    )
    assert (
        prompt.optim.prompt_lr == 0.05 and prompt.optim.prompt_weight_decay == 0.25 and prompt.run.max_iters == 40
    )  # 7 images: 1 batch of 4 per epoch
    assert not prompt.run.keep_best and prompt.run.eval_every == 0


def test_user_mistakes_are_one_line_errors(tiny_model_dir, sample_image, tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "nothing"), "--device", "cpu"]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["finetune", str(tmp_path / "empty"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cannot tell the format" in err and err.count("\n") == 1
    train = coco_set(tmp_path / "one", sample_image, 1)
    assert main(_args(train, tmp_path / "r", tiny_model_dir)) == 1
    assert "too few to hold back" in capsys.readouterr().err


def test_finetune_the_embedded_model_on_the_cpu(sample_image, tmp_path, capsys):
    """From a fresh clone: the default model, the default mode, a small labelled set, two steps."""
    train = coco_set(tmp_path / "data", sample_image, 5)
    out = tmp_path / "run"
    code = main(["finetune", str(train), "--out", str(out), "--device", "cpu", "--iters", "2", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "the embedded model" and report["ap_before"] is not None
    predictor = GLIPPredictor.from_pretrained(out / "best_model", device="cpu")
    assert predictor.predict(sample_image, classes=["raccoon"])[0].scores.numel() > 0

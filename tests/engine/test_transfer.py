"""ODinW-style transfer protocol on a tiny folder of real-image datasets."""

import json

import pytest
from PIL import Image

from glip.cli import main
from glip.engine.config import TrainConfig
from glip.engine.transfer import run_transfer

BOXES = [[70, 30, 115, 190], [150, 135, 150, 115]]


def _split(root, name, split, sample_image, n):
    img_dir = root / name / "images" / split
    img_dir.mkdir(parents=True)
    (root / name / "annotations").mkdir(exist_ok=True)
    images, anns = [], []
    for i in range(n):
        Image.open(sample_image).save(img_dir / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{split}/{i}.jpg", "width": 384, "height": 288})
        for b in BOXES:
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            )
    cats = [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "kite"}]
    (root / name / "annotations" / f"{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )


@pytest.fixture()
def suite_root(tmp_path, sample_image):
    root = tmp_path / "odinw"
    for name in ("alpha", "beta"):
        _split(root, name, "train", sample_image, 3)
        _split(root, name, "test", sample_image, 2)
    return root


def _recipe():
    return TrainConfig.from_dict(
        {
            "model": {"preset": "tiny"},
            "data": {"batch_size": 1, "num_workers": 0, "min_sizes": [64], "max_size": 96},
            "optim": {"lr": 1e-3, "warmup_iters": 1},
            "run": {"max_iters": 2, "amp": "none", "log_every": 1, "checkpoint_every": 0, "device": "cpu"},
        }
    )


def test_zero_shot_and_few_shot_prompt_tuning(suite_root, tiny_model_dir, tmp_path):
    zero = run_transfer(suite_root, tiny_model_dir, "zero-shot", out_dir=tmp_path / "z", device="cpu", progress=False)
    assert [r.dataset for r in zero.rows] == ["alpha", "beta"] and all(r.test_split == "test" for r in zero.rows)
    tuned = run_transfer(
        suite_root, tiny_model_dir, "prompt", _recipe(), shots=1, seeds=(3, 30), out_dir=tmp_path / "p",
        device="cpu", progress=False,
    )  # fmt: skip
    row = tuned.rows[0]
    assert sorted(row.ap_per_seed) == [3, 30] and row.num_train_images == {3: 1, 30: 1}  # 1 shot of 1 category
    assert (tmp_path / "p" / "alpha" / "prompt_1shot_seed3" / "model" / "model.safetensors").is_file()
    assert "| alpha | test |" in tuned.markdown() and "average AP" in tuned.markdown()


def test_odinw_command(suite_root, tiny_model_dir, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    _recipe().to_yaml(recipe)
    args = ["odinw", str(suite_root), "--model", str(tiny_model_dir), "--mode", "full", "--recipe", str(recipe)]
    code = main(
        [*args, "--seeds", "1", "--datasets", "beta", "--out-dir", str(tmp_path / "o"), "-q", "--device", "cpu"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| beta | test | " in out and "alpha" not in out
    assert json.loads((tmp_path / "o" / "transfer_full_all.json").read_text())["mode"] == "full"
    assert main(["odinw", str(suite_root), "--model", str(tiny_model_dir), "--mode", "full", "-q"]) == 1


def test_odinw_without_model_uses_the_embedded_model_and_finds_coco_split_names(tmp_path, sample_image, capsys):
    root = tmp_path / "suite"
    _split(root, "gamma", "train2017", sample_image, 2)
    _split(root, "gamma", "val2017", sample_image, 1)
    out = tmp_path / "o"
    assert main(["odinw", str(root), "--out-dir", str(out), "-q", "--device", "cpu"]) == 0, capsys.readouterr().err
    result = json.loads((out / "transfer_zero-shot_all.json").read_text())
    assert [(r["dataset"], r["test_split"]) for r in result["rows"]] == [("gamma", "val2017")]
    assert result["rows"][0]["mean_ap"] > 0.1  # the embedded model knows raccoons


def test_tuning_trains_on_the_evaluation_prompt_of_the_override(suite_root, tiny_model_dir, tmp_path):
    from glip.data.coco import find_coco_splits
    from glip.engine.transfer import _recipe_for

    splits = {s.split: s for s in find_coco_splits(suite_root) if s.dataset == "alpha"}
    override = {"categories": {"kite": "flying kite"}, "template": "a photo of a {}"}
    cfg = _recipe_for(_recipe(), splits["train"], splits["test"], "alpha", override, "full", None, 3, tiny_model_dir,
                      tmp_path)  # fmt: skip
    (source,) = cfg.data.train
    assert cfg.data.class_prompt == "fixed" and source.masks is False
    assert source.caption_prompts == [
        {"prefix": "a photo of a ", "name": "raccoon", "suffix": ""},
        {"prefix": "a photo of a ", "name": "flying kite", "suffix": ""},
    ]

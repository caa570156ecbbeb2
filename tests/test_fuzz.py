"""Seeded fuzz run: bad and odd inputs through ``glip.cli.main`` and the Python API.

Every case must end in success or in a clear user error: the CLI returns 0, 1 (one ``error:`` line
last on stderr) or 2 (argparse usage), never lets an exception escape, never prints a traceback;
the API raises nothing but :class:`~glip.errors.GLIPError`. Input classes: image files (random
bytes, truncated, bomb headers, 1-pixel, 16-bit, palette, odd names), prompts and class lists,
options (devices, thresholds, batch sizes, dtypes), model folders (corrupt config, NaN/inf weights,
wrong shapes), COCO annotation files (every field replaced by a value of the wrong type) and
training recipes (the same for recipe fields, unknown keys, broken YAML).

``pytest tests/test_fuzz.py`` runs ``FAST_CASES`` cases (about a minute on 2 cores);
``GLIP_LONG_FUZZ=1 pytest -m slow tests/test_fuzz.py`` runs the long version.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import struct
import subprocess
import sys
import zlib
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from glip.cli import main
from glip.errors import GLIPError

FAST_CASES = 240
SLOW_CASES = 2000
WEIRD_VALUES: list[Any] = [
    "abc", "", " ", "1e999", -1, 0, 10**12, 3.5, float("nan"), float("inf"), None, True, [], [1, 2], [[1]], {},
    {"a": 1}, "\x00", "日本語", [None, "x"], -0.0,
]  # fmt: skip


@dataclass
class Env:
    """Files shared by the cases (made once per session)."""

    root: Path
    image: Path
    model: Path
    dataset: Path
    recipe: dict[str, Any]


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir, sample_image) -> Env:
    root = tmp_path_factory.mktemp("fuzz")
    image = root / "good.jpg"
    Image.open(sample_image).resize((96, 72)).save(image)
    images = root / "data" / "images" / "train"
    images.mkdir(parents=True)
    Image.open(image).save(images / "a.jpg")
    ann = {
        "images": [{"id": 1, "file_name": "train/a.jpg", "width": 96, "height": 72}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 8, 40, 30], "area": 1200, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "raccoon"}, {"id": 2, "name": "dog"}],
    }  # fmt: skip
    (root / "data" / "annotations").mkdir()
    dataset = root / "data" / "annotations" / "train.json"
    dataset.write_text(json.dumps(ann))
    recipe = {
        "model": {"preset": "tiny"},
        "data": {
            "train": [{"name": "d", "annotations": str(dataset)}],
            "batch_size": 1,
            "num_workers": 0,
            "min_sizes": [64],
            "max_size": 96,
        },
        "optim": {"lr": 1e-4, "warmup_iters": 0},
        "run": {"max_iters": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 0, "amp": "none"},
    }
    return Env(root, image, tiny_model_dir, dataset, recipe)


# ---------------------------------------------------------------------------------------------- files
def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels but holds almost no data (a bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    body += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def _odd_image(rng: random.Random, env: Env, folder: Path) -> Path:
    good = env.image.read_bytes()
    kind = rng.choice(
        ["bytes", "truncated", "empty", "bomb", "tiny", "16bit", "palette", "rgba", "cmyk", "name", "dir"]
    )
    name = f"img{rng.randrange(10**9)}"
    suffix = rng.choice([".jpg", ".png", ".JPG", ".webp"])
    path = folder / f"{name}{suffix}"
    if kind == "bytes":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    elif kind == "truncated":
        path.write_bytes(good[: rng.randrange(1, len(good))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "bomb":
        path = path.with_suffix(".png")
        path.write_bytes(_png_header(rng.choice([20000, 65000, 1]), rng.choice([20000, 30000, 1])))
    elif kind == "tiny":
        Image.new("RGB", (rng.choice([1, 2, 3000]), rng.choice([1, 2, 5]))).save(path.with_suffix(".png"))
        path = path.with_suffix(".png")
    elif kind == "16bit":
        path = path.with_suffix(".png")
        Image.fromarray(np.full((9, 7), rng.randrange(65536), np.uint16)).save(path)
    elif kind == "palette":
        path = path.with_suffix(".png")
        img = Image.new("P", (8, 8))
        img.info["transparency"] = 0
        img.save(path, transparency=0)
    elif kind == "rgba":
        path = path.with_suffix(".png")
        Image.new("RGBA", (9, 9), (1, 2, 3, rng.randrange(256))).save(path)
    elif kind == "cmyk":
        path = path.with_suffix(".jpg")
        Image.new("CMYK", (9, 9)).save(path)
    elif kind == "name":
        raw = bytes(folder) + b"/" + bytes([0xFF, 0xFE]) + name.encode() + b".jpg"
        path = Path(raw.decode("utf-8", "surrogateescape"))
        path.write_bytes(good)
    else:  # a folder whose name looks like an image
        path.mkdir()
    return path


def _model_folder(rng: random.Random, env: Env, folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    kind = rng.choice(["nan", "inf", "config_bytes", "config_json", "config_types", "shape", "weights_bytes", "file"])
    out = folder / f"model{rng.randrange(10**9)}"
    out.mkdir()
    config = json.loads((env.model / "config.json").read_text())
    state = load_file(str(env.model / "model.safetensors"))
    if kind in ("nan", "inf"):
        key = rng.choice(sorted(k for k, v in state.items() if v.is_floating_point()))
        state[key] = torch.full_like(state[key], float("nan") if kind == "nan" else rng.choice([1, -1]) * float("inf"))
    elif kind == "shape":
        key = rng.choice(sorted(k for k, v in state.items() if v.ndim >= 1))
        state[key] = torch.zeros(*(s + 1 for s in state[key].shape))
    save_file(state, str(out / "model.safetensors"))
    text = json.dumps(config)
    if kind == "config_bytes":
        text = None
        (out / "config.json").write_bytes(bytes([0xFF, 0xFE, 0x00]) + b"{")
    elif kind == "config_json":
        text = rng.choice(["{", "[]", "null", "1", '{"vision": ', "[" * 100000])
    elif kind == "config_types":
        section = rng.choice([k for k, v in config.items() if isinstance(v, dict)])
        field = rng.choice(sorted(config[section]) or ["x"])
        config[section][field] = rng.choice(WEIRD_VALUES)
        text = json.dumps(config)
    if text is not None:
        (out / "config.json").write_text(text)
    if kind == "weights_bytes":
        (out / "model.safetensors").write_bytes(b"\x00" * rng.randrange(0, 50))
    if kind == "file":
        return out / "config.json"
    return out


def _mutate(rng: random.Random, data: Any, depth: int = 0) -> Any:
    """``data`` with one randomly chosen value (or key) replaced by a value of another type."""
    data = copy.deepcopy(data)
    holder, key, node = None, None, data
    while isinstance(node, (dict, list)) and node and (holder is None or rng.random() < 0.7):
        holder = node
        key = rng.choice(sorted(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node = node[key]
    if holder is None:
        return rng.choice(WEIRD_VALUES)
    action = rng.random()
    if action < 0.15 and isinstance(holder, dict):
        holder[f"unknown_{rng.randrange(100)}"] = 1
    elif action < 0.25 and isinstance(holder, dict):
        del holder[key]
    else:
        value = rng.choice(WEIRD_VALUES)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1000:
            value = -value  # never a valid but endless training length
        holder[key] = value
    return data


# ---------------------------------------------------------------------------------------------- cases
def _case(rng: random.Random, env: Env, folder: Path) -> list[str]:
    kind = rng.choice(["image", "image", "prompt", "option", "model", "annotations", "recipe", "outdir"])
    out = str(folder / f"out{rng.randrange(10**9)}")
    base = ["predict", str(env.image), "--model", str(env.model), "--out-dir", out, "-q", "--device", "cpu"]
    if kind == "image":
        images = [str(_odd_image(rng, env, folder)) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            images.append(str(env.image))
        return ["predict", *images, "--classes", "raccoon", "--model", str(env.model), "--out-dir", out, "-q"]
    if kind == "prompt":
        words = ["dog", "a", ".", ",", "日本", "\u200b", "🦝", "the", "  ", "x" * 300, "\n", "[MASK]", "##s"]
        text = " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 40, 700])))
        if rng.random() < 0.5:
            return [*base, "--classes", text.replace(" ", rng.choice([",", ", ", ",,", " "]))]
        return [*base, "--prompt", text]
    if kind == "option":
        option = rng.choice(["--device", "--threshold", "--dtype", "--cuda-graphs", "--model"])
        value = rng.choice(
            ["", "CPU", "cuda:-1", "xla", "mps", "0", "cpu,cuda", "-1", "nan", "inf", "1e400", "fp8", "a"]
        )
        argv = ["predict", str(env.image), "--classes", "dog", "--model", str(env.model), "--out-dir", out, "-q"]
        return [*argv, option] if option == "--cuda-graphs" else [*argv, option, value]
    if kind == "model":
        return ["predict", str(env.image), "--classes", "dog", "--model", str(_model_folder(rng, env, folder)),
                "--out-dir", out, "-q", "--device", "cpu"]  # fmt: skip
    if kind == "annotations":
        path = folder / f"ann{rng.randrange(10**9)}.json"
        data = json.loads(env.dataset.read_text())
        choice = rng.random()
        if choice < 0.1:
            path.write_bytes(bytes([0xFF, 0xFE]) + b"{}")
        elif choice < 0.2:
            path.write_text(rng.choice(["", "{", "[" * 100000, "null", "[]", '{"images": 1}']))
        else:
            path.write_text(json.dumps(_mutate(rng, data)))
        images = str(env.dataset.parent.parent / "images")
        return ["eval", "--dataset", str(path), "--images", images, "--model", str(env.model), "--out-dir", out,
                "-q", "--device", "cpu"]  # fmt: skip
    if kind == "recipe":
        import yaml

        path = folder / f"recipe{rng.randrange(10**9)}.yaml"
        if rng.random() < 0.15:
            path.write_text(
                rng.choice(["model: [", "a: b: c", "\t- x", "- 1\n- 2", "", "{{{", "data: !!python/object:x {}"])
            )
        else:
            path.write_text(yaml.safe_dump(_mutate(rng, env.recipe)))
        argv = ["train", str(path), "--output-dir", out]
        if rng.random() < 0.3:
            argv += ["--set", rng.choice(["optim.lr=abc", "run.max_iters=-3", "nope=1", "run=1", "optim.lr", "=1"])]
        return argv
    # outdir: the inputs' folder, a file, a path below a file
    target = rng.choice([str(env.image.parent), str(env.image), str(env.image / "x"), "", "/proc/x/y"])
    return ["predict", str(env.image), "--classes", "dog", "--model", str(env.model), "--out-dir", target, "-q"]


def _run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse usage errors
            code = e.code if isinstance(e.code, int) else 2
    return code, err.getvalue()


def _check_cli(argv: list[str], code: int, err: str) -> None:
    shown = [a[:80] for a in argv]
    assert code in (0, 1, 2), f"exit {code} for {shown}"
    assert "Traceback" not in err, f"traceback for {shown}:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 1:
        assert lines and lines[-1].startswith("error: "), f"no one-line error for {shown}: {err!r}"
    if code == 2:
        assert lines and "error:" in lines[-1], f"no usage error for {shown}: {err!r}"


def _api_case(rng: random.Random, predictor: Any, env: Env) -> None:
    choices = [
        lambda: predictor.predict(env.image, classes="dog,cat"),
        lambda: predictor.predict(env.image, classes=[rng.choice(WEIRD_VALUES)]),
        lambda: predictor.predict(env.image, classes=rng.choice(WEIRD_VALUES)),
        lambda: predictor.predict(env.image, prompt=rng.choice(WEIRD_VALUES)),
        lambda: predictor.predict(env.image, classes=["dog"], threshold=rng.choice(WEIRD_VALUES)),
        lambda: predictor.predict(env.image, classes=["dog"], batch_size=rng.choice(WEIRD_VALUES)),
        lambda: predictor.predict(rng.choice(WEIRD_VALUES), classes=["dog"]),
        lambda: predictor.predict(
            np.zeros(rng.choice([(4, 4, 3), (0, 3, 3), (4, 4), (4, 4, 2), (2, 4, 4, 3), (1,)]), np.uint8), classes=["a"]
        ),
        lambda: predictor.predict(torch.rand(rng.choice([(3, 8, 8), (8, 8, 3), (1, 8, 8), (2, 3, 4)])), classes=["a"]),
        lambda: predictor.predict([env.image, "missing.jpg"], classes=["dog"]),
        lambda: predictor.predict(env.image, classes=["dog"] * rng.choice([1, 300])),
        lambda: predictor.predict(env.image, prompt="dog " * rng.choice([1, 600])),
    ]
    try:
        rng.choice(choices)()
    except GLIPError as e:
        assert "\n" not in str(e), f"multi-line error: {e!r}"


def _run(n: int, seed: int, env: Env, tmp_path: Path) -> None:
    from glip.predictor import GLIPPredictor

    rng = random.Random(seed)
    predictor = GLIPPredictor.from_pretrained(env.model, device="cpu")
    for i in range(n):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        if rng.random() < 0.2:
            _api_case(rng, predictor, env)
            continue
        argv = _case(rng, env, folder)
        code, err = _run_cli(argv)
        _check_cli(argv, code, err)


def test_fuzz_cli_and_api(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a case that writes into the working directory writes here
    _run(FAST_CASES, seed=2026, env=env, tmp_path=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GLIP_LONG_FUZZ"), reason="the long fuzz run: set GLIP_LONG_FUZZ=1")
def test_fuzz_long(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(SLOW_CASES, seed=7, env=env, tmp_path=tmp_path)


def test_real_console_script_gives_one_line_errors(env, tmp_path):
    """A sample through a separate process (what a user runs)."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(env.image.read_bytes()[:100])
    for argv in (
        ["predict", str(bad), "--classes", "dog", "--model", str(env.model), "--out-dir", str(tmp_path / "o")],
        ["predict", str(env.image), "--classes", "dog", "--device", "xla"],
        ["train", str(tmp_path / "missing.yaml")],
    ):
        proc = subprocess.run([sys.executable, "-m", "glip.cli", *argv], capture_output=True, text=True, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: ")

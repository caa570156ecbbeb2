"""Training recipes: malformed YAML, wrong kinds of values, unknown keys and nonsense values end in a
one-line ConfigError naming the file and the field (``optim.lr: expected a number, got "fast"``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glip.cli import main
from glip.engine.config import TrainConfig, apply_override
from glip.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[2] / "src" / "glip" / "recipes"


def _load(tmp_path: Path, text: str, overrides: list[str] | None = None) -> TrainConfig:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return TrainConfig.from_yaml(path, overrides)


def _fails(tmp_path: Path, text: str, field: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text, overrides)
    message = str(err.value)
    assert "\n" not in message and field in message, message
    return message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("optim: {lr: fast}\n", 'optim.lr: expected a number, got "fast"'),
        ("optim: {lr: .nan}\n", "optim.lr: expected a number, got NaN"),
        ("optim: {lr: -1}\n", "optim.lr: must be positive, got -1.0"),
        ("optim: {betas: [0.9]}\n", "optim.betas: expected 2 values, got 1"),
        ("optim: {betas: [0.9, 1.5]}\n", "optim.betas[1]: must be in [0, 1)"),
        ("optim: {steps: [0.5, 2]}\n", "optim.steps[1]: must be a fraction of max_iters"),
        ("optim: {clip_grad_norm: -1}\n", "optim.clip_grad_norm: must not be negative"),
        ("optim: [1, 2]\n", "optim: expected an object"),
        ("data: {batch_size: [4]}\n", "data.batch_size: expected an integer, got [4]"),
        ("data: {batch_size: 0}\n", "data.batch_size: must be at least 1, got 0"),
        ("data: {flip_prob: 2}\n", "data.flip_prob: must be in [0, 1]"),
        ("data: {min_sizes: 480}\n", "data.min_sizes: expected a list of integers, got 480"),
        ("data: {train: {name: a}}\n", "data.train: expected a list of mappings"),
        ("data: {train: [{name: a}]}\n", "data.train[0].annotations: missing (required)"),
        ("data: {train: [{name: a, annotations: x, weight: -2}]}\n", "data.train[0].weight: must be positive"),
        ("data: {train: [{name: a, annotations: x, kind: detect}]}\n", "did you mean 'detection'?"),
        ("data: {train: [{name: a, annotations: x, prompt_overrides: [b]}]}\n", "data.train[0].prompt_overrides"),
        ("run: {max_iters: 10.5}\n", "run.max_iters: expected an integer, got 10.5"),
        ("run: {max_iters: -5}\n", "run.max_iters: must be at least 1, got -5"),
        ("run: {eval_at_start: 1}\n", "run.eval_at_start: expected true or false, got 1"),
        ("run: {freeze: text}\n", 'run.freeze: expected a list of strings, got "text"'),
        ("run: {amp: fp8}\n", 'run.amp: expected one of bf16, fp16, none, got "fp8"'),
        ("run: {ema_decay: 1.0}\n", "run.ema_decay: must be in (0, 1) or null"),
        ("run: {export_exclude: [wheels]}\n", "run.export_exclude[0]: expected one of text, body"),
        ("model: {preset: glip_x}\n", "model.preset: expected one of glip_t, glip_l, glip_t_a, tiny, tiny_a"),
        ("model: {overrides: {loss.contrastiv: true}}\n", "did you mean 'loss.contrastive'?"),
        (
            "model: {overrides: {tower.num_blocks: two}}\n",
            'model.overrides.tower.num_blocks: expected an integer, got "two"',
        ),
        ("model: {overrides: [1]}\n", "model.overrides: expected an object"),
    ],
)
def test_wrong_values_name_the_field(tmp_path, text, field):
    message = _fails(tmp_path, text, field)
    assert message.startswith(str(tmp_path / "recipe.yaml") + ": ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optim: {learning_rate: 1e-4}\n", "optim.learning_rate: unknown key; did you mean 'lr'?"),
        ("optimizer: {lr: 1e-4}\n", "optimizer: unknown key; did you mean 'optim'?"),
        ("run: {max_iter: 5}\n", "run.max_iter: unknown key; did you mean 'max_iters'?"),
        (
            "data: {train: [{name: a, annotation: x}]}\n",
            "data.train[0].annotation: unknown key; did you mean 'annotations'?",
        ),
    ],
)
def test_unknown_keys_are_errors_with_the_closest_key(tmp_path, text, message):
    _fails(tmp_path, text, message)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"optim: {lr: [\n", "is not valid YAML (line 2"),
        (b"- 1\n- 2\n", "must be a mapping"),
        (b"optim: {lr: \xff}\n", "is not UTF-8"),
        (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_unreadable_recipes(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optim.lr=fast", '--set: optim.lr: expected a number, got "fast"'),
        ("optim.learning_rate=1", "--set: optim.learning_rate: unknown key; did you mean 'lr'?"),
        ("optim.lr=[", "the value of --set optim.lr is not valid YAML"),
        ("optim.lr.x=1", "--set: optim.lr: is a value, not a section"),
        ("model.overrides.tower.num_blockz=2", "did you mean 'tower.num_blocks'?"),
        ("optim.lr", "use key=value"),
    ],
)
def test_set_overrides_are_checked_at_once(item, message):
    with pytest.raises(ConfigError) as err:
        apply_override({}, item)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_recipes_still_load(tmp_path):
    cfg = _load(tmp_path, "optim: {lr: 2e-4}\nrun: {max_iters: '10'}\n", ["model.overrides.loss.mlm=true"])
    assert cfg.optim.lr == 2e-4 and cfg.run.max_iters == 10 and cfg.model.overrides == {"loss.mlm": True}
    for name in ("finetune_shared_data.yaml", "odinw_transfer.yaml"):
        assert TrainConfig.from_yaml(RECIPES / name).optim.schedule == "cosine"


def test_glip_train_with_a_bad_recipe_prints_one_error_line(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("optim: {lr: fast}\n")
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f'error: {path}: optim.lr: expected a number, got "fast"\n'
    assert main(["train", str(RECIPES / "odinw_transfer.yaml"), "--set", "run.max_iter=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --set: run.max_iter: unknown key; did you mean 'max_iters'?") and err.count("\n") == 1

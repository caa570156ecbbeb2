"""What the trainer tells and keeps: CPU threads, the lr of every group, validation lines, the best model,
no checkpoint when ``checkpoint_every`` is 0."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_trainer import _dataset, _recipe

from glip.engine.metrics_log import read_metrics
from glip.engine.optim import build_optimizer, group_lrs, main_lr, parameter_groups
from glip.engine.threads import auto_threads, configure_threads
from glip.engine.trainer import Trainer, describe_results, format_duration


@pytest.fixture()
def train_json(tmp_path, sample_image):
    return _dataset(tmp_path / "data", sample_image)


def test_free_cores_decide_the_thread_count():
    assert auto_threads(cores=2, load=0.0) == 2
    assert auto_threads(cores=2, load=1.3) == 1  # one core busy elsewhere: one thread
    assert auto_threads(cores=2, load=7.0) == 1  # never fewer than one
    assert auto_threads(cores=16, load=3.6) == 12


def test_thread_choice_is_said(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert "2 thread(s) (run.threads" in configure_threads(2, torch.device("cpu"))
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert "OMP_NUM_THREADS=1 kept" in configure_threads(0, torch.device("cpu"))
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        monkeypatch.setattr("glip.engine.threads.load_average", lambda: 5.0)
        assert "with 1 thread(s)" in configure_threads(0, torch.device("cpu")) and torch.get_num_threads() == 1
        assert "unchanged" in configure_threads(0, torch.device("meta"))
    finally:
        torch.set_num_threads(before)


def test_first_log_line_is_the_thread_choice(train_json, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="glip.engine"):
        Trainer(_recipe(train_json, tmp_path / "run", max_iters=1, threads=1))
    first = next(r for r in caplog.records if r.name.startswith("glip."))
    assert first.getMessage().startswith("CPU training with 1 thread(s)")


def test_every_group_has_a_name_and_the_log_shows_the_head_lr(train_json, tmp_path):
    config = _recipe(train_json, tmp_path / "run", max_iters=2, log_every=1, checkpoint_every=0)
    config.optim.body_lr_factor = 0.1
    config.optim.text_lr = 0.0
    config.validate()
    trainer = Trainer(config)
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert {"main", "main.bias", "body", "body.bias", "text", "text.bias"} <= set(names)
    assert main_lr(trainer.optimizer) == trainer.optimizer.param_groups[names.index("main")]["lr"]
    trainer.train()
    record = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert record["lr"] == pytest.approx(record["lr/main"]) and record["lr/body"] == pytest.approx(record["lr"] * 0.1)
    assert record["lr/text"] == 0.0


def test_merged_groups_are_named_by_their_parts(train_json, tmp_path):
    trainer = Trainer(_recipe(train_json, tmp_path / "run", max_iters=1, checkpoint_every=0))
    groups = parameter_groups(trainer.model, trainer.config.optim)  # body at lr x 1: shares main's group
    assert "body+main" in [g["name"] for g in groups]
    opt = build_optimizer(trainer.model, trainer.config.optim)
    assert main_lr(opt) == trainer.config.optim.lr
    assert set(group_lrs(opt)) == {f"lr/{g['name']}" for g in groups}


def test_checkpoint_every_zero_writes_no_checkpoint(train_json, tmp_path):
    Trainer(_recipe(train_json, tmp_path / "run", max_iters=2, checkpoint_every=0)).train()
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    Trainer(_recipe(train_json, tmp_path / "run2", max_iters=3, checkpoint_every=2)).train()
    assert sorted(p.name for p in (tmp_path / "run2" / "checkpoints").glob("*.pt")) == [
        "ckpt_00000002.pt", "ckpt_00000003.pt",
    ]  # fmt: skip


def test_validation_lines_and_the_best_model(train_json, tmp_path, caplog):
    config = _recipe(train_json, tmp_path / "run", max_iters=4, eval_every=2, checkpoint_every=2)
    config.data.val = list(config.data.train)
    config.run.keep_best = config.run.eval_at_start = True
    with caplog.at_level(logging.INFO, logger="glip.engine"):
        Trainer(config).train()
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("step 0: validating on r") for m in lines)
    assert any(m.startswith("step 2 validation (") and "r AP " in m for m in lines)
    assert any("s per step over the first" in m for m in lines)
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["best"]["step"] in (0, 2, 4) and (tmp_path / "run" / "best_model" / "config.json").is_file()
    state = torch.load(tmp_path / "run" / "checkpoints" / "ckpt_00000004.pt", weights_only=True)
    assert json.loads(state["best"]) == final["best"]  # a resumed run knows the best so far


def test_result_lines_and_durations():
    results = {"a/AP": 0.123, "a/AP50": 0.4, "b/AP": 0.5, "b/AP50": 0.9, "mean_AP": 0.312}
    assert describe_results(results) == "a AP 12.3 (AP50 40.0); b AP 50.0 (AP50 90.0); mean AP 31.2"
    assert [format_duration(s) for s in (42, 450, 9000)] == ["42 s", "7.5 min", "2.5 h"]

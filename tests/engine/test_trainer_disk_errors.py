"""``glip train`` on a full, read-only or forbidden disk, and under Ctrl-C: one line, a clean exit, a valid run.

Running as root ignores file permissions and a container cannot mount a small tmpfs, so the disk
errors are injected where the bytes are written: the ``open`` of the checkpoint writer and of the
metrics log returns a file whose ``write`` raises ``OSError(ENOSPC / EROFS)`` after a few bytes, the
model export raises ``PermissionError(EACCES)`` after writing part of the folder, and the text
writer fails for ``final_metrics.json``. ``torch.save`` on the kernel's ``/dev/full`` checks the real
error path. Ctrl-C is a ``KeyboardInterrupt`` in a step, and (slow) a real SIGINT to ``glip train``
with data workers.
"""

from __future__ import annotations

import builtins
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import _dataset, _recipe

from glip.cli import main
from glip.engine import checkpoint as checkpoint_module
from glip.engine import metrics_log
from glip.engine.checkpoint import POINTER
from glip.engine.distributed import DistInfo, on_main
from glip.engine.metrics_log import MetricLogger, read_metrics
from glip.engine.trainer import Trainer
from glip.errors import GLIPError, OutputError
from glip.modeling.glip import GLIPModel

REPO = Path(__file__).resolve().parents[2]


class _FailingFile:
    """A writable file that fails with ``OSError(code)`` once ``budget`` bytes were written (partly written)."""

    def __init__(self, f: Any, code: int, budget: int) -> None:
        self.f, self.code, self.budget = f, code, budget

    def write(self, data: bytes) -> int:
        room = max(self.budget, 0)
        if len(data) > room:
            self.f.write(bytes(data[:room]))
            self.budget = 0
            raise OSError(self.code, os.strerror(self.code))
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def _failing_open(code: int, budget: int = 100, skip: int = 0):
    """An ``open`` whose write-mode files fail after ``budget`` bytes, except for the first ``skip`` of them."""
    opened = [0]

    def fake(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (returned to the caller)
        if not any(c in mode for c in "wa"):
            return f
        opened[0] += 1
        return f if opened[0] <= skip else _FailingFile(f, code, budget)

    return fake


@pytest.fixture()
def recipe(tmp_path, sample_image) -> tuple[Path, Path]:
    """A 4-step run with a checkpoint at step 3 (and the final one at 4), as a YAML file."""
    out = tmp_path / "run"
    path = tmp_path / "recipe.yaml"
    _recipe(_dataset(tmp_path / "data", sample_image), out, max_iters=4, log_every=2).to_yaml(path)
    return path, out


def _messages(capsys) -> list[str]:
    """Stderr lines other than the progress bar's and the trainer's log lines (threads, ETA, validation):
    the last line, if it is an ``error:`` line, and any traceback."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("train:")]
    assert not any("Traceback" in line for line in lines), lines
    assert sum(line.startswith("error: ") for line in lines) <= 1, lines
    return lines[-1:] if lines and lines[-1].startswith("error: ") else lines


def _one_line_error(capsys) -> str:
    err = _messages(capsys)
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _no_temporary_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".partial" in p.name]


def test_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes(recipe, capsys, monkeypatch):
    path, out = recipe
    monkeypatch.setattr(checkpoint_module, "open", _failing_open(errno.ENOSPC, budget=5000, skip=1), raising=False)
    assert main(["train", str(path)]) == 1
    line = _one_line_error(capsys)
    assert "ckpt_00000004.pt" in line and "disk is full" in line
    ckpts = out / "checkpoints"
    assert (ckpts / POINTER).read_text().strip() == "ckpt_00000003.pt"  # the previous checkpoint stays valid
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt_00000003.pt", POINTER]
    assert not (out / "model").exists() and not (out / "final_metrics.json").exists()
    _no_temporary_files(out)

    monkeypatch.undo()
    assert main(["train", str(path), "--resume"]) == 0
    assert (out / "final_metrics.json").is_file() and (out / "model" / "model.safetensors").is_file()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [2, 4]


def test_read_only_metrics_log_is_one_line(recipe, capsys, monkeypatch):
    path, out = recipe
    monkeypatch.setattr(metrics_log, "open", _failing_open(errno.EROFS, budget=0), raising=False)
    assert main(["train", str(path)]) == 1
    line = _one_line_error(capsys)
    assert "metrics.jsonl" in line and "read-only" in line
    assert (out / "metrics.jsonl").read_text() == ""  # the failed record was cut back


def test_permission_denied_at_export_leaves_no_model_folder(recipe, capsys, monkeypatch):
    path, out = recipe

    def denied(self, folder, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text("{}")
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(folder) / "model.safetensors"))

    monkeypatch.setattr(GLIPModel, "save_pretrained", denied)
    assert main(["train", str(path)]) == 1
    line = _one_line_error(capsys)
    assert str(out / "model") in line and "permission denied" in line
    assert not (out / "model").exists() and not (out / "final_metrics.json").exists()
    assert (out / "checkpoints" / POINTER).read_text().strip() == "ckpt_00000004.pt"
    _no_temporary_files(out)


def test_full_disk_at_final_metrics_leaves_no_report(recipe, capsys, monkeypatch):
    path, out = recipe
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(".final_metrics.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["train", str(path)]) == 1
    line = _one_line_error(capsys)
    assert "final_metrics.json" in line and "disk is full" in line
    assert not (out / "final_metrics.json").exists()
    _no_temporary_files(out)


def test_ctrl_c_during_a_step_exits_130_without_traceback(recipe, capsys, monkeypatch):
    path, out = recipe
    original = Trainer.train_step

    def interrupted(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    assert main(["train", str(path)]) == 130
    messages = _messages(capsys)
    assert len(messages) == 1 and messages[0].endswith("interrupted"), messages
    assert (out / "checkpoints" / POINTER).read_text().strip() == "ckpt_00000003.pt"


def test_metrics_log_cuts_back_a_partial_record(tmp_path, monkeypatch):
    log = MetricLogger(tmp_path, enabled=True)
    log.write({"step": 1, "loss": 1.0})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    monkeypatch.setattr(metrics_log, "open", _failing_open(errno.ENOSPC, budget=7), raising=False)
    with pytest.raises(OutputError, match=r"metrics\.jsonl: the disk is full"):
        log.write({"step": 2, "loss": 0.5})
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    log.close()


def test_metrics_log_resume_drops_lost_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    MetricLogger(tmp_path, enabled=True, resume_step=2).close()
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_checkpoint_writer_reports_the_real_disk_error():
    """``torch.save`` on a full device says "unexpected pos"; the writer raises the ENOSPC behind it."""
    with pytest.raises(OSError) as info:
        checkpoint_module._torch_save({"w": torch.zeros(100_000)}, "/dev/full")
    assert info.value.errno == errno.ENOSPC


@pytest.mark.slow
def test_sigint_with_data_workers_exits_130_without_traceback(tmp_path, sample_image):
    out = tmp_path / "run"
    config = _recipe(_dataset(tmp_path / "data", sample_image), out, max_iters=10_000, checkpoint_every=2)
    config.data.num_workers = 2
    config.to_yaml(tmp_path / "recipe.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glip.cli", "train", str(tmp_path / "recipe.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / POINTER).is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        time.sleep(0.5)  # somewhere in the following steps
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Error" not in err, err[-2000:]
    pointer = (out / "checkpoints" / POINTER).read_text().strip()
    assert torch.load(out / "checkpoints" / pointer, weights_only=True)["step"] > 0


def _rank_main(rank: int, world: int, port: int, results: Path) -> None:
    """One process of :func:`test_a_write_failure_on_rank_0_ends_every_rank`."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    info = DistInfo(rank, world, rank, torch.device("cpu"))

    def full() -> None:
        raise OutputError("cannot write ckpt_00000004.pt: the disk is full")

    try:
        on_main(full, info)
        outcome = "no error"
    except GLIPError as e:
        outcome = f"{type(e).__name__}: {e}"
    (results / f"{rank}.error").write_text(outcome)
    (results / f"{rank}.result").write_text(repr(on_main(lambda: 42, info)))
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_write_failure_on_rank_0_ends_every_rank(tmp_path):
    """Rank 0 writes the files; when it fails, the other ranks stop too instead of waiting forever."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, port, tmp_path), nprocs=2, join=True)
    assert (tmp_path / "0.error").read_text() == "OutputError: cannot write ckpt_00000004.pt: the disk is full"
    assert (tmp_path / "1.error").read_text().startswith("GLIPError: rank 0 failed")
    assert [(tmp_path / f"{r}.result").read_text() for r in (0, 1)] == ["42", "None"]

"""The ``glip`` command line on a real image, and its one-line errors."""

import json
import subprocess
import sys

import pytest

from glip.cli import main


def test_predict_writes_json_and_picture(tiny_model_dir, sample_image, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(sample_image),
            "--classes",
            "raccoon,dog",
            "--model",
            str(tiny_model_dir),
            "--threshold",
            "0.1",
            "--out-dir",
            str(out),
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert code == 0
    record = json.loads((out / "raccoon-72.json").read_text())
    assert record["width"] == 384 and record["height"] == 288
    assert record["classes"] == ["raccoon", "dog"]
    dets = record["detections"]
    assert dets, "the biased tiny model should produce detections"
    assert {d["label_name"] for d in dets} <= {"raccoon", "dog"}
    for d in dets:
        x1, y1, x2, y2 = d["box_xyxy"]
        assert 0 <= x1 <= x2 <= 383 and 0 <= y1 <= y2 <= 287
        assert d["score"] >= 0.1
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    assert (out / "raccoon-72.jpg").stat().st_size > 1000
    assert "raccoon-72.jpg" in capsys.readouterr().out


def test_predict_folder_with_caption_prompt(tiny_model_dir, sample_image, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(sample_image.read_bytes())
    (folder / "b.jpg").write_bytes(sample_image.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    code = main(
        [
            "predict",
            str(folder),
            "--prompt",
            "two raccoons sitting on a road",
            "--model",
            str(tiny_model_dir),
            "--out-dir",
            str(tmp_path / "o"),
            "-q",
            "--threshold",
            "0.1",
        ]
    )
    assert code == 0
    record = json.loads((tmp_path / "o" / "a.json").read_text())
    assert {d["label_name"] for d in record["detections"]} <= {"two raccoons", "a road"}
    assert (tmp_path / "o" / "b.json").exists() and not (tmp_path / "o" / "notes.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "raccoon", "--model", "MISSING_DIR"], "does not exist"),
        (["--classes", " , ", "--model", "MODEL"], "--classes is empty"),
        (["--prompt", "  ", "--model", "MODEL"], "--prompt is empty"),
        (["--model", "MODEL"], "exactly one of"),
        (["--classes", "raccoon", "--model", "EMPTY_DIR"], "is not a glip model folder"),
    ],
)
def test_bad_inputs_end_with_one_line_error(args, message, tiny_model_dir, sample_image, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [
        a.replace("MODEL", str(tiny_model_dir))
        .replace("MISSING_DIR", str(tmp_path / "nope"))
        .replace("EMPTY_DIR", str(tmp_path / "empty"))
        for a in args
    ]
    code = main(["predict", str(sample_image), "--out-dir", str(tmp_path / "o"), "-q", *args])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_unreadable_image_is_an_error(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("garbage")
    out = str(tmp_path / "o")
    code = main(["predict", str(bad), "--classes", "cat", "--model", str(tiny_model_dir), "--out-dir", out, "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot read image" in err and "0 done, 1 skipped" in err and "Traceback" not in err


def test_bad_image_in_a_folder_is_skipped_not_fatal(tiny_model_dir, sample_image, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(sample_image.read_bytes())
    (folder / "b.jpg").write_bytes(sample_image.read_bytes()[:500])  # truncated
    (folder / "c.png").write_bytes(b"not a png")
    (folder / "d.jpg").write_bytes(sample_image.read_bytes())
    out = tmp_path / "o"
    code = main(["predict", str(folder), "--classes", "raccoon", "--model", str(tiny_model_dir), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1  # the exit status says that something was skipped
    assert "2 done, 2 skipped" in err and "b.jpg" in err and "c.png" in err
    assert (out / "a.json").exists() and (out / "d.json").exists() and (out / "d.jpg").exists()
    assert not (out / "b.json").exists() and not (out / "c.json").exists()
    assert not list(out.glob(".*.tmp")), "no temporary file is left behind"


def test_out_dir_holding_the_inputs_is_refused_and_nothing_is_touched(tiny_model_dir, sample_image, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = folder / "raccoon.jpg"
    photo.write_bytes(sample_image.read_bytes())
    before = photo.read_bytes()
    for out in (folder, tmp_path / "photos" / "."):
        code = main(
            ["predict", str(folder), "--classes", "raccoon", "--model", str(tiny_model_dir), "--out-dir", str(out)]
        )
        assert code == 1
        assert "holds the input image" in capsys.readouterr().err
    assert photo.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["raccoon.jpg"]


def test_existing_files_not_written_by_glip_are_never_overwritten(tiny_model_dir, sample_image, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    mine = out / "raccoon-72.jpg"
    mine.write_bytes(b"my own picture")
    args = ["predict", str(sample_image), "--classes", "raccoon", "--model", str(tiny_model_dir), "--out-dir", str(out)]
    assert main(args) == 1
    assert "was not written by glip" in capsys.readouterr().err
    assert mine.read_bytes() == b"my own picture"
    # results of an earlier glip run are replaced
    mine.unlink()
    assert main([*args, "-q"]) == 0 and main([*args, "-q"]) == 0
    assert json.loads((out / "raccoon-72.json").read_text())["kind"] == "glip.detections"


@pytest.mark.parametrize("device", ["", "CPU ", "cuda:-1", "xla", "0", "cpu,cuda", "cuda:99", "auto:1"])
def test_device_names(device, tiny_model_dir, sample_image, tmp_path, capsys):
    code = main(
        ["predict", str(sample_image), "--classes", "raccoon", "--model", str(tiny_model_dir), "--device", device,
         "--out-dir", str(tmp_path / "o"), "-q"]
    )
    err = capsys.readouterr().err
    if device.strip().lower() == "cpu":
        assert code == 0
    else:
        assert code == 1 and err.startswith("error: device") and err.count("\n") == 1


@pytest.mark.parametrize("value", ["-0.1", "nan", "1.5", "abc"])
def test_threshold_must_be_a_probability(value, sample_image, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(sample_image), "--classes", "raccoon", "--threshold", value])
    assert exc.value.code == 2
    assert "--threshold" in capsys.readouterr().err


def test_version_and_help_do_not_import_torch():
    code = (
        "import sys, glip.cli\n"
        "try:\n    glip.cli.main(['--version'])\nexcept SystemExit:\n    pass\n"
        "try:\n    glip.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("glip ")
    assert proc.stdout.strip().endswith("False False")


def test_console_script_runs_as_a_process(tiny_model_dir, sample_image, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "glip.cli",
            "predict",
            str(sample_image),
            "--classes",
            "raccoon",
            "--model",
            str(tiny_model_dir / "missing"),
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_convert_official_checkpoint(tmp_path, capsys):
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel
    from official_keys import write_official_checkpoint

    write_official_checkpoint(GLIPConfig.tiny(), tmp_path / "official.pth")
    assert main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "converted")]) == 0
    out = capsys.readouterr().out
    assert "missing (left at their initial values): 0" in out and "unexpected (not used): 0" in out
    model = GLIPModel.from_pretrained(tmp_path / "converted")
    assert model.config.tower.num_blocks == 2
    # a preset that does not fit fails with the shape-mismatch message
    code = main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "x"), "--preset", "glip_t"])
    assert code == 1
    assert "do not fit the model" in capsys.readouterr().err

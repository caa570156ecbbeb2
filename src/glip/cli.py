"""The ``glip`` command line. Each subcommand parses arguments and calls one library function.

User errors (:class:`glip.errors.GLIPError`) end with a one-line ``error: ...`` message on stderr
and exit status 1; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from glip import recipes
from glip.errors import GLIPError
from glip.validation import one_line
from glip.version import __version__

logger = logging.getLogger("glip")


def parse_classes(text: str) -> list[str]:
    """``"person, dog"`` → ``["person", "dog"]``.

    Raises:
        GLIPError: for an empty list or an empty name (``"dog,,cat"``).
    """
    names = [c.strip() for c in text.split(",")]
    if not any(names):
        raise GLIPError('--classes is empty: give comma-separated class names, e.g. --classes "person,dog"')
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise GLIPError(f'--classes {text!r} has an empty name at position {empty[0] + 1}: e.g. --classes "person,dog"')
    return names


def _warn_skip(path: Path, reason: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: skipped: {one_line(reason)}", file=sys.stderr)


def _cmd_predict(args: argparse.Namespace) -> int:
    from glip.batch_predict import check_outputs, collect_images, predict_files, unique_stems
    from glip.images import printable_path

    if (args.classes is None) == (args.prompt is None):
        raise GLIPError('give exactly one of --classes "person,dog" or --prompt "a man walking a dog"')
    classes = parse_classes(args.classes) if args.classes is not None else None
    if args.prompt is not None and not args.prompt.strip():
        raise GLIPError("--prompt is empty: give a sentence naming what to find")
    paths = collect_images(args.images)
    check_outputs(paths, Path(args.out_dir), unique_stems(paths))  # before the model is loaded
    predictor = _predictor(args)
    result = predict_files(
        predictor,
        paths,
        args.out_dir,
        classes=classes,
        prompt=args.prompt,
        threshold=args.threshold,
        progress=not args.quiet,
        on_skip=_warn_skip,
        masks=args.masks,
    )
    for path in result.written:
        record = json.loads(path.read_text())
        dets = record["detections"]
        print(f"{record['image']}: {len(dets)} detections -> {printable_path(path.with_suffix('.jpg'))}")
        for d in dets:
            box = ", ".join(f"{c:.1f}" for c in d["box_xyxy"])
            area = f"  mask {_mask_area(d['mask'])} px" if "mask" in d else ""
            print(f"  {d['label_name']:<24} {d['score']:.3f}  [{box}]{area}")
    if result.skipped:  # each one was reported by a warning as it was met
        raise GLIPError(f"{result.summary()}: {len(result.skipped)} image(s) could not be read (see the warnings)")
    return 0


def _mask_area(rle: dict) -> int:
    from glip.masks import rle_area

    return rle_area([rle])[0]


def _cmd_convert(args: argparse.Namespace) -> int:
    from glip.checkpoints import load_official, save_model
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel

    config = GLIPConfig.from_preset(args.preset) if args.preset else None
    model, report = load_official(args.checkpoint, GLIPModel, config)
    print(report.summary())
    out = save_model(model, args.out_dir)
    print(f"wrote {out} ({model.num_parameters() / 1e6:.1f}M parameters, preset {model.config.preset})")  # type: ignore[attr-defined]
    return 0


def _predictor(args: argparse.Namespace, **kwargs: object):
    from glip.predictor import GLIPPredictor

    # no --model: the embedded default model, as for predict
    return GLIPPredictor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, compile=args.compile, cuda_graphs=args.cuda_graphs, **kwargs
    )


def _overrides(args: argparse.Namespace) -> dict:
    from glip.evaluation.prompts import load_prompt_overrides

    return load_prompt_overrides(recipes.resolve(args.prompt_overrides, "prompts")) if args.prompt_overrides else {}


def _cmd_eval(args: argparse.Namespace) -> int:
    from glip.data.coco import CocoDataset
    from glip.evaluation.coco_eval import format_metrics
    from glip.evaluation.detection import evaluate_coco_dataset
    from glip.evaluation.prompts import dataset_prompt
    from glip.evaluation.report import detection_markdown, write_reports

    dataset = CocoDataset.load(args.dataset, args.images)
    name = args.name or (
        args.dataset.parent.parent.name if args.dataset.parent.name == "annotations" else args.dataset.parent.name
    )
    if args.protocol == "lvis":
        return _eval_lvis(args, dataset, name)
    predictor = _predictor(args)
    prompt = dataset_prompt(dataset.category_names, _overrides(args).get(name), args.prompt_template)
    report, metrics = evaluate_coco_dataset(
        predictor, dataset, prompt, args.batch_size, args.backend, args.out_dir, name, args.dataset.stem,
        not args.quiet, iou_type=args.iou_type,
    )  # fmt: skip
    md, js = write_reports(
        args.out_dir, f"{name}_{args.dataset.stem}_report", detection_markdown(report), report.to_dict()
    )
    speed = f"{len(dataset)} images, {report.images_per_second:.2f} img/s"
    print(f"{name}/{args.dataset.stem} ({speed}): {format_metrics(metrics)}")
    for cls, ap in metrics.per_class.items():
        print(f"  {cls:<30} {'-' if ap is None or ap < 0 else f'{100 * ap:.1f}'}")
    print(f"report: {md} and {js}; detections: {report.detections_file}")
    return 0


def _eval_lvis(args: argparse.Namespace, dataset: object, name: str) -> int:
    from glip.evaluation.detection import evaluate_lvis_dataset
    from glip.evaluation.prompts import dataset_prompt
    from glip.evaluation.report import write_reports

    predictor = _predictor(args)
    prompt = dataset_prompt(dataset.category_names, _overrides(args).get(name), args.prompt_template)  # type: ignore[attr-defined]
    report, m = evaluate_lvis_dataset(
        predictor,
        dataset,
        prompt,
        args.batch_size,
        args.out_dir,
        name,
        args.dataset.stem,
        not args.quiet,  # type: ignore[arg-type]
    )
    line = " | ".join(f"{k} {100 * getattr(m, k):.1f}" for k in ("AP", "AP50", "AP75", "APr", "APc", "APf"))
    md = f"## {name} / {args.dataset.stem} (LVIS Fixed AP)\n\n{line}\n"
    paths = write_reports(args.out_dir, f"{name}_{args.dataset.stem}_lvis_report", md, report.to_dict())
    print(f"{name}/{args.dataset.stem} LVIS Fixed AP ({len(dataset)} images): {line}")  # type: ignore[arg-type]
    print(f"report: {paths[0]} and {paths[1]}; detections: {report.detections_file}")
    return 0


def _cmd_eval_suite(args: argparse.Namespace) -> int:
    from glip.evaluation.report import suite_markdown, write_reports
    from glip.evaluation.suite import evaluate_suite

    predictor = _predictor(args)
    splits = tuple(s.strip() for s in args.splits.split(","))
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    result = evaluate_suite(
        predictor, args.root, splits, _overrides(args), args.prompt_template, args.batch_size, args.backend,
        args.out_dir, datasets, not args.quiet,
    )  # fmt: skip
    markdown = suite_markdown(result.reports, result.average)
    md, js = write_reports(args.out_dir, "suite_report", markdown, result.to_dict())
    print(markdown)
    print(f"report: {md} and {js}")
    return 0


def _draw_and_save(image: object, det: object, out_dir: Path, stem: str, record: dict) -> Path:
    """Write ``<stem>.json`` and ``<stem>.jpg`` (boxes drawn) into ``out_dir`` atomically."""
    from glip.fileio import atomic_write, atomic_write_text
    from glip.visualize import draw_detections

    atomic_write_text(out_dir / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    picture = draw_detections(image, det)  # type: ignore[arg-type]
    atomic_write(out_dir / f"{stem}.jpg", lambda tmp: picture.save(tmp, format="JPEG", quality=92))
    return out_dir / f"{stem}.jpg"


def _cmd_vqa(args: argparse.Namespace) -> int:
    from glip.batch_predict import check_outputs
    from glip.images import load_image
    from glip.vl_tasks import answer_question

    image_path = Path(args.image)
    check_outputs([image_path], Path(args.out_dir), [image_path.stem])
    image = load_image(image_path)
    predictor = _predictor(args)
    result = answer_question(predictor, image, args.question, threshold=args.threshold)
    det = result.detections
    record = {"kind": "glip.vqa", "image": str(image_path), "question": result.question, "answer": result.answer,
              "score": round(result.score, 4), "top": [[a, round(p, 4)] for a, p in result.top],
              "detections": det.to_list() if det is not None else []}  # fmt: skip
    picture = _draw_and_save(image, det, Path(args.out_dir), image_path.stem, record)
    print(f"{result.question} -> {result.answer} ({result.score:.3f})")
    print("  top: " + ", ".join(f"{a} {p:.3f}" for a, p in result.top))
    for d in record["detections"]:
        print(f"  {d['label_name']:<24} {d['score']:.3f}  [{', '.join(f'{c:.1f}' for c in d['box_xyxy'])}]")
    print(f"picture: {picture}")
    return 0


def _cmd_caption(args: argparse.Namespace) -> int:
    from glip.batch_predict import check_outputs
    from glip.images import load_image
    from glip.vl_tasks import caption_image

    image_path = Path(args.image)
    check_outputs([image_path], Path(args.out_dir), [image_path.stem])
    image = load_image(image_path)
    predictor = _predictor(args)
    result = caption_image(
        predictor, image, beam_size=args.beam_size, max_length=args.max_length, threshold=args.threshold
    )
    det = result.detections
    record = {"kind": "glip.caption", "image": str(image_path), "caption": result.text,
              "score": round(result.score, 4), "detections": det.to_list() if det is not None else []}  # fmt: skip
    picture = _draw_and_save(image, det, Path(args.out_dir), image_path.stem, record) if det is not None else None
    print(result.text or "(empty caption)")
    for d in record["detections"]:
        print(f"  {d['label_name']:<24} {d['score']:.3f}  [{', '.join(f'{c:.1f}' for c in d['box_xyxy'])}]")
    if picture is not None:
        print(f"picture: {picture}")
    return 0


def _cmd_eval_vqa(args: argparse.Namespace) -> int:
    from glip.evaluation.vl_eval import evaluate_vqa_model

    report = evaluate_vqa_model(
        _predictor(args), args.annotations, args.images, args.instances, args.holdout_every, args.out_dir,
        not args.quiet,
    )  # fmt: skip
    for part in ("all", "train", "held_out"):
        if part in report:
            r = report[part]
            types = " ".join(f"{k} {v:.1f}" for k, v in r["perAnswerType"].items())
            print(f"{report['name']} [{part}] {r['questions']} questions: accuracy {r['overall']:.2f}  ({types})")
    if "answer_grounding_recall" in report:
        print(f"answer grounding recall@1 (IoU 0.5): {report['answer_grounding_recall']}")
    return 0


def _cmd_eval_caption(args: argparse.Namespace) -> int:
    from glip.evaluation.vl_eval import evaluate_caption_model

    report = evaluate_caption_model(
        _predictor(args), args.annotations, args.images, args.holdout_every, args.beam_size, args.out_dir,
        not args.quiet,
    )  # fmt: skip
    for part in ("all", "train", "held_out"):
        if part in report:
            r = report[part]
            print(f"{report['name']} [{part}] {r['images']} images: BLEU-4 {100 * r['BLEU-4']:.1f}  "
                  f"CIDEr-D {100 * r['CIDEr-D']:.1f}")  # fmt: skip
    return 0


def _cmd_eval_refseg(args: argparse.Namespace) -> int:
    from glip.evaluation.refseg import evaluate_refseg

    predictor = _predictor(args)
    report = evaluate_refseg(
        predictor, args.annotations, args.images, threshold=args.threshold, progress=not args.quiet,
        out_dir=args.out_dir, keep_best=args.keep_best,
    )  # fmt: skip
    m = report.metrics
    pr = " ".join(f"{k} {100 * v:.1f}" for k, v in m["precision_at"].items())
    print(f"{report.dataset} ({report.num_expressions} expressions, {report.num_images} images): "
          f"mIoU {100 * m['mean_iou']:.1f}  cIoU {100 * m['cumulative_iou']:.1f}  {pr}")  # fmt: skip
    for template, t in sorted(m.get("per_template", {}).items()):
        print(f"  {template:<12} n={t['num_expressions']:<5} mIoU {100 * t['mean_iou']:.1f}")
    print(f"report: {' and '.join(report.report_files)}; per expression: {report.results_file}")
    return 0


def _cmd_eval_grounding(args: argparse.Namespace) -> int:
    from glip.evaluation.grounding import evaluate_grounding_model
    from glip.evaluation.report import write_reports

    predictor = _predictor(args)
    metrics = evaluate_grounding_model(
        predictor, args.annotations, args.images, protocol=args.protocol, sentences_dir=args.sentences,
        progress=not args.quiet,
    )  # fmt: skip
    summary = metrics.summary()
    stem = f"{args.annotations.stem}_grounding_{args.protocol}"
    md, js = write_reports(
        args.out_dir, stem, f"## {args.annotations.name} ({args.protocol})\n\n{summary}\n", metrics.to_dict()
    )
    print(summary)
    print(f"report: {md} and {js}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from glip.engine.config import TrainConfig
    from glip.engine.trainer import train

    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"run.output_dir={args.output_dir}")
    config = TrainConfig.from_yaml(recipes.resolve(args.config), overrides)
    from glip.engine.metrics_log import console_logging

    with console_logging():  # threads, ETA and validation lines above the progress bar
        metrics = train(config, resume=args.resume)
    if metrics:
        print(json.dumps({"final_validation": metrics}, indent=2))
    print(f"model saved in {Path(config.run.output_dir) / 'model'}")
    return 0


def _cmd_odinw(args: argparse.Namespace) -> int:
    from glip.engine.config import TrainConfig
    from glip.engine.metrics_log import console_logging
    from glip.engine.transfer import run_transfer
    from glip.evaluation.report import write_reports

    recipe = TrainConfig.from_yaml(recipes.resolve(args.recipe), list(args.set or [])) if args.recipe else None
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [d.strip() for d in args.datasets.split(",")] if args.datasets else None
    with console_logging():
        result = run_transfer(
            args.root, args.model, args.mode, recipe, args.shots, seeds, _overrides(args), args.out_dir, datasets,
            args.device, not args.quiet, args.dtype,
        )  # fmt: skip
    md, js = write_reports(
        args.out_dir, f"transfer_{args.mode}_{args.shots or 'all'}", result.markdown(), result.to_dict()
    )
    print(result.markdown())
    print(f"report: {md} and {js}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from glip.engine.finetune import FinetuneOptions, finetune
    from glip.engine.metrics_log import console_logging

    opts = FinetuneOptions(
        train=args.train, val=args.val, images=args.images, val_images=args.val_images, model=args.model,
        mode=args.mode, epochs=args.epochs, iters=args.iters, out=str(args.out), batch_size=args.batch_size,
        lr=args.lr, val_fraction=args.val_fraction, shots=args.shots, seed=args.seed, device=args.device,
        amp=args.amp, threads=args.threads, prompt_template=args.prompt_template, evals=args.evals,
    )  # fmt: skip
    with console_logging():
        result = finetune(opts)
    print(result.markdown())
    print(f"report: {Path(result.out_dir) / 'report.md'}")
    model = result.best_model or result.last_model
    print(f"use it: glip predict IMAGE --model {model} --classes ...   |   glip eval --model {model} --dataset ...")
    return 0


def nonnegative_fraction(text: str) -> float:
    """argparse type: a number in [0, 0.5]."""
    value = probability(text)
    if value > 0.5:
        raise argparse.ArgumentTypeError(f"{text} is more than 0.5")
    return value


def positive_number(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "finetune", help="fine-tune a model on your labelled images (COCO, VOC or YOLO) in one command",
        description="Fine-tune (default: the embedded model) on a labelled set, validate as it runs, keep the best "
        "model and report. Recipes (glip train) give full control; this writes the one it ran to OUT/config.yaml.",
    )  # fmt: skip
    f.add_argument(
        "train", help="training set: COCO .json, Roboflow/ODinW split folder, VOC folder, YOLO data.yaml or folder"
    )
    f.add_argument("--val", help="validation set, any of the same layouts (default: a YOLO data.yaml's val, else "
                   "--val-fraction of the training images held back)")  # fmt: skip
    f.add_argument("--images", help="images folder of the training set, where its layout does not say")
    f.add_argument("--val-images", help="images folder of the validation set, where its layout does not say")
    f.add_argument("--model", help="starting model folder or official .pth (default: the embedded model)")
    f.add_argument(
        "--mode", default="full", choices=["full", "prompt", "linear"],
        help="full: everything but the text encoder; prompt: prompt tuning (official language_prompt_v2); "
        "linear: linear probe (official linear_prob)",
    )  # fmt: skip
    length = f.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_number, help="passes over the training images (CPU 10, GPU 30)")
    length.add_argument("--iters", type=positive_int, help="optimiser steps (instead of --epochs)")
    f.add_argument("--out", type=folder, default=Path("runs/finetune"), help="run folder (default runs/finetune)")
    f.add_argument("--batch-size", type=positive_int, default=4, help="images per step (default 4)")
    f.add_argument("--lr", type=positive_number, help="learning rate (full 1e-4, prompt 0.05, linear 1e-3)")
    f.add_argument(
        "--val-fraction", type=nonnegative_fraction, default=0.2,
        help="without --val: share of the training images held back for validation (0: none; default 0.2)",
    )  # fmt: skip
    f.add_argument("--shots", type=positive_int, help="few-shot: keep this many images per class (ODinW rule)")
    f.add_argument("--seed", type=int, default=0, help="seed of the run and of the few-shot choice (default 0)")
    f.add_argument(
        "--evals", type=int, default=8, help="validations during the run, besides the ones before and at the end (8)"
    )
    f.add_argument("--prompt-template", help='e.g. "a photo of a {}": text around every class name')
    f.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    f.add_argument("--amp", choices=["bf16", "fp16", "none"], help="mixed precision (default: where it pays)")
    f.add_argument("--threads", type=positive_int, default=0, help="CPU threads (default: the free cores)")
    f.set_defaults(func=_cmd_finetune)


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def folder(text: str) -> Path:
    """argparse type: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a folder, e.g. outputs")
    return Path(text)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
        help="fp32: exact official arithmetic (default); bf16/fp16: autocast + fused attention (faster on GPUs)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile the tower and head")
    p.add_argument(
        "--cuda-graphs", action="store_true",
        help="GPU: replay backbone and tower+head from CUDA graphs captured per input shape (fast at batch 1)",
    )  # fmt: skip


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="model folder (config.json + model.safetensors) or official .pth (default: the embedded model)"
    )
    p.add_argument("--out-dir", type=folder, default=Path("outputs/eval"), help="reports and detections")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_speed_options(p)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    _add_model_options(p)
    p.add_argument("--prompt-template", help='e.g. "a photo of a {}": text around every class name')
    p.add_argument("--prompt-overrides", help="YAML of per-dataset prompt overrides, or a shipped name (shared_data)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (official: 1)")
    p.add_argument("--backend", default="faster", choices=["faster", "pycocotools"], help="COCO evaluator")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``glip`` command."""
    parser = argparse.ArgumentParser(prog="glip", description="Grounded language-image detection (GLIP / GLIPv2).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"glip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect what a text names in images")
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--classes", help='comma-separated class names, e.g. "person,dog" (any number)')
    p.add_argument("--prompt", help='a sentence; its noun phrases are grounded, e.g. "a man walking a dog"')
    p.add_argument(
        "--model",
        help="model folder or official GLIP .pth (default: the embedded small model, see docs/default_model.md)",
    )
    p.add_argument("--threshold", type=probability, default=0.3, help="minimum score to report, 0-1 (default 0.3)")
    p.add_argument(
        "--masks", action="store_true",
        help="also segment each detection (needs a model with a mask head, e.g. the embedded one): RLE in the JSON, "
        "filled masks in the picture",
    )  # fmt: skip
    p.add_argument("--out-dir", default="outputs", type=folder, help="where JSON and pictures go (default outputs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_speed_options(p)
    p.set_defaults(func=_cmd_predict)

    e = sub.add_parser("eval", help="COCO AP (or LVIS Fixed AP) of a model on a COCO-format dataset")
    e.add_argument("--dataset", type=Path, required=True, help="COCO-format annotation file")
    e.add_argument("--images", type=Path, help="images folder (default: <dataset>/images or the file's folder)")
    e.add_argument("--name", help="dataset name for reports and prompt overrides (default: from the path)")
    e.add_argument("--protocol", default="coco", choices=["coco", "lvis"], help="coco AP or LVIS Fixed AP")
    e.add_argument(
        "--iou-type", default="bbox", choices=["bbox", "segm"],
        help="bbox: box AP (default); segm: mask AP (needs a model with a mask head and masks in the dataset)",
    )  # fmt: skip
    _add_eval_options(e)
    e.set_defaults(func=_cmd_eval)

    s = sub.add_parser("eval-suite", help="evaluate on every dataset split below a folder (ODinW style)")
    s.add_argument("root", type=Path, help="folder of COCO-format datasets, e.g. ../shared/data")
    s.add_argument("--splits", default="val,valid,test", help="comma-separated split names (default val,valid,test)")
    s.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    _add_eval_options(s)
    s.set_defaults(func=_cmd_eval_suite)

    g = sub.add_parser("eval-grounding", help="phrase-grounding Recall@1/5/10 on MDETR-format annotations")
    g.add_argument("--annotations", type=Path, required=True, help="MDETR-format JSON (caption + tokens_positive)")
    g.add_argument("--images", type=Path, required=True, help="images folder")
    g.add_argument("--protocol", default="any", choices=["any", "merged"], help="ANY-BOX or MERGED-BOX")
    g.add_argument("--sentences", type=Path, help="Flickr30k Entities Sentences/ folder (phrase types)")
    _add_model_options(g)
    g.set_defaults(func=_cmd_eval_grounding)

    q = sub.add_parser("vqa", help="answer a question about an image and box its phrases and the answer")
    q.add_argument("image", help="an image file")
    q.add_argument("--question", required=True, help='e.g. "How many dogs are there?"')
    q.add_argument("--threshold", type=probability, default=0.3, help="minimum box score to report (0.3)")
    _add_model_options(q)
    q.set_defaults(func=_cmd_vqa, out_dir=Path("outputs"))
    k = sub.add_parser("caption", help="write a caption and box each of its noun phrases")
    k.add_argument("image", help="an image file")
    k.add_argument("--beam-size", type=positive_int, help="beams (1: greedy; default: the model's)")
    k.add_argument("--max-length", type=positive_int, help="most tokens (default: the model's)")
    k.add_argument("--threshold", type=probability, default=0.3, help="minimum box score to report (0.3)")
    _add_model_options(k)
    k.set_defaults(func=_cmd_caption, out_dir=Path("outputs"))
    ev = sub.add_parser("eval-vqa", help="VQA accuracy (official normalisation) and answer grounding recall")
    ev.add_argument("--annotations", type=Path, required=True, help="VQA file (coco_mt formats)")
    ev.add_argument("--images", type=Path, help="images folder (default: beside the annotations folder)")
    ev.add_argument("--instances", type=Path, help="COCO instances of the images: answer grounding recall")
    ev.add_argument("--holdout-every", type=int, default=0, help="report images with ids multiple of N apart")
    _add_model_options(ev)
    ev.set_defaults(func=_cmd_eval_vqa)
    ec = sub.add_parser("eval-caption", help="BLEU-1..4 and CIDEr-D of generated captions")
    ec.add_argument("--annotations", type=Path, required=True, help="COCO captions file")
    ec.add_argument("--images", type=Path, help="images folder (default: beside the annotations folder)")
    ec.add_argument("--holdout-every", type=int, default=0, help="report images with ids multiple of N apart")
    ec.add_argument("--beam-size", type=positive_int, help="beams (default: the model's)")
    _add_model_options(ec)
    ec.set_defaults(func=_cmd_eval_caption)

    r = sub.add_parser("eval-refseg", help="referring segmentation (PhraseCut-style mIoU, cIoU, Pr@0.5/0.7/0.9)")
    r.add_argument("--annotations", type=Path, required=True, help="refexp JSON (the coco_mt refexp format)")
    r.add_argument("--images", type=Path, help="images folder (default: beside the annotations folder)")
    r.add_argument(
        "--threshold", type=probability, default=0.5, help="score a mask needs to enter the predicted union (0.5)"
    )
    r.add_argument(
        "--keep-best", action=argparse.BooleanOptionalAction, default=True,
        help="the best-scoring mask always enters the union (an expression names at least one object; default on)",
    )  # fmt: skip
    _add_model_options(r)
    r.set_defaults(func=_cmd_eval_refseg)

    t = sub.add_parser("train", help="train or fine-tune from a YAML recipe (single process or torchrun)")
    t.add_argument(
        "config", help="a recipe YAML file, or the name of a shipped recipe (finetune_shared_data, odinw_transfer)"
    )
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of run.output_dir")
    t.add_argument("--output-dir", help="shortcut for --set run.output_dir=...")
    t.set_defaults(func=_cmd_train)

    o = sub.add_parser("odinw", help="ODinW-style transfer: zero-shot, or tune per dataset then test")
    o.add_argument("root", type=Path, help="folder of COCO-format datasets (with train and test/valid/val splits)")
    o.add_argument("--mode", default="zero-shot", choices=["zero-shot", "full", "prompt", "linear_probe"])
    o.add_argument(
        "--recipe", help="base training recipe for the tuning modes (file or shipped name, e.g. odinw_transfer)"
    )
    o.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    o.add_argument("--shots", type=positive_int, help="images per category (few-shot); default: all training images")
    o.add_argument("--seeds", default="3,30,300", help="comma-separated seeds, one tuning run each")
    o.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    o.add_argument("--prompt-overrides", help="YAML of per-dataset prompt overrides, or a shipped name (shared_data)")
    _add_model_options(o)
    o.set_defaults(func=_cmd_odinw)

    _add_finetune_parser(sub)

    c = sub.add_parser("convert", help="convert an official GLIP checkpoint into a glip model folder")
    c.add_argument("checkpoint", type=Path, help="official .pth file")
    c.add_argument("out_dir", type=Path, help="output folder")
    c.add_argument(
        "--preset", choices=["glip_t", "glip_l", "glip_t_a"], help="architecture (default: inferred from the keys)"
    )
    c.set_defaults(func=_cmd_convert)
    return parser


def _print_error(message: object) -> None:
    line = f"error: {one_line(str(message))}\n".encode("utf-8", "backslashreplace").decode("utf-8")
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        sys.stderr.write(line.encode(encoding, "backslashreplace").decode(encoding))
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nothing more can be said
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``glip`` console script; returns the exit status.

    0: success; 1: an error (one ``error:`` line on stderr, no traceback); 2: a usage error
    (argparse); 130: interrupted with Ctrl-C.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
        )
        return int(args.func(args))
    except GLIPError as e:
        _print_error(e)
        return 1
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except MemoryError:
        _print_error("out of memory: use smaller images, a smaller --batch-size or fewer classes")
        return 1
    except OSError as e:  # a disk or file problem that no library call turned into a GLIPError
        from glip.fileio import describe_os_error

        _print_error(describe_os_error(e.filename or "a file", e, "access") if e.filename else e)
        return 1


if __name__ == "__main__":
    sys.exit(main())

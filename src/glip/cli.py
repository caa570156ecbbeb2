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

from glip.errors import GLIPError

logger = logging.getLogger("glip")


def _cmd_predict(args: argparse.Namespace) -> int:
    from glip.batch_predict import collect_images, predict_files
    from glip.predictor import GLIPPredictor

    if (args.classes is None) == (args.prompt is None):
        raise GLIPError('give exactly one of --classes "person,dog" or --prompt "a man walking a dog"')
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",")]
        if not any(classes):
            raise GLIPError('--classes is empty: give comma-separated class names, e.g. --classes "person,dog"')
    if args.prompt is not None and not args.prompt.strip():
        raise GLIPError("--prompt is empty: give a sentence naming what to find")
    paths = collect_images(args.images)
    if args.model is None:
        raise GLIPError("no --model given: pass a model folder (config.json + model.safetensors) or an official .pth")
    predictor = GLIPPredictor.from_pretrained(args.model, device=args.device)
    written = predict_files(
        predictor,
        paths,
        args.out_dir,
        classes=classes,
        prompt=args.prompt,
        threshold=args.threshold,
        progress=not args.quiet,
    )
    for path in written:
        record = json.loads(path.read_text())
        dets = record["detections"]
        print(f"{record['image']}: {len(dets)} detections -> {path.with_suffix('.jpg')}")
        for d in dets:
            box = ", ".join(f"{c:.1f}" for c in d["box_xyxy"])
            print(f"  {d['label_name']:<24} {d['score']:.3f}  [{box}]")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from glip.checkpoints import load_official, save_model
    from glip.config import GLIPConfig

    config = GLIPConfig.from_preset(args.preset) if args.preset else None
    model, report = load_official(args.checkpoint, config)
    print(report.summary())
    out = save_model(model, args.out_dir)
    print(f"wrote {out} ({model.num_parameters() / 1e6:.1f}M parameters, preset {model.config.preset})")  # type: ignore[attr-defined]
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``glip`` command."""
    parser = argparse.ArgumentParser(prog="glip", description="Grounded language-image detection (GLIP / GLIPv2).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="detect what a text names in images")
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--classes", help='comma-separated class names, e.g. "person,dog" (any number)')
    p.add_argument("--prompt", help='a sentence; its noun phrases are grounded, e.g. "a man walking a dog"')
    p.add_argument("--model", help="model folder (config.json + model.safetensors) or official GLIP .pth")
    p.add_argument("--threshold", type=float, default=0.3, help="minimum score to report (default 0.3)")
    p.add_argument("--out-dir", default="outputs", type=Path, help="where JSON and pictures go (default outputs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    c = sub.add_parser("convert", help="convert an official GLIP checkpoint into a glip model folder")
    c.add_argument("checkpoint", type=Path, help="official .pth file")
    c.add_argument("out_dir", type=Path, help="output folder")
    c.add_argument(
        "--preset", choices=["glip_t", "glip_l", "glip_t_a"], help="architecture (default: inferred from the keys)"
    )
    c.set_defaults(func=_cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``glip`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except GLIPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Evaluation reports: a markdown table for people and a JSON file for programs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glip.evaluation.detection import EvalReport
from glip.fileio import atomic_write_text

if TYPE_CHECKING:
    from glip.evaluation.refseg import RefSegReport

MAIN_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
REFSEG_STATS = ("mIoU", "cIoU", "Pr@0.5", "Pr@0.7", "Pr@0.9")


def pct(value: float | None) -> str:
    """A metric in percent with one decimal; ``-`` when undefined (None, NaN or negative)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value < 0:
        return "-"
    return f"{100 * value:.1f}"


def detection_markdown(report: EvalReport) -> str:
    """Overall and per-class AP of one split (mask AP, with the box AP of the same run, for ``segm``)."""
    stats = report.metrics["stats"]
    segm = report.metrics.get("iou_type", "bbox") == "segm"
    kind = "mask " if segm else ""
    lines = [
        f"## {report.dataset} / {report.split}" + (" (mask AP)" if segm else ""),
        "",
        f"{report.num_images} images, {report.images_per_second:.2f} img/s, prompt: `{report.prompt[:300]}`",
        "",
        "| " + (" | ".join(f"{kind}{k}" for k in MAIN_STATS)) + " |",
        "|" + "---|" * len(MAIN_STATS),
        "| " + " | ".join(pct(stats[k]) for k in MAIN_STATS) + " |",
    ]
    box = report.extra.get("box_metrics") if segm else None
    if box is not None:
        lines.append("| " + " | ".join(pct(box["stats"][k]) for k in MAIN_STATS) + " | (box AP, same detections)")
    lines += ["", f"| class | {kind}AP |", "|---|---|"]
    lines += [f"| {name} | {pct(ap)} |" for name, ap in report.metrics["per_class"].items()]
    return "\n".join(lines) + "\n"


def _refseg_row(m: dict[str, Any]) -> list[str]:
    return [pct(m["mean_iou"]), pct(m["cumulative_iou"]), *(pct(m["precision_at"][k]) for k in REFSEG_STATS[2:])]


def refseg_markdown(report: RefSegReport) -> str:
    """Referring segmentation: mIoU, cIoU, Pr@0.5/0.7/0.9 overall and per template."""
    m = report.metrics
    lines = [f"## {report.dataset}: referring segmentation", ""]
    if report.description:
        lines += [f"> {report.description}", ""]
    if report.derived:
        lines += [
            "These expressions are DERIVED (templated) data: the numbers below are **coco_mt derived** "
            "numbers, not RefCOCO / RefCOCO+ / RefCOCOg or PhraseCut results. The metrics follow "
            "PhraseCut's definitions.",
            "",
        ]
    lines += [
        f"{report.num_expressions} expressions on {report.num_images} images, score threshold {report.threshold:g}, "
        f"{report.expressions_per_second:.2f} expressions/s"
        + (f", {report.prompt_errors} expression(s) not usable as a prompt (scored 0)" if report.prompt_errors else ""),
        "",
        "| " + " | ".join(REFSEG_STATS) + " |",
        "|" + "---|" * len(REFSEG_STATS),
        "| " + " | ".join(_refseg_row(m)) + " |",
    ]
    if m["per_template"]:
        lines += ["", "| template | expressions | " + " | ".join(REFSEG_STATS) + " |", "|---|---|" + "---|" * 5]
        for name, t in m["per_template"].items():
            lines.append(f"| {name} | {t['num_expressions']} | " + " | ".join(_refseg_row(t)) + " |")
    return "\n".join(lines) + "\n"


def suite_markdown(reports: Sequence[EvalReport], average: dict[str, Any]) -> str:
    """One row per dataset split and the suite average."""
    lines = [
        "| dataset | split | images | " + " | ".join(MAIN_STATS) + " | img/s |",
        "|---|---|---|" + "---|" * (len(MAIN_STATS) + 1),
    ]
    for r in reports:
        stats = r.metrics["stats"]
        row = [
            r.dataset,
            r.split,
            str(r.num_images),
            *(pct(stats[k]) for k in MAIN_STATS),
            f"{r.images_per_second:.2f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"Average AP over {len(average['datasets'])} datasets ({', '.join(average['datasets'])}; "
        f"one split each: {average['rule']}): **{pct(average['AP'])}**"
    )
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | Path, stem: str, markdown: str, payload: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir`` (atomically; disk problems are OutputError)."""
    out = Path(out_dir)
    md = atomic_write_text(out / f"{stem}.md", markdown)
    js = atomic_write_text(out / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
    return md, js

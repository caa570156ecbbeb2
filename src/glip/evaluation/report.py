"""Evaluation reports: a markdown table for people and a JSON file for programs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glip.evaluation.detection import EvalReport
from glip.fileio import atomic_write_text

MAIN_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def pct(value: float | None) -> str:
    """A metric in percent with one decimal; ``-`` when undefined (None, NaN or negative)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value < 0:
        return "-"
    return f"{100 * value:.1f}"


def detection_markdown(report: EvalReport) -> str:
    """Overall and per-class AP of one split."""
    stats = report.metrics["stats"]
    lines = [
        f"## {report.dataset} / {report.split}",
        "",
        f"{report.num_images} images, {report.images_per_second:.2f} img/s, prompt: `{report.prompt[:300]}`",
        "",
        "| " + " | ".join(MAIN_STATS) + " |",
        "|" + "---|" * len(MAIN_STATS),
        "| " + " | ".join(pct(stats[k]) for k in MAIN_STATS) + " |",
        "",
        "| class | AP |",
        "|---|---|",
    ]
    lines += [f"| {name} | {pct(ap)} |" for name, ap in report.metrics["per_class"].items()]
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

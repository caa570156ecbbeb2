"""Evaluating a model's GLIPv2 understanding heads: grounded VQA and captioning on annotation files.

* :func:`evaluate_vqa_model` — every question of a VQA file (the ``coco_mt`` formats or VQA v2 via
  :mod:`glip.data.vqa`), questions of one image in one batched pass; VQA accuracy as the official
  evaluation computes it (:mod:`glip.evaluation.vqa`), train vs held-out images with
  ``holdout_every``, and the answer's grounding recall: for questions whose answer names instances,
  whether the best box the model puts on the answer (the ``[MASK]`` entity) overlaps one of them by
  IoU >= 0.5.
* :func:`evaluate_caption_model` — one caption per image (beam search), BLEU-1..4 and CIDEr-D
  against the image's reference captions (:mod:`glip.evaluation.captions`).

Reports name DERIVED files "coco_mt derived" (the readers' ``name``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from glip.data.captions import load_captions
from glip.data.coco import CocoDataset, is_held_out
from glip.data.vqa import load_vqa
from glip.evaluation.captions import evaluate_captions
from glip.evaluation.report import write_reports
from glip.evaluation.vqa import evaluate_vqa
from glip.fileio import atomic_write_text
from glip.images import load_image
from glip.predictor import GLIPPredictor
from glip.structures import box_iou
from glip.vl_tasks import answer_questions, caption_image


def evaluate_vqa_model(
    predictor: GLIPPredictor,
    vqa_file: str | Path,
    images: str | Path | None = None,
    instances: str | Path | None = None,
    holdout_every: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """VQA accuracy (and answer grounding recall with ``instances``) of a model on a VQA file.

    Returns:
        The report dict (also written as ``<stem>_vqa_report.md/.json`` with the predictions when
        ``out_dir`` is given).
    """
    data = load_vqa(vqa_file, images)
    by_image: dict[Any, list] = defaultdict(list)
    for r in data.records:
        by_image[r.image_path].append(r)
    boxes = _instance_boxes(instances)
    predictions: dict[Any, str] = {}
    hits: dict[str, list[int]] = {"train": [], "held_out": []}
    t0 = time.perf_counter()
    for path, records in tqdm(by_image.items(), desc="vqa", unit="img", disable=not progress):
        image = load_image(path)
        for r, answer in zip(records, answer_questions(predictor, image, [r.question for r in records], 0.0),
                             strict=True):  # fmt: skip
            predictions[r.question_id] = answer.answer
            if boxes is not None and r.answer_ann_ids:
                gt = torch.stack([boxes[a] for a in r.answer_ann_ids if a in boxes]) if r.answer_ann_ids else None
                found = [b for b, n in zip(answer.detections.boxes_xyxy, answer.detections.label_names, strict=True)
                         if n == answer.answer]  # fmt: skip
                hit = int(gt is not None and bool(found) and box_iou(found[0][None], gt, False).max().item() >= 0.5)
                hits["held_out" if is_held_out(r.image_id, holdout_every) else "train"].append(hit)
    report = evaluate_vqa(data.records, predictions, holdout_every, data.name)
    seconds = round(time.perf_counter() - t0, 1)
    out: dict[str, Any] = {"name": data.name, "questions": len(data.records), "seconds": seconds, **report.summary()}
    if boxes is not None:
        out["answer_grounding_recall"] = {k: (sum(v) / len(v) if v else None) for k, v in hits.items()}
    if out_dir is not None:
        stem = f"{Path(vqa_file).stem}_vqa"
        atomic_write_text(Path(out_dir) / f"{stem}_predictions.json",
                          json.dumps([{"question_id": k, "answer": v} for k, v in predictions.items()]))  # fmt: skip
        write_reports(out_dir, f"{stem}_report", _markdown(out), out)
    return out


def evaluate_caption_model(
    predictor: GLIPPredictor,
    captions_file: str | Path,
    images: str | Path | None = None,
    holdout_every: int = 0,
    beam_size: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """BLEU-1..4 and CIDEr-D of one generated caption per image of a COCO captions file."""
    data = load_captions(captions_file, images)
    predictions: dict[Any, str] = {}
    t0 = time.perf_counter()
    for record in tqdm(data.records, desc="captions", unit="img", disable=not progress):
        predictions[record.image_id] = caption_image(predictor, record.image_path, beam_size=beam_size).text
    report = evaluate_captions(data.records, predictions, holdout_every, data.name)
    seconds = round(time.perf_counter() - t0, 1)
    out: dict[str, Any] = {"name": data.name, "images": len(data.records), "seconds": seconds, **report.summary()}
    if out_dir is not None:
        stem = f"{Path(captions_file).stem}_caption"
        atomic_write_text(Path(out_dir) / f"{stem}_predictions.json",
                          json.dumps([{"image_id": k, "caption": v} for k, v in predictions.items()]))  # fmt: skip
        write_reports(out_dir, f"{stem}_report", _markdown(out), out)
    return out


def _instance_boxes(instances: str | Path | None) -> dict[int, torch.Tensor] | None:
    """Instance boxes (xyxy, no +1) by annotation id, for the answer grounding recall."""
    if instances is None:
        return None
    coco = CocoDataset.load(instances, check_files=False)
    return {int(a["id"]): torch.tensor([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                        a["bbox"][1] + a["bbox"][3]], dtype=torch.float32)
            for a in coco.data.get("annotations", [])}  # fmt: skip


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"## {report['name']}", ""]
    lines += [f"- {k}: {json.dumps(v)}" for k, v in report.items() if k != "name"]
    return "\n".join(lines) + "\n"


__all__ = ["evaluate_caption_model", "evaluate_vqa_model"]

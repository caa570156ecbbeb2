"""Evaluation the way the field does it: COCO AP, LVIS Fixed AP, phrase-grounding recall, ODinW-style suites."""

from glip.evaluation.coco_eval import DetectionMetrics, evaluate_detections
from glip.evaluation.detection import (
    EvalReport,
    configure_for_lvis,
    evaluate_coco_dataset,
    evaluate_lvis_dataset,
    iter_dataset_detections,
    predict_dataset,
)
from glip.evaluation.grounding import (
    GroundingMetrics,
    evaluate_grounding,
    evaluate_grounding_model,
    predict_grounding,
)
from glip.evaluation.grounding_data import GroundingDataset, load_grounding_annotations
from glip.evaluation.lvis import (
    LvisGroundTruth,
    LvisMetrics,
    LvisResultCollector,
    evaluate_lvis,
    fixed_ap_topk,
    load_lvis_ground_truth,
    xyxy_to_lvis_xywh,
)
from glip.evaluation.prompts import DatasetPrompt, dataset_prompt, load_prompt_overrides
from glip.evaluation.refseg import (
    RefExpDataset,
    RefSegMetrics,
    RefSegReport,
    compute_refseg_metrics,
    evaluate_refseg,
    load_refexp,
)
from glip.evaluation.suite import SuiteResult, evaluate_suite

__all__ = [
    "DatasetPrompt",
    "DetectionMetrics",
    "EvalReport",
    "GroundingDataset",
    "GroundingMetrics",
    "LvisGroundTruth",
    "LvisMetrics",
    "LvisResultCollector",
    "RefExpDataset",
    "RefSegMetrics",
    "RefSegReport",
    "SuiteResult",
    "compute_refseg_metrics",
    "configure_for_lvis",
    "dataset_prompt",
    "evaluate_coco_dataset",
    "evaluate_detections",
    "evaluate_grounding",
    "evaluate_grounding_model",
    "evaluate_lvis",
    "evaluate_lvis_dataset",
    "evaluate_refseg",
    "evaluate_suite",
    "fixed_ap_topk",
    "iter_dataset_detections",
    "load_grounding_annotations",
    "load_lvis_ground_truth",
    "load_prompt_overrides",
    "load_refexp",
    "predict_dataset",
    "predict_grounding",
    "xyxy_to_lvis_xywh",
]

"""Datasets, transforms, collation and sampling for training and evaluation.

Typical training pipeline::

    from glip.data import (CocoDataset, DetectionGroundingDataset, GroundingCollator, MixedDataset,
                           TrainTransform, WeightedMixSampler)

    coco = CocoDataset.load("shared/data/coco128/annotations/train2017.json")
    ds = DetectionGroundingDataset(coco, tokenizer, TrainTransform(), seed=0)
    mixed = MixedDataset([ds])
    sampler = WeightedMixSampler(mixed.sizes, seed=0, rank=rank, world_size=world_size)
    loader = DataLoader(mixed, batch_size=2, sampler=sampler, collate_fn=GroundingCollator(tokenizer))
"""

from glip.data.coco import CocoDataset, SplitFile, default_image_root, find_coco_splits, has_mask, is_held_out
from glip.data.collate import GroundingCollator
from glip.data.grounding import (
    DetectionGroundingDataset,
    GroundingDatasetBase,
    ImageTextDataset,
    MdetrGroundingDataset,
    coco_boxes_to_xyxy,
    sample_seed,
)
from glip.data.importers import load_yolo_names, voc_to_coco, write_coco_json, yolo_to_coco
from glip.data.mixing import MixedDataset, WeightedMixSampler, few_shot_image_ids, mix_weights
from glip.data.od_to_grounding import (
    MAX_SEQ_LENGTH,
    ClassVocabulary,
    OdGrounding,
    OdPromptOptions,
    build_class_prompt,
    check_for_positive_overflow,
    convert_od_to_grounding,
    sample_num_negatives,
)
from glip.data.refexp import DERIVED_LABEL, RefExp, RefExpDataset, expression_prompt, load_refexp
from glip.data.refexp_dataset import RefExpGroundingDataset
from glip.data.transforms import (
    GLIP_T_TRAIN_SIZES,
    GroundingTransform,
    TestTransform,
    TrainTransform,
    hflip_boxes,
    hflip_masks,
    resize_boxes,
    resize_masks,
)
from glip.images import normalize_image, pad_images

__all__ = [
    "DERIVED_LABEL",
    "GLIP_T_TRAIN_SIZES",
    "MAX_SEQ_LENGTH",
    "ClassVocabulary",
    "CocoDataset",
    "DetectionGroundingDataset",
    "GroundingCollator",
    "GroundingDatasetBase",
    "GroundingTransform",
    "ImageTextDataset",
    "MdetrGroundingDataset",
    "MixedDataset",
    "OdGrounding",
    "OdPromptOptions",
    "RefExp",
    "RefExpDataset",
    "RefExpGroundingDataset",
    "SplitFile",
    "TestTransform",
    "TrainTransform",
    "WeightedMixSampler",
    "build_class_prompt",
    "check_for_positive_overflow",
    "coco_boxes_to_xyxy",
    "convert_od_to_grounding",
    "default_image_root",
    "expression_prompt",
    "few_shot_image_ids",
    "find_coco_splits",
    "has_mask",
    "hflip_boxes",
    "hflip_masks",
    "is_held_out",
    "load_refexp",
    "load_yolo_names",
    "mix_weights",
    "normalize_image",
    "pad_images",
    "resize_boxes",
    "resize_masks",
    "sample_num_negatives",
    "sample_seed",
    "voc_to_coco",
    "write_coco_json",
    "yolo_to_coco",
]

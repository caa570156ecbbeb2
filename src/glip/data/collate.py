"""Transformed :class:`~glip.structures.GroundingSample` list → :class:`~glip.structures.TrainBatch`.

What the official code spreads over ``ConvertCocoPolysToMask`` (``modulated_coco.py``),
``BatchCollator`` (``data/collate_batch.py``) and ``GeneralizedVLRCNN.forward``:

* each prompt is tokenised (``[CLS] ... [SEP]``, padded with ``[PAD]`` to ``max_query_len`` when
  ``pad_to_max``, else to the longest prompt of the batch). A caption longer than the budget is
  truncated as the official ``tokenizer(..., truncation=True)``; spans past the cut get no tokens;
* ``positive_map`` row of a box = union of the tokens of its entities, **binary** (the official
  builds a row-normalised map, then the collator casts it to bool and back to float);
* ``token_labels`` = ``create_positive_map_for_od_labels``: every token of every class in a
  detection prompt (positives and negatives) holds the class's label, -1 elsewhere and for
  grounding / image-text prompts;
* images are zero-padded bottom/right to the batch maximum rounded up to ``size_divisibility``
  (``to_image_list``), with a True-on-pixels mask;
* instance masks (GLIPv2 mask head), when the sample has them, go into ``GroundingTarget.masks``
  unpadded, ``(M, h, w)`` bool at the transformed image's size (the boxes' pixel frame);
* MLM (GLIPv2, optional): BERT masking through :func:`glip.text.mlm.mask_tokens` with a per-token
  "greenlight" map (``create_greenlight_map``): 1 on the positive class names of a detection
  prompt and on the whole caption of a grounding prompt (the loss is kept there only when
  ``mlm_only_positives``), -1 everywhere for detection prompts when ``no_mask_for_od``.

Randomness of the MLM masking comes from a generator seeded by ``seed`` and the batch content
(image ids and prompt texts), so it is the same for the same batch in a resumed run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from glip.errors import ConfigError, DataError, PromptError
from glip.images import pad_images
from glip.structures import GroundingSample, GroundingTarget, TrainBatch
from glip.text import MAX_QUERY_LEN, Prompt, spans_to_token_ids, tokenize_prompt
from glip.text.mlm import greenlight_map, mask_tokens

logger = logging.getLogger(__name__)

MaskFn = Callable[..., tuple[Tensor, Tensor]]
"""``mask_tokens(input_ids, attention_mask, vocab_size, mask_token_id, special_ids, probability,
generator, greenlight) -> (masked input_ids, labels with -100 where not predicted)``."""


class GroundingCollator:
    """Collate transformed samples into a :class:`TrainBatch`.

    Args:
        tokenizer: fast tokenizer (``glip.text.load_tokenizer()``).
        max_query_len: token budget (official 256).
        pad_to_max: pad every prompt to ``max_query_len`` (official ``PAD_MAX``) instead of the
            longest prompt of the batch.
        size_divisibility: image padding multiple (32).
        mlm: apply BERT masked-language-model masking (GLIPv2).
        mlm_probability: masking probability (0.15).
        mlm_only_positives: keep the MLM loss only on greenlit tokens (official
            ``MLM_LOSS_FOR_ONLY_POSITIVES``); False passes no greenlight map.
        no_mask_for_od: never mask detection prompts (official ``NO_MASK_FOR_OD``).
        mlm_exempt_special_tokens: never mask ``[CLS]``/``[SEP]`` (BERT practice); the official
            masks them like any other token (False).
        seed: base seed of the MLM masking.
        mask_fn: the masking function; default :func:`glip.text.mlm.mask_tokens`.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_query_len: int = MAX_QUERY_LEN,
        pad_to_max: bool = True,
        size_divisibility: int = 32,
        mlm: bool = False,
        mlm_probability: float = 0.15,
        mlm_only_positives: bool = True,
        no_mask_for_od: bool = False,
        mlm_exempt_special_tokens: bool = False,
        seed: int = 0,
        mask_fn: MaskFn | None = None,
    ) -> None:
        if max_query_len < 2:
            raise ConfigError(f"max_query_len={max_query_len} must leave room for [CLS] and [SEP]")
        if not 0.0 <= mlm_probability < 1.0:
            raise ConfigError(f"mlm_probability={mlm_probability} must be in [0, 1)")
        self.tokenizer = tokenizer
        self.max_query_len = int(max_query_len)
        self.pad_to_max = pad_to_max
        self.size_divisibility = int(size_divisibility)
        self.mlm = mlm
        self.mlm_probability = float(mlm_probability)
        self.mlm_only_positives = mlm_only_positives
        self.no_mask_for_od = no_mask_for_od
        self.mlm_exempt_special_tokens = mlm_exempt_special_tokens
        self.seed = int(seed)
        self.mask_fn = mask_fn
        self._warned_truncation = False

    # ------------------------------------------------------------------ text
    def encode(self, prompt: Prompt) -> tuple[list[int], list[tuple[int, int]], list[list[int]]]:
        """Token ids, offsets and per-entity token indices of a prompt (truncated if too long)."""
        try:
            tokenized = tokenize_prompt(self.tokenizer, prompt, self.max_query_len)
            return tokenized.input_ids, tokenized.offsets, tokenized.token_ids_per_entity
        except PromptError:
            if not self._warned_truncation:
                logger.warning(
                    "a prompt needs more than %d tokens and is truncated (as the official); entities past "
                    "the cut get no tokens. First such prompt: %r",
                    self.max_query_len,
                    prompt.text[:120],
                )
                self._warned_truncation = True
        enc = self.tokenizer(
            prompt.text,
            add_special_tokens=True,
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.max_query_len,
        )
        offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
        return list(enc["input_ids"]), offsets, spans_to_token_ids(offsets, prompt.spans)

    @staticmethod
    def _check(sample: GroundingSample, i: int) -> None:
        if not isinstance(sample.image, Tensor) or sample.image.dim() != 3:
            raise DataError(
                f"sample {i} (image {sample.image_id!r}) has no (3, H, W) tensor image: apply a transform "
                "(glip.data.transforms.TrainTransform) in the dataset before collating"
            )
        if len(sample.box_entities) != int(sample.boxes_xyxy.shape[0]):
            raise DataError(
                f"sample {i} (image {sample.image_id!r}) has {sample.boxes_xyxy.shape[0]} boxes but "
                f"{len(sample.box_entities)} box_entities lists"
            )
        if sample.masks is not None:
            expected = (int(sample.boxes_xyxy.shape[0]), int(sample.image.shape[1]), int(sample.image.shape[2]))
            if tuple(sample.masks.shape) != expected:
                raise DataError(
                    f"sample {i} (image {sample.image_id!r}) has masks of shape {tuple(sample.masks.shape)}, "
                    f"expected {expected} (one per box, at the transformed image's size)"
                )
        if len(sample.entity_labels) != sample.prompt.num_entities:
            raise DataError(
                f"sample {i} (image {sample.image_id!r}): {len(sample.entity_labels)} entity labels for "
                f"{sample.prompt.num_entities} prompt entities"
            )

    def target(self, sample: GroundingSample, entity_tokens: list[list[int]], width: int) -> GroundingTarget:
        """The :class:`GroundingTarget` of one sample, with token axis ``width``."""
        num_boxes = len(sample.box_entities)
        positive_map = torch.zeros((num_boxes, width), dtype=torch.float32)
        for row, entities in enumerate(sample.box_entities):
            for e in entities:
                if not 0 <= e < len(entity_tokens):
                    raise DataError(f"image {sample.image_id!r}: box {row} refers to entity {e}, which does not exist")
                positive_map[row, entity_tokens[e]] = 1.0
        token_labels = torch.full((width,), -1, dtype=torch.long)
        box_labels = torch.full((num_boxes,), -1, dtype=torch.long)
        if sample.kind == "detection":
            for tokens, label in zip(entity_tokens, sample.entity_labels, strict=True):
                token_labels[tokens] = int(label)
            for row, entities in enumerate(sample.box_entities):
                if entities:
                    box_labels[row] = int(sample.entity_labels[entities[0]])
        return GroundingTarget(
            boxes_xyxy=sample.boxes_xyxy.to(torch.float32).reshape(-1, 4),
            positive_map=positive_map,
            box_labels=box_labels,
            token_labels=token_labels,
            kind=sample.kind,
            image_size=(int(sample.image.shape[1]), int(sample.image.shape[2])),
            masks=None if sample.masks is None else sample.masks.bool(),
            vqa_scores=sample.vqa_scores,
            causal=sample.causal,
            ground=sample.ground,
        )

    def greenlight(
        self, sample: GroundingSample, offsets: list[tuple[int, int]], entity_tokens: list[list[int]], width: int
    ) -> Tensor:
        """``(width,)`` MLM permission per token: 1 maskable and scored, 0 maskable, -1 never masked."""
        if sample.kind == "detection":
            groups = [entity_tokens[e] for entities in sample.box_entities for e in entities]
            return greenlight_map(groups, width, forbid_masking=self.no_mask_for_od)
        whole = spans_to_token_ids(offsets, [[(0, len(sample.prompt.text))]]) if sample.prompt.text else []
        return greenlight_map(whole, width)

    # ------------------------------------------------------------------ batch
    def __call__(self, samples: Sequence[GroundingSample]) -> TrainBatch:
        """Collate; see the module docstring."""
        if not samples:
            raise DataError("cannot collate an empty list of samples")
        for i, sample in enumerate(samples):
            self._check(sample, i)
        encoded = [self.encode(s.prompt) for s in samples]
        width = self.max_query_len if self.pad_to_max else max(len(ids) for ids, _, _ in encoded)
        pad_id = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
        greenlight = torch.zeros((len(samples), width), dtype=torch.float32)
        targets = []
        for i, (sample, (ids, offsets, entity_tokens)) in enumerate(zip(samples, encoded, strict=True)):
            input_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
            targets.append(self.target(sample, entity_tokens, width))
            if self.mlm:
                greenlight[i] = self.greenlight(sample, offsets, entity_tokens, width)
        pixel_values, pixel_mask = pad_images([s.image for s in samples], self.size_divisibility)
        mlm_labels = None
        if self.mlm:
            input_ids, mlm_labels = self.apply_mlm(samples, input_ids, attention_mask, greenlight)
        return TrainBatch(pixel_values, pixel_mask, input_ids, attention_mask, targets, mlm_labels)

    def batch_generator(self, samples: Sequence[GroundingSample]) -> torch.Generator:
        """Generator seeded by ``seed`` and the batch's image ids and prompt texts."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(self.seed).encode())
        for s in samples:
            digest.update(repr((s.image_id, s.kind, s.prompt.text)).encode())
        return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)

    def apply_mlm(
        self, samples: Sequence[GroundingSample], input_ids: Tensor, attention_mask: Tensor, greenlight: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mask tokens with :data:`mask_fn` (the hook where GLIPv2's MLM plugs in)."""
        mask_fn = self.mask_fn or mask_tokens
        special = sorted({int(i) for i in self.tokenizer.all_special_ids}) if self.mlm_exempt_special_tokens else []
        return mask_fn(
            input_ids,
            attention_mask,
            int(getattr(self.tokenizer, "vocab_size", 0) or len(self.tokenizer)),
            int(self.tokenizer.mask_token_id),
            special,
            self.mlm_probability,
            self.batch_generator(samples),
            greenlight if self.mlm_only_positives else None,
        )

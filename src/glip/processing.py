"""GLIPProcessor: images + prompts → model inputs; model outputs → :class:`~glip.structures.Detections`.

Image transform (the official test transform by default): resize so the short side is
``min_size`` (800) unless the long side would exceed ``max_size`` (1333), with PIL bilinear
resampling and the official integer rounding; to a float tensor in [0, 1]; ``bgr255`` input format
(official quirk): channels reversed to BGR, scaled to 0-255, normalised with the BGR ImageNet
statistics; zero-padded bottom/right to a common size that is a multiple of 32.

Prompts: a list of class names (a detection prompt ``"a. b. c"``), a free caption (noun phrases
become the entities), or a ready :class:`~glip.text.Prompt`. Token positions of each entity come
from the fast tokenizer's character offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from glip.config import GLIPConfig
from glip.errors import PromptError
from glip.images import ImageLike, is_image_like, load_image, normalize_image, pad_images, to_pil, to_rgb
from glip.modeling.anchors import BoxCoder, box_coder_for
from glip.modeling.postprocess import ATSSPostProcessor
from glip.structures import Detections, EntityMap
from glip.text import Prompt, caption_prompt, detection_prompt, load_tokenizer, tokenize_prompt

logger = logging.getLogger(__name__)

PromptLike = Prompt | str | Sequence[str]


def resized_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Official resize rule: ``(new_height, new_width)`` for an image of ``width x height``."""
    size = min_size
    short, long = float(min(width, height)), float(max(width, height))
    if long / short * size > max_size:
        size = round(max_size * short / long)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    # an extreme aspect ratio (a 1-pixel-wide strip) can round a side to 0: keep at least 1 pixel
    if width < height:
        return max(1, int(size * height / width)), max(1, size)
    return max(1, size), max(1, int(size * width / height))


@dataclass
class GLIPInputs:
    """A batch ready for :class:`~glip.modeling.glip.GLIPModel`.

    Attributes:
        pixel_values: ``(B, 3, H, W)`` float32, normalised and zero-padded.
        pixel_mask: ``(B, H, W)`` bool, True on real pixels.
        input_ids, attention_mask: ``(B, T)`` int64.
        image_sizes: per image ``(height, width)`` after resizing, before padding.
        original_sizes: per image ``(height, width)`` of the input image.
        entity_maps: per image, the entities of its prompt and their token positions.
        prompts: per image, the prompt that was tokenised.
    """

    pixel_values: Tensor
    pixel_mask: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    entity_maps: list[EntityMap]
    prompts: list[Prompt]

    def to(self, device: torch.device | str) -> GLIPInputs:
        """Move the tensors to ``device``."""
        return GLIPInputs(
            self.pixel_values.to(device),
            self.pixel_mask.to(device),
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.image_sizes,
            self.original_sizes,
            self.entity_maps,
            self.prompts,
        )


class GLIPProcessor:
    """Prepares images and prompts for a GLIP model and turns its outputs into detections.

    Args:
        tokenizer: a fast BERT tokenizer (``glip.text.load_tokenizer()`` by default).
        min_size, max_size, size_divisibility: image resize and padding.
        input_format: ``"bgr255"`` (official) or ``"rgb"``.
        pixel_mean, pixel_std: per-channel statistics in the input format's order and scale.
        max_query_len: token budget of a prompt (256).
        pad_to_max: pad every prompt to ``max_query_len`` (official) instead of the batch's longest.
        postprocessor: turns model outputs into detections.
    """

    def __init__(
        self,
        tokenizer: object | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        size_divisibility: int = 32,
        input_format: str = "bgr255",
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (57.375, 57.120, 58.395),
        max_query_len: int = 256,
        pad_to_max: bool = True,
        postprocessor: ATSSPostProcessor | None = None,
    ) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
        self.min_size = min_size
        self.max_size = max_size
        self.size_divisibility = size_divisibility
        self.input_format = input_format
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32)[:, None, None]
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32)[:, None, None]
        self.max_query_len = max_query_len
        self.pad_to_max = pad_to_max
        self.postprocessor = postprocessor or ATSSPostProcessor(BoxCoder())

    @classmethod
    def from_config(cls, config: GLIPConfig, tokenizer: object | None = None) -> GLIPProcessor:
        """The processor that matches a model config (input transform, token budget, post-processing)."""
        inp, pp, h = config.input, config.postprocess, config.head
        if tokenizer is None:
            tokenizer = load_tokenizer(config.text.tokenizer)
        post = ATSSPostProcessor(
            box_coder_for(h),
            pp.score_threshold,
            pp.pre_nms_top_n,
            pp.nms_threshold,
            pp.detections_per_image,
            pp.score_aggregation,
            h.legacy_plus_one,
        )
        return cls(
            tokenizer,
            inp.min_size,
            inp.max_size,
            inp.size_divisibility,
            inp.input_format,
            inp.pixel_mean,
            inp.pixel_std,
            config.text.max_query_len,
            config.text.pad_to_max,
            post,
        )

    # ------------------------------------------------------------------ images
    def transform_image(self, image: Image.Image) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
        """Resize and normalise one image.

        Returns:
            ``(3, h, w)`` float32 tensor, the resized ``(h, w)``, the original ``(height, width)``.
        """
        if image.mode != "RGB":
            image = to_rgb(image)
        width, height = image.size
        nh, nw = resized_size(width, height, self.min_size, self.max_size)
        if (nh, nw) != (height, width):
            image = image.resize((nw, nh), Image.BILINEAR)
        x = normalize_image(image, self.input_format, self.pixel_mean, self.pixel_std)
        return x, (nh, nw), (height, width)

    def pad(self, images: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Zero-pad ``(3, h_i, w_i)`` tensors to one ``(B, 3, H, W)`` batch, H and W multiples of 32.

        Returns:
            The batch and its ``(B, H, W)`` bool pixel mask.
        """
        return pad_images(images, self.size_divisibility)

    # ------------------------------------------------------------------ text
    def make_prompt(self, prompt: PromptLike) -> Prompt:
        """A :class:`Prompt` from class names, a caption, or a Prompt.

        Raises:
            PromptError: for an empty prompt or an empty class list.
        """
        if isinstance(prompt, Prompt):
            return prompt
        if isinstance(prompt, str):
            return caption_prompt(prompt)
        return detection_prompt(list(prompt))

    def encode_prompts(self, prompts: list[Prompt]) -> tuple[Tensor, Tensor, list[EntityMap]]:
        """Tokenise prompts and locate their entities.

        Returns:
            ``input_ids (B, T)``, ``attention_mask (B, T)``, one :class:`EntityMap` per prompt.

        Raises:
            PromptError: if a prompt needs more than ``max_query_len`` tokens.
        """
        encoded = [tokenize_prompt(self.tokenizer, p, self.max_query_len) for p in prompts]
        length = self.max_query_len if self.pad_to_max else max(len(e.input_ids) for e in encoded)
        pad_id = int(getattr(self.tokenizer, "pad_token_id", 0) or 0)
        ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        maps = []
        for i, (e, p) in enumerate(zip(encoded, prompts, strict=True)):
            ids[i, : len(e.input_ids)] = torch.as_tensor(e.input_ids)
            mask[i, : len(e.input_ids)] = 1
            maps.append(EntityMap(e.token_ids_per_entity, list(p.label_ids), list(p.labels)))
        return ids, mask, maps

    # ------------------------------------------------------------------ both
    def __call__(
        self, images: Sequence[ImageLike] | ImageLike, prompts: Sequence[PromptLike] | PromptLike
    ) -> GLIPInputs:
        """Prepare a batch.

        Args:
            images: one image or a list: PIL images, file paths, ``(H, W, 3)`` RGB uint8 arrays or
                ``(3, H, W)`` uint8 tensors (see :func:`glip.images.to_pil`).
            prompts: one prompt for all images, or a list with one prompt per image. A prompt is a
                caption string, a list of class names, or a :class:`Prompt`; a list of strings is
                always read as class names (wrap per-image captions with ``glip.text.caption_prompt``).

        Raises:
            PromptError: if the numbers of images and prompts disagree, or a prompt is invalid.
        """
        if is_image_like(images):
            images = [images]
        if not images:
            raise PromptError("no images were given")
        images = [to_pil(im, f"image {i}") for i, im in enumerate(images)]
        if isinstance(prompts, (str, Prompt)) or _is_class_list(prompts):
            prompt_list: list[PromptLike] = [prompts] * len(images)  # type: ignore[list-item]
        else:
            prompt_list = list(prompts)  # type: ignore[arg-type]
            if len(prompt_list) == 1:
                prompt_list = prompt_list * len(images)
        if len(prompt_list) != len(images):
            raise PromptError(
                f"got {len(images)} images but {len(prompt_list)} prompts: give one prompt or one per image"
            )
        made = [self.make_prompt(p) for p in prompt_list]
        tensors, sizes, originals = zip(*(self.transform_image(im) for im in images), strict=True)
        pixel_values, pixel_mask = self.pad(list(tensors))
        ids, mask, maps = self.encode_prompts(made)
        return GLIPInputs(pixel_values, pixel_mask, ids, mask, list(sizes), list(originals), maps, made)

    def post_process(self, output: object, inputs: GLIPInputs) -> list[Detections]:
        """Detections per image in original-image pixels (see :mod:`glip.modeling.postprocess`)."""
        return self.postprocessor(
            output.logits,
            output.box_regression,
            output.centerness,
            output.anchors_xyxy,  # type: ignore[attr-defined]
            output.level_sizes,
            inputs.entity_maps,
            inputs.image_sizes,
            inputs.original_sizes,  # type: ignore[attr-defined]
        )


def _is_class_list(prompts: object) -> bool:
    return isinstance(prompts, Sequence) and not isinstance(prompts, str) and all(isinstance(p, str) for p in prompts)


__all__ = ["GLIPInputs", "GLIPProcessor", "load_image", "resized_size"]

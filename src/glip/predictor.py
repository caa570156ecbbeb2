"""The high-level "image + text → detections" object used by the CLI and the server.

* Class lists of any length: names are packed into as many 256-token prompts as needed
  (:func:`glip.text.chunk_vocabulary`); the image is encoded once and the tower + head run once per
  chunk; each chunk's detections keep global class ids, are concatenated (no cross-chunk NMS, as
  the official LVIS evaluation does) and the best ``max_detections`` are returned.
* Captions: noun phrases become the entities (or pass a :class:`~glip.text.Prompt`).
* Text features are computed once per distinct prompt and shared by every image of the batch.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from glip.cuda_graphs import GraphedFunction
from glip.devices import resolve_device
from glip.errors import GLIPError, ImageError, PromptError
from glip.images import ImageLike, is_image_like, to_pil
from glip.modeling.dyhead import ModulatedDeformConv3x3
from glip.modeling.glip import GLIPModel, TextFeatures, head_outputs, pack_head_inputs, unpack_head_inputs
from glip.modeling.mask_head import paste_masks, token_weights
from glip.pipelining import OverlappedPostprocess
from glip.processing import GLIPInputs, GLIPProcessor
from glip.structures import Detections, EntityMap
from glip.text import Prompt, caption_prompt, chunk_vocabulary, detection_prompt, load_tokenizer

logger = logging.getLogger(__name__)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_CACHE_SIZE = 256


def merge_detections(parts: list[Detections], max_detections: int | None) -> Detections:
    """Concatenate per-chunk detections of one image, best first; keep ``max_detections`` (None: all)."""
    if len(parts) == 1:
        return parts[0]  # already capped by the post-processor (official tie rule)
    boxes = torch.cat([p.boxes_xyxy for p in parts])
    scores = torch.cat([p.scores for p in parts])
    labels = torch.cat([p.labels for p in parts])
    names = [n for p in parts for n in p.label_names]
    masks = torch.cat([p.masks for p in parts]) if all(p.masks is not None for p in parts) else None
    order = scores.argsort(descending=True, stable=True)
    if max_detections is not None:
        order = order[:max_detections]
    return Detections(
        boxes[order],
        scores[order],
        labels[order],
        [names[i] for i in order.tolist()],
        parts[0].image_size,
        None if masks is None else masks[order.to(masks.device)],
    )


class GLIPPredictor:
    """Runs a :class:`GLIPModel` on images with class lists or captions.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        processor: matching processor (``GLIPProcessor.from_config(model.config)`` by default).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        max_detections: detections kept per image after merging vocabulary chunks (default: the
            config's ``detections_per_image``; 0 keeps every chunk's detections, as the official LVIS
            evaluation does).
        max_classes_per_chunk: optional cap on classes per prompt chunk (the official LVIS protocol uses 40).
        dtype: ``"fp32"`` (exact official arithmetic), ``"bf16"`` or ``"fp16"`` (autocast + the fused
            attention fast path; losses of precision are measured in ``docs/speed.md``).
        compile: run the tower and head through ``torch.compile``.
        cuda_graphs: on a GPU, replay the backbone and the tower + head from CUDA graphs captured once
            per input shape (see :mod:`glip.cuda_graphs`; worth it for fixed-size inputs, where launch
            overhead dominates, e.g. batch 1).
        chunk_batch_size: vocabulary chunks run through the tower together (one batched pass each).
    """

    def __init__(
        self,
        model: GLIPModel,
        processor: GLIPProcessor | None = None,
        device: str | torch.device | None = "auto",
        max_detections: int | None = None,
        max_classes_per_chunk: int | None = None,
        dtype: str = "fp32",
        compile: bool = False,
        chunk_batch_size: int = 8,
        cuda_graphs: bool = False,
    ) -> None:
        if dtype not in AMP_DTYPES:
            raise GLIPError(f"dtype {dtype!r}: use one of {sorted(AMP_DTYPES)}")
        if max_detections is not None and (isinstance(max_detections, bool) or not isinstance(max_detections, int)):
            raise GLIPError(f"max_detections must be an integer, got {max_detections!r}")
        if max_classes_per_chunk is not None and (
            not isinstance(max_classes_per_chunk, int) or max_classes_per_chunk < 1
        ):
            raise GLIPError(f"max_classes_per_chunk must be a positive integer, got {max_classes_per_chunk!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor or GLIPProcessor.from_config(model.config)
        if max_detections is None:
            max_detections = model.config.postprocess.detections_per_image
        self.max_detections: int | None = max_detections if max_detections > 0 else None
        self.max_classes_per_chunk = max_classes_per_chunk
        self.amp_dtype = AMP_DTYPES[dtype]
        if self.amp_dtype is not None:
            self.model.enable_fast_path()
        # on the fast path, what stays fp32 under autocast (the deformable convolution's GEMM) may use
        # TF32 tensor cores: set for this predictor's calls only (see _precision), never process-wide
        self._tf32 = self.amp_dtype is not None and self.device.type == "cuda"
        self.chunk_batch_size = max(1, chunk_batch_size)
        self._forward_features = torch.compile(self.model.forward_features) if compile else self.model.forward_features
        self._graph_image: GraphedFunction | None = None
        self._graph_heads: GraphedFunction | None = None
        if cuda_graphs:
            if self.amp_dtype is None and any(isinstance(m, ModulatedDeformConv3x3) for m in self.model.modules()):
                raise GLIPError(
                    "CUDA graphs need the fast path (dtype bf16 or fp16): torchvision's deformable convolution "
                    "of the exact fp32 path cannot be captured in a graph"
                )
            if self.device.type != "cuda":
                raise GLIPError(f"CUDA graphs need a GPU; the device is {self.device} (drop cuda_graphs/--cuda-graphs)")
            self._graph_image = GraphedFunction(self.model.encode_image, self.amp_dtype)
            self._graph_heads = GraphedFunction(self._heads_fn, self.amp_dtype)
        self._text_cache: OrderedDict[tuple[str, tuple], tuple[TextFeatures, EntityMap]] = OrderedDict()

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str | torch.device | None = "auto", **kwargs: object
    ) -> GLIPPredictor:
        """Load a model folder (its tokenizer files included), an official ``.pth``, or (None) the embedded model."""
        if path is None:
            from glip.assets import default_model_path

            path = default_model_path()
            logger.info("using the embedded default model %s", path)
        model = GLIPModel.from_pretrained(path)
        folder = Path(path)
        tokenizer = load_tokenizer(str(folder)) if folder.is_dir() and (folder / "tokenizer.json").is_file() else None
        processor = GLIPProcessor.from_config(model.config, tokenizer=tokenizer)
        return cls(model, processor, device, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ prompts
    def prompts_for(
        self,
        classes: Sequence[str] | None = None,
        prompt: str | Prompt | None = None,
        label_ids: Sequence[int] | None = None,
        caption_prompts: Sequence[Mapping[str, str]] | None = None,
    ) -> list[Prompt]:
        """The prompt chunks for a class list, or the single prompt of a caption.

        Args:
            classes: class names (chunked into as many 256-token prompts as needed).
            prompt: a caption or a ready :class:`Prompt`.
            label_ids: the id reported for each class (default ``0..n-1``).
            caption_prompts: ODinW-style ``{"prefix", "name", "suffix"}`` per class; the prompt is then
                built exactly as the official ``create_queries_and_maps`` does and must fit in one prompt.

        Raises:
            PromptError: if neither or both of classes/prompt are given, or the text is empty / too long.
        """
        if (classes is None) == (prompt is None):
            raise PromptError("give either class names or a prompt (caption), not both and not neither")
        if classes is not None:
            names = check_classes(classes)
            if caption_prompts is not None:
                return [detection_prompt(names, caption_prompts=caption_prompts, label_ids=label_ids)]
            return chunk_vocabulary(
                self.processor.tokenizer,
                names,
                max_len=self.processor.max_query_len,
                max_classes_per_chunk=self.max_classes_per_chunk,
                label_ids=label_ids,
            )
        if not isinstance(prompt, (str, Prompt)):
            raise PromptError(f"prompt must be a string (a sentence), got {type(prompt).__name__}")
        return [prompt if isinstance(prompt, Prompt) else caption_prompt(prompt)]

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[ImageLike] | ImageLike,
        classes: Sequence[str] | None = None,
        prompt: str | Prompt | None = None,
        threshold: float = 0.0,
        batch_size: int = 1,
        label_ids: Sequence[int] | None = None,
        masks: bool = False,
    ) -> list[Detections]:
        """Detect what the text names in each image.

        Args:
            images: one image or a list. An image is a file path, a PIL image, an ``(H, W, 3)`` RGB
                uint8 numpy array (e.g. a video frame; OpenCV's BGR frames need ``frame[..., ::-1]``)
                or a ``(3, H, W)`` uint8 tensor; see :func:`glip.images.to_pil`.
            classes: class names (any number: long vocabularies are chunked).
            prompt: a caption (its noun phrases are grounded) or a :class:`Prompt`.
            threshold: drop detections scoring below this.
            batch_size: images per forward pass (the official evaluation uses 1: padding to a
                common size changes the numbers slightly).
            label_ids: the id reported for each class (default ``0..n-1``).
            masks: also predict instance masks (``Detections.masks``, needs a model with a mask head).

        Returns:
            One :class:`Detections` per image, in original-image pixels, best first.

        Raises:
            ImageError: for an unreadable or invalid image; PromptError: for a bad class list or prompt.
        """
        threshold = check_threshold(threshold)
        if masks:
            self.model.require_head("mask")
        items = [images] if is_image_like(images) else _image_list(images)
        chunks = self.prompts_for(classes, prompt, label_ids)
        results: list[Detections] = []
        for batch in _batches(items, batch_size):
            pil = [to_pil(im, name=_image_name(im, i)) for i, im in enumerate(batch)]
            results.extend(self.predict_chunks(pil, chunks, masks=masks, mask_min_score=threshold))
        return [r.above(threshold) if threshold > 0 else r for r in results]

    def iter_predict(
        self,
        paths: Sequence[str | Path],
        classes: Sequence[str] | None = None,
        prompt: str | Prompt | None = None,
        threshold: float = 0.0,
    ) -> Iterator[tuple[Path, Image.Image, Detections]]:
        """Yield ``(path, image, detections)`` one image at a time (for progress bars and streaming)."""
        threshold = check_threshold(threshold)
        chunks = self.prompts_for(classes, prompt)
        for path in paths:
            image = to_pil(path)
            with torch.inference_mode():
                det = self.predict_chunks([image], chunks)[0]
            yield Path(path), image, (det.above(threshold) if threshold > 0 else det)

    @torch.inference_mode()
    def predict_chunks(
        self, images: list[Image.Image], chunks: list[Prompt], masks: bool = False, mask_min_score: float = 0.0
    ) -> list[Detections]:
        """Detections of a batch of images for prompt chunks of one vocabulary (merged per image).

        The images go through the backbone once; the chunks' text features come from a cache (one
        text-encoder pass per distinct prompt); the tower and head run once per group of
        ``chunk_batch_size`` chunks, with every image of the batch; a group is post-processed in one
        call, on a side CUDA stream while the next group computes (:mod:`glip.pipelining`).

        With ``masks`` the mask head runs on the detected boxes scoring at least ``mask_min_score``
        (the others get empty masks) and ``Detections.masks`` holds the pasted instance masks.

        Raises:
            ConfigError: ``masks`` with a model that has no mask head.
        """
        return [merge_detections(parts, self.max_detections) for parts in self.predict_inputs(
            self.processor(images, chunks[0]), chunks, masks, mask_min_score
        )]  # fmt: skip

    @torch.inference_mode()
    def predict_prompts(
        self,
        images: list[Image.Image],
        prompts: list[Prompt],
        masks: bool = False,
        mask_min_score: float = 0.0,
        mask_top_k: int = 0,
    ) -> list[list[Detections]]:
        """Detections of each image for each of several independent prompts (e.g. referring expressions).

        Like :meth:`predict_chunks` (the backbone runs once per image, the prompts in groups of
        ``chunk_batch_size``), but every prompt keeps its own detections: the result is indexed
        ``[image][prompt]``. With ``masks``, the ``mask_top_k`` best detections of each get a mask
        whatever their score, the others when they score at least ``mask_min_score``.
        """
        return self.predict_inputs(self.processor(images, prompts[0]), prompts, masks, mask_min_score, mask_top_k)

    @torch.inference_mode()
    def predict_inputs(
        self,
        inputs: GLIPInputs,
        chunks: list[Prompt],
        masks: bool = False,
        mask_min_score: float = 0.0,
        mask_top_k: int = 0,
    ) -> list[list[Detections]]:
        """Per image, the detections of every prompt (chunk) in prompt order, from preprocessed images.

        ``inputs`` is the processor's output for the images (its prompt part is not used: the
        prompts are ``chunks``); :meth:`predict_chunks` and :meth:`predict_prompts` call this after
        preprocessing, benchmarks and servers that preprocess themselves call it directly.
        """
        if masks:
            self.model.require_head("mask")
        with self._precision():
            return self._run_prompts(inputs.to(self.device), chunks, masks, mask_min_score, mask_top_k)

    def _run_prompts(
        self, inputs: GLIPInputs, chunks: list[Prompt], masks: bool, mask_min_score: float, mask_top_k: int = 0
    ) -> list[list[Detections]]:
        b = inputs.pixel_values.shape[0]
        features = self._image_features(inputs.pixel_values)
        level_sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        anchors = self.model.anchors(level_sizes, self.device)
        per_image: list[list[Detections]] = [[] for _ in range(b)]
        pipe = OverlappedPostprocess(self.device, copy_outputs=self._graph_heads is not None)
        for start in range(0, len(chunks), self.chunk_batch_size):
            group = chunks[start : start + self.chunk_batch_size]
            encoded = [self._text(c) for c in group]
            g = len(group)
            text = _stack_texts([t for t, _ in encoded], b)
            feats = [f.repeat(g, 1, 1, 1) for f in features] if g > 1 else features
            pixel_mask = inputs.pixel_mask.repeat(g, 1, 1)
            maps = [emap for _, emap in encoded for _ in range(b)]  # chunk-major rows

            def job(out: Sequence[Tensor], maps: list[EntityMap] = maps, g: int = g) -> None:
                logits, boxes, ctr = (t.float() for t in out[:3])
                dets = self.processor.postprocessor(
                    logits, boxes, ctr, anchors, level_sizes, maps, inputs.image_sizes * g, inputs.original_sizes * g
                )  # fmt: skip
                if masks:
                    self._add_masks(dets, maps, out, inputs.image_sizes * g, mask_min_score, mask_top_k)
                for row, det in enumerate(dets):
                    per_image[row % b].append(det)

            # this group's post-processing runs while the GPU computes the next group
            outputs = self._heads(feats, text, pixel_mask)
            pipe.submit(outputs if masks else outputs[:3], job)
        pipe.flush()
        return per_image

    def _image_features(self, pixel_values: Tensor) -> list[Tensor]:
        """Backbone + FPN of ``(B, 3, H, W)`` pixels → P3..P7 (from a CUDA graph when enabled)."""
        if self._graph_image is not None:
            return list(self._graph_image(pixel_values))
        with self._autocast():
            return self.model.encode_image(pixel_values)

    def _heads(self, feats: list[Tensor], text: TextFeatures, pixel_mask: Tensor) -> tuple[Tensor, ...]:
        """Tower + heads → the outputs of :meth:`GLIPModel.head_tensors` (from a CUDA graph when enabled)."""
        if self._graph_heads is not None:
            return self._graph_heads(*pack_head_inputs(feats, text, pixel_mask))
        with self._autocast():
            return self._heads_fn(*pack_head_inputs(feats, text, pixel_mask))

    def _heads_fn(self, *args: Tensor) -> tuple[Tensor, ...]:
        """:meth:`GLIPModel.head_tensors` through the (possibly compiled) ``forward_features``."""
        out = self._forward_features(*unpack_head_inputs(args))
        return head_outputs(out, self.model.mask_head is not None)

    def _add_masks(
        self,
        dets: list[Detections],
        maps: list[EntityMap],
        out: Sequence[Tensor],
        image_sizes: list[tuple[int, int]],
        min_score: float,
        top_k: int = 0,
    ) -> None:
        """Fill ``det.masks`` of each row: the mask head on the boxes scoring at least ``min_score``
        and on the ``top_k`` best ones (the others get empty masks).

        ``out`` is :meth:`GLIPModel.head_tensors`' output for the rows; a box's phrase is the tokens of
        the entities with its label id.
        """
        mask_text, tower = out[3], list(out[4:])
        num_tokens = mask_text.shape[1]
        # which boxes get a mask: one host sync for all rows (detections are sorted by score)
        chosen = [((d.scores >= min_score) | (torch.arange(len(d), device=d.scores.device) < top_k)) for d in dets]
        chosen_cpu = torch.cat(chosen).cpu().split([len(d) for d in dets]) if dets else []
        rois, weights, boxes_orig, rows = [], [], [], []
        for row, (det, emap, mask_row) in enumerate(zip(dets, maps, chosen_cpu, strict=True)):
            keep = mask_row.nonzero().squeeze(1)
            if keep.numel() == 0:
                continue
            (h, w), (oh, ow) = image_sizes[row], det.image_size
            boxes = det.boxes_xyxy[keep.to(det.boxes_xyxy.device)]
            scaled = boxes * boxes.new_tensor([w / ow, h / oh, w / ow, h / oh])
            rois.append(torch.cat((scaled.new_full((scaled.shape[0], 1), float(row)), scaled), dim=1))
            weights.append(label_token_weights(det.labels[keep.to(det.labels.device)].cpu(), emap, num_tokens, "cpu"))
            boxes_orig.append(boxes)
            rows.append((row, keep))
        for det in dets:
            det.masks = torch.zeros(len(det), *det.image_size, dtype=torch.bool, device=det.scores.device)
        if not rois:
            return
        with self._autocast():
            weight = torch.cat(weights).to(mask_text.device, non_blocking=True)
            probs = self.model.segment(tower, mask_text, torch.cat(rois), weight).sigmoid()
        threshold = self.model.config.heads.mask.mask_threshold  # type: ignore[union-attr]
        counts = [keep.numel() for _, keep in rows]
        # rows whose images have one size are pasted in one call
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, (row, _) in enumerate(rows):
            by_size.setdefault(dets[row].image_size, []).append(k)
        offsets = [0, *torch.tensor(counts).cumsum(0).tolist()]
        for size, members in by_size.items():
            index = torch.cat([torch.arange(offsets[k], offsets[k + 1]) for k in members]).to(probs.device)
            pasted = paste_masks(probs[index], torch.cat([boxes_orig[k] for k in members]), size, threshold)
            for part, k in zip(pasted.split([counts[k] for k in members]), members, strict=True):
                row, keep = rows[k]
                target = dets[row].masks
                assert target is not None
                if keep.numel() == len(dets[row]):
                    dets[row].masks = part
                else:
                    target[keep.to(target.device)] = part

    @contextmanager
    def running(self) -> Iterator[None]:
        """Inference mode, this predictor's precision (TF32 scope) and autocast: the context for calling
        its model directly (VQA, captioning, custom heads)."""
        with torch.inference_mode(), self._precision(), self._autocast():
            yield

    @contextmanager
    def _precision(self) -> Iterator[None]:
        """TF32 matmuls on the fast path on CUDA, for the duration of one call (restored afterwards)."""
        if not self._tf32:
            yield
            return
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _text(self, prompt: Prompt) -> tuple[TextFeatures, EntityMap]:
        """Text features (batch 1) and entity map of a prompt, computed once and cached."""
        key = (prompt.text, tuple(prompt.label_ids), tuple(prompt.spans))
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        ids, mask, maps = self.processor.encode_prompts([prompt])
        ids, mask = ids.to(self.device), mask.to(self.device)
        with self._autocast():
            text = self.model.encode_text(ids, mask)
        self._text_cache[key] = (text, maps[0])
        if len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return text, maps[0]


def label_token_weights(
    labels: Tensor, entity_map: EntityMap, num_tokens: int, device: torch.device | str
) -> Tensor:
    """``(K, T)`` phrase weights of detections: uniform over the tokens of the entities with each label id."""
    tokens: dict[int, set[int]] = {}
    for toks, label in zip(entity_map.token_ids, entity_map.label_ids, strict=True):
        tokens.setdefault(int(label), set()).update(toks)
    return token_weights([sorted(tokens.get(int(lab), ())) for lab in labels.tolist()], num_tokens, device)


def _stack_texts(texts: list[TextFeatures], images: int) -> TextFeatures:
    """Chunk-major batch ``[chunk0 x images, chunk1 x images, ...]``, padded to the longest prompt."""
    length = max(t.hidden.shape[1] for t in texts)
    hidden, mask = [], []
    for t in texts:
        pad = length - t.hidden.shape[1]
        h, m = t.hidden, t.mask
        if pad:
            h = torch.nn.functional.pad(h, (0, 0, 0, pad))
            m = torch.nn.functional.pad(m, (0, pad))
        hidden.append(h.expand(images, -1, -1))
        mask.append(m.expand(images, -1))
    return TextFeatures(torch.cat(hidden), torch.cat(mask))


def check_classes(classes: object) -> list[str]:
    """A class list as a list of non-empty strings.

    Raises:
        PromptError: for a plain string (it would be read letter by letter), a non-sequence, or an
            entry that is not a non-empty string.
    """
    if isinstance(classes, str):
        raise PromptError(
            f"classes must be a list of names, not the string {classes!r}: "
            f"write classes={[c.strip() for c in classes.split(',') if c.strip()]!r}"
        )
    if not isinstance(classes, Sequence) and not isinstance(classes, (set, frozenset, tuple)):
        raise PromptError(f"classes must be a list of class names, got {type(classes).__name__}")
    names = list(classes)
    if not names:
        raise PromptError("classes is empty: give at least one class name")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise PromptError(f"classes[{i}] must be a string, got {type(name).__name__}: {name!r}")
        if not name.strip():
            raise PromptError(f"classes[{i}] is empty: every class needs a name")
    return names


def check_threshold(threshold: object) -> float:
    """A score threshold in ``[0, 1]``.

    Raises:
        GLIPError: for NaN, a value outside ``[0, 1]`` or a non-number.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise GLIPError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise GLIPError(f"threshold {threshold} is outside [0, 1]: scores are probabilities")
    return float(threshold)


def _image_list(images: object) -> list:
    """A list of images from a sequence, an iterator, or a 4-D ``(N, H, W, 3)`` array / ``(N, 3, H, W)`` tensor."""
    if getattr(images, "ndim", None) == 4 or (
        isinstance(images, (Sequence, Iterator)) and not isinstance(images, (str, bytes))
    ):
        items = list(images)
        if not items:
            raise ImageError("no images were given")
        return items
    raise ImageError(
        f"images is a {type(images).__name__}: pass an image (path, PIL image, numpy array, tensor) or a list of them"
    )


def _image_name(image: object, index: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {index}"


def _batches(items: list, size: int) -> Iterator[list]:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise GLIPError(f"batch_size must be a positive integer, got {size!r}")
    for i in range(0, len(items), size):
        yield items[i : i + size]

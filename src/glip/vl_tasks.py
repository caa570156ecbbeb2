"""Grounded VQA and grounded captioning with a model that has the GLIPv2 understanding heads.

* :func:`answer_question` — the question with ``[MASK]`` appended is the prompt: the VQA head scores
  the answers from the fused text, and the grounding head boxes the question's noun phrases and,
  through the ``[MASK]`` token, the answer entity.
* :func:`caption_image` — beam (or greedy) search with the image encoded once
  (:mod:`glip.generation`); then every noun phrase of the caption is grounded with the region-word
  logits the causal model gives its tokens, exactly as they were when the words were generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glip.errors import PromptError
from glip.generation import beam_search, encode_image_for_captions, greedy_search, next_token_logprobs
from glip.images import ImageLike, to_pil
from glip.predictor import GLIPPredictor, check_threshold
from glip.structures import Detections
from glip.text import Prompt, caption_prompt

MASK_TEXT = "[MASK]"
ANSWER_LABEL = "answer"


@dataclass
class VQAAnswer:
    """A grounded answer.

    Attributes:
        question: as asked; answer: the best answer; score: its probability (sigmoid of the logit).
        top: the five best ``(answer, probability)``.
        detections: boxes of the question's phrases and of the answer entity (labelled with the
            answer), above the threshold, in original-image pixels.
    """

    question: str
    answer: str
    score: float
    top: list[tuple[str, float]] = field(default_factory=list)
    detections: Detections | None = None


@dataclass
class CaptionResult:
    """A grounded caption: the text, its normalised beam score, and the boxes of its noun phrases."""

    text: str
    score: float
    detections: Detections | None = None


def vqa_prompt(question: str) -> Prompt:
    """``question + " [MASK]"``: the question's noun phrases, then the ``[MASK]`` token as the answer entity."""
    if not isinstance(question, str) or not question.strip():
        raise PromptError("the question is empty: ask something, e.g. --question 'How many dogs are there?'")
    text = f"{question.strip()} {MASK_TEXT}"
    phrases = caption_prompt(question.strip())
    start = len(text) - len(MASK_TEXT)
    return Prompt(
        text=text,
        spans=(*phrases.spans, ((start, len(text)),)),
        labels=(*phrases.labels, ANSWER_LABEL),
    )


def answer_question(
    predictor: GLIPPredictor, image: ImageLike, question: str, threshold: float = 0.3, top_k: int = 5
) -> VQAAnswer:
    """Answer ``question`` about ``image`` and ground its phrases and the answer.

    Raises:
        ConfigError: if the model has no VQA head; PromptError / ImageError for bad input.
    """
    return answer_questions(predictor, image, [question], threshold, top_k)[0]


def answer_questions(
    predictor: GLIPPredictor, image: ImageLike, questions: list[str], threshold: float = 0.3, top_k: int = 5
) -> list[VQAAnswer]:
    """Several questions about one image in one batched forward pass (see :func:`answer_question`)."""
    model = predictor.model
    model.require_head("vqa")
    threshold = check_threshold(threshold)
    answers = model.config.heads.vqa.answers  # type: ignore[union-attr]
    prompts = [vqa_prompt(q) for q in questions]
    pil = to_pil(image)
    inputs = predictor.processor([pil] * len(prompts), prompts).to(predictor.device)
    with predictor.running():
        out = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask, inputs.pixel_mask)
    dets = predictor.processor.post_process(_float(out), inputs)
    results = []
    for question, logits, det in zip(questions, out.vqa_logits.float().sigmoid(), dets, strict=True):
        best = logits.topk(min(top_k, logits.shape[0]))
        top = [(answers[i], float(p)) for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]
        det = det.above(threshold)
        names = [top[0][0] if name == ANSWER_LABEL else name for name in det.label_names]
        det = Detections(det.boxes_xyxy, det.scores, det.labels, names, det.image_size)
        results.append(VQAAnswer(question, top[0][0], top[0][1], top, det))
    return results


def caption_image(
    predictor: GLIPPredictor,
    image: ImageLike,
    beam_size: int | None = None,
    max_length: int | None = None,
    length_penalty: float | None = None,
    threshold: float = 0.3,
) -> CaptionResult:
    """Write a caption for ``image`` (beam search; ``beam_size=1`` is greedy) and ground its phrases.

    Decoding defaults come from the model's ``heads.caption`` section.

    Raises:
        ConfigError: if the model has no caption head; GLIPError for bad decoding settings.
    """
    model = predictor.model
    model.require_head("caption")
    threshold = check_threshold(threshold)
    cfg = model.config.heads.caption
    beam = beam_size if beam_size is not None else cfg.beam_size  # type: ignore[union-attr]
    length = max_length if max_length is not None else cfg.max_length  # type: ignore[union-attr]
    penalty = length_penalty if length_penalty is not None else cfg.length_penalty  # type: ignore[union-attr]
    if not (isinstance(beam, int) and 1 <= beam <= 64 and isinstance(length, int) and 1 <= length <= 512):
        raise PromptError(f"beam size {beam!r} must be in [1, 64] and max length {length!r} in [1, 512]")
    tok = predictor.processor.tokenizer
    pil = to_pil(image)
    pixels, _, _ = predictor.processor.transform_image(pil)
    pixel_values, _ = predictor.processor.pad([pixels])
    banned = sorted({int(t) for t in (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.cls_token_id)})
    with predictor.running():
        state = encode_image_for_captions(model, pixel_values.to(predictor.device))

        def step(prefixes: torch.Tensor) -> torch.Tensor:
            ids = prefixes.to(predictor.device)
            return next_token_logprobs(model, state, ids, torch.ones_like(ids)).cpu()

        if beam == 1:
            tokens, score = greedy_search(step, tok.cls_token_id, tok.sep_token_id, length, banned), 0.0
        else:
            tokens, score = beam_search(step, tok.cls_token_id, tok.sep_token_id, beam, length, penalty, banned)[0]
    text = tok.decode([t for t in tokens if t != tok.sep_token_id], skip_special_tokens=True).strip()
    if not text:
        return CaptionResult(text, score, None)
    return CaptionResult(text, score, ground_caption(predictor, pil, text, threshold))


def ground_caption(predictor: GLIPPredictor, image: ImageLike, caption: str, threshold: float = 0.3) -> Detections:
    """Boxes of the caption's noun phrases from the causal model (as when the words were generated)."""
    model = predictor.model
    prompt = caption_prompt(caption)
    inputs = predictor.processor([to_pil(image)], prompt).to(predictor.device)
    with predictor.running():
        out = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask, inputs.pixel_mask, causal=True)
    return predictor.processor.post_process(_float(out), inputs)[0].above(threshold)


def _float(out: object) -> object:
    """The post-processor reads fp32 tensors (outputs may be in the autocast dtype)."""
    for name in ("logits", "box_regression", "centerness"):
        setattr(out, name, getattr(out, name).float())
    return out


__all__ = [
    "CaptionResult",
    "VQAAnswer",
    "answer_question",
    "answer_questions",
    "caption_image",
    "ground_caption",
    "vqa_prompt",
]

"""Object-detection labels → a grounding prompt, as the official GLIP training does.

Two conversions of the official code (``maskrcnn_benchmark/data/datasets/od_to_grounding.py``):

* ``mode="sampled"`` — ``convert_object_detection_to_grounding_optimized_for_od`` (l.149-333, with
  ``generate_control_options_given_probabilities`` l.336-375) after ``check_for_positive_overflow``
  (l.104-146), as called by ``coco_dt.py`` l.98-118 (O365 pretraining) with
  ``max_seq_length = max_query_len - 2``:

  1. positive classes (the distinct labels of the image's boxes) are shuffled and kept while the
     running token count of ``clean_name(name) + ". "`` stays ``<= max_seq_length`` (254 =
     ``MAX_QUERY_LEN - 2``); at the first overflow the rest are dropped with their boxes. The
     returned length *includes* the class that overflowed (official quirk, kept);
  2. ``full_negative = random_sample_negative`` (85), or ``max(min(max_num_labels - #pos, 85), 0)``
     when ``max_num_labels > 0``, capped at the number of classes;
  3. ``CONTROL_PROB = (p_one_negative, p_one_positive, p_full, p_drop_positive)``: with one uniform
     draw ``u``: ``u < p1`` → 1 negative; ``< p1 + p2`` → 0 negatives; ``< p1 + p2 + p3`` → all
     ``full_negative``; else uniform in ``1 .. max(1, full_negative)``. The pretraining value
     ``(0, 0, 0.5, 0)`` therefore gives 50 % "all 85 negatives", 50 % uniform 1..85. Positives are
     always all kept (the official ignores ``num_positives``; ``p_drop_positive`` must be 0);
  4. that many classes are drawn **from all classes without replacement**, then the image's
     positives are removed (so fewer real negatives remain), and the rest shuffled;
  5. negatives are screened: ``budget = max_seq_length - positive_length``; each negative subtracts
     its ``"name. "`` token count and is kept while the budget stays ``> 0`` (first failure stops);
  6. ``negatives + positives`` are shuffled together and joined with the separator (``". "``), no
     trailing separator; each class's span is its cleaned name.

* ``mode="all_classes"`` — ``convert_od_to_grounding_simple`` (l.20-101; COCO / ODinW fine-tuning
  with ``CocoGrounding``, ``modulated_coco.py`` l.185-195): every class in id order (or shuffled
  when ``shuffle``), no negatives sampling, no overflow check; optional ODinW caption prompts
  ``prefix + clean_name(name) + suffix`` with the span on the name (the training path cleans the
  name, the evaluation path does not).

Randomness comes only from the ``random.Random`` passed in, so a sample is reproducible from its
seed. Official quirk not reproduced by default: the TSV datasets put ``__background__`` (id 0) in
the negative pool, so ``" background "`` can appear as a negative (``ClassVocabulary.build(...,
background_negative=True)``). An image without boxes and without sampled negatives gets the empty
prompt ``""`` (as the official).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from glip.errors import ConfigError, DataError
from glip.text import MAX_QUERY_LEN, Prompt, clean_name

MAX_SEQ_LENGTH = MAX_QUERY_LEN - 2
"""Token budget of an OD training prompt without ``[CLS]``/``[SEP]`` (official ``max_query_len - 2``)."""

BACKGROUND_LABEL = 0
"""Label id of the official ``__background__`` pseudo-class (only with ``background_negative``)."""


@dataclass(frozen=True)
class OdPromptOptions:
    """How detection labels become a prompt (official ``DATASETS.*`` training options).

    Attributes:
        mode: ``"sampled"`` (pretraining: positives + sampled negatives) or ``"all_classes"``
            (fine-tuning: every class).
        random_sample_negative: ``RANDOM_SAMPLE_NEG`` (85 in the GLIP pretraining configs).
        control_probabilities: ``CONTROL_PROB`` (one negative, one positive, full, drop positive).
        separator: ``SEPARATION_TOKENS`` (``". "`` in the GLIP configs).
        max_seq_length: token budget without special tokens (254).
        max_num_labels: ``MAX_NUM_LABELS``; ``<= 0`` means no limit.
        shuffle: ``not DISABLE_SHUFFLE`` for ``"all_classes"`` (``"sampled"`` always shuffles).
        prefix: ``"object detection : "`` when ``ADD_DET_PROMPT`` (off in the released configs).
    """

    mode: str = "sampled"
    random_sample_negative: int = 85
    control_probabilities: tuple[float, float, float, float] = (0.0, 0.0, 0.5, 0.0)
    separator: str = ". "
    max_seq_length: int = MAX_SEQ_LENGTH
    max_num_labels: int = -1
    shuffle: bool = True
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("sampled", "all_classes"):
            raise ConfigError(f"od prompt mode={self.mode!r}: use 'sampled' or 'all_classes'")
        probs = tuple(float(p) for p in self.control_probabilities)
        if len(probs) != 4 or any(p < 0 for p in probs) or sum(probs[:3]) > 1 + 1e-9:
            raise ConfigError(
                f"control_probabilities={self.control_probabilities}: give 4 non-negative probabilities "
                "(one negative, one positive, full, drop positive) whose first three sum to at most 1"
            )
        if probs[3] != 0:
            raise ConfigError("control_probabilities[3] (drop positives) must be 0, as the official code asserts")
        if self.random_sample_negative < 0:
            raise ConfigError(f"random_sample_negative={self.random_sample_negative} must be >= 0")
        if self.max_seq_length <= 0:
            raise ConfigError(f"max_seq_length={self.max_seq_length} must be positive")
        object.__setattr__(self, "control_probabilities", probs)


@dataclass(frozen=True)
class ClassVocabulary:
    """A dataset's classes as they enter training prompts (built once; token counts cached).

    Attributes:
        category_ids: category ids in id order (the label of each class).
        names: names as in the annotation file (entity display labels).
        prompt_names: cleaned text put into the prompt (after overrides).
        token_counts: word pieces of ``prompt_name + ". "`` (the official budget unit).
        caption_prompts: ``(prefix, suffix)`` per class for ODinW caption prompts, or None.
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    prompt_names: tuple[str, ...]
    token_counts: tuple[int, ...]
    caption_prompts: tuple[tuple[str, str], ...] | None = None
    _positions: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_positions", {cid: i for i, cid in enumerate(self.category_ids)})

    @classmethod
    def build(
        cls,
        category_ids: Sequence[int],
        names: Sequence[str],
        tokenizer: object,
        overrides: Mapping[str, str] | None = None,
        caption_prompts: Sequence[Mapping[str, str]] | None = None,
        background_negative: bool = False,
    ) -> ClassVocabulary:
        """Clean the names, apply ``{category name: prompt words}`` overrides and count tokens.

        Args:
            category_ids, names: the dataset's categories in id order.
            tokenizer: a tokenizer with ``tokenize(text) -> list[str]``.
            overrides: replace a category's prompt words (``glip.evaluation.prompts`` renames).
            caption_prompts: one ``{"prefix", "name", "suffix"}`` mapping per category (ODinW);
                ``name`` replaces the category's prompt words.
            background_negative: append the official ``__background__`` class (label 0).

        Raises:
            DataError: a name is empty once cleaned, overrides name unknown categories, caption
                prompts do not match the categories, or label 0 is taken and background is asked for.
        """
        ids, labels = [int(i) for i in category_ids], [str(n) for n in names]
        if len(ids) != len(labels):
            raise DataError(f"got {len(ids)} category ids for {len(labels)} names")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(labels))
        if unknown:
            raise DataError(f"prompt overrides name categories that do not exist: {unknown} (known: {labels[:10]})")
        words = [str(overrides.get(n, n)) for n in labels]
        affixes = None
        if caption_prompts is not None:
            if len(caption_prompts) != len(labels):
                raise DataError(f"caption_prompts has {len(caption_prompts)} entries for {len(labels)} categories")
            affixes = tuple((str(c.get("prefix", "")), str(c.get("suffix", ""))) for c in caption_prompts)
            words = [str(c["name"]) for c in caption_prompts]
        if background_negative:
            if BACKGROUND_LABEL in ids:
                raise DataError("background_negative needs label 0 free, but a category has id 0")
            ids.append(BACKGROUND_LABEL)
            labels.append("__background__")
            words.append("__background__")
            affixes = None if affixes is None else (*affixes, ("", ""))
        cleaned = [clean_name(w) for w in words]
        for label, text in zip(labels, cleaned, strict=True):
            if not text.strip():
                raise DataError(f"category {label!r} has prompt words {text!r}, empty once cleaned: rename it")
        counts = tuple(len(tokenizer.tokenize(text + ". ")) for text in cleaned)  # type: ignore[attr-defined]
        return cls(tuple(ids), tuple(labels), tuple(cleaned), counts, affixes)

    def __len__(self) -> int:
        return len(self.category_ids)

    def index_of(self, category_id: int) -> int:
        """Position of a category id in the vocabulary."""
        try:
            return self._positions[category_id]
        except KeyError as err:
            raise DataError(f"category id {category_id} is not in the vocabulary {self.category_ids[:10]}") from err

    @property
    def has_background(self) -> bool:
        """Whether the official ``__background__`` pseudo-class was appended (negative pool only)."""
        return bool(self.names) and self.names[-1] == "__background__" and self.category_ids[-1] == BACKGROUND_LABEL


@dataclass
class OdGrounding:
    """Result of converting one image's detection labels.

    Attributes:
        prompt: the caption; one entity per class in it, ``label_ids`` = category ids.
        keep: indices of the input boxes that survive (positive-overflow screening).
        box_entities: per kept box, the index of its class's entity.
        entity_labels: per entity, its category id.
        positive_length: tokens used by the positives (official ``positive_caption_length``).
    """

    prompt: Prompt
    keep: list[int]
    box_entities: list[list[int]]
    entity_labels: list[int]
    positive_length: int


def check_for_positive_overflow(
    box_labels: Sequence[int], vocab: ClassVocabulary, max_seq_length: int, rng: random.Random
) -> tuple[list[int], int]:
    """Keep the image's classes that fit the token budget, in a random order.

    Returns:
        The kept category ids (shuffled order) and the token length counted, which includes the
        class that overflowed, if any (official quirk).
    """
    positives = sorted(set(int(b) for b in box_labels))
    rng.shuffle(positives)
    kept, length = [], 0
    for label in positives:
        length += vocab.token_counts[vocab.index_of(label)]
        if length > max_seq_length:
            break
        kept.append(label)
    return kept, length


def sample_num_negatives(control_probabilities: Sequence[float], full_negative: int, rng: random.Random) -> int:
    """How many classes to draw as negatives (``generate_control_options_given_probabilities``)."""
    one_negative, one_positive, full = control_probabilities[:3]
    u = rng.random()
    if u < one_negative:
        return 1
    if u < one_negative + one_positive:
        return 0
    if u < one_negative + one_positive + full:
        return full_negative
    return rng.randrange(max(1, full_negative)) + 1


def _sampled_labels(
    positives: list[int], vocab: ClassVocabulary, options: OdPromptOptions, positive_length: int, rng: random.Random
) -> list[int]:
    pool = list(vocab.category_ids)  # official: every key of ind_to_class (with __background__ for TSV data)
    if options.max_num_labels <= 0:
        full_negative = options.random_sample_negative
    else:
        full_negative = max(min(options.max_num_labels - len(positives), options.random_sample_negative), 0)
    full_negative = min(full_negative, len(pool))
    num = min(sample_num_negatives(options.control_probabilities, full_negative, rng), len(pool))
    positive_set = set(positives)
    negatives = [label for label in rng.sample(pool, num) if label not in positive_set]
    rng.shuffle(negatives)
    budget = options.max_seq_length - positive_length
    screened = []
    for label in negatives:
        budget -= vocab.token_counts[vocab.index_of(label)]
        if budget <= 0:
            break
        screened.append(label)
    labels = screened + positives
    rng.shuffle(labels)
    return labels


def build_class_prompt(
    labels: Sequence[int], vocab: ClassVocabulary, separator: str = ". ", prefix: str = ""
) -> Prompt:
    """Join the classes' prompt words in the given order; one entity (span on the words) per class."""
    pieces, spans, length = [prefix], [], len(prefix)
    for index, label in enumerate(labels):
        pos = vocab.index_of(label)
        before, after = vocab.caption_prompts[pos] if vocab.caption_prompts is not None else ("", "")
        start = length + len(before)
        end = start + len(vocab.prompt_names[pos])
        pieces.extend((before, vocab.prompt_names[pos], after))
        spans.append(((start, end),))
        length = end + len(after)
        if index != len(labels) - 1:
            pieces.append(separator)
            length += len(separator)
    names = [vocab.names[vocab.index_of(label)] for label in labels]
    return Prompt(text="".join(pieces), spans=tuple(spans), labels=tuple(names), label_ids=tuple(labels))


def convert_od_to_grounding(
    box_labels: Sequence[int], vocab: ClassVocabulary, options: OdPromptOptions, rng: random.Random
) -> OdGrounding:
    """Build the training prompt of one image from its boxes' category ids.

    Args:
        box_labels: ``(M,)`` category id of each box (already clipped / filtered boxes).
        vocab: the dataset's classes.
        options: official conversion options.
        rng: the only source of randomness.

    Returns:
        The prompt and, per kept box, its entity. Boxes whose class overflowed are dropped.
    """
    if options.mode == "all_classes":
        labels = list(vocab.category_ids[:-1] if vocab.has_background else vocab.category_ids)
        if options.shuffle:
            if vocab.caption_prompts is not None:
                raise ConfigError("caption prompts need a fixed class order: set shuffle=False (official assert)")
            rng.shuffle(labels)
        kept_set = set(labels)
        positive_length = sum(vocab.token_counts[vocab.index_of(c)] for c in set(box_labels))
    else:
        kept, positive_length = check_for_positive_overflow(box_labels, vocab, options.max_seq_length, rng)
        kept_set = set(kept)
        labels = _sampled_labels(kept, vocab, options, positive_length, rng)
    prompt = build_class_prompt(labels, vocab, options.separator, options.prefix)
    entity_of = {label: i for i, label in enumerate(labels)}
    keep = [i for i, label in enumerate(box_labels) if int(label) in kept_set and int(label) in entity_of]
    return OdGrounding(
        prompt=prompt,
        keep=keep,
        box_entities=[[entity_of[int(box_labels[i])]] for i in keep],
        entity_labels=list(labels),
        positive_length=positive_length,
    )

"""MDETR-format phrase-grounding annotations (Flickr30k Entities, GoldG "mixed"), validated.

The files (``final_flickr_separateGT_{train,val,test}.json``, ``final_flickr_mergedGT_*.json``,
``final_mixed_train*.json``) are COCO-like: every ``images`` record is one *(image, caption)*
pair and every ``annotations`` record one box of it:

* image entry: ``id``, ``file_name``, ``caption``; optionally ``tokens_positive_eval`` (per phrase
  a list of ``[start, end)`` character spans into the caption; Flickr lists exactly the phrases
  whose entity has at least one box, in sentence order), ``original_img_id``, ``sentence_id``,
  and — our extension — ``phrase_types`` (per phrase a type name or a list of them);
* annotation: ``image_id``, ``bbox`` (``xywh``), and ``tokens_positive`` (the spans of *every*
  phrase of the caption that refers to the box) and/or ``phrase_ids``.

A phrase's ground-truth boxes are the annotations of its entry whose ``tokens_positive`` share a
span with the phrase. This reproduces the official evaluator's association (Flickr entity id:
all boxes of the entity the phrase names), because MDETR writes into ``tokens_positive`` the spans
of all phrases of the box's entity. An annotation without ``tokens_positive`` is tied through
``phrase_ids``: its rank among the distinct ``phrase_ids`` of the entry is the phrase index (the
convention mmdetection's Flickr30k loader uses). Entries without ``tokens_positive_eval`` (GoldG)
get one phrase per distinct ``tokens_positive`` of their annotations, ordered by position.

Boxes are converted with ``x2 = x + w`` (no ``- 1``): MDETR stored ``w = xmax - xmin`` of the
Flickr XML, so this recovers the XML boxes the official evaluator compares against.

Unusable files raise :class:`~glip.errors.DataError` naming the file and the record (missing
keys, duplicate ids, spans outside the caption, malformed boxes, annotations of unknown entries).
Records that can be skipped safely are counted in :attr:`GroundingDataset.issues` and logged once:
boxes with zero or negative width/height (the official data loader drops them too) and boxes with
an empty ``tokens_positive`` (they ground no phrase).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glip.data.mdetr import EntryId, parse_mdetr, read_spans
from glip.errors import DataError
from glip.text import Prompt, Span
from glip.validation import Fields, read_json, read_text, show

logger = logging.getLogger(__name__)

SKIPPED_EMPTY_BOX = "box with zero or negative width or height"
SKIPPED_NO_PHRASE = "box with an empty 'tokens_positive' (it grounds no phrase)"


@dataclass(frozen=True, eq=False)
class GroundingPhrase:
    """One phrase of a caption and its ground truth.

    Attributes:
        spans: half-open character ranges ``[start, end)`` of the phrase in the caption.
        text: the caption slices joined by a space.
        boxes_xyxy: ``(G, 4)`` float64 ground-truth boxes in original pixels (``x2 = x + w``);
            ``G`` may be 0 (the phrase is then skipped by the evaluation).
        phrase_type: coarse categories (Flickr: ``people``, ``clothing``...), possibly empty.
    """

    spans: tuple[Span, ...]
    text: str
    boxes_xyxy: Tensor
    phrase_type: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class GroundingEntry:
    """One image-caption pair.

    Attributes:
        id: the ``images[].id`` of the file.
        file_name: image file, relative to the images folder.
        caption: the text fed to the model as is.
        phrases: the phrases to ground, in file order (their index is the label id).
        original_img_id: Flickr image id (``original_img_id``), if given.
        sentence_id: index of the caption among the image's sentences, if given.
    """

    id: EntryId
    file_name: str
    caption: str
    phrases: tuple[GroundingPhrase, ...]
    original_img_id: EntryId | None = None
    sentence_id: int | None = None

    def prompt(self) -> Prompt:
        """The caption with one entity per phrase (label id = phrase index, label = phrase text)."""
        return Prompt(
            self.caption,
            tuple(p.spans for p in self.phrases),
            tuple(p.text for p in self.phrases),
            tuple(range(len(self.phrases))),
        )


@dataclass
class GroundingDataset:
    """A validated grounding annotation file.

    Attributes:
        entries: the image-caption pairs, in file order.
        annotation_file: where they were read from (None when built in memory).
        issues: counts of skipped records by reason.
    """

    entries: list[GroundingEntry]
    annotation_file: Path | None = None
    issues: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[GroundingEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> GroundingEntry:
        return self.entries[index]

    @property
    def num_phrases(self) -> int:
        """Number of phrases over all entries (with or without boxes)."""
        return sum(len(e.phrases) for e in self.entries)


def load_grounding_annotations(
    annotation_file: str | Path, sentences_dir: str | Path | None = None
) -> GroundingDataset:
    """Read and validate an MDETR-format grounding file.

    Args:
        annotation_file: the JSON file.
        sentences_dir: optional Flickr30k Entities ``Sentences`` folder; phrase types are then read
            from ``<sentences_dir>/<original_img_id>.txt`` (see :func:`attach_flickr_phrase_types`).

    Raises:
        DataError: if the file is missing, not JSON, or has a malformed or inconsistent record.
    """
    path = Path(annotation_file)
    data = read_json(path, "grounding annotation file", DataError)
    dataset = parse_grounding_annotations(data, source=str(path))
    dataset.annotation_file = path
    for reason, n in dataset.issues.items():
        logger.warning("%s: skipped %d annotation(s): %s", path, n, reason)
    if sentences_dir is not None:
        dataset = attach_flickr_phrase_types(dataset, sentences_dir)
    return dataset


def parse_grounding_annotations(data: Any, source: str = "<memory>") -> GroundingDataset:
    """Validate already-parsed JSON content (``source`` names it in error messages).

    Raises:
        DataError: as :func:`load_grounding_annotations`.
    """
    mdetr = parse_mdetr(data, source, require_annotations=True)
    issues: Counter = Counter()
    boxes: dict[EntryId, list[_Box]] = defaultdict(list)
    for box in mdetr.boxes:
        if box.spans == ():
            issues[SKIPPED_NO_PHRASE] += 1
            continue
        x, y, w, h = box.bbox_xywh
        valid = w > 0 and h > 0
        if not valid:
            issues[SKIPPED_EMPTY_BOX] += 1
        # Skipped boxes are kept (flagged) so that they still count in the phrase_ids ranks.
        boxes[box.image_id].append(_Box((x, y, x + w, y + h), box.spans, box.phrase_ids, valid))
    entries = [
        _build_entry(eid, im, boxes.get(eid, []), f"images[{mdetr.positions[eid]}]", mdetr.fields)
        for eid, im in mdetr.images.items()
    ]
    return GroundingDataset(entries, None, issues)


@dataclass(frozen=True)
class _Box:
    xyxy: tuple[float, float, float, float]
    spans: tuple[Span, ...] | None
    phrase_ids: tuple[int, ...]
    valid: bool


def _build_entry(
    entry_id: EntryId, im: dict[str, Any], boxes: list[_Box], where: str, fields: Fields
) -> GroundingEntry:
    caption: str = im["caption"]
    if "tokens_positive_eval" in im:
        value = fields.array(im["tokens_positive_eval"], f"{where}.tokens_positive_eval")
        phrase_spans = [
            read_spans(p, caption, f"{where}.tokens_positive_eval[{k}]", fields) for k, p in enumerate(value)
        ]
        exact = False
    else:
        # GoldG / mixed: every distinct tokens_positive of the entry's boxes is a phrase.
        if any(b.spans is None for b in boxes):
            fields.fail(where, "no 'tokens_positive_eval', so every annotation of it needs 'tokens_positive'")
        phrase_spans = sorted({b.spans for b in boxes if b.spans is not None})
        exact = True
    ranks = {pid: r for r, pid in enumerate(sorted({p for b in boxes for p in b.phrase_ids}))}
    if len(ranks) > len(phrase_spans):
        fields.fail(
            where,
            f"its annotations carry {len(ranks)} distinct phrase_ids but the entry has only "
            f"{len(phrase_spans)} phrases",
        )
    types = _phrase_types(im.get("phrase_types"), len(phrase_spans), f"{where}.phrase_types", fields)
    phrases = []
    for k, spans in enumerate(phrase_spans):
        mine = [b.xyxy for b in boxes if b.valid and _grounds(b, k, spans, exact, ranks)]
        text = " ".join(caption[s:e] for s, e in spans)
        tensor = torch.tensor(mine, dtype=torch.float64).reshape(-1, 4)
        phrases.append(GroundingPhrase(spans, text, tensor, types[k]))
    sentence_id = im.get("sentence_id")
    if sentence_id is not None:
        fields.integer(sentence_id, f"{where}.sentence_id")
    return GroundingEntry(entry_id, im["file_name"], caption, tuple(phrases), im.get("original_img_id"), sentence_id)


def _grounds(box: _Box, index: int, spans: tuple[Span, ...], exact: bool, ranks: dict[int, int]) -> bool:
    """Whether ``box`` is a ground-truth box of phrase ``index`` (with ``spans``)."""
    if box.spans is None:
        return any(ranks[p] == index for p in box.phrase_ids)
    return box.spans == spans if exact else not set(box.spans).isdisjoint(spans)


def _phrase_types(value: Any, num_phrases: int, where: str, fields: Fields) -> list[tuple[str, ...]]:
    if value is None:
        return [()] * num_phrases
    if not isinstance(value, list) or len(value) != num_phrases:
        fields.fail(where, f"expected a list with one entry per phrase ({num_phrases}), got {show(value)}")
    out = []
    for k, t in enumerate(value):
        names = [t] if isinstance(t, str) else t
        if not isinstance(names, list) or not all(isinstance(n, str) and n and n != "all" for n in names):
            fields.fail(f"{where}[{k}]", f"expected a type name other than 'all' or a list of them, got {show(t)}")
        out.append(tuple(names))
    return out


# ---------------------------------------------------------------------------------- Flickr types
@dataclass(frozen=True)
class FlickrPhrase:
    """A phrase of a Flickr30k Entities sentence file.

    Attributes:
        span: ``[start, end)`` in the sentence (words joined by single spaces).
        entity_id: the ``EN#`` id, which names the phrase's boxes in the XML annotations.
        phrase_type: coarse categories, e.g. ``("people",)``.
    """

    span: Span
    entity_id: str
    phrase_type: tuple[str, ...]


def parse_flickr_sentence(line: str) -> tuple[str, list[FlickrPhrase]]:
    """Parse one line of a Flickr30k Entities ``Sentences/<id>.txt`` file.

    ``"[/EN#18/people A man] in [/EN#19/clothing a hat]"`` → ``("A man in a hat", [...])``: a
    phrase opens with a ``[/EN#<id>/<type>[/<type>...]`` token and closes on the first following
    word ending in ``]``.
    """
    words: list[str] = []
    phrases: list[FlickrPhrase] = []
    opened: tuple[int, str, tuple[str, ...]] | None = None  # first word, entity id, types
    for token in line.split():
        if opened is None and token.startswith("["):
            parts = token.split("/")
            entity = parts[1][3:] if len(parts) > 1 else ""
            opened = (len(words), entity, tuple(parts[2:]))
            continue
        closes = opened is not None and token.endswith("]")
        words.append(token[:-1] if closes else token)
        if closes and opened is not None:
            first, entity, types = opened
            start = sum(len(w) for w in words[:first]) + first
            end = start + len(" ".join(words[first:]))
            phrases.append(FlickrPhrase((start, end), entity, types))
            opened = None
    return " ".join(words), phrases


def attach_flickr_phrase_types(dataset: GroundingDataset, sentences_dir: str | Path) -> GroundingDataset:
    """Copy of ``dataset`` whose phrases carry the types of the Flickr30k Entities sentence files.

    Every entry needs ``original_img_id`` and ``sentence_id``; sentence ``sentence_id`` of
    ``<sentences_dir>/<original_img_id>.txt`` (non-empty lines) must equal the caption, and every
    phrase span must be one of its phrases.

    Raises:
        DataError: if a file is missing or does not match the caption.
    """
    folder = Path(sentences_dir)
    cache: dict[str, list[str]] = {}
    entries = []
    for entry in dataset.entries:
        where = f"{dataset.annotation_file or '<memory>'}: entry {entry.id!r}"
        if entry.original_img_id is None or entry.sentence_id is None:
            raise DataError(f"{where} lacks 'original_img_id' or 'sentence_id': cannot find its Flickr sentence")
        key = str(entry.original_img_id)
        if key not in cache:
            file = folder / f"{key}.txt"
            if not file.is_file():
                raise DataError(f"{where}: Flickr sentence file {file} does not exist")
            cache[key] = [ln for ln in read_text(file, "Flickr sentence file").split("\n") if ln]
        lines = cache[key]
        if not 0 <= entry.sentence_id < len(lines):
            raise DataError(f"{where}: sentence_id {entry.sentence_id} but {folder / key}.txt has {len(lines)}")
        sentence, flickr_phrases = parse_flickr_sentence(lines[entry.sentence_id])
        if sentence != entry.caption:
            raise DataError(f"{where}: caption {entry.caption!r} differs from the sentence file's {sentence!r}")
        types = {p.span: p.phrase_type for p in flickr_phrases}
        phrases = []
        for phrase in entry.phrases:
            if any(s not in types for s in phrase.spans):
                raise DataError(f"{where}: phrase {phrase.text!r} is not a phrase of the Flickr sentence file")
            merged = tuple(dict.fromkeys(t for s in phrase.spans for t in types[s]))
            phrases.append(replace(phrase, phrase_type=merged))
        entries.append(replace(entry, phrases=tuple(phrases)))
    return GroundingDataset(entries, dataset.annotation_file, Counter(dataset.issues))

"""Collation: token maps, label-propagation labels, padding, truncation and the MLM hook."""

import pytest
import torch

from glip.data.collate import GroundingCollator
from glip.errors import ConfigError, DataError
from glip.images import pad_images
from glip.structures import GroundingSample
from glip.text import Prompt, caption_prompt, detection_prompt, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _detection(h=50, w=70):
    prompt = detection_prompt(["cat", "traffic light", "dog"], label_ids=[3, 10, 4])
    # "cat. traffic light. dog" → [CLS] cat . traffic light . dog [SEP]
    return GroundingSample(
        image=torch.ones(3, h, w),
        prompt=prompt,
        boxes_xyxy=torch.tensor([[0.0, 0, 9, 9], [5, 5, 20, 30], [1, 1, 2, 2]]),
        box_entities=[[1], [2], [1]],
        entity_labels=[3, 10, 4],
        kind="detection",
        image_id=1,
    )


def _grounding():
    prompt = caption_prompt("a man and his dog", ["a man", "his dog"])
    # [CLS] a man and his dog [SEP]
    return GroundingSample(
        image=torch.ones(3, 40, 33),
        prompt=prompt,
        boxes_xyxy=torch.tensor([[0.0, 0, 9, 9]]),
        box_entities=[[0, 1]],
        entity_labels=[-1, -1],
        kind="grounding",
        image_id="g",
    )


def test_shapes_positive_map_and_token_labels(tokenizer):
    batch = GroundingCollator(tokenizer)([_detection(), _grounding()])
    assert batch.pixel_values.shape == (2, 3, 64, 96) and batch.pixel_mask.shape == (2, 64, 96)
    assert batch.pixel_mask[0].sum() == 50 * 70 and batch.pixel_mask[1, :40, :33].all()
    assert float(batch.pixel_values[1, :, 40:, :].abs().sum()) == 0.0
    assert batch.input_ids.shape == (2, 256) and batch.attention_mask[0].sum() == 8 and batch.mlm_labels is None
    det, grd = batch.targets
    assert det.positive_map.shape == (3, 256) and det.positive_map.dtype == torch.float32
    assert [row.nonzero().flatten().tolist() for row in det.positive_map] == [[3, 4], [6], [3, 4]]
    assert det.token_labels[:8].tolist() == [-1, 3, -1, 10, 10, -1, 4, -1]
    assert (det.token_labels[8:] == -1).all()
    assert det.box_labels.tolist() == [10, 4, 10]
    assert det.image_size == (50, 70) and det.kind == "detection"
    assert grd.positive_map[0].nonzero().flatten().tolist() == [1, 2, 4, 5]  # union of both phrases
    assert (grd.token_labels == -1).all() and grd.box_labels.tolist() == [-1]


def test_pad_to_longest_and_size_divisibility(tokenizer):
    batch = GroundingCollator(tokenizer, pad_to_max=False, size_divisibility=1)([_detection(), _grounding()])
    assert batch.input_ids.shape == (2, 8) and batch.pixel_values.shape == (2, 3, 50, 70)
    assert batch.targets[1].positive_map.shape == (1, 8)
    images, mask = pad_images([torch.ones(3, 33, 65)], 32)
    assert images.shape == (1, 3, 64, 96) and int(mask.sum()) == 33 * 65


def test_long_captions_are_truncated_as_official(tokenizer):
    text = " ".join(["word"] * 300) + " cat"
    prompt = Prompt(text, (((0, 4),), ((len(text) - 3, len(text)),)), ("word", "cat"))
    sample = GroundingSample(torch.ones(3, 8, 8), prompt, torch.zeros(2, 4), [[0], [1]], [-1, -1], "grounding")
    batch = GroundingCollator(tokenizer)([sample])
    assert batch.attention_mask.sum() == 256 and batch.input_ids[0, -1] == tokenizer.sep_token_id
    assert batch.targets[0].positive_map[0].nonzero().flatten().tolist() == [1]
    assert batch.targets[0].positive_map[1].sum() == 0  # past the cut


def test_bad_samples_raise(tokenizer):
    sample = _detection()
    sample.image = object()
    with pytest.raises(DataError, match="apply a transform"):
        GroundingCollator(tokenizer)([sample])
    sample = _detection()
    sample.box_entities = [[1]]
    with pytest.raises(DataError, match="box_entities"):
        GroundingCollator(tokenizer)([sample])
    with pytest.raises(DataError, match="empty"):
        GroundingCollator(tokenizer)([])


def test_mlm_hook_receives_greenlight_and_returns_labels(tokenizer):
    calls = {}

    def fake_mask(
        input_ids, attention_mask, vocab_size, mask_token_id, special_ids, probability, generator, greenlight
    ):
        calls.update(vocab=vocab_size, mask=mask_token_id, special=special_ids, p=probability, green=greenlight)
        calls["draw"] = float(torch.rand((), generator=generator))
        labels = torch.where(greenlight == 1, input_ids, torch.full_like(input_ids, -100))
        return torch.where(greenlight == 1, torch.full_like(input_ids, mask_token_id), input_ids), labels

    collator = GroundingCollator(
        tokenizer, mlm=True, mlm_probability=0.2, mlm_exempt_special_tokens=True, mask_fn=fake_mask
    )
    batch = collator([_detection(), _grounding()])
    green = calls["green"]
    assert calls["vocab"] == 30522 and calls["mask"] == tokenizer.mask_token_id and calls["p"] == 0.2
    assert tokenizer.cls_token_id in calls["special"]
    assert green[0, :8].tolist() == [0, 0, 0, 1, 1, 0, 1, 0]  # positives only: traffic light, dog
    assert green[1, :7].tolist() == [0, 1, 1, 1, 1, 1, 0]  # whole caption, not [CLS]/[SEP]
    assert batch.mlm_labels is not None and batch.mlm_labels[0, 3] == tokenizer.convert_tokens_to_ids("traffic")
    assert (batch.input_ids[0, [3, 4, 6]] == tokenizer.mask_token_id).all()
    first = calls["draw"]
    collator([_detection(), _grounding()])
    assert calls["draw"] == first  # the masking generator depends only on the batch content

    no_od = GroundingCollator(tokenizer, mlm=True, no_mask_for_od=True, mask_fn=fake_mask)
    no_od([_detection(), _grounding()])
    assert (calls["green"][0] == -1).all() and calls["green"][1, 1] == 1
    GroundingCollator(tokenizer, mlm=True, mlm_only_positives=False, mask_fn=fake_mask)
    with pytest.raises(ConfigError, match="mlm_probability"):
        GroundingCollator(tokenizer, mlm_probability=1.5)


def test_default_mlm_masks_only_within_the_prompt_and_scores_greenlit_tokens(tokenizer):
    collator = GroundingCollator(tokenizer, mlm=True, mlm_probability=0.5, seed=1)
    plain = GroundingCollator(tokenizer)([_detection(), _grounding()])
    batch = collator([_detection(), _grounding()])
    assert batch.mlm_labels is not None and batch.mlm_labels.shape == batch.input_ids.shape
    changed = batch.input_ids != plain.input_ids
    assert changed.any() and not changed[batch.attention_mask == 0].any()  # padding never masked
    scored = batch.mlm_labels != -100
    assert set(scored[0].nonzero().flatten().tolist()) <= {3, 4, 6}  # detection: positive class names only
    assert set(scored[1].nonzero().flatten().tolist()) <= {1, 2, 3, 4, 5}
    assert torch.equal(batch.mlm_labels[scored], plain.input_ids[scored])
    again = collator([_detection(), _grounding()])
    assert torch.equal(again.input_ids, batch.input_ids)  # same batch, same masks

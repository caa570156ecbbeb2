"""GLIPv2 understanding heads end to end on a tiny model: the VQA head's attention pooling, VQA and
caption training samples, one training step with every head, and the vqa / caption commands."""

import json

import pytest
import torch

from glip.cli import main
from glip.config import GLIPConfig
from glip.errors import ConfigError
from glip.modeling.glip import GLIPModel
from glip.modeling.vl_heads import VQAHead, caption_loss, vqa_loss
from glip.predictor import GLIPPredictor
from glip.vl_tasks import answer_question, answer_questions, caption_image, vqa_prompt

DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


def test_attention_pooling_ignores_padding():
    torch.manual_seed(0)
    head = VQAHead(8, 3).eval()
    text = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = text.clone()
    padded[0, 3:] = 1000.0  # whatever sits in the padding must not matter
    a, b = head.pool(text, mask), head.pool(padded, mask)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[0], head.pool(text[:1, :3], mask[:1, :3])[0], rtol=1e-5, atol=1e-6)
    assert head(text, mask).shape == (2, 3)


def test_losses_by_hand():
    logits = torch.tensor([[0.0, 0.0]])
    assert vqa_loss(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(2 * 0.6931472, abs=1e-6)
    # caption: position t predicts token t+1; padding is no target
    lm = torch.zeros(1, 4, 5)
    lm[0, 0, 3] = 10.0  # predicts token 3 after the first token
    ids = torch.tensor([[101, 3, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    expected = (torch.log(torch.tensor(4 + torch.exp(torch.tensor(10.0)))) - 10 + torch.log(torch.tensor(5.0))) / 2
    assert caption_loss(lm, ids, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_vqa_prompt_puts_the_answer_on_the_mask_token():
    prompt = vqa_prompt("How many dogs are there?")
    assert prompt.text.endswith(" [MASK]") and prompt.labels[-1] == "answer"
    start, end = prompt.spans[-1][0]
    assert prompt.text[start:end] == "[MASK]"
    assert "dogs" in " ".join(prompt.labels[:-1])


@pytest.fixture(scope="module")
def vl_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = GLIPConfig.tiny().replace(
        **{"heads.vqa": {"answers": ["yes", "no", "2"]}, "heads.caption": {"max_length": 5}, "text.pad_to_max": False}
    )
    model = GLIPModel(config).eval()
    with torch.no_grad():
        model.head.bias0.fill_(3.0)
    out = tmp_path_factory.mktemp("vl_model")
    model.save_pretrained(out)
    return out


def test_answers_and_captions_with_a_tiny_model(vl_model_dir, sample_image):
    predictor = GLIPPredictor.from_pretrained(vl_model_dir, device="cpu")
    assert predictor.model.heads == ["grounding", "vqa", "caption"]
    answer = answer_question(predictor, sample_image, "How many raccoons are there?", threshold=0.5)
    assert answer.answer in ("yes", "no", "2") and 0 <= answer.score <= 1 and len(answer.top) == 3
    assert answer.detections is not None and len(answer.detections) > 0
    both = answer_questions(predictor, sample_image, ["How many raccoons are there?", "Is there a dog?"], 0.5)
    assert both[0].answer == answer.answer and abs(both[0].score - answer.score) < 1e-5
    caption = caption_image(predictor, sample_image, beam_size=2, max_length=5)
    assert caption.text and len(caption.text.split()) <= 5


def test_model_without_the_heads_is_a_clear_error(tiny_model_dir, sample_image, tmp_path, capsys):
    predictor = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu")
    with pytest.raises(ConfigError, match="no vqa head"):
        answer_question(predictor, sample_image, "What?")
    with pytest.raises(ConfigError, match="no caption head"):
        caption_image(predictor, sample_image)
    code = main(["caption", str(sample_image), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path), "-q"])
    assert code == 1 and "no caption head" in capsys.readouterr().err


def test_vqa_and_caption_commands(vl_model_dir, sample_image, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["vqa", str(sample_image), "--question", "How many raccoons are there?", "--model",
                 str(vl_model_dir), "--out-dir", str(out), "-q"]) == 0  # fmt: skip
    record = json.loads((out / "raccoon-72.json").read_text())
    assert record["answer"] in ("yes", "no", "2") and (out / "raccoon-72.jpg").is_file()
    assert "->" in capsys.readouterr().out
    assert main(["caption", str(sample_image), "--model", str(vl_model_dir), "--out-dir", str(tmp_path / "c"),
                 "--beam-size", "2", "-q"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "c" / "raccoon-72.json").read_text())["caption"]


@pytest.mark.skipif(not (DATA / "coco_mt").is_dir(), reason="shared/data/coco_mt is not beside the checkout")
def test_vqa_and_caption_samples_from_coco_mt():
    from glip.data.coco import CocoDataset
    from glip.data.vl_datasets import CaptionGroundingDataset, VQAGroundingDataset
    from glip.data.vqa import load_vqa
    from glip.evaluation.vqa import AnswerVocabulary

    ann = DATA / "coco_mt" / "annotations"
    instances = CocoDataset.load(ann / "instances_train.json", check_files=False)
    records = load_vqa(ann / "vqa_train.json", check_files=False).records
    vocabulary = list(AnswerVocabulary.build(records).answers)
    vqa = VQAGroundingDataset(ann / "vqa_train.json", instances, vocabulary, holdout_every=5)
    assert len(vqa) == sum(1 for r in records if r.image_id % 5)  # the held-out images are left out
    index = next(i for i, r in enumerate(vqa.records) if r.template == "count" and r.answer_ann_ids)
    record, sample = vqa.records[index], vqa[index]
    assert sample.prompt.text == record.question.strip() + " [MASK]" and sample.prompt.labels[-1] == "answer"
    answer_entity = len(sample.prompt.labels) - 1
    usable = [a for a in record.answer_ann_ids if not instances_by_id(instances)[a].get("iscrowd", 0)]
    assert sum(answer_entity in e for e in sample.box_entities) == len(usable)  # every counted instance
    assert sample.vqa_scores[vocabulary.index(record.answers[0])] == 1.0 and sample.vqa_scores.sum() == 1.0
    assert sample.ground and not sample.causal
    captions = CaptionGroundingDataset(ann / "grounded_captions_train.json", instances, holdout_every=5)
    linked = next(captions[i] for i in range(len(captions)) if captions.items[i][1])
    unlinked = next(captions[i] for i in range(len(captions)) if not captions.items[i][1])
    assert linked.causal and linked.ground and linked.boxes_xyxy.shape[0] > 0
    assert unlinked.causal and not unlinked.ground and unlinked.boxes_xyxy.shape[0] == 0


def instances_by_id(instances):
    return {a["id"]: a for a in instances.data["annotations"]}


def test_one_training_step_trains_every_head(tmp_path):
    """A tiny model with mask, VQA and caption heads: one step on a mixed batch gives every loss."""
    from glip.data.collate import GroundingCollator
    from glip.modeling.criterion import GLIPCriterion
    from glip.structures import GroundingSample
    from glip.text import Prompt, load_tokenizer

    torch.manual_seed(0)
    config = GLIPConfig.tiny().replace(
        **{"heads.vqa": {"answers": ["yes", "no"]}, "heads.caption": {}, "text.pad_to_max": False}
    )
    model = GLIPModel(config)
    image = torch.randn(3, 64, 96)
    vqa = GroundingSample(
        image=image, prompt=vqa_prompt("Is there a cat?"), boxes_xyxy=torch.tensor([[5.0, 5.0, 40.0, 40.0]]),
        box_entities=[[0, 1]], entity_labels=[-1, -1], kind="vqa", vqa_scores=torch.tensor([1.0, 0.0]),
    )  # fmt: skip
    text = "a cat on a mat"
    cap = GroundingSample(
        image=image, prompt=Prompt(text=text, spans=(((0, 5),),), labels=("a cat",)),
        boxes_xyxy=torch.tensor([[5.0, 5.0, 40.0, 40.0]]), box_entities=[[0]], entity_labels=[-1], kind="caption",
        causal=True,
    )  # fmt: skip
    batch = GroundingCollator(load_tokenizer(), max_query_len=256, pad_to_max=False)([vqa, cap])
    assert batch.causal.tolist() == [False, True]
    out = model(batch.pixel_values, batch.input_ids, batch.attention_mask, batch.pixel_mask, causal=batch.causal)
    assert out.vqa_logits.shape == (2, 2) and out.lm_logits.shape[0] == 1
    losses = GLIPCriterion.from_config(config, model.box_coder)(
        out, batch.targets, batch.attention_mask, input_ids=batch.input_ids
    )
    assert {"loss_vqa", "loss_caption", "loss_token"} <= set(losses)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    total.backward()
    assert model.vqa_head.classifier.weight.grad.abs().sum() > 0
    assert model.caption_head.dense.weight.grad.abs().sum() > 0

"""CUDA: the same model gives the same numbers on the GPU as on the CPU (skipped without a GPU)."""

import pytest
import torch

from glip.config import GLIPConfig
from glip.modeling.glip import GLIPModel
from glip.predictor import GLIPPredictor
from glip.processing import GLIPProcessor, load_image

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("preset", ["tiny", "glip_t"])
def test_cuda_forward_matches_cpu(preset, sample_image):
    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.from_preset(preset)).eval()
    processor = GLIPProcessor.from_config(model.config)
    inputs = processor(load_image(sample_image), ["raccoon", "dog", "person"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        cpu = model(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)
        gpu_in = inputs.to("cuda")
        gpu = model.to("cuda")(gpu_in.pixel_values, gpu_in.input_ids, gpu_in.attention_mask)
    for name in ("logits", "box_regression", "centerness"):
        a, b = getattr(cpu, name), getattr(gpu, name).cpu()
        assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), (name, (a - b).abs().max().item())


def test_predictor_runs_on_cuda(tiny_model_dir, sample_image):
    pred = GLIPPredictor.from_pretrained(tiny_model_dir, device="cuda")
    det = pred.predict(sample_image, classes=["raccoon", "dog"])[0]
    assert det.boxes_xyxy.device.type == "cuda"
    cpu = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu").predict(sample_image, classes=["raccoon", "dog"])[
        0
    ]
    assert len(det) == len(cpu)
    assert torch.allclose(det.scores.cpu(), cpu.scores, atol=1e-3)

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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("stride", [1, 2])
def test_triton_dcn_matches_torchvision_on_cuda(dtype, stride):
    from torchvision.ops import deform_conv2d

    from glip.modeling.dcn_triton import deform_conv3x3

    torch.manual_seed(0)
    b, c, h, w = 2, 256, 50, 84
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(b, c, h, w, device="cuda")
    off = torch.randn(b, 18, ho, wo, device="cuda") * 4
    mask = torch.rand(b, 9, ho, wo, device="cuda")
    weight = torch.randn(256, c, 3, 3, device="cuda") / 48
    bias = torch.randn(256, device="cuda")
    q = lambda t: t.to(dtype).float()  # noqa: E731 - the reference sees the same rounded inputs
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = deform_conv2d(q(x), q(off), q(weight), q(bias), stride=stride, padding=1, mask=q(mask))
    out = deform_conv3x3(x.to(dtype), off.to(dtype), mask.to(dtype), weight, bias, stride)
    err = (out.float() - ref).abs().max().item()
    # one rounding of the output plus the bf16/fp16 rounding of the sampled values before the GEMM
    eps = 2**-7 if dtype == torch.bfloat16 else 2**-10
    assert err < 4 * eps * ref.abs().max().item(), err


def test_graphed_function_replays_like_eager():
    from glip.cuda_graphs import GraphedFunction

    lin = torch.nn.Linear(16, 8).cuda()
    fn = GraphedFunction(lambda x, y: (lin(x) * y.sum(),), amp_dtype=torch.bfloat16)
    for _ in range(3):
        x, y = torch.randn(4, 16, device="cuda"), torch.randn(3, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            want = lin(x) * y.sum()
        (got,) = fn(x, y)
        assert torch.equal(got, want)
    fn(torch.randn(5, 16, device="cuda"), torch.randn(3, device="cuda"))  # a new shape: a second graph
    assert len(fn) == 2


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_predictor_cuda_graphs_match_eager(tiny_model_dir, sample_image, dtype):
    kwargs = {"device": "cuda", "dtype": dtype}
    eager = GLIPPredictor.from_pretrained(tiny_model_dir, **kwargs)
    graphed = GLIPPredictor.from_pretrained(tiny_model_dir, cuda_graphs=True, **kwargs)
    for _ in range(2):  # the second call replays the captured graphs
        a = eager.predict(sample_image, classes=["raccoon", "dog"])[0]
        b = graphed.predict(sample_image, classes=["raccoon", "dog"])[0]
        assert len(a) == len(b)
        assert torch.allclose(a.scores, b.scores, atol=1e-5) and torch.allclose(a.boxes_xyxy, b.boxes_xyxy, atol=1e-3)


def test_long_vocabulary_with_overlapped_postprocessing_matches_cpu(tiny_model_dir, sample_image):
    """Several chunk groups: each group is post-processed on a side stream while the next one runs."""
    from collections import Counter

    names = [f"thing{i} with a long descriptive name" for i in range(100)]
    kwargs = {"max_detections": 10_000, "chunk_batch_size": 2}

    def run(pred: GLIPPredictor) -> list:
        return pred.predict([sample_image] * 2, classes=names, batch_size=2)

    def same(a: list, b: list, atol: float) -> None:
        for x, y in zip(a, b, strict=True):  # near-tied scores of a random model may swap places
            assert len(x) == len(y) > 0 and Counter(x.labels.tolist()) == Counter(y.labels.tolist())
            assert torch.allclose(x.scores.cpu().sort().values, y.scores.cpu().sort().values, atol=atol)

    cpu = GLIPPredictor.from_pretrained(tiny_model_dir, device="cpu", **kwargs)
    assert len(cpu.prompts_for(classes=names)) > 2  # more than one group of two chunks
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    same(run(cpu), run(GLIPPredictor.from_pretrained(tiny_model_dir, device="cuda", **kwargs)), 1e-4)
    eager = run(GLIPPredictor.from_pretrained(tiny_model_dir, device="cuda", dtype="fp16", **kwargs))
    graphed = GLIPPredictor.from_pretrained(tiny_model_dir, device="cuda", dtype="fp16", cuda_graphs=True, **kwargs)
    for _ in range(2):  # the second call replays the graphs: outputs are copied before the next group overwrites them
        same(eager, run(graphed), 1e-5)

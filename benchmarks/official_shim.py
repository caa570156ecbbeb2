"""Make the official GLIP code (microsoft/GLIP) import and run on a CPU with current PyTorch.

Used only by ``benchmarks/parity_official.py``; the official code is loaded from a checkout
outside this repository and none of its files is edited. Everything is done at import time:

* ``maskrcnn_benchmark._C`` (the CUDA extension) is replaced by a module of stand-ins:
  ``ml_nms`` follows the CUDA kernel (IoU with +1 widths, same label only, kept indices returned
  in original order), ``nms`` is torchvision's, and ``modulated_deform_conv_forward`` emulates the
  CUDA im2col kernel *by its index arithmetic on the raw buffers*: for every output location it
  reads ``offset[b]`` and ``mask[b]`` through the sample's storage pointer, laid out as
  ``(2*kh*kw, h_out, w_out)``, exactly as ``modulated_deformable_im2col_gpu_kernel`` does. When
  the offset map is larger than the output (the coarser-level DyConv branch) this reads the flat
  prefix, as the kernel does. It shares no code with glip's own DCN path (torchvision).
* ``ModulatedDeformConvFunction`` refuses CPU tensors, so the module-level function
  ``maskrcnn_benchmark.layers.deform_conv.modulated_deform_conv`` is replaced by one that calls the
  stand-in kernel (inference only).
* ``boxlist_ml_nms`` takes its CPU branch on CPU tensors (per-label torchvision NMS without +1);
  the official numbers come from the GPU branch, so the name used by the ATSS post-processor is
  pointed at a copy that always takes the GPU branch (``_C.ml_nms``).
* Moved or removed APIs: ``torch._six``, ``numpy.float/int/bool``, three helpers that moved from
  ``transformers.modeling_utils`` to ``transformers.pytorch_utils``, and
  ``get_extended_attention_mask`` (gone from transformers 5 models).
* Hub access: ``BertConfig/BertModel.from_pretrained("bert-base-uncased")`` build BERT-base from
  ``BertConfig()`` (random weights, as this harness sets every weight itself) and
  ``AutoTokenizer.from_pretrained("bert-base-uncased")`` loads the identical local vocabulary.
* Modules imported by unrelated code paths but not installed (``cv2``, ``prettytable``,
  ``matplotlib``, ``ftfy``, ...) become placeholders that fail loudly if ever used.

Every patch is listed in :data:`PATCHES` so that the driver can print them.
"""

from __future__ import annotations

import collections.abc
import importlib.abc
import importlib.machinery
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision

PATCHES: list[str] = []
_STUB_TOPS = {
    "cv2",
    "prettytable",
    "matplotlib",
    "ftfy",
    "nltk",
    "inflect",
    "shapely",
    "pymongo",
    "tensorboardX",
    "einops",
    "pycocotools",
    "scipy",
}


# ----------------------------------------------------------------------------- stand-in kernels
def emulated_modulated_dcn(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor,
    mask: torch.Tensor,
    stride: int,
    pad: int,
    dilation: int,
) -> torch.Tensor:
    """The official ``modulated_deform_conv`` CUDA forward, restated on flat per-sample buffers."""
    b, c, h, w = input.shape
    o, _, kh, kw = weight.shape
    ho = (h + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    wo = (w + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    k, n = kh * kw, ho * wo
    # data_offset + b * 2*kh*kw*ho*wo, then ((2*tap + {0,1}) * ho + y) * wo + x
    off = offset.as_strided((b, 2 * k * n), (offset.stride(0), 1)).reshape(b, k, 2, ho, wo)
    msk = mask.as_strided((b, k * n), (mask.stride(0), 1)).reshape(b, k, ho, wo)
    taps = torch.arange(k, device=input.device)
    ki, kj = (taps // kw).view(1, k, 1, 1), (taps % kw).view(1, k, 1, 1)
    ys = (torch.arange(ho, device=input.device) * stride - pad).view(1, 1, ho, 1)
    xs = (torch.arange(wo, device=input.device) * stride - pad).view(1, 1, 1, wo)
    h_im = ys + ki * dilation + off[:, :, 0]
    w_im = xs + kj * dilation + off[:, :, 1]
    inside = (h_im > -1) & (w_im > -1) & (h_im < h) & (w_im < w)
    h_low, w_low = torch.floor(h_im), torch.floor(w_im)
    lh, lw = h_im - h_low, w_im - w_low
    hh, hw = 1 - lh, 1 - lw
    h_low, w_low = h_low.long(), w_low.long()
    h_high, w_high = h_low + 1, w_low + 1
    flat = input.reshape(b, c, h * w)

    def corner(yy: torch.Tensor, xx: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(b, 1, k * n).expand(b, c, k * n)
        return torch.gather(flat, 2, idx).reshape(b, c, k, ho, wo) * ok.unsqueeze(1)

    val = (
        (hh * hw).unsqueeze(1) * corner(h_low, w_low, (h_low >= 0) & (w_low >= 0))
        + (hh * lw).unsqueeze(1) * corner(h_low, w_high, (h_low >= 0) & (w_high <= w - 1))
        + (lh * hw).unsqueeze(1) * corner(h_high, w_low, (h_high <= h - 1) & (w_low >= 0))
        + (lh * lw).unsqueeze(1) * corner(h_high, w_high, (h_high <= h - 1) & (w_high <= w - 1))
    )
    columns = (val * inside.unsqueeze(1) * msk.unsqueeze(1)).reshape(b, c * k, n)
    out = torch.matmul(weight.reshape(o, c * k), columns).reshape(b, o, ho, wo)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out


def _c_modulated_deform_conv_forward(
    input, weight, bias, ones, offset, mask, output, columns, kh, kw, sh, sw, ph, pw, dh, dw, group, dg, with_bias
):
    if group != 1 or dg != 1 or sh != sw or ph != pw or dh != dw:
        raise NotImplementedError("the stand-in covers GLIP's DCN (groups 1, square stride/pad/dilation)")
    out = emulated_modulated_dcn(input, weight, bias if with_bias else None, offset, mask, sh, ph, dh)
    output.resize_(out.shape).copy_(out)


def _c_ml_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """``ml_nms_cuda``: greedy NMS by score, +1 IoU, same label; returns kept indices sorted ascending."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = scores.sort(descending=True).indices
    bx, lb = boxes[order], labels[order]
    x1, y1, x2, y2 = bx.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    iw = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None]) + 1).clamp(min=0)
    ih = (torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None]) + 1).clamp(min=0)
    inter = iw * ih
    iou = inter / (area[:, None] + area[None] - inter)
    iou = torch.where(lb[:, None] == lb[None], iou, torch.zeros_like(iou))
    removed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    over = (iou > threshold).cpu()
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[torch.tensor(keep, device=order.device)].sort().values


def _not_available(name: str):
    def fail(*args, **kwargs):
        raise NotImplementedError(f"_C.{name} has no stand-in in the parity harness")

    return fail


def _make_c_module() -> types.ModuleType:
    mod = types.ModuleType("maskrcnn_benchmark._C")
    for name in (
        "soft_nms", "roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward",
        "sigmoid_focalloss_forward", "sigmoid_focalloss_backward", "deform_conv_forward",
        "deform_conv_backward_input", "deform_conv_backward_parameters", "modulated_deform_conv_backward",
        "deform_psroi_pooling_forward", "deform_psroi_pooling_backward",
    ):  # fmt: skip
        setattr(mod, name, _not_available(name))
    mod.nms = torchvision.ops.nms
    mod.ml_nms = _c_ml_nms
    mod.modulated_deform_conv_forward = _c_modulated_deform_conv_forward
    return mod


# ----------------------------------------------------------------------------- import shims
class _Placeholder(types.ModuleType):
    """A module that imports fine and fails loudly when anything from it is used."""

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        full = f"{self.__name__}.{item}"

        class Unavailable:
            def __init__(self, *args, **kwargs) -> None:
                raise RuntimeError(f"{full} is not installed in the parity harness")

        return Unavailable


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in _STUB_TOPS and fullname not in sys.modules:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def _extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    """transformers 4.x ``ModuleUtilsMixin.get_extended_attention_mask`` for a 2-D mask."""
    dtype = dtype or next(self.parameters()).dtype
    ext = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - ext) * torch.finfo(dtype).min


def install(reference: Path, tokenizer_dir: Path) -> None:
    """Apply every shim and put the official checkout first on ``sys.path``."""
    if "maskrcnn_benchmark" in sys.modules:
        return
    global _STUB_TOPS
    _STUB_TOPS = {t for t in _STUB_TOPS if importlib.util.find_spec(t) is None}
    sys.path.insert(0, str(reference))
    for name, value in (("float", float), ("int", int), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, value)
            PATCHES.append(f"numpy.{name} = {value.__name__} (removed in NumPy 1.24)")
    six = types.ModuleType("torch._six")
    six.PY37, six.PY3, six.string_classes, six.int_classes = True, True, (str, bytes), int
    six.container_abcs, six.inf = collections.abc, math.inf
    sys.modules["torch._six"] = six
    torch._six = six  # type: ignore[attr-defined]
    PATCHES.append("torch._six: PY37, string_classes, int_classes, container_abcs, inf (removed in PyTorch 2)")
    sys.modules["maskrcnn_benchmark._C"] = _make_c_module()
    PATCHES.append("maskrcnn_benchmark._C: nms=torchvision, ml_nms=CUDA-kernel semantics, DCNv2=kernel emulation")
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(mu, name):
            if hasattr(pu, name):
                setattr(mu, name, getattr(pu, name))
            elif name == "apply_chunking_to_forward":
                setattr(mu, name, lambda fn, chunk, dim, *inputs: fn(*inputs))
            else:
                setattr(mu, name, _not_available(name))
            PATCHES.append(f"transformers.modeling_utils.{name} (moved in transformers 4.39+)")
    stubbed = sorted(_STUB_TOPS)
    sys.meta_path.append(_PlaceholderFinder())
    if stubbed:
        PATCHES.append(f"placeholder modules (imported by unused code paths): {', '.join(stubbed)}")
    _patch_hub(tokenizer_dir)
    _patch_official_modules()


def _patch_hub(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    real_config = BertConfig.from_pretrained.__func__
    real_model = BertModel.from_pretrained.__func__
    real_tokenizer = AutoTokenizer.from_pretrained

    # Only the hub name is redirected; local paths (glip's own loaders) go to the real functions.
    def config_from_pretrained(cls, name, *args, **kwargs):
        return BertConfig() if name == "bert-base-uncased" else real_config(cls, name, *args, **kwargs)

    def model_from_pretrained(cls, name, *args, add_pooling_layer=True, config=None, **kwargs):
        if name != "bert-base-uncased":
            return real_model(cls, name, *args, add_pooling_layer=add_pooling_layer, config=config, **kwargs)
        return BertModel(config or BertConfig(), add_pooling_layer=add_pooling_layer)

    def tokenizer_from_pretrained(name, *args, **kwargs):
        if name != "bert-base-uncased":
            return real_tokenizer(name, *args, **kwargs)
        return real_tokenizer(str(tokenizer_dir))

    from transformers import PreTrainedTokenizerBase

    if not hasattr(PreTrainedTokenizerBase, "batch_encode_plus"):
        PreTrainedTokenizerBase.batch_encode_plus = lambda self, texts, **kw: self(texts, **kw)  # type: ignore[attr-defined]
        PATCHES.append("tokenizer.batch_encode_plus = tokenizer.__call__ (removed in transformers 5)")
    BertConfig.from_pretrained = classmethod(config_from_pretrained)
    BertModel.from_pretrained = classmethod(model_from_pretrained)
    AutoTokenizer.from_pretrained = staticmethod(tokenizer_from_pretrained)
    PATCHES.append("bert-base-uncased from the hub -> BertModel(BertConfig()) + the local identical vocabulary")


def _patch_official_modules() -> None:
    import maskrcnn_benchmark.layers.deform_conv as dc
    import maskrcnn_benchmark.modeling.rpn.inference as inf
    import maskrcnn_benchmark.modeling.rpn.vldyhead as vl
    import maskrcnn_benchmark.structures.boxlist_ops as bo

    def modulated_deform_conv(
        input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
    ):
        output = input.new_empty(0)
        sys.modules["maskrcnn_benchmark._C"].modulated_deform_conv_forward(
            input,
            weight,
            bias,
            input.new_empty(0),
            offset,
            mask,
            output,
            input.new_empty(0),
            weight.shape[2],
            weight.shape[3],
            stride,
            stride,
            padding,
            padding,
            dilation,
            dilation,
            groups,
            deformable_groups,
            bias is not None,
        )
        return output

    dc.modulated_deform_conv = modulated_deform_conv
    PATCHES.append(
        "layers.deform_conv.modulated_deform_conv: calls the _C stand-in (the autograd Function is CUDA-only)"
    )

    def boxlist_ml_nms_gpu_branch(boxlist, nms_thresh, max_proposals=-1, score_field="scores", label_field="labels"):
        if nms_thresh <= 0:
            return boxlist
        mode = boxlist.mode
        boxlist = boxlist.convert("xyxy")
        keep = sys.modules["maskrcnn_benchmark._C"].ml_nms(
            boxlist.bbox, boxlist.get_field(score_field), boxlist.get_field(label_field).float(), nms_thresh
        )
        if max_proposals > 0:
            keep = keep[:max_proposals]
        return boxlist[keep].convert(mode)

    bo.boxlist_ml_nms = boxlist_ml_nms_gpu_branch
    inf.boxlist_ml_nms = boxlist_ml_nms_gpu_branch
    PATCHES.append("boxlist_ml_nms: always the GPU branch (_C.ml_nms), as the official evaluation ran")
    vl.BertEncoderLayer.get_extended_attention_mask = _extended_attention_mask
    PATCHES.append("BertEncoderLayer.get_extended_attention_mask (removed from transformers 5 models)")


CONFIGS = {
    "glip_t": "configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
    "glip_t_a": "configs/pretrain/glip_A_Swin_T_O365.yaml",
    "glip_l": "configs/pretrain/glip_Swin_L.yaml",
}


def build_official(reference: Path, preset: str):
    """The official ``GeneralizedVLRCNN`` for a preset, on CPU in eval mode, and its config."""
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    config = cfg.clone()
    config.merge_from_file(str(reference / CONFIGS[preset]))
    config.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""])
    config.freeze()
    model = build_detection_model(config)
    model.eval()  # GeneralizedVLRCNN.train() returns None, so no chaining
    return model, config

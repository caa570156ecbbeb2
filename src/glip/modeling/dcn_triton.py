"""A fused 3x3 modulated deformable convolution (DCNv2) in Triton for the reduced-precision fast path.

torchvision's ``deform_conv2d`` materialises an fp32 ``(9 * C_in, H * W)`` column buffer per image
(im2col), then multiplies it with the weights; under autocast it runs everything in fp32. This
kernel is one implicit GEMM instead: every program computes a ``BLOCK_M`` (output pixels) x
``BLOCK_N`` (output channels) tile, gathering the bilinear samples of each of the 9 taps straight
from a channels-last copy of the input into registers and feeding them to tensor-core ``tl.dot``
in bf16/fp16 with fp32 accumulation. Sampling coordinates and interpolation weights are computed in
fp32 (torchvision's half kernel computes them in half precision), with torchvision's border rule:
a sample outside ``(-1, H) x (-1, W)`` is zero and so is every corner outside the image.

Inference only (no backward). Exposed as the custom op ``glip::deform_conv3x3`` so that
``torch.compile`` and CUDA graphs treat it as one opaque kernel. Tested against
``torchvision.ops.deform_conv2d`` in ``tests/modeling/test_dcn_triton.py`` (the Triton interpreter
runs it on the CPU there).
"""

# ruff: noqa: N803  (Triton convention: upper-case shape and constexpr arguments)
from __future__ import annotations

import os

import torch
from torch import Tensor

try:  # Triton ships with CUDA builds of torch; CPU installs usually lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(x: Tensor) -> bool:
    """Whether the fused kernel can run on ``x`` (CUDA with Triton, or the Triton interpreter)."""
    return triton is not None and (x.is_cuda or INTERPRET)


if triton is not None:

    @triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=2),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=2),
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 32}, num_warps=8, num_stages=2),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=2),
        ]
        if not INTERPRET
        else [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16})],
        key=["C", "N", "Ho", "Wo"],
    )
    @triton.jit
    def _deform_conv3x3_kernel(
        x_ptr,  # (B, H, W, C) channels-last input
        off_ptr,  # (B, 18, Ho, Wo): (dy, dx) per tap k = 3 * i + j
        mask_ptr,  # (B, 9, Ho, Wo)
        w_ptr,  # (9 * C, N): row k * C + c
        bias_ptr,  # (N,)
        out_ptr,  # (B * Ho * Wo, N)
        H,
        W,
        C,
        Ho,
        Wo,
        N,
        M,
        stride,
        HAS_BIAS: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok = rm < M
        n_ok = rn < N
        hw = Ho * Wo
        b = rm // hw
        pix = rm % hw
        oy = pix // Wo
        ox = pix % Wo
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(9):
            dy = tl.load(off_ptr + (b * 18 + 2 * k) * hw + pix, mask=m_ok, other=0.0).to(tl.float32)
            dx = tl.load(off_ptr + (b * 18 + 2 * k + 1) * hw + pix, mask=m_ok, other=0.0).to(tl.float32)
            mk = tl.load(mask_ptr + (b * 9 + k) * hw + pix, mask=m_ok, other=0.0).to(tl.float32)
            y = (oy * stride - 1 + k // 3).to(tl.float32) + dy
            x = (ox * stride - 1 + k % 3).to(tl.float32) + dx
            inside = m_ok & (y > -1.0) & (y < H) & (x > -1.0) & (x < W)
            y0f = tl.floor(y)
            x0f = tl.floor(x)
            ly = y - y0f
            lx = x - x0f
            y0 = y0f.to(tl.int32)
            x0 = x0f.to(tl.int32)
            y1 = y0 + 1
            x1 = x0 + 1
            scale = tl.where(inside, mk, 0.0)
            ok00 = inside & (y0 >= 0) & (x0 >= 0)
            ok01 = inside & (y0 >= 0) & (x1 <= W - 1)
            ok10 = inside & (y1 <= H - 1) & (x0 >= 0)
            ok11 = inside & (y1 <= H - 1) & (x1 <= W - 1)
            w00 = (1.0 - ly) * (1.0 - lx) * scale
            w01 = (1.0 - ly) * lx * scale
            w10 = ly * (1.0 - lx) * scale
            w11 = ly * lx * scale
            row = b * H
            p00 = ((row + y0) * W + x0) * C
            p01 = ((row + y0) * W + x1) * C
            p10 = ((row + y1) * W + x0) * C
            p11 = ((row + y1) * W + x1) * C
            for c0 in range(0, C, BLOCK_K):
                rc = c0 + tl.arange(0, BLOCK_K)
                c_ok = rc < C
                cm = c_ok[None, :]
                a = w00[:, None] * tl.load(x_ptr + p00[:, None] + rc[None, :], mask=ok00[:, None] & cm, other=0.0)
                a += w01[:, None] * tl.load(x_ptr + p01[:, None] + rc[None, :], mask=ok01[:, None] & cm, other=0.0)
                a += w10[:, None] * tl.load(x_ptr + p10[:, None] + rc[None, :], mask=ok10[:, None] & cm, other=0.0)
                a += w11[:, None] * tl.load(x_ptr + p11[:, None] + rc[None, :], mask=ok11[:, None] & cm, other=0.0)
                wt = tl.load(
                    w_ptr + (k * C + rc)[:, None] * N + rn[None, :], mask=c_ok[:, None] & n_ok[None, :], other=0.0
                )
                acc = tl.dot(a.to(wt.dtype), wt, acc)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        out = out_ptr + rm[:, None] * N + rn[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@torch.library.custom_op("glip::deform_conv3x3", mutates_args=())
def deform_conv3x3(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor, stride: int) -> Tensor:
    """3x3 DCNv2 with padding 1, computed in ``x.dtype`` (bf16/fp16) with fp32 accumulation.

    Args:
        x: ``(B, C_in, H, W)``.
        offset: ``(B, 18, H_out, W_out)``, ``(dy, dx)`` per tap in row-major tap order (torchvision's layout).
        mask: ``(B, 9, H_out, W_out)`` modulation scalars.
        weight: ``(C_out, C_in, 3, 3)``; ``bias``: ``(C_out,)``.
        stride: 1 or 2 (``H_out = (H - 1) // stride + 1``).

    Returns:
        ``(B, C_out, H_out, W_out)`` in ``x.dtype`` (channels-last memory).
    """
    b, c, h, w = x.shape
    ho, wo = offset.shape[-2:]
    n = weight.shape[0]
    dtype = x.dtype
    x_cl = x.permute(0, 2, 3, 1).contiguous()
    w_kn = weight.to(dtype).permute(2, 3, 1, 0).reshape(9 * c, n).contiguous()
    out = torch.empty(b * ho * wo, n, device=x.device, dtype=dtype)
    m = b * ho * wo

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"])

    _deform_conv3x3_kernel[grid](
        x_cl, offset.contiguous(), mask.contiguous(), w_kn, bias.to(dtype).contiguous(), out,
        h, w, c, ho, wo, n, m, stride, HAS_BIAS=True,
    )  # fmt: skip
    return out.view(b, ho, wo, n).permute(0, 3, 1, 2)


@deform_conv3x3.register_fake
def _(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor, stride: int) -> Tensor:
    b, ho, wo, n = x.shape[0], offset.shape[-2], offset.shape[-1], weight.shape[0]
    return x.new_empty(b, ho, wo, n).permute(0, 3, 1, 2)

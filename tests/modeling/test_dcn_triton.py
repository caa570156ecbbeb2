"""The fused Triton DCNv2 against torchvision's ``deform_conv2d``.

On the CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, which must be set before
Triton compiles anything, hence the subprocess); ``tests/test_gpu.py`` checks it on CUDA in bf16.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import torch
    from torchvision.ops import deform_conv2d
    from glip.modeling.dcn_triton import available, deform_conv3x3
    from glip.modeling.dyhead import ModulatedDeformConv3x3

    torch.manual_seed(0)
    assert available(torch.zeros(1))
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-2)):
        for stride, (h, w) in ((1, (7, 10)), (2, (9, 11))):
            b, c, n = 2, 20, 24
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            x = torch.randn(b, c, h, w)
            off = torch.randn(b, 18, ho, wo) * 3
            off[0, :, 0, 0] = torch.tensor([-1.5, -0.9] * 9)  # samples beyond the top-left border
            off[1, :, -1, -1] = torch.tensor([1.2, 0.6] * 9)  # and beyond the bottom-right one
            mask = torch.rand(b, 9, ho, wo)
            weight, bias = torch.randn(n, c, 3, 3) * 0.1, torch.randn(n)
            ref = deform_conv2d(x, off, weight, bias, stride=stride, padding=1, mask=mask)
            q = lambda t: t.to(dtype).float()  # the same rounded inputs for the reference
            ref_q = deform_conv2d(q(x), q(off), q(weight), q(bias), stride=stride, padding=1, mask=q(mask))
            out = deform_conv3x3(x.to(dtype), off.to(dtype), mask.to(dtype), weight, bias, stride)
            assert out.shape == ref.shape and out.dtype == dtype
            err = (out.float() - ref_q).abs().max().item()
            assert err < tol * max(1.0, ref.abs().max().item()), (dtype, stride, err)
            if dtype == torch.float32:
                continue  # the module keeps fp32 on torchvision's kernel
            # through the module: the fast path takes the kernel for reduced-precision input
            conv = ModulatedDeformConv3x3(c, n, stride)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)
            conv.fast = True
            with torch.no_grad():
                mod = conv(x.to(dtype), off.to(dtype), mask.to(dtype))
            assert (mod.float() - out.float()).abs().max().item() == 0.0
    print("ok")
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="CUDA present: tests/test_gpu.py checks the compiled kernel (older Triton interpreters fail on numpy>=2.5)",
)
def test_triton_dcn_matches_torchvision_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")

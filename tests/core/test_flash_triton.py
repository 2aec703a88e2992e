"""The Triton FlashAttention kernels against torch's ``F.scaled_dot_product_attention`` (forward and autograd).

Without a GPU the kernels run in Triton's interpreter: ``TRITON_INTERPRET=1`` must be set before triton is
first imported (``@triton.jit`` reads it when it decorates functions, triton's own library included), and
many torch modules import triton. This module sets it on import; if triton was already imported by then
(another test module was collected first, e.g. one importing ``torch.nn.attention.bias``), the kernel tests
are run again in a fresh Python process by :func:`test_kernels_in_a_fresh_process`, so they always run.
Shapes stay small (N <= 128, d <= 64) so the interpreter is quick.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")
import torch.nn.functional as F  # noqa: E402
import triton.language as tl  # noqa: E402

from lmkit.efficient.flash import structural_mask  # noqa: E402
from lmkit.efficient.flash_triton import triton_flash_attention  # noqa: E402
from lmkit.transformer.masks import padding_mask  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = dict(rtol=2e-5, atol=2e-5) if DEVICE == "cpu" else dict(rtol=2e-3, atol=2e-3)  # GPU tl.dot may use TF32
READY = DEVICE == "cuda" or type(tl.zeros).__name__ == "InterpretedFunction"
kernels = pytest.mark.skipif(not READY, reason="triton was imported before TRITON_INTERPRET=1 was set in this "
                             "process; test_kernels_in_a_fresh_process runs these tests instead")


@pytest.mark.skipif(READY, reason="the kernel tests run in this process")
def test_kernels_in_a_fresh_process():
    assert os.environ.get("LMKIT_TRITON_CHILD") != "1", "TRITON_INTERPRET=1 did not take effect in a fresh process"
    env = {**os.environ, "TRITON_INTERPRET": "1", "LMKIT_TRITON_CHILD": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            capture_output=True, text=True, env=env)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\b1 skipped", summary) and "failed" not in summary, summary  # only this test is skipped


def qkv(b, h, n_q, n_k, d, d_v=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, dim, generator=g).to(DEVICE).requires_grad_()
            for n, dim in ((n_q, d), (n_k, d), (n_k, d_v or d))]


def check(q, k, v, ref_mask, grads=True, **kwargs):
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=ref_mask, scale=kwargs.get("scale"))
    out = triton_flash_attention(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref, **TOL)
    if grads:
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
            torch.testing.assert_close(a, b, **TOL)
    return out


@kernels
@pytest.mark.parametrize(
    "n_q,n_k,d,causal",
    [(64, 64, 64, False), (100, 100, 32, True), (37, 53, 16, False), (7, 90, 64, True), (90, 30, 24, True)],
)
def test_forward_and_backward_match_sdpa(n_q, n_k, d, causal):
    q, k, v = qkv(1, 2, n_q, n_k, d)
    check(q, k, v, structural_mask(n_q, n_k, causal, device=DEVICE), is_causal=causal, block_m=16, block_n=32)


@kernels
def test_forward_only_large_blocks_and_different_value_dim():
    q, k, v = qkv(2, 1, 128, 128, 64, d_v=40)
    with torch.no_grad():
        check(q, k, v, None, grads=False, block_m=64, block_n=64)


@kernels
def test_padding_mask_and_fully_masked_rows():
    q, k, v = qkv(3, 2, 40, 40, 16)
    pad = padding_mask([40, 25, 0], 40).to(DEVICE)[:, None, None, :]  # sequence 2 is all padding
    out = check(q, k, v, pad & structural_mask(40, 40, True, device=DEVICE), attn_mask=pad, is_causal=True,
                block_m=16, block_n=16)
    assert not out.isnan().any()
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def in_nan_buffer(t):
    """``t`` as a view into a larger NaN-filled buffer: a kernel reading past its last row or column gets NaN."""
    buf = torch.full((2 * t.shape[0] + 32, 2 * t.shape[1] + 32), float("nan"), dtype=t.dtype, device=t.device)
    view = buf[: t.shape[0], : t.shape[1]]
    view.copy_(t)
    return view


@kernels
def test_float_bias_window_and_scale():
    q, k, v = qkv(1, 2, 50, 50, 16)
    pos = torch.arange(50, device=DEVICE)
    # ALiBi-like bias inside a NaN buffer: 50 is not a multiple of 16, so the last query block is partial and any
    # load of bias rows >= 50 (the bug once in the dK/dV kernel) turns dK/dV into NaN, every run.
    bias = in_nan_buffer(-0.1 * (pos[:, None] - pos[None, :]).abs().float())
    window = structural_mask(50, 50, True, window=12, device=DEVICE)
    ref_mask = bias.masked_fill(~window, float("-inf"))
    check(q, k, v, ref_mask, attn_mask=bias, is_causal=True, window=12, scale=0.2, block_m=16, block_n=16)


@kernels
def test_grouped_query_attention():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 33, 16, generator=g).to(DEVICE).requires_grad_()
    k, v = (torch.randn(1, 2, 33, 16, generator=g).to(DEVICE).requires_grad_() for _ in range(2))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = triton_flash_attention(q, k, v, is_causal=True, enable_gqa=True, block_m=16, block_n=16)
    torch.testing.assert_close(out, ref, **TOL)
    grad = torch.randn(out.shape, generator=g).to(DEVICE)
    for a, b in zip(torch.autograd.grad(out, (k, v), grad), torch.autograd.grad(ref, (k, v), grad), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@kernels
def test_boolean_mask_in_a_nan_buffer_is_read_only_inside():
    q, k, v = qkv(1, 1, 37, 45, 16)
    keep = torch.rand(37, 45, generator=torch.Generator().manual_seed(3)) > 0.3
    buf = torch.ones(100, 100, dtype=torch.bool, device=DEVICE)
    view = buf[:37, :45]
    view.copy_(keep)  # outside the view every entry is True: reading it would unmask hidden keys
    check(q, k, v, keep.to(DEVICE), attn_mask=view, block_m=16, block_n=16)


@kernels
def test_nan_inputs_propagate_as_nan():
    q, k, v = qkv(1, 1, 20, 20, 16)
    with torch.no_grad():
        q2 = q.detach().clone()
        q2[0, 0, 3, 0] = float("nan")
        out = triton_flash_attention(q2, k, v, is_causal=True, block_m=16, block_n=16)
    expected = torch.zeros_like(out, dtype=torch.bool)
    expected[0, 0, 3] = True  # a NaN in query 3 poisons its own row only (softmax(q·K) V), never turned into zeros
    assert torch.equal(out.isnan(), expected)


@kernels
def test_bad_inputs():
    q, k, v = qkv(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        triton_flash_attention(q, k, v, block_m=24)
    with pytest.raises(TypeError, match="float64"):
        triton_flash_attention(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="is_causal must be a bool"):
        triton_flash_attention(q, k, v, None, torch.ones(16, 16, dtype=torch.bool))

"""FlashAttention (tiled PyTorch) against torch's own ``F.scaled_dot_product_attention`` and autograd.

The references are torch's SDPA (forward and its autograd backward), ``torch.autograd.gradcheck`` and
torch's bottom-right causal mask ``causal_lower_right``. Shapes are chosen so lengths are not multiples
of the block sizes, N_q != N_k (decoding with a cache), and some rows are fully masked.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right

from lmkit.efficient.flash import flash_attention, naive_attention, structural_mask, tile_schedule
from lmkit.transformer.masks import combine, padding_mask

F64 = dict(dtype=torch.float64)
# causal_lower_right warns about NaNs when N_q > N_k (those rows are fully masked); we check they are zeros instead.
pytestmark = pytest.mark.filterwarnings("ignore:Lower right causal bias")


def qkv(b, h, n_q, n_k, d, d_v=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n_q, d, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(b, h, n_k, d, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(b, h, n_k, d_v or d, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


def grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


def assert_same(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def assert_grads_same(out, ref, inputs):
    for a, b in zip(grads(out, inputs), grads(ref, inputs), strict=True):
        assert_same(a, b)


def sdpa_bool(q, k, v, mask):
    """torch's SDPA with a boolean mask (True = attend); fully masked rows come back as zeros."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def test_bottom_right_causal_is_torchs_causal_lower_right():
    for n_q, n_k in [(7, 7), (3, 11), (11, 3), (1, 9)]:
        assert torch.equal(structural_mask(n_q, n_k, is_causal=True), causal_lower_right(n_q, n_k)._materialize())


@pytest.mark.parametrize("n_q,n_k", [(1, 1), (17, 17), (64, 64), (65, 65), (100, 37), (5, 130), (33, 70)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(16, 16), (32, 8), (7, 13)])
def test_forward_and_backward_match_sdpa(n_q, n_k, causal, blocks):
    q, k, v = qkv(2, 3, n_q, n_k, 16, d_v=12)
    ref = sdpa_bool(q, k, v, causal_lower_right(n_q, n_k)._materialize() if causal else None)
    out = flash_attention(q, k, v, is_causal=causal, block_q=blocks[0], block_k=blocks[1])
    assert_same(out, ref)
    assert_grads_same(out, ref, (q, k, v))


@given(
    n_q=st.integers(1, 70),
    n_k=st.integers(1, 70),
    d=st.sampled_from([1, 3, 8, 16]),
    block_q=st.integers(1, 40),
    block_k=st.integers(1, 40),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_random_shapes_match_naive_and_sdpa(n_q, n_k, d, block_q, block_k, causal, seed):
    q, k, v = qkv(1, 2, n_q, n_k, d, seed=seed)
    mask = torch.rand(n_q, n_k, generator=torch.Generator().manual_seed(seed)) > 0.3
    ref = sdpa_bool(q, k, v, mask & structural_mask(n_q, n_k, causal))
    out = flash_attention(q, k, v, attn_mask=mask, is_causal=causal, block_q=block_q, block_k=block_k)
    assert_same(out, ref)
    assert_same(naive_attention(q, k, v, attn_mask=mask, is_causal=causal), ref)
    assert_grads_same(out, ref, (q, k, v))


def test_padding_mask_from_lmkit_masks():
    q, k, v = qkv(3, 2, 20, 20, 8)
    pad = padding_mask([20, 13, 1], 20)  # (B, N) right padding
    mask = combine(structural_mask(20, 20, is_causal=True), pad)  # (B, 1, N, N)
    key_only = pad[:, None, None, :]  # (B, 1, 1, N): broadcast, never expanded to N×N
    ref = sdpa_bool(q, k, v, mask)
    assert_same(flash_attention(q, k, v, attn_mask=key_only, is_causal=True, block_q=8, block_k=8), ref)
    assert_same(flash_attention(q, k, v, attn_mask=mask, block_q=6, block_k=9), ref)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = qkv(1, 1, 10, 10, 4)
    mask = torch.ones(10, 10, dtype=torch.bool)
    mask[[0, 4, 9]] = False
    out = flash_attention(q, k, v, attn_mask=mask, block_q=4, block_k=3)
    assert not out.isnan().any()
    assert torch.equal(out[0, 0, [0, 4, 9]], torch.zeros(3, 4, **F64))
    dq, dk, dv = grads(out, (q, k, v))
    assert not (dq.isnan().any() or dk.isnan().any() or dv.isnan().any())
    assert torch.equal(dq[0, 0, [0, 4, 9]], torch.zeros(3, 4, **F64))
    # a causal attention with more queries than keys: the first N_q - N_k rows see nothing
    q, k, v = qkv(1, 1, 12, 5, 4)
    out = flash_attention(q, k, v, is_causal=True, block_q=5, block_k=2)
    assert torch.equal(out[0, 0, :7], torch.zeros(7, 4, **F64))
    assert_same(out, sdpa_bool(q, k, v, causal_lower_right(12, 5)._materialize()))


def test_float_bias_like_alibi():
    q, k, v = qkv(1, 2, 19, 19, 8)
    pos = torch.arange(19, **F64)
    bias = -torch.tensor([0.5, 0.25], **F64)[:, None, None] * (pos[:, None] - pos[None, :]).abs()  # (H, N, N)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert_same(flash_attention(q, k, v, attn_mask=bias, block_q=8, block_k=5), ref)


def test_custom_scale_and_sliding_window():
    q, k, v = qkv(1, 1, 40, 40, 8)
    window_mask = structural_mask(40, 40, is_causal=True, window=6)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask, scale=0.3)
    out = flash_attention(q, k, v, is_causal=True, window=6, scale=0.3, block_q=8, block_k=8)
    assert_same(out, ref)
    assert_grads_same(out, ref, (q, k, v))


def test_bidirectional_window():
    q, k, v = qkv(1, 1, 37, 37, 8)
    pos = torch.arange(37)
    band = (pos[:, None] - pos[None, :]).abs() < 5  # |i - j| < w, built independently of lmkit
    out = flash_attention(q, k, v, window=5, block_q=8, block_k=4)
    ref = sdpa_bool(q, k, v, band)
    assert_same(out, ref)
    assert_grads_same(out, ref, (q, k, v))


def test_gradcheck():
    q, k, v = qkv(1, 2, 9, 11, 3)
    mask = torch.rand(9, 11, generator=torch.Generator().manual_seed(3)) > 0.2
    fn = lambda q, k, v: flash_attention(q, k, v, attn_mask=mask, is_causal=True, block_q=4, block_k=3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_float32_and_bfloat16_close_to_sdpa():
    q, k, v = qkv(2, 2, 77, 77, 32, dtype=torch.float32)
    torch.testing.assert_close(flash_attention(q, k, v, is_causal=True), F.scaled_dot_product_attention(
        q, k, v, is_causal=True), rtol=1e-5, atol=1e-5)
    qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(flash_attention(qb, kb, vb, is_causal=True).float(), ref, rtol=0.05, atol=0.03)


def test_grouped_query_attention_matches_sdpa_enable_gqa():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 6, 23, 8, generator=g, **F64).requires_grad_()
    k, v = (torch.randn(2, 2, 30, 8, generator=g, **F64).requires_grad_() for _ in range(2))  # 3 query heads per KV
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=structural_mask(23, 30, True), enable_gqa=True)
    out = flash_attention(q, k, v, is_causal=True, enable_gqa=True, block_q=8, block_k=8)
    assert_same(out, ref)
    assert_grads_same(out, ref, (q, k, v))
    with pytest.raises(ValueError, match="multiple"):
        flash_attention(q, k[:, :1].expand(2, 4, 30, 8), v, enable_gqa=True)


def test_causal_skips_about_half_the_tiles():
    n, b = 256, 32
    assert len(tile_schedule(n, n, b, b)) == (n // b) ** 2
    assert len(tile_schedule(n, n, b, b, is_causal=True)) == (n // b) * (n // b + 1) // 2


def test_block_sparse_mask_skips_tiles_and_stays_exact():
    q, k, v = qkv(1, 1, 64, 64, 8)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    for blk in range(4):  # block-diagonal layout: only 4 of 16 tiles have anything visible
        mask[blk * 16:(blk + 1) * 16, blk * 16:(blk + 1) * 16] = True
    assert_same(flash_attention(q, k, v, attn_mask=mask, block_q=16, block_k=16), sdpa_bool(q, k, v, mask))


def test_bad_inputs():
    q, k, v = qkv(1, 1, 4, 4, 2)
    with pytest.raises(ValueError, match="B, H, N, d"):
        flash_attention(q[0], k, v)
    with pytest.raises(ValueError, match="head dim"):
        flash_attention(q, k[..., :1], v)
    with pytest.raises(TypeError, match="boolean"):
        flash_attention(q, k, v, attn_mask=torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="broadcast"):
        flash_attention(q, k, v, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="window"):
        flash_attention(q, k, v, window=0)
    with pytest.raises(ValueError, match="block"):
        flash_attention(q, k, v, block_q=0)

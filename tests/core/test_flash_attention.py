"""FlashAttention (tiled PyTorch) against torch's own ``F.scaled_dot_product_attention`` and autograd.

The references are torch's SDPA (forward and its autograd backward), ``torch.autograd.gradcheck`` and
torch's bottom-right causal mask ``causal_lower_right``. Shapes are chosen so lengths are not multiples
of the block sizes, N_q != N_k (decoding with a cache), and some rows are fully masked.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right

from lmkit.efficient import flash
from lmkit.efficient.flash import flash_attention, flash_forward, naive_attention, structural_mask, tile_schedule
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
    out = flash_attention(q, k, v, attn_mask=mask, block_q=16, block_k=16)
    assert_same(out, sdpa_bool(q, k, v, mask))
    assert_grads_same(out, sdpa_bool(q, k, v, mask), (q, k, v))  # a skipped tile must not end its key block's loop


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


def band(n_q, n_k, causal, window=None):
    """The visible (query, key) pairs, written from the definition (bottom-right aligned), independently of lmkit."""
    pos = torch.arange(n_q)[:, None] + (n_k - n_q)
    j = torch.arange(n_k)[None, :]
    ok = (j <= pos) if causal else torch.ones(n_q, n_k, dtype=torch.bool)
    if window is not None:
        ok = ok & (j > pos - window) & ((j <= pos) if causal else (j < pos + window))
    return ok


ATTENTIONS = pytest.mark.parametrize("attn", [flash_attention, naive_attention])


def test_structural_mask_defaults_to_no_mask():
    assert structural_mask(3, 5).all() and structural_mask(3, 5).shape == (3, 5)


def test_tile_schedule_is_exactly_the_tiles_with_a_visible_pair():
    for n_q, n_k, (bq, bk), causal, window in itertools.product(
        (1, 5, 13), (1, 6, 13), ((1, 1), (2, 3), (4, 4), (5, 2)), (False, True), (None, 1, 2, 5)
    ):
        ok = band(n_q, n_k, causal, window)
        want = [(i0, min(i0 + bq, n_q), j0, min(j0 + bk, n_k)) for i0 in range(0, n_q, bq) for j0 in range(0, n_k, bk)]
        want = [t for t in want if ok[t[0]:t[1], t[2]:t[3]].any()]
        assert tile_schedule(n_q, n_k, bq, bk, causal, window) == want, (n_q, n_k, bq, bk, causal, window)


@pytest.mark.parametrize("n_q,n_k", [(9, 9), (5, 12), (12, 5)])
def test_sliding_window_with_any_blocks_matches_sdpa(n_q, n_k):
    """Tiles that straddle a window edge at every offset: the window bounds in the tile test are exact."""
    q, k, v = qkv(1, 2, n_q, n_k, 4)
    for window, causal, (bq, bk) in itertools.product((1, 2, 3, 5), (False, True), ((2, 3), (3, 2), (4, 4), (1, 5))):
        ref = sdpa_bool(q, k, v, band(n_q, n_k, causal, window))
        out = flash_attention(q, k, v, is_causal=causal, window=window, block_q=bq, block_k=bk)
        assert_same(out, ref)


def test_window_one_sees_only_itself():
    q, k, v = qkv(2, 2, 7, 7, 4)
    for attn in (flash_attention, naive_attention):
        assert_same(attn(q, k, v, is_causal=True, window=1), v)  # softmax over one key is 1


def test_window_over_a_cache_backward():
    """Decoding 4 tokens after a 36-token cache with a window of 6: most key blocks are seen by no query."""
    q, k, v = qkv(1, 2, 4, 40, 8)
    ref = sdpa_bool(q, k, v, band(4, 40, True, 6))
    out = flash_attention(q, k, v, is_causal=True, window=6, block_q=4, block_k=8)
    assert_same(out, ref)
    assert_grads_same(out, ref, (q, k, v))


def test_kernels_visit_exactly_the_scheduled_tiles(monkeypatch):
    """Skipping the tiles causal/window hide is the point (lmkit.efficient.cost counts bytes over the schedule)."""
    calls = []
    scores = flash._tile_scores
    monkeypatch.setattr(flash, "_tile_scores", lambda *a: calls.append(a[2]) or scores(*a))
    q, k, v = qkv(1, 1, 30, 30, 4)
    out = flash_attention(q, k, v, is_causal=True, window=7, block_q=4, block_k=5)
    schedule = tile_schedule(30, 30, 4, 5, is_causal=True, window=7)
    assert sorted(calls) == schedule and len(schedule) < 8 * 6
    calls.clear()
    grads(out, (q, k, v))
    assert sorted(calls) == schedule
    calls.clear()
    q, k, v = qkv(1, 1, 65, 65, 4)
    out = flash_attention(q, k, v)  # default blocks 64 x 64: 2 x 2 tiles
    grads(out, (q, k, v))
    assert sorted(calls) == sorted(2 * tile_schedule(65, 65, 64, 64)) and len(calls) == 8


def test_row_max_is_per_row():
    """The online softmax shifts each row by its own max: a row 2000 below another must not underflow to zeros."""
    q, k, v = qkv(1, 1, 6, 9, 4)
    bias = torch.zeros(6, 9, **F64)
    bias[1::2] = -2000.0
    bias[2] = 1500.0
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert_same(flash_attention(q, k, v, attn_mask=bias, block_q=6, block_k=4), ref)


@ATTENTIONS
def test_defaults_options_and_biases_match_sdpa(attn):
    q, k, v = qkv(1, 2, 11, 11, 8)
    assert_same(attn(q, k, v), F.scaled_dot_product_attention(q, k, v))  # default: no mask, not causal
    assert_same(attn(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3))
    ref = sdpa_bool(q, k, v, band(11, 11, True, 4))
    assert_same(attn(q, k, v, is_causal=True, window=4), ref)
    pos = torch.arange(11, **F64)
    alibi = -torch.tensor([0.5, 0.25], **F64)[:, None, None] * (pos[:, None] - pos[None, :]).abs()
    out = attn(q, k, v, attn_mask=alibi)
    assert_same(out, F.scaled_dot_product_attention(q, k, v, attn_mask=alibi))
    assert_grads_same(out, F.scaled_dot_product_attention(q, k, v, attn_mask=alibi), (q, k, v))
    # a float64 bias on float32 inputs is added in the inputs' precision (as SDPA's bias of the query's dtype)
    q32, k32, v32 = (t.detach().float() for t in (q, k, v))
    torch.testing.assert_close(attn(q32, k32, v32, attn_mask=alibi),
                               F.scaled_dot_product_attention(q32, k32, v32, attn_mask=alibi.float()))


@ATTENTIONS
def test_fully_masked_row_in_one_head_only(attn):
    q, k, v = qkv(1, 2, 5, 5, 4)
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    mask[0, 3] = False  # head 0's query 3 sees nothing; head 1's sees everything
    out = attn(q, k, v, attn_mask=mask)
    assert torch.equal(out[0, 0, 3], torch.zeros(4, **F64))
    assert_same(out, sdpa_bool(q, k, v, mask))


@ATTENTIONS
def test_grouped_query_attention_shapes_and_default(attn):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 2, 8, generator=g, **F64)  # 4 query heads, 2 queries
    k, v = (torch.randn(1, 2, 4, 8, generator=g, **F64) for _ in range(2))  # 2 K/V heads, 4 keys
    ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert_same(attn(q, k, v, enable_gqa=True), ref)
    with pytest.raises(ValueError, match=r"^incompatible shapes q \(1, 4, 2, 8\), k \(1, 2, 4, 8\), v \(1, 2, 4, 8\)$"):
        attn(q, k, v)  # enable_gqa defaults to False, as in SDPA
    with pytest.raises(ValueError, match="^enable_gqa needs the 4 query heads to be a multiple of the K/V heads"):
        attn(q, k, v[:, :1], enable_gqa=True)
    with pytest.raises(ValueError, match=r"^q must be \(B, H, N, d\), got shape \(1, 3, 2\)$"):
        attn(torch.ones(1, 3, 2), torch.ones(1, 2, 3, 2), torch.ones(1, 2, 3, 2), enable_gqa=True)


@ATTENTIONS
def test_bad_inputs_name_the_problem(attn):
    q, k, v = qkv(1, 3, 4, 4, 2)  # H=3, N=4, d=2: every dimension tells itself apart in a message
    with pytest.raises(TypeError, match="^is_causal must be a bool, got Tensor: pass a mask as attn_mask$"):
        attn(q, k, v, None, torch.ones(4, 4, dtype=torch.bool))
    for i, name in enumerate("qkv"):
        args = [q, k, v]
        args[i] = args[i].tolist()
        with pytest.raises(TypeError, match=f"^{name} must be a tensor, got list$"):
            attn(*args)
        args[i] = torch.ones(4, 2)
        with pytest.raises(ValueError, match=rf"^{name} must be \(B, H, N, d\), got shape \(4, 2\)$"):
            attn(*args)
    with pytest.raises(ValueError, match="^incompatible shapes"):
        attn(q, k[:, :1], v[:, :1])  # fewer K/V heads without enable_gqa
    with pytest.raises(ValueError, match="^incompatible shapes"):
        attn(q, k, v[:, :, :3])  # a value per key
    with pytest.raises(ValueError, match="^q and k must share the head dim, got 2 and 1$"):
        attn(q, k[..., :1], v)
    with pytest.raises(ValueError, match="^window must be a positive int, got 0$"):
        attn(q, k, v, window=0)
    with pytest.raises(ValueError, match="^a float attn_mask is treated as a constant bias; its gradient is not"):
        attn(q, k, v, attn_mask=torch.zeros(4, 4, requires_grad=True))


def test_runs_on_the_inputs_device():
    """The meta device stands in for a GPU on a CPU-only machine: every tensor the kernels create must follow q."""
    assert structural_mask(3, 4, True, 2, "meta").device.type == "meta"
    q, k, v = (torch.randn(1, 2, n, 4, device="meta", requires_grad=True) for n in (5, 7, 7))
    bias = torch.zeros(5, 7, device="meta")
    for attn, kw in ((flash_attention, dict(block_q=2, block_k=3)), (naive_attention, {})):
        out = attn(q, k, v, attn_mask=bias, is_causal=True, window=3, **kw)
        assert out.device.type == "meta" and out.shape == (1, 2, 5, 4)
        assert all(g.device.type == "meta" for g in torch.autograd.grad(out.sum(), (q, k, v)))


def test_half_precision_accumulates_in_float32():
    """bfloat16 in, float32 inside (as the GPU kernels): the output is the exact result rounded once to bfloat16."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 77, 32, generator=g).bfloat16().requires_grad_() for _ in range(3))
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*exact, is_causal=True)
    out = flash_attention(q, k, v, is_causal=True, block_q=16, block_k=16)
    ulp = torch.exp2(torch.floor(torch.log2(ref.detach().abs())) - 7)  # bfloat16 keeps 8 significant bits
    assert ((out.double() - ref).abs() <= ulp).all()
    dout = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad(out, (q, k, v), dout.bfloat16())
    want = torch.autograd.grad(ref, exact, dout.bfloat16().double())
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.double(), b, rtol=0.02, atol=0.02 * b.abs().max().item())


def test_accumulation_does_not_depend_on_torchs_default_dtype():
    """Half and float32 inputs accumulate in float32 whatever ``torch.get_default_dtype()`` is: every buffer names
    its dtype."""
    g = torch.Generator().manual_seed(0)
    args = (None, 32**-0.5, True, None, 16, 16)  # mask, scale, is_causal, window, block_q, block_k
    for dtype in (torch.float16, torch.float32):
        q, k, v = (torch.randn(2, 2, 77, 32, generator=g).to(dtype) for _ in range(3))
        want = flash_forward(q, k, v, *args)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            got = flash_forward(q, k, v, *args)
        finally:
            torch.set_default_dtype(default)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # out and log-sum-exp, bit for bit


@pytest.mark.parametrize(
    ("capability", "dtype", "expected"),
    [
        ((7, 5), torch.float32, None),  # a T4: float32 and float16 run
        ((7, 5), torch.float16, None),
        ((7, 5), torch.bfloat16, "no bf16 arithmetic"),
        ((8, 0), torch.bfloat16, None),  # an A100
        ((9, 0), torch.bfloat16, None),  # an H100
        ((6, 0), torch.float32, "older than Triton supports"),  # a P100
    ],
)
def test_triton_selection_by_compute_capability(monkeypatch, capability, dtype, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    why = flash.triton_unsupported("cuda", dtype)
    assert why is None if expected is None else expected in why


def test_triton_selection_on_the_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert flash.triton_unsupported("cpu") is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "interpreter" in flash.triton_unsupported("cpu")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert flash.triton_unsupported("cuda") == "Triton is not installed"

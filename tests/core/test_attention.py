"""lmkit's hand-written attention against torch's F.scaled_dot_product_attention, and the two mask styles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmkit.transformer import masks
from lmkit.transformer.attention import MultiHeadAttention
from lmkit.transformer.kv_cache import KVCache


def _reference(attn: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    B, T, _ = x.shape
    q = attn.q_proj(x).view(B, T, attn.n_heads, -1).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, attn.n_kv_heads, -1).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, attn.n_kv_heads, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=attn.n_kv_heads != attn.n_heads)
    return attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_matches_scaled_dot_product_attention(kv_heads):
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, n_kv_heads=kv_heads).eval()
    x = torch.randn(2, 6, 32)
    allowed = masks.combine(masks.causal_mask(6), masks.padding_mask([6, 4]))  # (B, 1, T, T)
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    with torch.no_grad():
        weights = []
        out = attn(x, bias=masks.to_additive(allowed), attentions=weights)
        (w,) = weights
        torch.testing.assert_close(out, _reference(attn, x, allowed), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))
        assert (w[~allowed.expand_as(w)] == 0).all()


def test_cache_gives_the_same_as_full_attention():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, n_kv_heads=2).eval()
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        full = attn(x, bias=masks.to_additive(masks.causal_mask(5)))
        cache = KVCache()
        steps = [attn(x[:, t : t + 1], cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 5
    assert cache.keys[0].shape == (1, 2, 5, 8)  # only H_kv = 2 heads are stored
    cache.crop(3)
    assert cache.length == 3
    cache.reorder(torch.tensor([0, 0]))
    assert cache.keys[0].shape[0] == 2


def test_minus_10000_adder_versus_minus_inf():
    torch.manual_seed(0)
    scores = torch.randn(1, 1, 4, 4)
    allowed = masks.causal_mask(4)
    p_inf = torch.softmax(scores + masks.to_additive(allowed, style="-inf"), -1)
    p_10k = torch.softmax(scores + masks.to_additive(allowed, style="-10000"), -1)
    torch.testing.assert_close(p_inf, p_10k)  # for ordinary scores both block the future ...
    assert (p_inf[..., ~allowed] == 0).all()
    # ... but a score that is itself very negative is no longer separated from a "blocked" one by -10000
    low = torch.tensor([[-10000.0, 0.0]]).expand(2, 2).clone()
    blocked = torch.tensor([[True, False], [True, True]])
    p = torch.softmax(low + masks.to_additive(blocked, style="-10000"), -1)
    assert p[0, 1] > 0.4  # the blocked key gets half the weight
    assert torch.softmax(low + masks.to_additive(blocked, style="-inf"), -1)[0, 1] == 0
    # and in float16 the adder itself overflows once it is added twice (e.g. mask + padding): -20000 fits, -inf is safe
    assert torch.isinf(torch.tensor(-10000.0, dtype=torch.float16) * 7).item()


def test_bad_head_counts_are_rejected():
    with pytest.raises(ValueError):
        MultiHeadAttention(32, 4, n_kv_heads=3)
    with pytest.raises(ValueError):
        MultiHeadAttention(30, 4)


def test_additive_scores_match_a_loop():
    from lmkit.transformer.attention import additive_scores

    torch.manual_seed(0)
    wq, wk, v = torch.nn.Linear(8, 5), torch.nn.Linear(8, 5), torch.nn.Linear(5, 1)
    q, k = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    ref = torch.tensor([[[v(torch.tanh(wq(q[0, i]) + wk(k[0, j]))).item() for j in range(4)] for i in range(3)]])
    torch.testing.assert_close(additive_scores(q, k, wq, wk, v), ref)


@pytest.mark.parametrize("bias", [False, True])
def test_concat_linears_is_the_layers_side_by_side(bias):
    """One helper stacks Linears along the output dimension; fused attention and a fused SwiGLU FFN both use it."""
    from lmkit.transformer.attention import concat_linears
    from lmkit.transformer.ffn import FeedForward

    torch.manual_seed(0)
    parts = [torch.nn.Linear(8, n, bias=bias).double() for n in (4, 2, 2)]
    fused = concat_linears(*parts)
    x = torch.randn(3, 8, dtype=torch.double)
    assert (fused.in_features, fused.out_features, fused.weight.dtype) == (8, 8, torch.double)
    assert (fused.bias is not None) == bias
    torch.testing.assert_close(fused(x), torch.cat([p(x) for p in parts], dim=-1), rtol=0, atol=1e-15)

    attn, ffn = MultiHeadAttention(16, 4, n_kv_heads=2, bias=bias), FeedForward(16, 24, "swiglu", bias=bias)
    h = torch.randn(2, 5, 16)
    with torch.no_grad():
        want_attn, want_ffn = attn(h), ffn(h)
        attn.fuse_qkv()
        ffn.fuse_gate_up()
        assert attn.q_proj is None and attn.qkv_proj.out_features == 16 + 2 * 8
        assert ffn.gate_proj is None and ffn.gate_up_proj.out_features == 48
        torch.testing.assert_close(attn(h), want_attn, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ffn(h), want_ffn, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="fuse before quantizing"):
        attn.fuse_qkv()  # already fused: no q_proj left
    with pytest.raises(TypeError, match="already fused"):
        ffn.fuse_gate_up()
    with pytest.raises(TypeError, match="activation 'gelu'"):
        FeedForward(16, 24, "gelu").fuse_gate_up()
    with pytest.raises(ValueError, match=r"same width, got in_features \[4, 8\]"):
        concat_linears(torch.nn.Linear(8, 2), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="all have a bias or none"):
        concat_linears(torch.nn.Linear(8, 2), torch.nn.Linear(8, 2, bias=False))

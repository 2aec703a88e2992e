"""Sparse attention patterns against their published definitions.

References: the set definitions of Child et al. (2019), Sec. 4.2 ("strided" and "fixed" attention), the mask
code released with the paper (openai/sparse_attention, ``get_attn_mask`` modes 'local' and 'strided'),
HF transformers' sliding-window mask function (Mistral), and torch's SDPA for the attention outputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.masking_utils import sliding_window_causal_mask_function

from lmkit.efficient.sparse import (
    attended_pairs,
    fixed_mask,
    head_masks,
    local_mask,
    sliding_window_attention,
    sparse_attention,
    strided_mask,
)
from lmkit.transformer.masks import causal_mask


def from_sets(n, allowed):
    """Mask built from a predicate written exactly as the paper's set definition."""
    return torch.tensor([[allowed(i, j) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("n,stride", [(16, 4), (23, 5), (10, 1), (9, 12)])
def test_strided_matches_openai_get_attn_mask(n, stride):
    # openai/sparse_attention: 'local' = band_part(ones, min(n-1, ctx-1), 0); 'strided' = (q>=k) & ((q-k) % ctx == 0)
    band = torch.ones(n, n, dtype=torch.bool).tril().triu(-min(n - 1, stride - 1))
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    strided = (q >= k) & ((q - k) % stride == 0)
    assert torch.equal(strided_mask(n, stride, part="local"), band)
    assert torch.equal(strided_mask(n, stride, part="summary"), strided)
    assert torch.equal(strided_mask(n, stride), band | strided)


@pytest.mark.parametrize("n,stride,c", [(16, 4, 1), (20, 6, 2), (7, 7, 7), (13, 3, 3)])
def test_fixed_matches_paper_sets(n, stride, c):
    # A(1) = {j : floor(j/l) = floor(i/l)}, A(2) = {j : j mod l in {l-c, ..., l-1}}, causal j <= i
    a1 = from_sets(n, lambda i, j: j <= i and j // stride == i // stride)
    a2 = from_sets(n, lambda i, j: j <= i and j % stride in range(stride - c, stride))
    assert torch.equal(fixed_mask(n, stride, c, part="local"), a1)
    assert torch.equal(fixed_mask(n, stride, c, part="summary"), a2)
    assert torch.equal(fixed_mask(n, stride, c), a1 | a2)
    # without causality the summary columns are visible to every query, also from the future
    assert torch.equal(fixed_mask(n, stride, c, part="summary", causal=False)[0], a2[-1])


def test_every_pair_connected_in_two_steps():
    """Child et al.'s criterion: with both parts, any i reaches any j <= i through at most two hops."""
    n, stride = 36, 6
    for mask in (strided_mask(n, stride), fixed_mask(n, stride)):
        m = mask.float()
        assert torch.equal((m @ m) > 0, causal_mask(n))  # merged pattern, two layers
    # factorised heads: strided = local step then strided step; fixed = summary cell then its block
    a1, a2 = strided_mask(n, stride, part="local").float(), strided_mask(n, stride, part="summary").float()
    assert torch.equal((a1 @ a2) > 0, causal_mask(n))
    f1, f2 = fixed_mask(n, stride, part="local").float(), fixed_mask(n, stride, part="summary").float()
    assert torch.equal(((f2 @ f1) + f1) > 0, causal_mask(n))


def test_sqrt_n_stride_gives_n_sqrt_n_cost():
    ratios_sparse, ratios_full = [], []
    for n in (64, 256, 1024):
        stride = math.isqrt(n)
        ratios_sparse.append(attended_pairs(strided_mask(n, stride)) / n**1.5)
        ratios_full.append(attended_pairs(causal_mask(n)) / n**1.5)
    # per query: l local keys + about i/l strided ones -> about 1.5 N√N in all; full causal grows like N²/2
    assert all(1.0 < r < 1.6 for r in ratios_sparse)
    assert ratios_full[-1] / ratios_full[0] == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("window", [1, 3, 8, 40])
def test_local_mask_matches_hf_sliding_window(window):
    n = 30
    hf = sliding_window_causal_mask_function(window)
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert torch.equal(local_mask(n, window), hf(0, 0, q, k).expand(n, n))


def test_sliding_window_attention_matches_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 100, 16, generator=g, dtype=torch.float64) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=local_mask(100, 12))
    torch.testing.assert_close(sliding_window_attention(q, k, v, 12, block_size=16), ref)
    # decoding: 5 new queries against 100 cached keys, bottom-right aligned
    ref = F.scaled_dot_product_attention(q[:, :, -5:], k, v, attn_mask=local_mask(100, 12)[-5:])
    torch.testing.assert_close(sliding_window_attention(q[:, :, -5:], k, v, 12, block_size=16), ref)


def test_sparse_attention_with_head_masks_matches_sdpa():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 64, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for pattern in ("strided", "fixed"):
        mask = head_masks(pattern, 64, 8, n_heads=4)  # (H, N, N)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(sparse_attention(q, k, v, mask, block_size=8), ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="stride"):
        strided_mask(8, 0)
    with pytest.raises(ValueError, match="c must"):
        fixed_mask(8, 4, c=5)
    with pytest.raises(ValueError, match="part"):
        strided_mask(8, 2, part="all")
    with pytest.raises(ValueError, match="pattern"):
        head_masks("dilated", 8, 2, 2)
    with pytest.raises(ValueError, match="^window must be a positive int, got 0$"):  # named as the caller named it
        local_mask(8, 0)
    with pytest.raises(ValueError, match="^sequence length must be a positive int, got 0$"):
        strided_mask(0, 2)
    with pytest.raises(ValueError, match=r"^c must be an int in \[1, 4\], got 5$"):
        fixed_mask(8, 4, c=5)
    with pytest.raises(TypeError):
        sparse_attention(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(2, 2))

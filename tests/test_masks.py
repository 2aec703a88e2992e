"""The three attention masks, checked against PyTorch's own causal conventions and against attention itself."""

import pytest
import torch
import torch.nn.functional as F

from lmkit.transformer import masks


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_causal_matches_pytorch_conventions(n):
    m = masks.causal_mask(n)
    # nn.Transformer's square subsequent mask: 0 where allowed, -inf where blocked.
    ref = torch.nn.Transformer.generate_square_subsequent_mask(n)
    assert torch.equal(m, ref == 0)
    # SDPA with is_causal=True must equal SDPA with our boolean mask.
    q, k, v = torch.randn(3, 2, 3, n, 8).unbind(0)
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def test_bidirectional_is_all_true():
    assert masks.bidirectional_mask(5).all()


@pytest.mark.parametrize("n,p", [(6, 0), (6, 3), (6, 6), (1, 1)])
def test_prefix_lm_definition(n, p):
    m = masks.prefix_lm_mask(n, p)
    for i in range(n):
        for j in range(n):
            # Raffel et al. (T5), Fig. 3: fully-visible over the prefix, causal elsewhere.
            assert bool(m[i, j]) == (j < p or j <= i), (i, j)


def test_prefix_lm_limits_are_the_other_two():
    assert torch.equal(masks.prefix_lm_mask(7, 0), masks.causal_mask(7))
    assert torch.equal(masks.prefix_lm_mask(7, 7), masks.bidirectional_mask(7))


def test_attention_mask_dispatch_and_errors():
    assert torch.equal(masks.attention_mask("causal", 4), masks.causal_mask(4))
    with pytest.raises(ValueError, match="unknown mask kind"):
        masks.attention_mask("sideways", 4)
    with pytest.raises(ValueError, match="prefix_len"):
        masks.prefix_lm_mask(4, 5)
    with pytest.raises(ValueError, match="positive int"):
        masks.causal_mask(0)


def test_padding_mask_and_combine():
    pad = masks.padding_mask([3, 1, 0], 4)
    assert pad.tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]
    both = masks.combine(masks.causal_mask(4), pad)
    assert both.shape == (3, 1, 4, 4)
    assert both[0, 0, 3].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="exceeds"):
        masks.padding_mask([5], 4)
    with pytest.raises(ValueError, match="keys"):
        masks.combine(masks.causal_mask(3), pad)


def test_padding_matches_hf_extended_mask_semantics():
    """HF's key padding convention: 1 = real token. Masked keys get zero weight under SDPA."""
    pad = masks.padding_mask([2, 4], 4)
    q, k, v = torch.randn(3, 2, 1, 4, 8).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=masks.combine(masks.bidirectional_mask(4), pad))
    # sequence 0 sees only keys 0 and 1: same as attention over the truncated sequence
    ref = F.scaled_dot_product_attention(q[:1], k[:1, :, :2], v[:1, :, :2])
    torch.testing.assert_close(out[:1], ref)


def test_additive_styles():
    allowed = torch.tensor([True, False])
    inf = masks.to_additive(allowed)
    assert inf.tolist() == [0.0, float("-inf")]
    assert masks.to_additive(allowed, style="-10000").tolist() == [0.0, -10000.0]
    scores = torch.tensor([1.0, 3.0])
    assert torch.softmax(scores + inf, -1).tolist() == [1.0, 0.0]
    # the finite adder overflows float16 once two of them are summed
    half = masks.to_additive(allowed, dtype=torch.float16, style="-10000")
    assert torch.isinf(half * 7).any()
    with pytest.raises(TypeError):
        masks.to_additive(torch.ones(2))
    with pytest.raises(ValueError):
        masks.to_additive(allowed, style="-1e9")

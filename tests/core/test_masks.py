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


def prefix_lm_reference(n, p):
    """Raffel et al. (T5), Fig. 3, entry by entry: fully visible over the prefix, causal elsewhere."""
    return torch.tensor([[j < p or j <= i for j in range(n)] for i in range(n)])


def test_attention_mask_builds_each_kind_by_name():
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5) == 0
    refs = {"bidirectional": torch.ones(5, 5, dtype=torch.bool), "causal": causal,
            "prefix_lm": prefix_lm_reference(5, 2)}
    assert set(refs) == set(masks.MASK_KINDS)
    for kind, ref in refs.items():
        assert torch.equal(masks.attention_mask(kind, 5, prefix_len=2), ref), kind
    # prefix_len defaults to 0: a prefix-LM with an empty prefix is a decoder
    assert torch.equal(masks.attention_mask("prefix_lm", 5), causal)


def test_masks_are_built_on_the_requested_device():
    # The meta device stands in for a GPU on a CPU-only machine: a mask built on the CPU is not on it.
    made = [masks.bidirectional_mask(3, "meta"), masks.causal_mask(3, "meta"), masks.prefix_lm_mask(3, 1, "meta")]
    made += [masks.attention_mask(kind, 3, 1, "meta") for kind in masks.MASK_KINDS]
    made.append(masks.to_additive(torch.ones(3, 3, dtype=torch.bool, device="meta")))
    for m in made:
        assert m.device.type == "meta" and m.shape == (3, 3)


def test_sequence_length_must_be_a_positive_int():
    assert masks.causal_mask(1).tolist() == [[True]]
    for bad in (0, -2, 2.0, "3"):
        with pytest.raises(ValueError, match=rf"^sequence length must be a positive int, got {bad!r}$"):
            masks.bidirectional_mask(bad)
    with pytest.raises(ValueError, match=r"^prefix_len must be in \[0, 4\], got -1$"):
        masks.prefix_lm_mask(4, -1)


def test_padding_mask_defaults_to_the_longest_sequence():
    assert masks.padding_mask([3, 1]).tolist() == [[True, True, True], [True, False, False]]
    assert masks.padding_mask(torch.tensor([2, 0]), 3).tolist() == [[True, True, False], [False] * 3]


def test_padding_mask_and_combine_name_the_problem():
    with pytest.raises(ValueError, match=r"^lengths must be 1-D, got shape \(1, 2\)$"):
        masks.padding_mask([[1, 2]])
    with pytest.raises(ValueError, match="^lengths must be non-negative$"):
        masks.padding_mask([2, -1])
    with pytest.raises(ValueError, match=r"^a length exceeds n=4$"):
        masks.padding_mask([5, 1], 4)
    # a rectangular (n_q, n_k) mask, as with a KV cache, combines with a (batch, n_k) key padding mask
    rect = torch.tensor([[True, True, False, False], [True, True, True, False]])
    both = masks.combine(rect, masks.padding_mask([4, 1, 3], 4))
    assert both.shape == (3, 1, 2, 4)
    assert both[1, 0].tolist() == [[True, False, False, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="^mask has 5 keys but padding mask has 4$"):
        masks.combine(torch.ones(2, 5, dtype=torch.bool), masks.padding_mask([4, 2, 1], 4))


def test_to_additive_names_bad_input():
    with pytest.raises(TypeError, match="^mask must be boolean, got torch.float32$"):
        masks.to_additive(torch.ones(2))
    with pytest.raises(ValueError, match=r"^unknown style '-1e9'; expected '-inf' or '-10000'$"):
        masks.to_additive(torch.ones(2, dtype=torch.bool), style="-1e9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the meta device cannot run the length checks")
def test_padding_mask_follows_the_lengths_device():
    assert masks.padding_mask(torch.tensor([2, 1], device="cuda")).device.type == "cuda"

"""Positional encodings against references: HF transformers' RoPE functions and ALiBi builder, the formulas'
published properties (relative-position invariance, the ALiBi paper's slopes)."""

from __future__ import annotations

import math

import pytest
import torch

from lmkit.transformer.positions import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    half_to_interleaved_rows,
    interleaved_to_half_rows,
    rope_angles,
    rope_inv_freq,
    sinusoidal_table,
)


def _llama_config(rope_parameters: dict, max_pos: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=max_pos,
                       rope_parameters=rope_parameters)


def test_half_split_rope_matches_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 7, 32), torch.randn(2, 2, 7, 32)
    pos = torch.arange(3, 10).expand(2, 7)
    cos, sin = rope_angles(pos, rope_inv_freq(32, 10000.0))  # (B, 1, T, 16)
    hf_cos, hf_sin = torch.cat([cos, cos], -1)[:, 0], torch.cat([sin, sin], -1)[:, 0]  # HF: (B, T, D)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rope(q, cos, sin, "half"), q_ref)
    torch.testing.assert_close(apply_rope(k, cos, sin, "half"), k_ref)


def test_inv_freq_and_position_interpolation_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = _llama_config({"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    ref, _ = ROPE_INIT_FUNCTIONS["linear"](cfg, "cpu")
    torch.testing.assert_close(rope_inv_freq(32, 10000.0, "pi", 4.0), ref.float())
    torch.testing.assert_close(rope_inv_freq(32, 10000.0), ref.float() * 4)


def test_ntk_aware_scaling_matches_transformers_dynamic_ntk():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    # HF's dynamic NTK uses base·(f·s/L - (f-1))^(d/(d-2)); at s = L·(2f-1)/f that is
    # the static NTK-aware base·f^(d/(d-2))
    f, L = 2.0, 64
    cfg = _llama_config({"rope_type": "dynamic", "factor": f, "rope_theta": 10000.0}, max_pos=L)
    ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, "cpu", seq_len=int(L * (2 * f - 1) / f))
    ours = rope_inv_freq(32, 10000.0, "ntk", f)
    torch.testing.assert_close(ours, ref.float())
    plain = rope_inv_freq(32, 10000.0)
    assert ours[0] == plain[0]  # the fastest clock is kept (local order) ...
    assert (plain[-1] / ours[-1]).item() == pytest.approx(f)  # ... and the slowest is stretched by exactly f


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    inv = rope_inv_freq(16)
    for pairing in ("half", "interleaved"):
        def score(m, n, pairing=pairing):
            cq, sq = rope_angles(torch.tensor([[m]]), inv)
            ck, sk = rope_angles(torch.tensor([[n]]), inv)
            return (apply_rope(q, cq, sq, pairing) * apply_rope(k, ck, sk, pairing)).sum()

        torch.testing.assert_close(score(5, 2), score(105, 102))
        torch.testing.assert_close(score(0, 0), (q * k).sum())  # position 0 is the identity


def test_the_two_pairings_differ_and_permuting_rows_converts_them():
    torch.manual_seed(0)
    n_heads, d = 3, 16
    wq, wk = torch.randn(n_heads * d, 24), torch.randn(n_heads * d, 24)  # projections for the half-split pairing
    x = torch.randn(2, 5, 24)
    cos, sin = rope_angles(torch.arange(5).expand(2, 5), rope_inv_freq(d))

    def scores(wq, wk, pairing):
        q = apply_rope((x @ wq.T).view(2, 5, n_heads, d).transpose(1, 2), cos, sin, pairing)
        k = apply_rope((x @ wk.T).view(2, 5, n_heads, d).transpose(1, 2), cos, sin, pairing)
        return q @ k.transpose(-1, -2)  # (B, H, T, T)

    half = scores(wq, wk, "half")
    assert not torch.allclose(scores(wq, wk, "interleaved"), half, atol=1e-2)  # same weights, other pairing: wrong
    # GGUF's permutation of the Q/K rows makes the interleaved pairing compute exactly the same attention scores
    permuted = [half_to_interleaved_rows(w, n_heads) for w in (wq, wk)]
    torch.testing.assert_close(scores(*permuted, "interleaved"), half, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(interleaved_to_half_rows(permuted[0], n_heads), wq)


def test_sinusoidal_table_values_and_relative_structure():
    table = sinusoidal_table(50, 8)
    assert table[1, 0].item() == pytest.approx(math.sin(1.0))
    assert table[1, 1].item() == pytest.approx(math.cos(1.0))
    assert table[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)))
    # dot products depend on the offset only (a sum of cosines of the offset)
    torch.testing.assert_close(table[10] @ table[13], table[30] @ table[33])
    with pytest.raises(ValueError):
        sinusoidal_table(10, 7)


def test_alibi_slopes_match_the_paper_and_bloom():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    for heads in (8, 12):
        mask = torch.ones(1, 6)
        ref = build_alibi_tensor(mask, heads, torch.float32).view(heads, 6)  # slope_h · key position
        torch.testing.assert_close(ref[:, 1], alibi_slopes(heads))
    bias = alibi_bias(4, torch.arange(5), torch.arange(5))
    assert bias.shape == (1, 4, 5, 5)
    assert bias[0, 0, 4, 1].item() == pytest.approx(-alibi_slopes(4)[0].item() * 3)

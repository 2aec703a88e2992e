"""Positional encodings at their edges: defaults, the smallest valid arguments, errors that name the problem, the
precision of the frequency tables, devices and dtypes; against HF transformers, the formulas in plain Python doubles,
and the papers' examples."""

from __future__ import annotations

import math

import pytest
import torch

from lmkit.transformer.positions import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    positions_from_mask,
    rope_angles,
    rope_inv_freq,
    sinusoidal_table,
    yarn_inv_freq,
)


def hf_yarn(head_dim, base, factor, original, **betas):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                      max_position_embeddings=int(original * factor),
                      rope_parameters={"rope_type": "yarn", "factor": factor, "rope_theta": base,
                                       "original_max_position_embeddings": original, **betas})
    return ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")[0].float()


def yarn_in_doubles(head_dim, base, factor, original, beta_fast=32.0, beta_slow=1.0):
    """YaRN's NTK-by-parts (Peng et al., 2023, Sec. 3.2) channel by channel in Python floats."""
    def channel(turns):
        return head_dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(channel(beta_fast)), 0), min(math.ceil(channel(beta_slow)), head_dim - 1)
    out = []
    for i in range(head_dim // 2):
        theta = base ** (-2 * i / head_dim)
        ramp = min(max((i - low) / max(high - low, 1e-3), 0.0), 1.0)
        out.append(theta * (1 - ramp) + theta / factor * ramp)
    return torch.tensor(out, dtype=torch.float64).float()


def test_sinusoidal_table_smallest_and_far_positions():
    assert sinusoidal_table(1, 2).tolist() == [[0.0, 1.0]]  # sin 0, cos 0
    # at position 4999 the fastest clocks have turned ~800 times: the angles must be computed in double precision
    p, d = 4999, 6
    want = [f(p / 10000 ** (2 * (c // 2) / d)) for c in range(d) for f in [(math.sin, math.cos)[c % 2]]]
    torch.testing.assert_close(sinusoidal_table(p + 1, d)[p], torch.tensor(want), rtol=0, atol=2e-7)
    for bad in ((0, 4), (3, 3), (3, 0)):
        with pytest.raises(ValueError, match=rf"^need n_positions >= 1 and an even dim >= 2, got {bad[0]}, {bad[1]}$"):
            sinusoidal_table(*bad)


def test_rope_inv_freq_defaults_and_precision():
    # theta_i = base^(-2i/d), base 10000 by default, computed in double and rounded once to float32
    for d in (2, 8, 96):
        want = torch.tensor([10000.0 ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64).float()
        assert torch.equal(rope_inv_freq(d), want), d
    assert torch.equal(rope_inv_freq(8, scaling="pi"), rope_inv_freq(8))  # factor defaults to 1
    assert torch.equal(rope_inv_freq(8, scaling="ntk"), rope_inv_freq(8))
    for d in (0, 3, 7):
        with pytest.raises(ValueError, match=rf"^head_dim must be even and >= 2, got {d}$"):
            rope_inv_freq(d)
    for f in (0, -2.0):
        with pytest.raises(ValueError, match=rf"^factor must be positive, got {f}$"):
            rope_inv_freq(8, factor=f)
    with pytest.raises(ValueError, match="^YaRN needs original_max_positions, the context length"):
        rope_inv_freq(8, scaling="yarn", factor=4.0)


@pytest.mark.parametrize("head_dim, base, factor, original, betas", [
    (64, 10000.0, 4.0, 3627, {}),  # the default beta_fast = 32 puts the low boundary at channel 10 (33 would give 9)
    (8, 4.0, 4.0, 200, {}),  # the slow boundary (channel 10) is clamped to head_dim - 1
    (64, 10000.0, 4.0, 4096, {"beta_fast": 2.0, "beta_slow": 1.9}),  # a ramp one channel wide
    (64, 10000.0, 4.0, 4096, {"beta_fast": 3.0, "beta_slow": 2.0}),
])
def test_yarn_boundaries_match_transformers(head_dim, base, factor, original, betas):
    ours = rope_inv_freq(head_dim, base, "yarn", factor, original, **betas)
    torch.testing.assert_close(ours, hf_yarn(head_dim, base, factor, original, **betas), rtol=1e-6, atol=0)
    assert torch.equal(ours, yarn_in_doubles(head_dim, base, factor, original, **betas))  # float64 inside


def test_yarn_smallest_arguments_defaults_and_errors():
    # the paper's beta_fast = 32, beta_slow = 1 by default; at this length beta_fast = 33 would move a boundary
    ours = yarn_inv_freq(64, 10000.0, 4.0, 3627)
    torch.testing.assert_close(ours, hf_yarn(64, 10000.0, 4.0, 3627), rtol=1e-6, atol=0)
    assert torch.equal(yarn_inv_freq(8, 10000.0, 2.0, 1), yarn_in_doubles(8, 10000.0, 2.0, 1))
    with pytest.raises(ValueError, match="^original_max_positions must be >= 1, got 0$"):
        yarn_inv_freq(8, 10000.0, 2.0, 0)
    for slow, fast in ((0.0, 32.0), (4.0, 4.0)):
        with pytest.raises(ValueError, match=rf"^need 0 < beta_slow < beta_fast, got {slow}, {fast}$"):
            yarn_inv_freq(8, 10000.0, 2.0, 64, beta_fast=fast, beta_slow=slow)


def test_rope_angles_and_rotation_edges():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    pos = torch.arange(6)[None]
    inv = rope_inv_freq(8)
    cos, sin = rope_angles(pos, inv)
    cos2, sin2 = rope_angles(pos, inv, 2.0)
    assert torch.equal(cos2, 2 * cos) and torch.equal(sin2, 2 * sin)
    x = torch.randn(1, 2, 6, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    hf_cos, hf_sin = (torch.cat([t, t], -1)[:, 0].bfloat16() for t in (cos, sin))  # HF casts cos/sin to x's dtype
    ref = apply_rotary_pos_emb(x, x, hf_cos, hf_sin)[0]
    out = apply_rope(x, cos, sin)  # pairing defaults to HF's half-split
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    # interleaved: channels (2i, 2i+1) rotate by angle i (RoFormer eq. 34, llama.cpp), written out pair by pair
    xf = x.float()
    out = apply_rope(xf, cos, sin, "interleaved")
    for i in range(4):
        a, b, c, s = xf[..., 2 * i], xf[..., 2 * i + 1], cos[..., i], sin[..., i]
        torch.testing.assert_close(out[..., 2 * i], a * c - b * s)
        torch.testing.assert_close(out[..., 2 * i + 1], a * s + b * c)
    with pytest.raises(ValueError, match="^unknown RoPE pairing 'zigzag'; expected 'interleaved' or 'half'$"):
        apply_rope(xf, cos, sin, "zigzag")


def test_alibi_one_head_and_errors():
    assert alibi_slopes(1).tolist() == [2.0**-8]  # 2^(-8/n) with n = 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"^n_heads must be >= 1, got {bad}$"):
            alibi_slopes(bad)


def test_built_on_the_inputs_device():
    # the meta device stands in for a GPU: every table must follow the positions it is built for
    pos = torch.arange(5, device="meta")
    cos, sin = rope_angles(pos[None], rope_inv_freq(8))
    assert cos.device.type == sin.device.type == "meta" and cos.shape == (1, 1, 5, 4)
    bias = alibi_bias(4, pos, pos)
    assert bias.device.type == "meta" and bias.shape == (1, 4, 5, 5)


def test_positions_from_mask_count_real_tokens():
    # HF's convention (generate): position_ids = mask.cumsum(-1) - 1, padding filled with 1
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, False]])
    assert positions_from_mask(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 1]]
    assert positions_from_mask(mask, new_tokens=2).tolist() == [[1, 2], [3, 1]]  # the last two columns
    assert positions_from_mask(mask.long(), new_tokens=5).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 1]]

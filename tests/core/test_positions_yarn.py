"""YaRN in lmkit.transformer.positions against Hugging Face transformers' RoPE initialisation (ROPE_INIT_FUNCTIONS)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from lmkit.transformer.positions import rope_angles, rope_attention_factor, rope_inv_freq, yarn_inv_freq


@pytest.mark.parametrize("head_dim, base, factor, original", [(64, 10000.0, 4.0, 4096), (32, 10000.0, 2.0, 64),
                                                              (64, 100000.0, 8.0, 2048), (128, 500000.0, 16.0, 8192)])
def test_yarn_matches_transformers(head_dim, base, factor, original):
    cfg = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                      max_position_embeddings=int(original * factor),
                      rope_parameters={"rope_type": "yarn", "factor": factor, "rope_theta": base,
                                       "original_max_position_embeddings": original})
    ref, ref_factor = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
    ours = rope_inv_freq(head_dim, base, "yarn", factor, original_max_positions=original)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=0)
    assert rope_attention_factor("yarn", factor) == pytest.approx(ref_factor)


def test_yarn_keeps_fast_channels_and_interpolates_slow_ones():
    plain = rope_inv_freq(64, 10000.0)
    yarn = yarn_inv_freq(64, 10000.0, 4.0, 4096)
    # the worked example of the docstring: frequencies 0..10 kept, 23.. interpolated, a ramp in between
    torch.testing.assert_close(yarn[:11], plain[:11])
    torch.testing.assert_close(yarn[23:], plain[23:] / 4)
    between = plain[11:23] / yarn[11:23]
    assert ((between > 1) & (between < 4)).all() and (between.diff() > 0).all()


def test_attention_factor_scales_cos_and_sin():
    pos = torch.arange(5)[None]
    inv = rope_inv_freq(8)
    cos, sin = rope_angles(pos, inv)
    f = rope_attention_factor("yarn", 16.0)
    assert f == pytest.approx(0.1 * math.log(16) + 1)
    cos_f, sin_f = rope_angles(pos, inv, f)
    torch.testing.assert_close(cos_f, cos * f)
    torch.testing.assert_close(sin_f, sin * f)
    assert rope_attention_factor("ntk", 16.0) == rope_attention_factor("yarn", 1.0) == 1.0


def test_yarn_needs_the_training_length():
    with pytest.raises(ValueError, match="original_max_positions"):
        rope_inv_freq(64, 10000.0, "yarn", 4.0)
    with pytest.raises(ValueError, match="beta_slow"):
        yarn_inv_freq(64, 10000.0, 4.0, 4096, beta_fast=1.0, beta_slow=32.0)
    with pytest.raises(ValueError, match="unknown RoPE scaling"):
        rope_inv_freq(64, 10000.0, "linear", 4.0)


def test_yarn_model_matches_hf_llama_with_yarn_rope():
    from transformers import LlamaForCausalLM

    from lmkit.loaders.hf import to_hf_llama
    from lmkit.transformer.model import Transformer, TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                            max_positions=64, rope_theta=10000.0)
    model = Transformer(cfg).eval()
    hf_plain = to_hf_llama(model)
    hf_cfg = hf_plain.config
    hf_cfg.max_position_embeddings = 256
    hf_cfg.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                              "original_max_position_embeddings": 64}
    hf = LlamaForCausalLM(hf_cfg).eval()
    hf.load_state_dict(hf_plain.state_dict())
    model.set_rope(rope_scaling="yarn", rope_factor=4.0, rope_original_max_positions=64)
    ids = torch.randint(0, 64, (1, 200))  # past the trained 64 positions
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, rtol=1e-4, atol=1e-4)
        model.set_rope(rope_scaling=None)  # without YaRN the two disagree
        assert not torch.allclose(model(ids).logits, hf(ids).logits, atol=1e-3)

"""Norms and FFN activations against torch's own modules and functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmkit.transformer.ffn import FeedForward, activation_fn
from lmkit.transformer.norms import BatchNorm, LayerNorm, RMSNorm


def test_layernorm_and_rmsnorm_match_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 3 + 1
    ours, ref = LayerNorm(16, eps=1e-5), nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
        ref.weight.copy_(ours.weight), ref.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x), ref(x))
    rms, rms_ref = RMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        rms.weight.normal_()
        rms_ref.weight.copy_(rms.weight)
    torch.testing.assert_close(rms(x), rms_ref(x))


def test_batchnorm_matches_torch_and_depends_on_the_batch():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8)
    ours, ref = BatchNorm(8), nn.BatchNorm1d(8)
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))  # training: batch statistics
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))  # eval: running statistics
    ours.train()
    # the same sequence normalised in two different batches gives different outputs; LayerNorm does not care
    other = torch.cat([x[:1], 10 * torch.randn(3, 6, 8)])
    assert not torch.allclose(ours(x)[0], ours(other)[0])
    ln = LayerNorm(8)
    torch.testing.assert_close(ln(x)[0], ln(other)[0])
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1:, 3:] = False  # padding changes BatchNorm's statistics unless it is masked out
    assert not torch.allclose(ours(x, mask), ours(x))


@pytest.mark.parametrize(
    "name, ref",
    [("relu", F.relu), ("gelu", F.gelu), ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")), ("silu", F.silu),
     ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)],
)
def test_activations_match_torch(name, ref):
    x = torch.linspace(-8, 8, 101)
    torch.testing.assert_close(activation_fn(name, x), ref(x))


def test_swiglu_ffn_matches_transformers_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    ref = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=40, num_attention_heads=2, num_key_value_heads=2))
    ours = FeedForward(16, 40, "swiglu", bias=False)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(ours(x), ref(x))
    with pytest.raises(ValueError):
        FeedForward(16, 40, "tanh")


def test_default_eps_matter_and_match_the_references():
    """At |x| ~ 1e-3 the variance (~1e-6) is of the order of eps: a wrong or dropped eps changes the output."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 1e-3
    torch.testing.assert_close(LayerNorm(16)(x), nn.LayerNorm(16)(x))  # torch's default eps, 1e-5
    rms, ref = RMSNorm(16), LlamaRMSNorm(16)  # LLaMA's default eps, 1e-6
    assert not torch.allclose(rms(x), RMSNorm(16, eps=0.0)(x), rtol=1e-3)
    torch.testing.assert_close(rms(x), ref(x))


def test_rmsnorm_in_half_precision_is_llamas():
    """Normalised in float32, rounded back to the input dtype, then scaled: bit for bit HF's LlamaRMSNorm."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    x = torch.randn(4, 16).bfloat16()
    rms, ref = RMSNorm(16), LlamaRMSNorm(16)
    with torch.no_grad():
        rms.weight.normal_()
        ref.weight.copy_(rms.weight)
    assert torch.equal(rms(x), ref(x))


def test_layernorm_without_bias_is_torchs():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8)
    ours, ref = LayerNorm(8, bias=False), nn.LayerNorm(8, bias=False)
    assert ours.bias is None and ours.state_dict().keys() == ref.state_dict().keys()  # {"weight"}: loads from torch
    torch.testing.assert_close(ours(x), ref(x))


def test_batchnorm_gain_bias_and_small_batches():
    torch.manual_seed(0)
    ours, ref = BatchNorm(8), nn.BatchNorm1d(8)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
        ref.weight.copy_(ours.weight), ref.bias.copy_(ours.bias)
    x = torch.randn(1, 2, 8)  # two positions: the fewest a batch variance allows
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(BatchNorm(1)(x[..., :1]), nn.BatchNorm1d(1)(x[..., :1].transpose(1, 2)).transpose(1, 2))
    with pytest.raises(ValueError, match="^batch statistics need at least two positions$"):
        ours(torch.randn(1, 1, 8))
    with pytest.raises(ValueError, match=r"^expected \(batch, time, channels\), got shape \(4, 8\)$"):
        ours(torch.randn(4, 8))

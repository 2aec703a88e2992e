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

"""LoRA / QLoRA against HF peft on a tiny random LLaMA (same weights → same outputs, same parameter counts)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lmkit.training import lora

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "v_proj", "down_proj"]


def _tiny_llama() -> nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _pair(r: int = 4, alpha: float = 8.0) -> tuple[nn.Module, nn.Module]:
    base = _tiny_llama()
    ref = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0)
    ).eval()
    ours = lora.apply_lora(copy.deepcopy(base), TARGETS, r=r, alpha=alpha).eval()
    return ref, ours


def _copy_adapters(ref: nn.Module, ours: nn.Module) -> None:
    """Give peft random non-zero B (and A), and copy both into our layers."""
    g = torch.Generator().manual_seed(1)
    ref_layers = {n.removeprefix("base_model.model."): m for n, m in ref.named_modules() if hasattr(m, "lora_A")
                  and isinstance(m.lora_A, nn.ModuleDict)}
    our_layers = {n: m for n, m in ours.named_modules() if isinstance(m, lora.LoRALinear)}
    assert ref_layers.keys() == our_layers.keys()
    with torch.no_grad():
        for name, m in ref_layers.items():
            m.lora_B["default"].weight.copy_(torch.randn(m.lora_B["default"].weight.shape, generator=g))
            our_layers[name].lora_A.copy_(m.lora_A["default"].weight)
            our_layers[name].lora_B.copy_(m.lora_B["default"].weight)


def test_init_b_zero_a_kaiming_and_identity_at_start() -> None:
    base = _tiny_llama()
    ours = lora.apply_lora(copy.deepcopy(base), TARGETS, r=4, alpha=8)
    ids = torch.randint(64, (2, 10))
    torch.testing.assert_close(ours(ids).logits, base(ids).logits)  # B = 0: exactly the pretrained model
    layer = ours.model.layers[0].self_attn.q_proj
    assert isinstance(layer, lora.LoRALinear) and not layer.lora_B.any()
    bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform_(a=sqrt(5)) = nn.Linear's default = peft's
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound


def test_same_outputs_and_trainable_counts_as_peft() -> None:
    ref, ours = _pair()
    _copy_adapters(ref, ours)
    ids = torch.randint(64, (2, 12))
    with torch.no_grad():
        want, got = ref(ids).logits, ours(ids).logits
    assert (want - _tiny_llama()(ids).logits).abs().max() > 1e-3  # the adapters really change the output
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    trainable, total = lora.count_parameters(ours)
    assert (trainable, total) == tuple(ref.get_nb_trainable_parameters())
    # r·(d_in + d_out) per adapted layer: q (32→32), v (32→16), down (64→32), two layers.
    assert trainable == 2 * 4 * ((32 + 32) + (32 + 16) + (64 + 32))


def test_merge_unmerge_and_unload_match_peft() -> None:
    ref, ours = _pair()
    _copy_adapters(ref, ours)
    ids = torch.randint(64, (2, 12))
    before = ours(ids).logits.detach()
    q = ours.model.layers[1].self_attn.q_proj
    w0 = q.base.weight.detach().clone()
    lora.merge_lora(ours)
    torch.testing.assert_close(ours(ids).logits.detach(), before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.base.weight.detach(), w0 + q.scaling * q.lora_B @ q.lora_A)
    lora.unmerge_lora(ours)
    torch.testing.assert_close(q.base.weight.detach(), w0, rtol=0, atol=1e-6)
    plain = lora.merge_and_unload(ours)
    assert not lora.lora_layers(plain)
    merged_ref = ref.merge_and_unload()
    torch.testing.assert_close(plain(ids).logits.detach(), merged_ref(ids).logits.detach(), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in _tiny_llama().parameters())


def test_only_adapters_receive_gradients_and_errors() -> None:
    _, ours = _pair()
    ours.train()
    ids = torch.randint(64, (2, 8))
    ours(ids, labels=ids).loss.backward()
    for name, p in ours.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name
    with pytest.raises(ValueError, match="target_modules"):
        lora.apply_lora(_tiny_llama(), ["nonexistent"])
    with pytest.raises(TypeError):
        lora.LoRALinear(nn.Conv1d(2, 2, 1))


def test_qlora_nf4_base_plus_lora() -> None:
    from lmkit.quant.base import QuantLinear
    from lmkit.quant.nf4 import dequantize_nf4, quantize_nf4

    base = _tiny_llama()
    float_lora = lora.apply_lora(copy.deepcopy(base), TARGETS, r=4, alpha=8)
    qlora = lora.apply_qlora(copy.deepcopy(base), TARGETS, r=4, alpha=8)
    assert lora.count_parameters(qlora)[0] == lora.count_parameters(float_lora)[0]
    # Reference: the float model with every linear weight but the head replaced by its NF4 round trip.
    with torch.no_grad():
        for name, m in float_lora.named_modules():
            if isinstance(m, nn.Linear) and "lm_head" not in name:
                m.weight.copy_(dequantize_nf4(quantize_nf4(m.weight)))
        for ql, fl in zip(lora.lora_layers(qlora), lora.lora_layers(float_lora), strict=True):
            fl.lora_B.normal_()
            ql.lora_A.copy_(fl.lora_A)
            ql.lora_B.copy_(fl.lora_B)
    assert isinstance(qlora.model.layers[0].mlp.up_proj, QuantLinear)  # non-adapted layers are 4-bit too
    ids = torch.randint(64, (2, 10))
    torch.testing.assert_close(qlora(ids).logits, float_lora(ids).logits, rtol=1e-5, atol=1e-5)
    qlora(ids, labels=ids).loss.backward()
    assert all((p.grad is not None) == ("lora_" in n) for n, p in qlora.named_parameters())
    assert lora.weight_bytes(qlora) < lora.weight_bytes(float_lora)
    with pytest.raises(TypeError, match="quantized"):
        lora.merge_lora(qlora)
    unloaded = lora.merge_and_unload(qlora)
    torch.testing.assert_close(unloaded(ids).logits, float_lora(ids).logits, rtol=1e-5, atol=1e-5)

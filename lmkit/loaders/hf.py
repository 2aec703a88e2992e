"""Bridges to Hugging Face ``transformers``: load its GPT-2 and BERT models into lmkit, and export lmkit's LLaMA.

These exist so that lmkit's hand-written transformer can be checked against an implementation nobody here wrote:
a randomly initialised tiny ``GPT2LMHeadModel`` / ``BertModel`` (no download) loaded with :func:`from_hf_gpt2` /
:func:`from_hf_bert` must give the same outputs, and :func:`to_hf_llama` turns lmkit's SmolLM2 into a
``LlamaForCausalLM`` with the same weights.

Mapping notes: GPT-2 stores its projections as ``Conv1D`` with ``(in, out)`` weights (transposed w.r.t.
``nn.Linear``) and fuses Q, K, V into one ``c_attn``; BERT is post-norm, so its "output LayerNorm" after each
sublayer is lmkit's ``attn_norm`` / ``ffn_norm``; Hugging Face's LLaMA uses the half-split RoPE pairing. The
translated tensors go through :func:`lmkit.loaders.state_dict.load_state`, the checked loading every loader shares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from lmkit.checks import check_int, check_number
from lmkit.loaders.state_dict import load_state
from lmkit.transformer.model import Transformer, TransformerConfig
from lmkit.transformer.positions import interleaved_to_half_rows

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                   "silu": "silu"}


def _activation(name: str) -> str:
    if name not in _HF_ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; lmkit maps {sorted(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[name]


def bert_config(hf: Mapping[str, Any]) -> TransformerConfig:
    """lmkit's BERT encoder configuration from a Hugging Face ``BertConfig`` dict (``config.json``); every count
    must be a positive int and the epsilon a number in (0, 1), or a ``ValueError`` names the key."""
    if not isinstance(hf, Mapping):
        raise ValueError(f"a BERT config must be a JSON object, got {type(hf).__name__}")

    def count(key: str) -> int:
        if key not in hf:
            raise ValueError(f"the BERT config has no {key!r}")
        return check_int(key, hf[key], minimum=1)

    d_model, n_heads = count("hidden_size"), count("num_attention_heads")
    if d_model % n_heads:
        raise ValueError(f"num_attention_heads ({n_heads}) must divide hidden_size ({d_model})")
    return TransformerConfig.preset(
        "bert",
        vocab_size=count("vocab_size"),
        d_model=d_model,
        n_layers=count("num_hidden_layers"),
        n_heads=n_heads,
        d_ff=count("intermediate_size"),
        max_positions=count("max_position_embeddings"),
        norm_eps=check_number("layer_norm_eps", hf.get("layer_norm_eps", 1e-12), above=0.0, maximum=1.0),
        activation=_activation(hf.get("hidden_act", "gelu")),
        n_token_types=check_int("type_vocab_size", hf.get("type_vocab_size", 2), minimum=1),
    )


def bert_state(cfg: TransformerConfig, get: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """lmkit state dict of a BERT encoder; ``get(name)`` returns the tensor of a Hugging Face ``BertModel`` name
    (``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight`` …)."""
    state = {
        "tok_emb.weight": get("embeddings.word_embeddings.weight"),
        "pos_emb.weight": get("embeddings.position_embeddings.weight"),
        "type_emb.weight": get("embeddings.token_type_embeddings.weight"),
        "emb_norm.weight": get("embeddings.LayerNorm.weight"),
        "emb_norm.bias": get("embeddings.LayerNorm.bias"),
    }
    pairs = {
        "attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key",
        "attn.v_proj": "attention.self.value", "attn.o_proj": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm", "ffn.up_proj": "intermediate.dense",
        "ffn.down_proj": "output.dense", "ffn_norm": "output.LayerNorm",
    }
    for i in range(cfg.n_layers):
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                state[f"blocks.{i}.{ours}.{p}"] = get(f"encoder.layer.{i}.{theirs}.{p}")
    return state


def from_hf_bert(hf_model: Any) -> Transformer:
    """An lmkit encoder with the weights of a Hugging Face ``BertModel`` (or a model wrapping one as ``.bert``);
    its ``hidden_states`` equal the HF model's ``last_hidden_state``."""
    bert = getattr(hf_model, "bert", hf_model)
    if getattr(bert.config, "model_type", None) != "bert":
        raise TypeError(f"expected a Hugging Face BERT model, got {type(hf_model).__name__}")
    cfg = bert_config(bert.config.to_dict())
    sd = bert.state_dict()
    return load_state(Transformer(cfg), bert_state(cfg, sd.__getitem__))


def from_hf_gpt2(hf_model: Any) -> Transformer:
    """An lmkit decoder with the weights of a Hugging Face ``GPT2LMHeadModel`` (or ``GPT2Model``), same logits."""
    gpt = getattr(hf_model, "transformer", hf_model)
    c = gpt.config
    if getattr(c, "model_type", None) != "gpt2":
        raise TypeError(f"expected a Hugging Face GPT-2 model, got {type(hf_model).__name__}")
    cfg = TransformerConfig.preset(
        "gpt2", vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head,
        d_ff=c.n_inner or 4 * c.n_embd, max_positions=c.n_positions, norm_eps=c.layer_norm_epsilon,
        activation=_activation(c.activation_function),
    )
    sd = gpt.state_dict()
    state = {
        "tok_emb.weight": sd["wte.weight"], "pos_emb.weight": sd["wpe.weight"],
        "norm_f.weight": sd["ln_f.weight"], "norm_f.bias": sd["ln_f.bias"],
    }
    for i in range(c.n_layer):
        h = f"h.{i}."
        q, k, v = sd[h + "attn.c_attn.weight"].t().chunk(3, dim=0)  # Conv1D (in, 3C) -> three (C, C)
        qb, kb, vb = sd[h + "attn.c_attn.bias"].chunk(3)
        b = f"blocks.{i}."
        state.update({
            b + "attn.q_proj.weight": q, b + "attn.k_proj.weight": k, b + "attn.v_proj.weight": v,
            b + "attn.q_proj.bias": qb, b + "attn.k_proj.bias": kb, b + "attn.v_proj.bias": vb,
            b + "attn.o_proj.weight": sd[h + "attn.c_proj.weight"].t(),
            b + "attn.o_proj.bias": sd[h + "attn.c_proj.bias"],
            b + "ffn.up_proj.weight": sd[h + "mlp.c_fc.weight"].t(), b + "ffn.up_proj.bias": sd[h + "mlp.c_fc.bias"],
            b + "ffn.down_proj.weight": sd[h + "mlp.c_proj.weight"].t(),
            b + "ffn.down_proj.bias": sd[h + "mlp.c_proj.bias"],
            b + "attn_norm.weight": sd[h + "ln_1.weight"], b + "attn_norm.bias": sd[h + "ln_1.bias"],
            b + "ffn_norm.weight": sd[h + "ln_2.weight"], b + "ffn_norm.bias": sd[h + "ln_2.bias"],
        })
    return load_state(Transformer(cfg), state)


def to_hf_llama(model: Transformer) -> Any:
    """A ``transformers.LlamaForCausalLM`` (float32, eval mode) with the weights of an lmkit LLaMA-style model
    (RMSNorm, SwiGLU, RoPE, no biases). Interleaved-RoPE query/key rows are un-permuted to HF's half-split layout."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config
    if cfg.positions != "rope" or cfg.norm != "rmsnorm" or cfg.activation != "swiglu" or cfg.attn_bias:
        raise ValueError("to_hf_llama needs a LLaMA-style config (rope, rmsnorm, swiglu, no attention bias)")
    if cfg.rope_scaling is not None:
        raise ValueError("to_hf_llama does not export RoPE scaling")
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.dim_per_head, max_position_embeddings=cfg.max_positions, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
    )
    hf = LlamaForCausalLM(hf_cfg).float().eval()
    sd = model.state_dict()

    def qk(name: str, heads: int) -> torch.Tensor:
        w = sd[name]
        return interleaved_to_half_rows(w, heads) if cfg.rope_pairing == "interleaved" else w

    state = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["norm_f.weight"],
             "lm_head.weight": sd["lm_head.weight"]}
    for i in range(cfg.n_layers):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        state.update({
            h + "self_attn.q_proj.weight": qk(b + "attn.q_proj.weight", cfg.n_heads),
            h + "self_attn.k_proj.weight": qk(b + "attn.k_proj.weight", cfg.kv_heads),
            h + "self_attn.v_proj.weight": sd[b + "attn.v_proj.weight"],
            h + "self_attn.o_proj.weight": sd[b + "attn.o_proj.weight"],
            h + "mlp.gate_proj.weight": sd[b + "ffn.gate_proj.weight"],
            h + "mlp.up_proj.weight": sd[b + "ffn.up_proj.weight"],
            h + "mlp.down_proj.weight": sd[b + "ffn.down_proj.weight"],
            h + "input_layernorm.weight": sd[b + "attn_norm.weight"],
            h + "post_attention_layernorm.weight": sd[b + "ffn_norm.weight"],
        })
    hf.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return hf

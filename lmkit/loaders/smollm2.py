"""SmolLM2-135M-Instruct from its GGUF file: read with ``gguf``, dequantize, build lmkit's LLaMA.

The GGUF (``lmkit.assets.smollm2_gguf()``) stores the projections in Q4_1 and the embedding in Q8_0;
``gguf.quants.dequantize`` turns each into float32 ``(out, in)`` — the layout of ``nn.Linear.weight``. The output
projection is tied to the token embedding. The query/key rows were permuted by llama.cpp's converter for the
*interleaved* RoPE pairing, so the model is built with ``rope_pairing="interleaved"``; ``rope_pairing="half"`` undoes
the permutation and uses Hugging Face's half-split rotation instead (the same model, up to float rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmkit import assets
from lmkit.positions import RopePairing, interleaved_to_half_rows
from lmkit.transformer import Transformer, TransformerConfig

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""The default system message of SmolLM2's chat template (stored in the GGUF's ``tokenizer.chat_template``)."""


def chat_prompt(user_message: str, system: str = SYSTEM_PROMPT) -> str:
    """The ChatML prompt SmolLM2-Instruct was trained on, ending where the assistant's answer begins."""
    if not isinstance(user_message, str):
        raise TypeError(f"user_message must be a str, got {type(user_message).__name__}")
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        f"<|im_start|>user\n{user_message}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def _field(reader, key: str):
    if key not in reader.fields:
        raise ValueError(f"GGUF file has no metadata key {key!r}")
    return reader.fields[key].contents()


def config_from_gguf(reader) -> TransformerConfig:
    """lmkit's LLaMA configuration from a ``gguf.GGUFReader``'s ``llama.*`` metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a llama-architecture GGUF, got {arch!r}")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    d_model = int(_field(reader, "llama.embedding_length"))
    return TransformerConfig(
        vocab_size=int(_field(reader, "llama.vocab_size")),
        d_model=d_model,
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=d_model // n_heads,
        d_ff=int(_field(reader, "llama.feed_forward_length")),
        max_positions=int(_field(reader, "llama.context_length")),
        positions="rope",
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        rope_pairing="interleaved",
        norm="rmsnorm",
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        norm_placement="pre",
        activation="swiglu",
        mask="causal",
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
    )


def _gguf_name(name: str) -> str:
    """lmkit parameter name -> GGUF tensor name."""
    fixed = {"tok_emb.weight": "token_embd.weight", "norm_f.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    parts = name.split(".")  # blocks.{i}.{module}[.{proj}].weight
    local = {
        "attn_norm.weight": "attn_norm", "ffn_norm.weight": "ffn_norm",
        "attn.q_proj.weight": "attn_q", "attn.k_proj.weight": "attn_k", "attn.v_proj.weight": "attn_v",
        "attn.o_proj.weight": "attn_output",
        "ffn.gate_proj.weight": "ffn_gate", "ffn.up_proj.weight": "ffn_up", "ffn.down_proj.weight": "ffn_down",
    }[".".join(parts[2:])]
    return f"blk.{parts[1]}.{local}.weight"


def load_smollm2(
    path: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    rope_pairing: RopePairing = "interleaved",
) -> Transformer:
    """SmolLM2-135M-Instruct as an lmkit :class:`Transformer` in eval mode (default file:
    :func:`lmkit.assets.smollm2_gguf`). ``rope_pairing="half"`` un-permutes Q/K to Hugging Face's layout."""
    import gguf

    if rope_pairing not in ("interleaved", "half"):
        raise ValueError(f"rope_pairing must be 'interleaved' or 'half', got {rope_pairing!r}")
    reader = gguf.GGUFReader(str(assets.smollm2_gguf() if path is None else path))
    cfg = config_from_gguf(reader)
    cfg.rope_pairing = rope_pairing
    with torch.device("meta"):
        model = Transformer(cfg)
    tensors = {t.name: t for t in reader.tensors}
    state = {}
    for name, param in model.named_parameters():
        t = tensors[_gguf_name(name)]
        w = torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))  # a copy
        w = w.reshape(param.shape)
        if rope_pairing == "half" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = interleaved_to_half_rows(w, cfg.n_heads if "q_proj" in name else cfg.kv_heads)
        state[name] = w.to(dtype)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    model.rebuild_buffers()
    return model.to(device or "cpu").eval()

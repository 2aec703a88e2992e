"""SmolLM2-135M-Instruct from its GGUF file: read with ``gguf``, dequantize, build lmkit's LLaMA.

The GGUF (``lmkit.assets.smollm2_gguf()``) stores the projections in Q4_1 and the embedding in Q8_0;
``gguf.quants.dequantize`` turns each into float32 ``(out, in)`` — the layout of ``nn.Linear.weight``. The output
projection is tied to the token embedding. The query/key rows were permuted by llama.cpp's converter for the
*interleaved* RoPE pairing, so the model is built with ``rope_pairing="interleaved"``; ``rope_pairing="half"`` undoes
the permutation and uses Hugging Face's half-split rotation instead (the same model, up to float rounding).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmkit import assets
from lmkit.checks import check_choice, check_int, check_number, choices
from lmkit.loaders import gguf_file
from lmkit.loaders.gguf_file import GGUFError
from lmkit.transformer.model import Transformer, TransformerConfig
from lmkit.transformer.positions import RopePairing, interleaved_to_half_rows

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


def config_from_gguf(reader) -> TransformerConfig:
    """lmkit's LLaMA configuration from a ``gguf.GGUFReader``'s ``llama.*`` metadata, each value checked sane.

    Counts must be positive integers that fit together (heads divide the width, KV heads divide the heads, the
    ``blk.N`` tensors present match ``llama.block_count``); ``rope_theta`` must be finite and positive, the RMSNorm
    epsilon in ``(0, 1)``. A value that breaks a rule is a :class:`~lmkit.loaders.gguf_file.GGUFError` naming the
    file and the key.
    """
    path = gguf_file.path_of(reader)
    arch = gguf_file.metadata(reader, "general.architecture", str)
    if arch != "llama":
        raise GGUFError(f"GGUF file {path}: expected a llama-architecture model, got {arch!r}")

    def count(key: str) -> int:
        value = gguf_file.metadata(reader, key, int)
        try:
            return check_int(key, value, minimum=1)
        except ValueError as err:
            raise GGUFError(f"GGUF file {path}: {err}") from None

    def number(key: str, **bounds) -> float:
        try:
            return check_number(key, gguf_file.metadata(reader, key, float), **bounds)
        except ValueError as err:
            raise GGUFError(f"GGUF file {path}: {err}") from None

    n_heads, d_model, n_kv = count("llama.attention.head_count"), count("llama.embedding_length"), count(
        "llama.attention.head_count_kv")
    if d_model % n_heads or n_heads % n_kv:
        raise GGUFError(f"GGUF file {path}: {n_heads} heads must divide the width {d_model} and be a multiple of "
                        f"the {n_kv} KV heads")
    n_layers = count("llama.block_count")
    blocks = {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")}
    if blocks != set(range(n_layers)):
        raise GGUFError(f"GGUF file {path}: llama.block_count is {n_layers}, but the file has tensors for blocks "
                        f"{sorted(blocks)[:5]}{'...' if len(blocks) > 5 else ''} ({len(blocks)} blocks)")
    return TransformerConfig.preset(
        "llama",
        vocab_size=count("llama.vocab_size"),
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=d_model // n_heads,
        d_ff=count("llama.feed_forward_length"),
        max_positions=count("llama.context_length"),
        rope_theta=number("llama.rope.freq_base", above=0.0),
        rope_pairing="interleaved",
        norm_eps=number("llama.attention.layer_norm_rms_epsilon", above=0.0, maximum=1.0),
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
    check_choice("rope_pairing", rope_pairing, choices(RopePairing))
    reader = gguf_file.open_gguf(assets.smollm2_gguf() if path is None else path)
    cfg = config_from_gguf(reader)
    cfg.rope_pairing = rope_pairing
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {_gguf_name(name): name for name, _ in model.named_parameters()}
    extra = sorted({t.name for t in reader.tensors} - set(expected))
    if extra:
        raise GGUFError(f"GGUF file {gguf_file.path_of(reader)}: tensors {extra[:5]} are not part of the llama "
                        "architecture lmkit builds (another model, or a renamed tensor)")
    state = {}
    for gguf_name, name in expected.items():
        w = gguf_file.dequantized(reader, gguf_name)  # a missing tensor is named; non-finite values are rejected
        param = model.get_parameter(name)
        if w.numel() != param.numel():
            raise GGUFError(f"GGUF file {gguf_file.path_of(reader)}: tensor {gguf_name!r} has shape "
                            f"{tuple(w.shape)}, the config needs {tuple(param.shape)}")
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

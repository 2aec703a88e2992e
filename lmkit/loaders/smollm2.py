"""SmolLM2-135M-Instruct from its GGUF file: read with ``gguf``, dequantize, build lmkit's LLaMA.

The GGUF (``lmkit.assets.smollm2_gguf()``) stores the projections in Q4_1 and the embedding in Q8_0;
``gguf.quants.dequantize`` turns each into float32 ``(out, in)`` — the layout of ``nn.Linear.weight``. The output
projection is tied to the token embedding. The query/key rows were permuted by llama.cpp's converter for the
*interleaved* RoPE pairing, so the model is built with ``rope_pairing="interleaved"``; ``rope_pairing="half"`` undoes
the permutation and uses Hugging Face's half-split rotation instead (the same model, up to float rounding).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lmkit import assets
from lmkit.checks import check_choice, check_int, check_number, choices
from lmkit.loaders import gguf_file
from lmkit.loaders.gguf_file import GGUFError
from lmkit.loaders.state_dict import load_state
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


ROPE_THETA_MAX = 1e9
"""The largest RoPE base a GGUF may declare. Published bases run from 1e4 (LLaMA) through 5e5 (LLaMA 3) to 1e6 and a
few 1e7s; at or below 1 every pair would turn by a radian or more per position (``θ^(-2i/d) >= 1``), so positions
alias and the value is a corrupted field, not a model."""


def config_from_gguf(reader) -> TransformerConfig:
    """lmkit's LLaMA configuration from a ``gguf.GGUFReader``'s ``llama.*`` metadata, each value checked sane.

    Counts must be positive integers that fit together (heads divide the width, KV heads divide the heads, the
    ``blk.N`` tensors present match ``llama.block_count``); ``rope_theta`` must lie in ``(1, ROPE_THETA_MAX]``, the
    RMSNorm epsilon in ``(0, 1]``. A value that breaks a rule is a :class:`~lmkit.loaders.gguf_file.GGUFError`
    naming the file and the key.
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
        rope_theta=number("llama.rope.freq_base", above=1.0, maximum=ROPE_THETA_MAX),
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
    :func:`lmkit.assets.smollm2_gguf`). ``rope_pairing="half"`` un-permutes Q/K to Hugging Face's layout.

    The model is built on the ``meta`` device (no random weights made only to be overwritten), every GGUF tensor is
    dequantized under its lmkit name, and :func:`lmkit.loaders.state_dict.load_state` checks and assigns them; its
    errors become :class:`~lmkit.loaders.gguf_file.GGUFError` s naming the file and the GGUF tensor.
    """
    check_choice("rope_pairing", rope_pairing, choices(RopePairing))
    reader = gguf_file.open_gguf(assets.smollm2_gguf() if path is None else path)
    origin = f"GGUF file {gguf_file.path_of(reader)}: "
    cfg = dataclasses.replace(config_from_gguf(reader), rope_pairing=rope_pairing)
    with torch.device("meta"):
        model = Transformer(cfg)
    names = {name: _gguf_name(name) for name, _ in model.named_parameters()}  # a tied head is not listed
    extra = sorted({t.name for t in reader.tensors} - set(names.values()))
    if extra:
        raise GGUFError(f"{origin}tensors {extra[:5]} are not part of the llama architecture lmkit builds (another "
                        "model, or a renamed tensor)")
    # dequantized() names a missing tensor and rejects non-finite values
    state = {name: gguf_file.dequantized(reader, gguf_name).to(dtype) for name, gguf_name in names.items()}
    try:
        load_state(model, state, source=names, origin=origin)
    except ValueError as err:
        raise GGUFError(str(err)) from None
    if rope_pairing == "half":
        _unpermute_query_key_rows(model)
    return model.to(device or "cpu")


@torch.no_grad()
def _unpermute_query_key_rows(model: Transformer) -> None:
    """llama.cpp's converter permuted the query/key rows for the interleaved pairing: put them back in Hugging Face's
    half-split order (in place), for a model configured with ``rope_pairing="half"``."""
    for block in model.blocks:
        for proj, heads in ((block.attn.q_proj, model.config.n_heads), (block.attn.k_proj, model.config.kv_heads)):
            proj.weight.copy_(interleaved_to_half_rows(proj.weight.clone(), heads))

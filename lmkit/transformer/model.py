"""One transformer, configured as an encoder (BERT), a decoder (GPT-2, LLaMA/SmolLM2) or an encoder–decoder (T5).

Written from ``torch.nn`` basics (``nn.Linear``, ``nn.Embedding``): the pieces live in their own modules —
:mod:`~lmkit.transformer.positions`, :mod:`~lmkit.transformer.attention`, :mod:`~lmkit.transformer.norms`,
:mod:`~lmkit.transformer.ffn`, :mod:`~lmkit.transformer.kv_cache` — and :class:`TransformerConfig` picks among them.
The families differ in a handful of switches, kept in code in :data:`FAMILIES` (one preset per family)::

    >>> for name, preset in FAMILIES.items():
    ...     print(name, preset["mask"], preset["positions"], preset["norm"], preset["norm_placement"],
    ...           preset["activation"])
    bert bidirectional learned layernorm post gelu
    gpt2 causal learned layernorm pre gelu_tanh
    llama causal rope rmsnorm pre swiglu

and ``n_kv_heads`` (= ``n_heads`` in BERT and GPT-2, fewer in LLaMA-2/3 and SmolLM2: grouped-query attention) is a
size, given with the others: ``TransformerConfig.preset("llama", vocab_size=..., d_model=..., ...)``.

A block is ``x = x + Attention(Norm(x)); x = x + FFN(Norm(x))`` (pre-norm) or
``x = Norm(x + Attention(x)); x = Norm(x + FFN(x))`` (post-norm, the 2017 paper and BERT).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lmkit.checks import check_choice, check_token_ids, choices
from lmkit.transformer import masks
from lmkit.transformer.attention import AttentionImpl, MultiHeadAttention
from lmkit.transformer.ffn import Activation, FeedForward
from lmkit.transformer.kv_cache import KVCache
from lmkit.transformer.norms import LayerNorm, RMSNorm
from lmkit.transformer.positions import (
    RopePairing,
    RopeScaling,
    alibi_bias,
    positions_from_mask,
    rope_angles,
    rope_attention_factor,
    rope_inv_freq,
    sinusoidal_table,
)

PositionKind = Literal["rope", "learned", "sinusoidal", "alibi", "none"]
NormKind = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post"]
MaskStyle = Literal["-inf", "-10000"]

FAMILIES: dict[str, dict[str, Any]] = {
    # BERT (Devlin et al. 2018): an encoder; post-norm "Add & Norm", normalised embeddings, segment embeddings
    "bert": dict(
        mask="bidirectional", positions="learned", norm="layernorm", norm_eps=1e-12, norm_placement="post",
        embedding_norm=True, final_norm=False, activation="gelu", attn_bias=True, ffn_bias=True, n_token_types=2,
        lm_head=False,
    ),
    # GPT-2 (Radford et al. 2019): a decoder; pre-norm with a final LayerNorm, the LM head tied to the embedding
    "gpt2": dict(
        mask="causal", positions="learned", norm="layernorm", norm_placement="pre", activation="gelu_tanh",
        attn_bias=True, ffn_bias=True, tie_embeddings=True,
    ),
    # LLaMA (Touvron et al. 2023), and SmolLM2: RMSNorm pre-norm, SwiGLU, RoPE, no biases
    "llama": dict(
        mask="causal", positions="rope", norm="rmsnorm", norm_placement="pre", activation="swiglu",
        attn_bias=False, ffn_bias=False,
    ),
}
"""The switches that make a :class:`TransformerConfig` BERT, GPT-2 or LLaMA (sizes are given separately)."""

ROPE_FIELDS = ("rope_theta", "rope_pairing", "rope_scaling", "rope_factor", "rope_original_max_positions")
"""The config fields :meth:`Transformer.set_rope` may change on a built model (all the others shaped its layers)."""


@dataclass(frozen=True)
class TransformerConfig:
    """Everything that distinguishes BERT, GPT-2, LLaMA and a T5-style encoder–decoder (see the module docstring).

    Frozen: a model is built from its config, so a config changed afterwards would describe another model than the
    one in memory. Derive a variant instead, ``dataclasses.replace(cfg, rope_pairing="half")`` (the checks below run
    again), and build the model from it; :meth:`Transformer.set_rope` changes the RoPE settings of a built model.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    n_kv_heads: int | None = None  # None: = n_heads (plain multi-head); 1: multi-query attention
    head_dim: int | None = None  # None: d_model // n_heads
    max_positions: int = 2048  # rows of a learned/sinusoidal table
    positions: PositionKind = "rope"
    rope_theta: float = 10000.0
    rope_pairing: RopePairing = "half"
    rope_scaling: RopeScaling | None = None
    rope_factor: float = 1.0
    rope_original_max_positions: int | None = None  # YaRN: the context length the model was trained at
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-5
    norm_placement: NormPlacement = "pre"
    embedding_norm: bool = False  # BERT normalises the summed embeddings
    final_norm: bool = True  # pre-norm models normalise the last hidden state (post-norm ones already are)
    activation: Activation = "swiglu"
    attn_bias: bool = False
    ffn_bias: bool = False
    mask: masks.MaskKind = "causal"
    mask_style: MaskStyle = "-inf"
    n_token_types: int = 0  # BERT's segment embeddings (2); 0 for none
    lm_head: bool = True
    tie_embeddings: bool = False
    dropout: float = 0.0
    cross_attention: bool = False  # the decoder of an encoder–decoder
    attention_impl: AttentionImpl = "eager"  # "flash": lmkit.efficient.flash; "sdpa": PyTorch's fused op

    def __post_init__(self) -> None:
        check_choice("positions", self.positions, choices(PositionKind))
        check_choice("rope_pairing", self.rope_pairing, choices(RopePairing))
        check_choice("rope_scaling", self.rope_scaling, (None, *choices(RopeScaling)))
        check_choice("norm", self.norm, choices(NormKind))
        check_choice("norm_placement", self.norm_placement, choices(NormPlacement))
        check_choice("mask", self.mask, masks.MASK_KINDS)
        check_choice("mask_style", self.mask_style, choices(MaskStyle))
        check_choice("attention_impl", self.attention_impl, choices(AttentionImpl))
        if self.tie_embeddings and not self.lm_head:
            raise ValueError("tie_embeddings needs lm_head=True")

    @classmethod
    def preset(cls, family: str, **settings: Any) -> TransformerConfig:
        """The configuration of a model family of :data:`FAMILIES` (``"bert"``, ``"gpt2"``, ``"llama"``) with the
        given sizes (``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``, ...) and any overrides."""
        check_choice("family", family, FAMILIES)
        return cls(**{**FAMILIES[family], **settings})

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def dim_per_head(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim


@dataclass
class TransformerOutput:
    """``logits`` ``(B, T, V)`` (None without an LM head), ``hidden_states`` ``(B, T, C)`` after the last block (and
    final norm), ``attentions``: a list over layers of ``(B, H, T, S)`` self-attention weights, or None."""

    logits: torch.Tensor | None
    hidden_states: torch.Tensor
    attentions: list[torch.Tensor] | None = None


def make_norm(cfg: TransformerConfig) -> nn.Module:
    """The configured normalisation layer over ``d_model`` channels."""
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return LayerNorm(cfg.d_model, cfg.norm_eps)


@dataclass
class AttentionInputs:
    """What every block's attention needs besides ``x``, computed once per forward pass by the model.

    ``bias`` ``(B|1, H|1, T, S)``: the additive mask (structure, padding) and ALiBi; ``rope``: ``(cos, sin, pairing)``
    for the queries and keys; ``cache``: the KV cache (each block stores under its own ``layer``); ``memory``
    ``(B, S_enc, C)`` and ``memory_bias`` ``(B, 1, 1, S_enc)``: the encoder output and its padding, for
    cross-attention; ``attentions``: a list that collects each layer's weights ``(B, H, T, S)``, or None.
    """

    bias: torch.Tensor | None = None
    rope: tuple[torch.Tensor, torch.Tensor, RopePairing] | None = None
    cache: KVCache | None = None
    memory: torch.Tensor | None = None
    memory_bias: torch.Tensor | None = None
    attentions: list[torch.Tensor] | None = None


class Block(nn.Module):
    """Self-attention (+ cross-attention in a decoder of an encoder–decoder) and FFN, each with residual and norm."""

    def __init__(self, cfg: TransformerConfig, layer: int = 0) -> None:
        super().__init__()
        self.layer = layer  # where this block's keys and values live in the KV cache
        self.pre_norm = cfg.norm_placement == "pre"
        attn_args = dict(
            n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, bias=cfg.attn_bias, dropout=cfg.dropout,
            impl=cfg.attention_impl,
        )
        self.attn_norm = make_norm(cfg)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, **attn_args)
        if cfg.cross_attention:
            self.cross_norm = make_norm(cfg)
            self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, **attn_args)
        else:
            self.cross_norm = self.cross_attn = None
        self.ffn_norm = make_norm(cfg)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.ffn_bias, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def residual(self, x: torch.Tensor, norm: nn.Module, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Pre-norm: ``x + f(norm(x))``; post-norm ("Add & Norm"): ``norm(x + f(x))``."""
        if self.pre_norm:
            return x + self.dropout(f(norm(x)))
        return norm(x + self.dropout(f(x)))

    def self_attention(self, h: torch.Tensor, a: AttentionInputs) -> torch.Tensor:
        return self.attn(h, bias=a.bias, rope=a.rope, cache=a.cache, layer=self.layer, attentions=a.attentions)

    def cross_attention(self, h: torch.Tensor, a: AttentionInputs) -> torch.Tensor:
        if a.memory is None:
            raise ValueError("this block has cross-attention: pass the encoder output as `memory`")
        return self.cross_attn(h, bias=a.memory_bias, memory=a.memory)

    def forward(self, x: torch.Tensor, a: AttentionInputs) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``."""
        x = self.residual(x, self.attn_norm, lambda h: self.self_attention(h, a))
        if self.cross_attn is not None:
            x = self.residual(x, self.cross_norm, lambda h: self.cross_attention(h, a))
        return self.residual(x, self.ffn_norm, self.ffn)


class Transformer(nn.Module):
    """Embeddings → ``n_layers`` :class:`Block` s → final norm → LM head, as :class:`TransformerConfig` says.

    Attributes used by other lmkit modules: ``tok_emb``, ``pos_emb`` (learned), ``blocks``, ``norm_f``, ``lm_head``.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.positions == "learned" else None
        self.type_emb = nn.Embedding(cfg.n_token_types, cfg.d_model) if cfg.n_token_types else None
        self.emb_norm = make_norm(cfg) if cfg.embedding_norm else None
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, layer=i) for i in range(cfg.n_layers))
        self.norm_f = make_norm(cfg) if cfg.final_norm else None
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False) if cfg.lm_head else None
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out
        self.rebuild_buffers()

    def rebuild_buffers(self) -> None:
        """(Re)compute the fixed, non-learned tables from the config: the sinusoidal table or RoPE's frequencies.
        Loaders that build the model on the ``meta`` device call this after assigning the weights."""
        cfg, device = self.config, self.tok_emb.weight.device
        if device.type == "meta":  # weights not there yet: the loader calls this again after assigning them
            return
        if cfg.positions == "sinusoidal":
            table = sinusoidal_table(cfg.max_positions, cfg.d_model).to(device)
            self.register_buffer("pos_table", table, persistent=False)
        if cfg.positions == "rope":
            inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.rope_theta, cfg.rope_scaling, cfg.rope_factor,
                                     cfg.rope_original_max_positions).to(device)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            self.rope_attention_factor = rope_attention_factor(cfg.rope_scaling, cfg.rope_factor)

    def set_rope(self, **changes: Any) -> None:
        """Change the RoPE settings of this built model (the weights stay): ``self.config`` becomes a copy with
        ``changes`` (checked again by the config) and the frequencies are recomputed. For instance, to stretch a model
        trained on 64 positions to 256 with YaRN::

            model.set_rope(rope_scaling="yarn", rope_factor=4.0, rope_original_max_positions=64)

        Only the fields in :data:`ROPE_FIELDS` may change: they are read at run time (the pairing at every call, the
        rest through the frequency buffer). Every other field shaped the layers when they were built (sizes, norms,
        the attention implementation the blocks were given): changing it means building a new model from
        ``dataclasses.replace(model.config, ...)``.
        """
        fixed = sorted(set(changes) - set(ROPE_FIELDS))
        if fixed:
            raise ValueError(f"set_rope changes only {ROPE_FIELDS}, got {fixed}: build a new model for those")
        self.config = dataclasses.replace(self.config, **changes)
        self.rebuild_buffers()

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, token_type_ids: torch.Tensor | None):
        """Token (+ position, + segment) embeddings ``(B, T, C)``, normalised (BERT) and dropped out."""
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        elif self.config.positions == "sinusoidal":
            x = x + self.pos_table[position_ids]
        if self.type_emb is not None:
            x = x + self.type_emb(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        return self.emb_dropout(x)

    def attention_bias(
        self, attention_mask: torch.Tensor | None, T: int, past: int, prefix_len: int, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """Additive ``(B|1, H|1, T, S)`` bias: the structural mask of the config, key padding, and ALiBi."""
        cfg, S = self.config, past + T
        device = self.tok_emb.weight.device
        allowed = None  # None means "everything allowed"
        if cfg.mask == "causal" and T > 1:
            allowed = masks.causal_mask(S, device)[past:]  # (T, S): the last T query rows
        elif cfg.mask == "prefix_lm":
            allowed = masks.prefix_lm_mask(S, min(prefix_len, S), device)[past:]
        if attention_mask is not None and not bool(attention_mask.all()):
            structure = allowed if allowed is not None else torch.ones(T, S, dtype=torch.bool, device=device)
            allowed = masks.combine(structure, attention_mask)  # (B, 1, T, S)
            # a padding query may have no allowed key at all; let it attend everywhere instead of producing NaN
            # (its output is never used: no real token attends to a padding position)
            allowed = allowed | ~allowed.any(-1, keepdim=True)
        bias = None if allowed is None else masks.to_additive(allowed, dtype, cfg.mask_style)
        if cfg.positions == "alibi":
            alibi = alibi_bias(cfg.n_heads, torch.arange(past, S, device=device), torch.arange(S, device=device))
            bias = alibi.to(dtype) if bias is None else bias + alibi.to(dtype)
        return bias

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
        token_type_ids: torch.Tensor | None = None,
        prefix_len: int = 0,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> TransformerOutput:
        """Run ``input_ids`` ``(B, T)``: embed, the blocks, the final norm, the LM head.

        ``attention_mask`` ``(B, S)`` is True on real tokens and covers cached + new tokens (``S = cache.length + T``);
        without ``position_ids`` positions are ``cumsum(mask) - 1`` (so left padding does not shift them).
        ``prefix_len`` is used by ``mask="prefix_lm"``; ``memory`` ``(B, S_enc, C)`` and ``memory_mask``
        ``(B, S_enc)`` feed the cross-attention of an encoder–decoder's decoder.
        """
        past = cache.length if cache is not None else 0
        attention_mask = self._check_inputs(input_ids, attention_mask, past)
        if position_ids is None:
            position_ids = self._default_positions(input_ids, attention_mask, past)
        x = self.embed(input_ids, position_ids, token_type_ids)  # (B, T, C)
        a = AttentionInputs(
            bias=self.attention_bias(attention_mask, input_ids.shape[1], past, prefix_len, x.dtype),
            rope=self._rope(position_ids),
            cache=cache,
            memory=memory,
            memory_bias=None if memory_mask is None else masks.to_additive(
                memory_mask.bool()[:, None, None, :], x.dtype, self.config.mask_style),
            attentions=[] if output_attentions else None,
        )  # fmt: skip
        for block in self.blocks:
            x = block(x, a)  # (B, T, C)
        if self.norm_f is not None:
            x = self.norm_f(x)
        logits = self.lm_head(x) if self.lm_head is not None else None  # (B, T, V)
        return TransformerOutput(logits=logits, hidden_states=x, attentions=a.attentions)

    def _check_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, past: int
    ) -> torch.Tensor | None:
        """Validate the ids (an integer ``(B, T)`` tensor inside the vocabulary) and the mask's shape; return the
        mask as bool (or None)."""
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if attention_mask is None:
            return None
        B, T = input_ids.shape
        if attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask must be (batch, cached + new) = {(B, past + T)}, "
                             f"got {tuple(attention_mask.shape)}")
        return attention_mask.bool()

    @staticmethod
    def _default_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, past: int) -> torch.Tensor:
        """``(B, T)`` positions: counted over real tokens when there is a mask, else ``past .. past + T - 1``."""
        B, T = input_ids.shape
        if attention_mask is not None:
            return positions_from_mask(attention_mask, T)
        return torch.arange(past, past + T, device=input_ids.device).expand(B, T)

    def _rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, RopePairing] | None:
        if self.config.positions != "rope":
            return None
        cos, sin = rope_angles(position_ids, self.inv_freq, self.rope_attention_factor)  # (B, 1, T, D/2)
        return cos, sin, self.config.rope_pairing


class EncoderDecoder(nn.Module):
    """A T5-style encoder–decoder: a bidirectional encoder without LM head, and a causal decoder whose blocks also
    cross-attend to the encoder output. Source and target share one embedding matrix (as in T5)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        enc_cfg = dataclasses.replace(cfg, mask="bidirectional", lm_head=False, tie_embeddings=False,
                                      cross_attention=False)
        dec_cfg = dataclasses.replace(cfg, mask="causal", cross_attention=True)
        self.encoder = Transformer(enc_cfg)
        self.decoder = Transformer(dec_cfg)
        self.encoder.tok_emb = self.decoder.tok_emb  # shared vocabulary embedding

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder hidden states ``(B, S_enc, C)``."""
        return self.encoder(input_ids, attention_mask=attention_mask).hidden_states

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
    ) -> TransformerOutput:
        """Decoder output for ``decoder_input_ids`` ``(B, T)`` given the source ``input_ids`` ``(B, S_enc)``;
        pass ``memory`` (from :meth:`encode`) to skip re-encoding while decoding step by step."""
        if memory is None:
            memory = self.encode(input_ids, attention_mask)
        return self.decoder(
            decoder_input_ids, attention_mask=decoder_attention_mask, cache=cache, output_attentions=output_attentions,
            memory=memory, memory_mask=attention_mask,
        )

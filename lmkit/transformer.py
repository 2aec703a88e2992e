"""One transformer, configured as an encoder (BERT), a decoder (GPT-2, LLaMA/SmolLM2) or an encoder–decoder (T5).

Written from ``torch.nn`` basics (``nn.Linear``, ``nn.Embedding``): the pieces live in their own modules —
:mod:`lmkit.positions`, :mod:`lmkit.attention`, :mod:`lmkit.norms`, :mod:`lmkit.ffn`, :mod:`lmkit.kv_cache` — and
:class:`TransformerConfig` picks among them. The families differ in a handful of switches:

=========================  ===============  ===============  =====================
switch                     BERT             GPT-2            LLaMA / SmolLM2
=========================  ===============  ===============  =====================
``mask``                   bidirectional    causal           causal
``positions``              learned          learned          rope
``norm``                   layernorm        layernorm        rmsnorm
``norm_placement``         post             pre              pre
``activation``             gelu             gelu_tanh        swiglu
``n_kv_heads``             = heads          = heads          < heads (GQA)
=========================  ===============  ===============  =====================

A block is ``x = x + Attention(Norm(x)); x = x + FFN(Norm(x))`` (pre-norm) or
``x = Norm(x + Attention(x)); x = Norm(x + FFN(x))`` (post-norm, the 2017 paper and BERT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lmkit import masks
from lmkit.attention import MultiHeadAttention
from lmkit.ffn import Activation, FeedForward
from lmkit.kv_cache import KVCache
from lmkit.norms import LayerNorm, RMSNorm
from lmkit.positions import RopePairing, RopeScaling, alibi_bias, rope_angles, rope_inv_freq, sinusoidal_table

PositionKind = Literal["rope", "learned", "sinusoidal", "alibi", "none"]


@dataclass
class TransformerConfig:
    """Everything that distinguishes BERT, GPT-2, LLaMA and a T5-style encoder–decoder (see the module docstring)."""

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
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    norm_placement: Literal["pre", "post"] = "pre"
    embedding_norm: bool = False  # BERT normalises the summed embeddings
    final_norm: bool = True  # pre-norm models normalise the last hidden state (post-norm ones already are)
    activation: Activation = "swiglu"
    attn_bias: bool = False
    ffn_bias: bool = False
    mask: masks.MaskKind = "causal"
    mask_style: Literal["-inf", "-10000"] = "-inf"
    n_token_types: int = 0  # BERT's segment embeddings (2); 0 for none
    lm_head: bool = True
    tie_embeddings: bool = False
    dropout: float = 0.0
    cross_attention: bool = False  # the decoder of an encoder–decoder
    attention_impl: Literal["eager", "flash"] = "eager"  # "flash": tiled attention (lmkit.flash_attention)

    def __post_init__(self) -> None:
        if self.positions not in ("rope", "learned", "sinusoidal", "alibi", "none"):
            raise ValueError(f"unknown positions {self.positions!r}")
        if self.norm not in ("layernorm", "rmsnorm") or self.norm_placement not in ("pre", "post"):
            raise ValueError(f"bad norm settings {self.norm!r}/{self.norm_placement!r}")
        if self.mask not in masks.MASK_KINDS:
            raise ValueError(f"unknown mask {self.mask!r}; expected one of {masks.MASK_KINDS}")
        if self.tie_embeddings and not self.lm_head:
            raise ValueError("tie_embeddings needs lm_head=True")

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


class Block(nn.Module):
    """Self-attention (+ cross-attention in a decoder of an encoder–decoder) and FFN, each with residual and norm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
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

    def _residual(
        self, x: torch.Tensor, norm: nn.Module, sublayer: nn.Module, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pre-norm: ``x + f(norm(x))``; post-norm ("Add & Norm"): ``norm(x + f(x))``."""
        out = sublayer(norm(x) if self.pre_norm else x, **kwargs)
        y, weights = out if isinstance(out, tuple) else (out, None)
        x = x + self.dropout(y)
        return (x if self.pre_norm else norm(x)), weights

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor, RopePairing] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        memory: torch.Tensor | None = None,
        memory_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)`` and the self-attention weights ``(B, H, T, S)`` (or None)."""
        x, weights = self._residual(
            x, self.attn_norm, self.attn, bias=bias, rope=rope, cache=cache, layer=layer,
            output_attentions=output_attentions,
        )
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this block has cross-attention: pass the encoder output as `memory`")
            x, _ = self._residual(x, self.cross_norm, self.cross_attn, bias=memory_bias, memory=memory)
        x, _ = self._residual(x, self.ffn_norm, self.ffn)
        return x, weights


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
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
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
            inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.rope_theta, cfg.rope_scaling, cfg.rope_factor).to(device)
            self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _bias(
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
        """Run ``input_ids`` ``(B, T)``.

        ``attention_mask`` ``(B, S)`` is True on real tokens and covers cached + new tokens (``S = cache.length + T``);
        without ``position_ids`` positions are ``cumsum(mask) - 1`` (so left padding does not shift them).
        ``prefix_len`` is used by ``mask="prefix_lm"``; ``memory`` ``(B, S_enc, C)`` and ``memory_mask``
        ``(B, S_enc)`` feed the cross-attention of an encoder–decoder's decoder.
        """
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"input_ids must be an integer (batch, length) tensor, got {input_ids.dtype} "
                             f"of shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is not None:
            if attention_mask.shape != (B, past + T):
                raise ValueError(f"attention_mask must be (batch, cached + new) = {(B, past + T)}, "
                                 f"got {tuple(attention_mask.shape)}")
            attention_mask = attention_mask.bool()
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past:]  # (B, T)
            else:
                position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        cfg = self.config
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        elif cfg.positions == "sinusoidal":
            x = x + self.pos_table[position_ids]
        if self.type_emb is not None:
            x = x + self.type_emb(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.emb_dropout(x)

        bias = self._bias(attention_mask, T, past, prefix_len, x.dtype)
        rope = None
        if cfg.positions == "rope":
            cos, sin = rope_angles(position_ids, self.inv_freq)  # (B, 1, T, D/2)
            rope = (cos, sin, cfg.rope_pairing)
        memory_bias = None
        if memory_mask is not None:
            memory_bias = masks.to_additive(memory_mask.bool()[:, None, None, :], x.dtype, cfg.mask_style)

        attentions = [] if output_attentions else None
        for i, block in enumerate(self.blocks):
            x, weights = block(
                x, bias=bias, rope=rope, cache=cache, layer=i, memory=memory, memory_bias=memory_bias,
                output_attentions=output_attentions,
            )
            if attentions is not None:
                attentions.append(weights)
        if self.norm_f is not None:
            x = self.norm_f(x)
        logits = self.lm_head(x) if self.lm_head is not None else None
        return TransformerOutput(logits=logits, hidden_states=x, attentions=attentions)


class EncoderDecoder(nn.Module):
    """A T5-style encoder–decoder: a bidirectional encoder without LM head, and a causal decoder whose blocks also
    cross-attend to the encoder output. Source and target share one embedding matrix (as in T5)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        enc_cfg = TransformerConfig(**{**cfg.__dict__, "mask": "bidirectional", "lm_head": False,
                                       "tie_embeddings": False, "cross_attention": False})
        dec_cfg = TransformerConfig(**{**cfg.__dict__, "mask": "causal", "cross_attention": True})
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

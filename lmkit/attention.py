"""Multi-head attention, written out: separate Q/K/V projections, scaled dot products, a mask, a softmax.

For queries ``Q`` ``(T, d)``, keys ``K`` and values ``V`` ``(S, d)``::

    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d) + M) V

where ``M`` is the additive mask (0 where allowed, ``-inf`` — or the ``-10000`` of the original BERT code — where
blocked, see :func:`lmkit.masks.to_additive`) plus, for ALiBi, the distance penalty. ``H`` heads do this in parallel
on ``d = C / H``-dimensional slices and their outputs are concatenated and projected by ``o_proj``.

**Grouped-query attention** (GQA, LLaMA-2 70B, SmolLM2) gives ``H_kv < H`` key/value heads, each shared by
``H / H_kv`` query heads; **multi-query attention** is the extreme ``H_kv = 1``. Both shrink the KV cache.

``impl="flash"`` computes the same attention tile by tile with :func:`lmkit.flash_attention.flash_attention`
(online softmax, never materialising the ``(T, S)`` score matrix); it is used when no weights are requested and
dropout is inactive, and falls back to the explicit computation otherwise.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lmkit.flash_attention import flash_attention
from lmkit.kv_cache import KVCache
from lmkit.positions import RopePairing, apply_rope


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``n_heads`` query heads and ``n_kv_heads`` key/value heads.

    The four projections are plain ``nn.Linear`` attributes ``q_proj, k_proj, v_proj, o_proj``.
    ``kv_dim`` is the width of the sequence keys/values are read from (the encoder's, for cross-attention).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        kv_dim: int | None = None,
        impl: Literal["eager", "flash"] = "eager",
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model ({d_model}) is not divisible by n_heads ({n_heads}); pass head_dim")
            head_dim = d_model // n_heads
        if impl not in ("eager", "flash"):
            raise ValueError(f"unknown attention impl {impl!r}; expected 'eager' or 'flash'")
        kv_dim = d_model if kv_dim is None else kv_dim
        self.impl = impl
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:  # (B, T, n·D) -> (B, n, T, D)
        return x.view(x.shape[0], x.shape[1], n, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor, RopePairing] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        memory: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``x`` ``(B, T, C)`` to itself (or to ``memory`` ``(B, S, C_kv)`` for cross-attention).

        ``bias`` ``(B|1, H|1, T, S)`` is added to the scores (mask and/or ALiBi); ``rope = (cos, sin, pairing)``
        rotates queries and keys; ``cache`` (self-attention only) receives this call's keys/values under ``layer``.
        Returns the output ``(B, T, C)`` and, if ``output_attentions``, the weights ``(B, H, T, S)``.
        """
        B, T, _ = x.shape
        source = x if memory is None else memory
        q = self._heads(self.q_proj(x), self.n_heads)  # (B, H, T, D)
        k = self._heads(self.k_proj(source), self.n_kv_heads)  # (B, H_kv, S_new, D)
        v = self._heads(self.v_proj(source), self.n_kv_heads)  # (B, H_kv, S_new, D)
        if rope is not None:
            cos, sin, pairing = rope
            q, k = apply_rope(q, cos, sin, pairing), apply_rope(k, cos, sin, pairing)
        if cache is not None:
            if memory is not None:
                raise ValueError("the KV cache is for self-attention; cross-attention keys come from `memory`")
            k, v = cache.update(layer, k, v)  # (B, H_kv, S, D) with S = past + T
        if self.impl == "flash" and not output_attentions and not (self.training and self.attn_dropout.p > 0):
            out = flash_attention(q, k, v, attn_mask=bias, enable_gqa=True)  # (B, H, T, D)
            return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)), None
        S, G = k.shape[2], self.n_heads // self.n_kv_heads
        # grouped heads: query head h uses key/value head h // G, without copying K and V G times
        q = q.reshape(B, self.n_kv_heads, G * T, self.head_dim)  # (B, H_kv, G·T, D)
        scores = (q @ k.transpose(-1, -2)).view(B, self.n_heads, T, S) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, S)
        probs = self.attn_dropout(weights).view(B, self.n_kv_heads, G * T, S)
        out = (probs @ v).view(B, self.n_heads, T, self.head_dim)  # (B, H, T, D)
        out = self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # (B, T, C)
        return out, (weights if output_attentions else None)


def additive_scores(q: torch.Tensor, k: torch.Tensor, w_q: nn.Linear, w_k: nn.Linear, v: nn.Linear) -> torch.Tensor:
    """Bahdanau's additive attention scores ``v · tanh(W_q q_i + W_k k_j)`` ``(B, T, S)`` for ``q`` ``(B, T, C)``,
    ``k`` ``(B, S, C)`` — the alternative the dot product replaced. It materialises a ``(B, T, S, d_a)`` tensor and
    cannot be written as one matrix product, so it is slower and hungrier than ``Q Kᵀ`` for the same sizes."""
    hidden = torch.tanh(w_q(q)[:, :, None, :] + w_k(k)[:, None, :, :])  # (B, T, S, d_a)
    return v(hidden).squeeze(-1)  # (B, T, S)

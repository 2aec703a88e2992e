"""Multi-head attention, written out: separate Q/K/V projections, scaled dot products, a mask, a softmax.

For queries ``Q`` ``(T, d)``, keys ``K`` and values ``V`` ``(S, d)``::

    Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d) + M) V

where ``M`` is the additive mask (0 where allowed, ``-inf`` — or the ``-10000`` of the original BERT code — where
blocked, see :func:`lmkit.transformer.masks.to_additive`) plus, for ALiBi, the distance penalty. ``H`` heads do this
in parallel on ``d = C / H``-dimensional slices and their outputs are concatenated and projected by ``o_proj``.

**Grouped-query attention** (GQA, LLaMA-2 70B, SmolLM2) gives ``H_kv < H`` key/value heads, each shared by
``H / H_kv`` query heads; **multi-query attention** is the extreme ``H_kv = 1``. Both shrink the KV cache.

``impl="flash"`` computes the same attention tile by tile with :func:`lmkit.efficient.flash.flash_attention`
(online softmax, never materialising the ``(T, S)`` score matrix); it is used when no weights are requested and
dropout is inactive, and falls back to the explicit computation otherwise. ``impl="sdpa"`` calls PyTorch's fused
:func:`torch.nn.functional.scaled_dot_product_attention` under the same conditions: the same numbers in one op
instead of a dozen, which matters when decoding one token at a time is bound by per-op overhead.

:meth:`MultiHeadAttention.fuse_qkv` concatenates the three projection weights of a self-attention layer into one
``qkv_proj`` with :func:`concat_linears` (one matmul reads all of them; its output is split back into ``q``, ``k``,
``v``): the same result, fewer calls — what the fast decoding paths of :mod:`lmkit.quant.fast_linear` use (the
SwiGLU FFN fuses its gate and up projections the same way).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_choice, choices
from lmkit.transformer.kv_cache import KVCache
from lmkit.transformer.positions import RopePairing, apply_rope

AttentionImpl = Literal["eager", "flash", "sdpa"]


@torch.no_grad()
def concat_linears(*linears: nn.Linear) -> nn.Linear:
    """One ``nn.Linear`` whose output is the outputs of ``linears`` side by side: their weights (and biases) stacked
    along the output dimension. All must read the same input width and all have a bias or none::

        >>> a, b = nn.Linear(4, 2), nn.Linear(4, 3)
        >>> ab = concat_linears(a, b)
        >>> x = torch.randn(5, 4)
        >>> ab.out_features, torch.allclose(ab(x), torch.cat([a(x), b(x)], dim=-1))
        (5, True)

    ``y.split((2, 3), dim=-1)`` gives the two outputs back. The new layer copies the weights (dtype and device kept):
    float ``nn.Linear`` only, so fuse before quantizing.
    """
    if not linears or any(not isinstance(lin, nn.Linear) for lin in linears):
        got = [type(lin).__name__ for lin in linears]
        raise TypeError(f"concat_linears needs one or more nn.Linear layers (fuse before quantizing), got {got}")
    widths, biased = {lin.in_features for lin in linears}, {lin.bias is not None for lin in linears}
    if len(widths) != 1:
        raise ValueError(f"concat_linears needs layers that read the same width, got in_features {sorted(widths)}")
    if len(biased) != 1:
        raise ValueError("concat_linears needs layers that all have a bias or none has")
    w = linears[0].weight
    fused = nn.Linear(w.shape[1], sum(lin.out_features for lin in linears), bias=biased.pop(), device=w.device,
                      dtype=w.dtype)
    fused.weight.copy_(torch.cat([lin.weight for lin in linears]))  # (sum of out, in)
    if fused.bias is not None:
        fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``n_heads`` query heads and ``n_kv_heads`` key/value heads.

    The four projections are plain ``nn.Linear`` attributes ``q_proj, k_proj, v_proj, o_proj`` (after
    :meth:`fuse_qkv`: ``qkv_proj, o_proj``).
    ``kv_dim`` is the width of the sequence keys/values are read from (the encoder's, for cross-attention).
    ``impl`` is this layer's own attribute, read at every call: setting ``attn.impl = "sdpa"`` on a built model
    switches the implementation (as :func:`lmkit.quant.fast_linear.prepare_for_decoding` does) without touching the
    frozen config the model was built from.
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
        impl: AttentionImpl = "eager",
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model ({d_model}) is not divisible by n_heads ({n_heads}); pass head_dim")
            head_dim = d_model // n_heads
        check_choice("attention impl", impl, choices(AttentionImpl))
        kv_dim = d_model if kv_dim is None else kv_dim
        self.impl = impl
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.qkv_proj: nn.Linear | None = None  # set by fuse_qkv()
        self.attn_dropout = nn.Dropout(dropout)

    def fuse_qkv(self) -> None:
        """Replace ``q_proj``, ``k_proj``, ``v_proj`` by one ``qkv_proj`` whose output rows are theirs, stacked
        (:func:`concat_linears`). For self-attention only: cross-attention reads keys and values from another
        sequence (another width, in general)."""
        self.qkv_proj = concat_linears(self.q_proj, self.k_proj, self.v_proj)
        self.q_proj = self.k_proj = self.v_proj = None

    def _project(self, x: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``(B, H, T, D)`` from ``x``; keys and values ``(B, H_kv, S_new, D)`` from ``source``."""
        if self.qkv_proj is not None:
            if source is not x:
                raise ValueError("a fused qkv_proj is for self-attention; cross-attention needs separate projections")
            kv = self.n_kv_heads * self.head_dim
            q, k, v = self.qkv_proj(x).split((self.n_heads * self.head_dim, kv, kv), dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(source), self.v_proj(source)
        return self._heads(q, self.n_heads), self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)

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
        attentions: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` ``(B, T, C)`` to itself (or to ``memory`` ``(B, S, C_kv)`` for cross-attention).

        ``bias`` ``(B|1, H|1, T, S)`` is added to the scores (mask and/or ALiBi); ``rope = (cos, sin, pairing)``
        rotates queries and keys; ``cache`` (self-attention only) receives this call's keys/values under ``layer``.
        Returns the output ``(B, T, C)``. Given a list as ``attentions``, the weights ``(B, H, T, S)`` are appended
        to it (that is how the model collects one map per layer).
        """
        B, T, _ = x.shape
        source = x if memory is None else memory
        q, k, v = self._project(x, source)  # (B, H, T, D), (B, H_kv, S_new, D), (B, H_kv, S_new, D)
        if rope is not None:
            cos, sin, pairing = rope
            q, k = apply_rope(q, cos, sin, pairing), apply_rope(k, cos, sin, pairing)
        if cache is not None:
            if memory is not None:
                raise ValueError("the KV cache is for self-attention; cross-attention keys come from `memory`")
            k, v = cache.update(layer, k, v)  # (B, H_kv, S, D) with S = past + T
        if self.impl != "eager" and attentions is None and not (self.training and self.attn_dropout.p > 0):
            if self.impl == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)  # (B, H, T, D)
            else:
                from lmkit.efficient.flash import flash_attention  # loaded on first use: the model needs no kernels

                out = flash_attention(q, k, v, attn_mask=bias, enable_gqa=True)  # (B, H, T, D)
            return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # (B, T, C)
        S, G = k.shape[2], self.n_heads // self.n_kv_heads
        # grouped heads: query head h uses key/value head h // G, without copying K and V G times
        q = q.reshape(B, self.n_kv_heads, G * T, self.head_dim)  # (B, H_kv, G·T, D)
        scores = (q @ k.transpose(-1, -2)).view(B, self.n_heads, T, S) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if bias is not None:
            scores = scores + bias
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, S)
        probs = self.attn_dropout(weights).view(B, self.n_kv_heads, G * T, S)
        out = (probs @ v).view(B, self.n_heads, T, self.head_dim)  # (B, H, T, D)
        if attentions is not None:
            attentions.append(weights)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # (B, T, C)


def additive_scores(q: torch.Tensor, k: torch.Tensor, w_q: nn.Linear, w_k: nn.Linear, v: nn.Linear) -> torch.Tensor:
    """Bahdanau's additive attention scores ``v · tanh(W_q q_i + W_k k_j)`` ``(B, T, S)`` for ``q`` ``(B, T, C)``,
    ``k`` ``(B, S, C)`` — the alternative the dot product replaced. It materialises a ``(B, T, S, d_a)`` tensor and
    cannot be written as one matrix product, so it is slower and hungrier than ``Q Kᵀ`` for the same sizes."""
    hidden = torch.tanh(w_q(q)[:, :, None, :] + w_k(k)[:, None, :, :])  # (B, T, S, d_a)
    return v(hidden).squeeze(-1)  # (B, T, S)

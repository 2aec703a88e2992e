"""Informer (Zhou et al., AAAI 2021): ProbSparse self-attention and self-attention distilling.

**ProbSparse attention.** Most rows of a trained attention matrix are close to uniform: those queries ("lazy")
add little beyond the average of the values. A few queries ("active") have sharply peaked rows. Informer scores each
query by its **sparsity measure** — the gap between its largest and its mean scaled score,

    M(q_i, K) = max_j (q_i k_j^T / sqrt(d)) - (1 / L_K) sum_j (q_i k_j^T / sqrt(d)),

(a cheap upper bound on the KL divergence of its attention row from uniform), computed on only
``n_sample = c * ceil(ln L_K)`` randomly sampled keys per query. The ``u = c * ceil(ln L_Q)`` queries with the
largest measure get exact attention; every lazy query's output is the mean of ``V`` — what a perfectly uniform row
would give. The cost falls from ``O(L_Q L_K)`` score entries to ``O(u L_K + L_Q n_sample)``.

In the decoder's masked (causal) version, active queries see only keys up to their own position, and a lazy query
at position ``i`` takes ``sum_{j <= i} v_j`` — the **cumulative sum**, as the reference implementation
(zhouhaoyi/Informer2020, ``ProbAttention._get_initial_context``) does. (A cumulative *mean* would be the causal
analogue of ``mean(V)``; the reference uses the sum.) Two more details of the reference, followed here: the sampled
keys are drawn once per query position and shared across the batch and heads, and they are drawn from all ``L_K``
keys even in the causal case. One deliberate difference: the reference divides the sampled scores' *sum* by
``L_K``; here the measure uses the *mean over the sampled keys*, which is the paper's formula estimated on a sample
(with every key sampled, the two agree).

**Distilling.** Between encoder layers, ``X_{j+1} = MaxPool(ELU(Conv1d(X_j)))`` with a width-3 circular convolution,
batch norm, and a stride-2 max-pool: each layer halves the sequence, so a stack of layers costs about twice its first
layer, and the encoder keeps the dominant features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmkit.checks import check_int, check_tensor


def default_u(length: int, factor: int = 5) -> int:
    """Informer's ``c * ceil(ln L)``, capped at ``L`` (the number of active queries, or of sampled keys); ``length``
    and ``factor`` (``c``) positive ints."""
    check_int("length", length, minimum=1)
    check_int("factor", factor, minimum=1)
    return min(factor * math.ceil(math.log(length)), length) if length > 1 else 1


def sample_keys(n_queries: int, n_keys: int, n_sample: int, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Indices ``(n_queries, n_sample)`` of keys drawn uniformly with replacement, one row per query position
    (``n_keys`` and ``n_sample`` positive ints, ``n_queries`` a non-negative one)."""
    check_int("n_queries", n_queries, minimum=0)
    check_int("n_keys", n_keys, minimum=1)
    check_int("n_sample", n_sample, minimum=1)
    idx = torch.randint(n_keys, (n_queries, n_sample), generator=generator)
    return idx.to(device) if device is not None else idx


def sparsity_measure(q: torch.Tensor, k: torch.Tensor, key_index: torch.Tensor | None = None) -> torch.Tensor:
    """``M(q_i, K)`` ``(..., L_Q)``: max minus mean of the scaled scores ``q_i k_j / sqrt(d)`` over the keys
    ``key_index[i]`` ``(L_Q, n_sample)`` (all keys when ``None``). ``q`` ``(..., L_Q, d)``, ``k`` ``(..., L_K, d)``.

    Checked: ``q`` and ``k`` tensors sharing ``d >= 1``, ``L_K >= 1``; ``key_index`` an integer tensor of ``n_sample
    >= 1`` key positions in ``[0, L_K)`` per query (a negative one would silently index from the end).
    """
    _check_qk(q, k)
    scale = q.shape[-1] ** -0.5
    if key_index is None:
        scores = (q @ k.transpose(-2, -1)) * scale  # (..., L_Q, L_K)
    else:
        check_tensor("key_index", key_index)
        if key_index.ndim != 2 or key_index.shape[0] != q.shape[-2] or key_index.shape[1] == 0:
            raise ValueError(f"key_index must be (L_Q={q.shape[-2]}, n_sample >= 1), got {tuple(key_index.shape)}")
        if key_index.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"key_index must be an integer tensor of key positions, got {key_index.dtype}")
        if int(key_index.min()) < 0 or int(key_index.max()) >= k.shape[-2]:
            raise ValueError(f"key_index must hold key positions in [0, {k.shape[-2]}), got {int(key_index.min())} "
                             f"to {int(key_index.max())}")
        k_sample = k[..., key_index, :]  # (..., L_Q, n_sample, d)
        scores = (q.unsqueeze(-2) @ k_sample.transpose(-2, -1)).squeeze(-2) * scale  # (..., L_Q, n_sample)
    return scores.amax(-1) - scores.mean(-1)


def _check_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    """``q`` ``(..., L_Q, d)`` and ``k`` ``(..., L_K, d)`` tensors of one dtype with ``d >= 1`` and ``L_K >= 1`` (the
    scale ``d^-1/2`` and the max over keys need them)."""
    check_tensor("q", q)
    check_tensor("k", k)
    if q.ndim < 2 or k.ndim < 2 or q.shape[-1] != k.shape[-1] or q.shape[-1] == 0 or k.shape[-2] == 0:
        raise ValueError(f"q (..., L_Q, d) and k (..., L_K >= 1, d) must share d >= 1, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if q.dtype != k.dtype:
        raise TypeError(f"q and k must share a dtype, got {q.dtype} and {k.dtype}")


def _check_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, factor: int) -> None:
    """:func:`prob_sparse_attention`'s inputs: ``(B, H, L, d)`` tensors of one dtype that fit, ``L_Q >= 1``."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("q, k, v must be (batch, heads, length, dim) tensors")
    _check_qk(q, k)
    if v.dtype != q.dtype:
        raise TypeError(f"v must have q's dtype {q.dtype}, got {v.dtype}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    check_int("factor", factor, minimum=1)
    if k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[2] == 0:
        raise ValueError(f"q must hold at least one query (L_Q >= 1), got shape {tuple(q.shape)}")
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError("causal ProbSparse attention is self-attention: L_Q must equal L_K")


def prob_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    u: int | None = None,
    n_sample: int | None = None,
    factor: int = 5,
    causal: bool = False,
    generator: torch.Generator | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ProbSparse attention of ``q`` ``(B, H, L_Q, d)`` over ``k``, ``v`` ``(B, H, L_K, d)``: exact attention for
    the ``u`` queries of largest :func:`sparsity_measure`, ``mean(V)`` (``causal``: ``cumsum(V)``) for the rest.

    ``u`` / ``n_sample`` default to ``factor * ceil(ln L)`` (:func:`default_u`). With ``u = L_Q`` every query is
    active and the result is plain softmax attention. ``return_index`` also returns the active queries
    ``(B, H, u)`` (sorted). Checked: the shapes above with ``L_Q, L_K, d >= 1``, one dtype, ``causal`` a bool,
    ``factor``, ``u`` (at most ``L_Q``) and ``n_sample`` positive ints.
    """
    _check_attention(q, k, v, causal, factor)
    B, H, L_Q, D = q.shape
    L_K = k.shape[-2]
    u = default_u(L_Q, factor) if u is None else u
    n_sample = default_u(L_K, factor) if n_sample is None else n_sample
    check_int("u (active queries, at most L_Q)", u, minimum=1, maximum=L_Q)

    # 1. sparsity measure on sampled keys, and the u most "active" queries (sorted, so u = L_Q is the identity)
    measure = sparsity_measure(q, k, sample_keys(L_Q, L_K, n_sample, generator, q.device))  # (B, H, L_Q)
    top = measure.topk(u, dim=-1).indices.sort(dim=-1).values  # (B, H, u)
    q_top = q.gather(2, top[..., None].expand(B, H, u, D))  # (B, H, u, d)

    # 2. exact attention rows for the active queries only: u * L_K scores instead of L_Q * L_K
    scores = (q_top @ k.transpose(-2, -1)) * D**-0.5  # (B, H, u, L_K)
    if causal:
        future = torch.arange(L_K, device=q.device) > top[..., None]  # (B, H, u, L_K): key after the query
        scores = scores.masked_fill(future, float("-inf"))
    active = scores.softmax(-1) @ v  # (B, H, u, d_v)

    # 3. lazy queries: what a uniform attention row gives
    out = v.cumsum(-2) if causal else v.mean(-2, keepdim=True).expand(B, H, L_Q, v.shape[-1])
    out = out.scatter(2, top[..., None].expand(B, H, u, v.shape[-1]), active)
    return (out, top) if return_index else out


def check_sequence(x: torch.Tensor, weight: torch.Tensor) -> torch.Size:
    """``x``'s shape if it is a ``(batch, length >= 1, d_model)`` tensor in the dtype of ``weight``, whose input width
    is ``d_model`` (a ``Linear`` weight ``(out, d_model)`` or a ``Conv1d`` weight ``(out, d_model, k)``)."""
    d_model = weight.shape[1]
    check_tensor("x", x, 3, "(batch, length, d_model)")
    if x.shape[1] == 0 or x.shape[2] != d_model:
        raise ValueError(f"x must be (batch, length >= 1, d_model={d_model}), got {tuple(x.shape)}")
    if x.dtype != weight.dtype:
        raise TypeError(f"x must have the weights' dtype {weight.dtype}, got {x.dtype}")
    return x.shape


class ProbSparseSelfAttention(nn.Module):
    """Multi-head self-attention with :func:`prob_sparse_attention` inside (query/key/value/output projections)."""

    def __init__(self, d_model: int, n_heads: int, factor: int = 5, causal: bool = False) -> None:
        """Checked: ``d_model``, ``n_heads`` (dividing it) and ``factor`` positive ints, ``causal`` a bool."""
        super().__init__()
        check_int("d_model", d_model, minimum=1)
        check_int("n_heads", n_heads, minimum=1)
        check_int("factor", factor, minimum=1)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {causal!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.factor, self.causal = n_heads, factor, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, u: int | None = None) -> torch.Tensor:
        """``x`` ``(B, L >= 1, d_model)`` in the weights' dtype -> ``(B, L, d_model)``."""
        B, L, C = check_sequence(x, self.qkv.weight)
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, H, L, d)
        y = prob_sparse_attention(q, k, v, u=u, factor=self.factor, causal=self.causal)  # (B, H, L, d)
        return self.out(y.transpose(1, 2).reshape(B, L, C))


class Distilling(nn.Module):
    """Self-attention distilling: ``(B, L, C) -> (B, ceil(L / 2), C)`` by Conv1d(k=3, circular) -> BatchNorm -> ELU ->
    MaxPool(k=3, stride=2, padding=1)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        check_int("d_model", d_model, minimum=1)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.act = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L >= 1, d_model)`` in the weights' dtype -> ``(B, ceil(L / 2), d_model)``."""
        check_sequence(x, self.conv.weight)
        y = self.pool(self.act(self.norm(self.conv(x.transpose(1, 2)))))  # (B, C, ceil(L/2))
        return y.transpose(1, 2)


class InformerEncoderLayer(nn.Module):
    """Post-norm encoder layer as in Informer: ``x = Norm(x + Attn(x)); x = Norm(x + FFN(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, factor: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        check_int("d_ff", d_ff, minimum=1)
        self.attn = ProbSparseSelfAttention(d_model, n_heads, factor)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class InformerEncoder(nn.Module):
    """``n_layers`` ProbSparse encoder layers with a :class:`Distilling` step between consecutive layers, so the
    length halves after each layer but the last: ``L -> L/2 -> ... -> L / 2^(n_layers-1)``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int, factor: int = 5) -> None:
        super().__init__()
        check_int("n_layers", n_layers, minimum=1)
        self.layers = nn.ModuleList(InformerEncoderLayer(d_model, n_heads, d_ff, factor) for _ in range(n_layers))
        self.distil = nn.ModuleList(Distilling(d_model) for _ in range(n_layers - 1))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.distil):
                x = self.distil[i](x)
        return self.norm(x)

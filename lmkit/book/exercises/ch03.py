"""Exercises of chapter 03 (attention). Expected answers come from :mod:`lmkit.efficient` and
:mod:`lmkit.transformer` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number, not_answered
from lmkit.efficient.cost import kv_cache_bytes, transformer_forward_flops
from lmkit.efficient.flash import naive_attention

# SmolLM2-135M, as read from its GGUF file (chapter 09): 30 layers, width 576, 9 query heads, 3 KV heads of 64.
SMOLLM2 = {"n_layer": 30, "d_model": 576, "n_heads": 9, "n_kv_heads": 3, "head_dim": 64, "d_ff": 1536}


# 3.1 ------------------------------------------------------------------------------------------------
def check_kv_cache_bytes(answer: int | None) -> Verdict:
    """Bytes of SmolLM2's KV cache for one sequence of 2048 tokens in fp16."""
    s = SMOLLM2
    return check_number(answer, kv_cache_bytes(s["n_layer"], s["n_kv_heads"], s["head_dim"], 2048),
                        "bytes of the KV cache")


def solution_kv_cache_bytes() -> int:
    layers, kv_heads, head_dim, tokens, fp16 = 30, 3, 64, 2048, 2
    return 2 * layers * kv_heads * head_dim * tokens * fp16  # K and V, for every layer, head and token


# 3.2 ------------------------------------------------------------------------------------------------
def check_gqa_saving(answer: float | None) -> Verdict:
    """How many times larger SmolLM2's KV cache would be with one KV head per query head (plain multi-head)."""
    s = SMOLLM2
    mha = kv_cache_bytes(s["n_layer"], s["n_heads"], s["head_dim"])
    gqa = kv_cache_bytes(s["n_layer"], s["n_kv_heads"], s["head_dim"])
    return check_number(answer, mha / gqa, "ratio of the multi-head cache to the grouped-query cache")


def solution_gqa_saving() -> float:
    return 9 / 3  # the cache holds one K and one V per KV head: 9 heads instead of 3


# 3.3 ------------------------------------------------------------------------------------------------
def check_score_variance(answer: float | None) -> Verdict:
    """The variance of q·k for independent q, k in R^256 with unit-variance entries, before scaling (5 %)."""
    d = 256
    return check_number(answer, float(d), "variance of the raw score", rel_tol=0.05)


def solution_score_variance() -> float:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(100_000, 256, generator=g), torch.randn(100_000, 256, generator=g)
    return (q * k).sum(-1).var().item()  # a sum of 256 products of variance 1: variance 256


# 3.4 ------------------------------------------------------------------------------------------------
def check_attention(answer: Callable[..., torch.Tensor] | None) -> Verdict:
    """A function ``attention(q, k, v, mask)``: softmax(q kᵀ/√d with -inf where ``mask`` is False) v, heads batched."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for (B, H, T, S, D), causal in (((1, 1, 4, 4, 8), True), ((2, 3, 5, 7, 16), False)):
        q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (T, S, S))
        mask = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else torch.rand(T, S, generator=g) > 0.3
        mask[:, 0] = True  # every query sees at least one key
        cases.append(((q, k, v, mask), naive_attention(q, k, v, attn_mask=mask)))
    return check_function(answer, cases, "your attention",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-5))


def solution_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (..., T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (..., T, D)


# 3.5 ------------------------------------------------------------------------------------------------
def _quadratic_share(n: int) -> tuple[int, int]:
    s = SMOLLM2
    f = transformer_forward_flops(s["n_layer"], s["d_model"], s["n_heads"], n, s["d_ff"], n_kv_heads=s["n_kv_heads"],
                                  head_dim=s["head_dim"], gated_ffn=True)
    return f["scores"] + f["values"], f["qkv"] + f["out_proj"]


def check_crossover_length(answer: int | None) -> Verdict:
    """The shortest sequence for which SmolLM2's N² attention matmuls cost at least its Q/K/V/O projections."""
    if answer is None:
        return not_answered("a sequence length (an int)")
    n = 1
    while True:
        quadratic, linear = _quadratic_share(n)
        if quadratic >= linear:
            break
        n += 1
    return check_number(answer, n, "crossover length")


def solution_crossover_length() -> int:
    C, H, H_kv, hd = 576, 9, 3, 64
    # scores + values: 4 N² H hd;  projections: 2 N C (H + 2 H_kv) hd + 2 N H hd C
    linear_per_token = 2 * C * (H + 2 * H_kv) * hd + 2 * H * hd * C
    n = -(-linear_per_token // (4 * H * hd))  # smallest N with 4 N H hd >= linear_per_token
    return n

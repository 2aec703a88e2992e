"""Exercises of chapter 11 (complexity and efficient attention). Expected answers come from
:mod:`lmkit.efficient` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.efficient import cost, sparse
from lmkit.efficient.flash import tile_schedule


# 11.1 -----------------------------------------------------------------------------------------------
def check_causal_tiles(answer: int | None) -> Verdict:
    """Tiles a causal flash-attention pass visits for N = 64 with 16 × 16 tiles."""
    return check_number(answer, len(tile_schedule(64, 64, 16, 16, is_causal=True)), "tiles visited")


def solution_causal_tiles() -> int:
    blocks = 64 // 16
    return blocks * (blocks + 1) // 2  # the diagonal tiles and everything below them


# 11.2 -----------------------------------------------------------------------------------------------
def check_naive_traffic(answer: int | None) -> Verdict:
    """Bytes standard attention moves to and from HBM for one head, N = 4096, d = 64, fp16 (forward)."""
    return check_number(answer, cost.naive_attention_io(4096, 64).bytes, "bytes of HBM traffic")


def solution_naive_traffic() -> int:
    n, d, fp16 = 4096, 64, 2
    reads = 2 * n * d + n * n + n * n + n * d  # Q, K; S; P, V
    writes = n * n + n * n + n * d  # S, P, O
    return (reads + writes) * fp16


# 11.3 -----------------------------------------------------------------------------------------------
def check_online_softmax(answer: Callable[[torch.Tensor, int], torch.Tensor] | None) -> Verdict:
    """A function ``online_softmax(scores, block)`` computing the softmax of a 1-D tensor in one pass over blocks,
    keeping only a running maximum and a running sum (then a second pass to normalise)."""
    g = torch.Generator().manual_seed(0)
    rows = ((torch.randn(9, generator=g) * 5, 3), (torch.randn(16, generator=g) * 30, 5),
            (torch.tensor([1.0, 3.0, 0.5, 2.0, 6.0, 1.0, 0.0, 4.0, 7.0]), 4))
    cases = [((s, b), torch.softmax(s, -1)) for s, b in rows]
    return check_function(answer, cases, "your online_softmax",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-6))


def solution_online_softmax(scores: torch.Tensor, block: int) -> torch.Tensor:
    m, total = torch.tensor(float("-inf")), torch.tensor(0.0)
    for start in range(0, len(scores), block):
        s = scores[start : start + block]
        m_new = torch.maximum(m, s.max())
        total = total * torch.exp(m - m_new) + torch.exp(s - m_new).sum()  # rescale the old sum to the new max
        m = m_new
    return torch.exp(scores - m) / total


# 11.4 -----------------------------------------------------------------------------------------------
def check_window_pairs(answer: int | None) -> Verdict:
    """(query, key) pairs a causal sliding window of width 8 allows over 48 positions."""
    return check_number(answer, sparse.attended_pairs(sparse.local_mask(48, 8)), "attended pairs")


def solution_window_pairs() -> int:
    n, w = 48, 8
    return sum(min(i + 1, w) for i in range(n))  # query i sees keys max(0, i - w + 1) .. i


# 11.5 -----------------------------------------------------------------------------------------------
def check_llama70b_cache(answer: int | None) -> Verdict:
    """Bytes of Llama-2-70B's KV cache (80 layers, 8 KV heads of 128) for 131,072 tokens in fp16."""
    return check_number(answer, cost.kv_cache_bytes(80, 8, 128, 131_072), "bytes of the KV cache")


def solution_llama70b_cache() -> int:
    return 2 * 80 * 8 * 128 * 131_072 * 2  # K and V x layers x KV heads x head dim x tokens x fp16 bytes

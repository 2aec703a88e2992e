"""Exercises of chapter 18 (retrieval-augmented generation). Expected answers come from :mod:`lmkit.retrieval`
at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.retrieval import ExactIndex, chunk_words, recall_at_k

MINILM_DIM = 384  # all-MiniLM-L6-v2's embedding width


# 18.1 -----------------------------------------------------------------------------------------------
def check_index_bytes(answer: int | None) -> Verdict:
    """Bytes of an exact float32 index of 10 million MiniLM embeddings."""
    index = ExactIndex(torch.zeros(1, MINILM_DIM))
    return check_number(answer, 10_000_000 * MINILM_DIM * index.vectors.element_size(), "bytes of the index")


def solution_index_bytes() -> int:
    return 10_000_000 * 384 * 4  # vectors x dimensions x 4 bytes per float32 = 15.4 GB


# 18.2 -----------------------------------------------------------------------------------------------
def check_chunk_count(answer: int | None) -> Verdict:
    """How many chunks does a 1,000-word document give with 128-word chunks that overlap by 16 words?"""
    return check_number(answer, len(chunk_words(["w"] * 1000, 128, 16)), "chunks")


def solution_chunk_count() -> int:
    # windows start every 128 - 16 = 112 words: 0, 112, ..., 784; the window at 784 ends at 912 < 1000,
    # so one more starts at 896 and reaches the end: 9 chunks
    step, starts = 112, [0]
    while starts[-1] + 128 < 1000:
        starts.append(starts[-1] + step)
    return len(starts)


# 18.3 -----------------------------------------------------------------------------------------------
def _recall_cases() -> list[tuple[tuple, float]]:
    ranked = [[False, True, False], [True, False, False], [False, False, False], [False, False, True]]
    return [((ranked, k), recall_at_k(ranked, k)) for k in (1, 2, 3)]


def check_recall(answer: Callable | None) -> Verdict:
    """``recall(ranked, k)``: the fraction of queries with a relevant result among their first ``k``."""
    return check_function(answer, _recall_cases(), "recall(ranked, k)", lambda a, b: abs(float(a) - b) < 1e-12)


def solution_recall(ranked: list[list[bool]], k: int) -> float:
    return sum(any(row[:k]) for row in ranked) / len(ranked)


# 18.4 -----------------------------------------------------------------------------------------------
def _search_cases() -> list[tuple[tuple, torch.Tensor]]:
    g = torch.Generator().manual_seed(18)
    corpus, queries = torch.randn(50, 8, generator=g) * 3, torch.randn(4, 8, generator=g)
    return [((queries, corpus, k), ExactIndex(corpus).search(queries, k)[1]) for k in (1, 5)]


def check_top_k_cosine(answer: Callable | None) -> Verdict:
    """``top_k_cosine(queries, corpus, k)``: ``(Q, k)`` indices of the most cosine-similar corpus rows, best first
    (the corpus rows are *not* unit length)."""
    return check_function(answer, _search_cases(), "top_k_cosine", lambda a, b: torch.equal(torch.as_tensor(a), b))


def solution_top_k_cosine(queries: torch.Tensor, corpus: torch.Tensor, k: int) -> torch.Tensor:
    q = queries / queries.norm(dim=-1, keepdim=True)
    c = corpus / corpus.norm(dim=-1, keepdim=True)  # forget this and long vectors win: a dot product, not a cosine
    return (q @ c.T).topk(k, dim=-1).indices

"""Exercises of chapter 20 (Informer and Time-LLM). Expected answers come from :mod:`lmkit.timeseries` at call
time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.timeseries.forecasting import seasonal_naive
from lmkit.timeseries.informer import default_u, sparsity_measure
from lmkit.timeseries.timellm import PatchEmbedding


# 20.1 -----------------------------------------------------------------------------------------------
def check_score_fraction(answer: float | None) -> Verdict:
    """For L = 720 (a month of hourly data) and factor c = 5: the scores ProbSparse computes (sampled scores for the
    measure plus full rows for the active queries) as a fraction of the L^2 scores of full attention."""
    L, u = 720, default_u(720)
    return check_number(answer, (L * u + u * L) / L**2, "fraction of the scores", rel_tol=1e-3)


def solution_score_fraction() -> float:
    import math

    L = 720
    u = 5 * math.ceil(math.log(L))  # 35 active queries, and 35 sampled keys per query
    return (L * u + u * L) / L**2  # 0.097: ten times fewer


# 20.2 -----------------------------------------------------------------------------------------------
def check_patches(answer: int | None) -> Verdict:
    """Time-LLM with seq_len 512, patch_len 16, stride 8: how many patches does the language model read?"""
    return check_number(answer, PatchEmbedding(16, 8, 1).n_patches(512), "patches")


def solution_patches() -> int:
    return (512 - 16) // 8 + 2  # 62 windows in the series, one more over the replicated end


# 20.3 -----------------------------------------------------------------------------------------------
def _measure_cases() -> list[tuple[tuple, torch.Tensor]]:
    g = torch.Generator().manual_seed(20)
    cases = []
    for shape in ((5, 8), (2, 7, 4)):
        q = torch.randn(*shape, generator=g, dtype=torch.float64)
        k = torch.randn(*shape[:-2], 9, shape[-1], generator=g, dtype=torch.float64)
        cases.append(((q, k), sparsity_measure(q, k)))
    return cases


def check_sparsity(answer: Callable | None) -> Verdict:
    """``sparsity(q, k)``: Informer's M(q_i, K) over *all* keys — max minus mean of the scaled scores."""
    return check_function(answer, _measure_cases(), "sparsity(q, k)",
                          lambda a, b: torch.allclose(torch.as_tensor(a, dtype=b.dtype), b, atol=1e-10))


def solution_sparsity(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    return scores.max(-1).values - scores.mean(-1)


# 20.4 -----------------------------------------------------------------------------------------------
def _seasonal_cases() -> list[tuple[tuple, torch.Tensor]]:
    x = torch.arange(60.0).reshape(2, 30)
    return [((x, 10, 24), seasonal_naive(x, 10, 24)), ((x, 30, 7), seasonal_naive(x, 30, 7))]


def check_seasonal_naive(answer: Callable | None) -> Verdict:
    """``seasonal(x, pred_len, period)``: repeat the last ``period`` values of each window over the horizon."""
    return check_function(answer, _seasonal_cases(), "seasonal(x, pred_len, period)",
                          lambda a, b: torch.equal(torch.as_tensor(a, dtype=b.dtype), b))


def solution_seasonal_naive(x: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
    reps = -(-pred_len // period)  # ceiling division
    return x[:, -period:].repeat(1, reps)[:, :pred_len]

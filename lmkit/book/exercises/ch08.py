"""Exercises of chapter 08 (LLM.int8 and NF4). Expected answers come from :mod:`lmkit.quant` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number, check_tensor
from lmkit.quant.dynamic8 import AdamW8bit
from lmkit.quant.int8_matmul import outlier_columns, quantize_rowwise
from lmkit.quant.nf4 import nf4_code_values, quantize_nf4


# 8.1 ------------------------------------------------------------------------------------------------
def check_int8_step(answer: float | None) -> Verdict:
    """The step (value of one int8 code) of vector-wise int8 for a token row whose largest |x| is 60."""
    row = torch.tensor([[60.0, 0.3, -0.7, 1.1]])
    _, c = quantize_rowwise(row)
    return check_number(answer, (c / 127).item(), "the quantization step of the row", rel_tol=1e-6)


def solution_int8_step() -> float:
    return 60 / 127  # absmax / 127: the ordinary values (|x| ~ 1) now round to 0 or ±1, ±2


# 8.2 ------------------------------------------------------------------------------------------------
def check_nf4_bits(answer: float | None) -> Verdict:
    """Storage bits per weight of NF4 with double quantization (blocks of 64, scales in blocks of 256)."""
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    return check_number(answer, quantize_nf4(w).bits_per_weight(), "bits per weight of NF4 + double quant",
                        rel_tol=1e-3)


def solution_nf4_bits() -> float:
    return 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes, an 8-bit scale per 64, a float32 per 256 scales


# 8.3 ------------------------------------------------------------------------------------------------
def check_adam8_bytes(answer: float | None) -> Verdict:
    """Bytes of optimizer state per parameter of AdamW8bit on one large (2048 × 64) weight, after a step (1 %)."""
    w = torch.nn.Parameter(torch.randn(2048, 64, generator=torch.Generator().manual_seed(0)))
    opt = AdamW8bit([w], lr=1e-3)
    w.grad = torch.randn_like(w)
    opt.step()
    return check_number(answer, opt.state_nbytes() / w.numel(), "state bytes per parameter", rel_tol=0.01)


def solution_adam8_bytes() -> float:
    codes = 2 * 1  # two moments, one byte each
    scales = 2 * 4 / 2048  # one float32 absmax per block of 2048, per moment
    return codes + scales


# 8.4 ------------------------------------------------------------------------------------------------
def check_nf4_levels(answer: torch.Tensor | None) -> Verdict:
    """The 16 NF4 levels, sorted, derived from normal quantiles (to 1e-6)."""
    return check_tensor(answer, nf4_code_values().float(), "the 16 NF4 levels", atol=1e-6, rtol=0)


def solution_nf4_levels() -> torch.Tensor:
    from statistics import NormalDist

    offset = 0.5 * (1 / 32 + 1 / 30)  # the outermost quantile probabilities: 1 - offset on each side
    q = NormalDist().inv_cdf
    pos = [q(0.5 + (1 - offset - 0.5) * k / 8) for k in range(1, 9)]  # 8 positive levels, probabilities 0.5..1-offset
    neg = [-q(0.5 + (1 - offset - 0.5) * k / 7) for k in range(1, 8)]  # 7 negative levels
    levels = torch.tensor(sorted(neg + [0.0] + pos), dtype=torch.float64)
    return (levels / levels.abs().max()).float()


# 8.5 ------------------------------------------------------------------------------------------------
def check_outlier_mask(answer: Callable[[torch.Tensor, float], torch.Tensor] | None) -> Verdict:
    """A function ``outliers(X, threshold)``: the boolean (K,) mask of feature columns LLM.int8() keeps in float."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for scale in (1.0, 4.0):
        X = torch.randn(16, 32, generator=g) * scale
        X[3, 7] = 6.0  # exactly at the threshold: an outlier
        X[:, 11] *= 10
        cases.append(((X, 6.0), outlier_columns(X, 6.0)))
    return check_function(answer, cases, "your outlier mask",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.equal(got.bool(), exp))


def solution_outlier_mask(X: torch.Tensor, threshold: float) -> torch.Tensor:
    return (X.abs() >= threshold).any(dim=0)  # a column is an outlier dimension if any token reaches the threshold

"""Exercises of chapter 10 (GPTQ and AWQ). Expected answers come from :mod:`lmkit.quant.gptq`,
:mod:`lmkit.quant.rtn` and :mod:`lmkit.quant.awq` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number, check_tensor
from lmkit.quant.awq import awq_scales
from lmkit.quant.gptq import gptq_quantize, layer_error


def sample_layer() -> tuple[torch.Tensor, torch.Tensor]:
    """A 32 × 64 weight and the Hessian ``2 X Xᵀ / N`` of 512 inputs with correlated channels of uneven energy."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(32, 64, generator=g)
    mix = torch.randn(64, 64, generator=g) / 8 + torch.eye(64)  # correlated input channels, as in real layers
    X = torch.linspace(0.1, 3.0, 64)[:, None] * (mix @ torch.randn(64, 512, generator=g))
    return W, 2 * X @ X.T / X.shape[1]


# 10.1 -----------------------------------------------------------------------------------------------
def check_layer_error(answer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float] | None) -> Verdict:
    """A function ``error(W, Q, H)`` giving ||WX - QX||²_F / N from the Hessian H = 2 X Xᵀ / N."""
    W, H = sample_layer()
    g = torch.Generator().manual_seed(1)
    cases = [((W, W + 0.01 * torch.randn(W.shape, generator=g), H), None), ((W, W.round(), H), None)]
    cases = [(args, layer_error(*args)) for args, _ in cases]
    return check_function(answer, cases, "your error",
                          lambda got, exp: abs(float(got) - exp) <= 1e-4 * abs(exp) + 1e-9)


def solution_layer_error(W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor) -> float:
    D = W - Q  # (d_row, d_col): ||D X||² / N = tr(D X Xᵀ Dᵀ) / N = tr(D H Dᵀ) / 2
    return float(((D @ H) * D).sum() / 2)


# 10.2 -----------------------------------------------------------------------------------------------
def check_first_column(answer: int | None) -> Verdict:
    """The column of :func:`sample_layer`'s weight that GPTQ with ``act_order=True`` quantizes first."""
    W, H = sample_layer()
    return check_number(answer, int(gptq_quantize(W, H, bits=4, group_size=None, act_order=True).permutation[0]),
                        "first column")


def solution_first_column() -> int:
    _, H = sample_layer()
    return int(torch.diag(H).argmax())  # act-order: the input with the largest energy H_ii first


# 10.3 -----------------------------------------------------------------------------------------------
def check_gptq_gain(answer: float | None) -> Verdict:
    """The layer error of 3-bit RTN divided by that of 3-bit GPTQ on :func:`sample_layer` (one grid per row)."""
    from lmkit.quant.rtn import rtn_groupwise

    W, H = sample_layer()
    rtn = layer_error(W, rtn_groupwise(W, 3, None).weight, H)
    gptq = layer_error(W, gptq_quantize(W, H, bits=3, group_size=None).weight, H)
    return check_number(answer, rtn / gptq, "RTN error / GPTQ error", rel_tol=1e-3)


def solution_gptq_gain() -> float:
    from lmkit.quant.rtn import rtn_groupwise

    W, H = sample_layer()
    rtn = layer_error(W, rtn_groupwise(W, 3, None).weight, H)
    gptq = layer_error(W, gptq_quantize(W, H, bits=3, group_size=None).weight, H)
    return rtn / gptq


# 10.4 -----------------------------------------------------------------------------------------------
def check_awq_scales(answer: torch.Tensor | None) -> Verdict:
    """AWQ's per-channel scales for mean |x| = [0.5, 1, 2, 8] and alpha = 0.5."""
    return check_tensor(answer, awq_scales(torch.tensor([0.5, 1.0, 2.0, 8.0]), 0.5), "the scales", atol=1e-6)


def solution_awq_scales() -> torch.Tensor:
    s = torch.tensor([0.5, 1.0, 2.0, 8.0]) ** 0.5  # s = mean|x|^alpha ...
    return s / (s.max() * s.min()).sqrt()  # ... normalised so that max(s) * min(s) = 1

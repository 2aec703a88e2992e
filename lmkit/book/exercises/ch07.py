"""Exercises of chapter 07 (number formats and quantization basics). Expected answers come from
:mod:`lmkit.quant.formats` and :mod:`lmkit.quant.absmax` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.quant.absmax import quantize_int
from lmkit.quant.formats import BF16, FP16

EXAMPLE = [[-0.8, -0.1, 0.0, 0.3, 0.9, 2.4]]


# 7.1 ------------------------------------------------------------------------------------------------
def check_fp16_max(answer: float | None) -> Verdict:
    """The largest finite FP16 value, from its 5 exponent and 10 mantissa bits."""
    return check_number(answer, FP16.max, "largest FP16 value")


def solution_fp16_max() -> float:
    exponent_bits, mantissa_bits = 5, 10
    bias = 2 ** (exponent_bits - 1) - 1  # 15; the all-ones exponent is reserved for inf/NaN
    return (2 - 2**-mantissa_bits) * 2.0**bias


# 7.2 ------------------------------------------------------------------------------------------------
def check_bf16_eps(answer: float | None) -> Verdict:
    """BF16's machine epsilon: the gap between 1 and the next larger BF16 number."""
    return check_number(answer, BF16.eps, "BF16 epsilon")


def solution_bf16_eps() -> float:
    return 2.0**-7  # 7 explicit mantissa bits


# 7.3 ------------------------------------------------------------------------------------------------
def check_absmax_scale(answer: float | None) -> Verdict:
    """The 4-bit absmax scale of the chapter's example row [-0.8, -0.1, 0.0, 0.3, 0.9, 2.4]."""
    q = quantize_int(torch.tensor(EXAMPLE), bits=4, symmetric=True)
    return check_number(answer, q.tensors["scale"].item(), "the absmax scale", rel_tol=1e-6)


def solution_absmax_scale() -> float:
    qmax = 2 ** (4 - 1) - 1  # 7: the codes are -7..7
    return 2.4 / qmax


# 7.4 ------------------------------------------------------------------------------------------------
def check_zero_point(answer: Callable[[torch.Tensor, int], torch.Tensor] | None) -> Verdict:
    """A function ``fake_quantize(x, bits)``: zero-point quantize each row of ``x`` and return the reconstruction."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for bits, x in ((4, torch.tensor(EXAMPLE)), (3, torch.randn(4, 16, generator=g)),
                    (8, torch.rand(2, 32, generator=g) * 5)):
        cases.append(((x, bits), quantize_int(x, bits, symmetric=False, granularity="row").dequantize()))
    return check_function(answer, cases, "your fake_quantize",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-5))


def solution_zero_point(x: torch.Tensor, bits: int) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True).clamp(max=0)  # the range always contains 0, so 0 is exact
    hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)  # the integer code that stands for 0.0
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


# 7.5 ------------------------------------------------------------------------------------------------
def check_block_bits(answer: float | None) -> Verdict:
    """Bits per weight of 4-bit zero-point quantization in blocks of 64 (as lmkit stores it)."""
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))
    q = quantize_int(w, 4, symmetric=False, granularity="block", block_size=64)
    return check_number(answer, q.bits_per_weight(), "bits per weight", rel_tol=1e-6)


def solution_block_bits() -> float:
    return 4 + (32 + 8) / 64  # 4-bit codes + a float32 scale and a uint8 zero-point per block of 64

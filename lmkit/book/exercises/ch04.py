"""Exercises of chapter 04 (the transformer block). Expected answers come from :mod:`lmkit.transformer` at call time."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.transformer.ffn import FeedForward
from lmkit.transformer.norms import RMSNorm

SMOLLM2_C, SMOLLM2_D_FF = 576, 1536


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# 4.1 ------------------------------------------------------------------------------------------------
def check_ffn_params(answer: int | None) -> Verdict:
    """Parameters of SmolLM2's SwiGLU FFN (C = 576, d_ff = 1536, no biases)."""
    expected = _n_params(FeedForward(SMOLLM2_C, SMOLLM2_D_FF, "swiglu", bias=False))
    return check_number(answer, expected, "parameters of one SwiGLU FFN")


def solution_ffn_params() -> int:
    C, d_ff = 576, 1536
    return 3 * C * d_ff  # gate, up (C -> d_ff) and down (d_ff -> C), no biases


# 4.2 ------------------------------------------------------------------------------------------------
def check_swiglu_d_ff(answer: int | None) -> Verdict:
    """The d_ff that gives a SwiGLU FFN as many parameters as a GELU FFN with d_ff = 4C (C = 576, no biases)."""
    gelu = _n_params(FeedForward(SMOLLM2_C, 4 * SMOLLM2_C, "gelu", bias=False))
    per_unit = _n_params(FeedForward(SMOLLM2_C, 1, "swiglu", bias=False))  # parameters per unit of d_ff
    return check_number(answer, gelu / per_unit, "d_ff of the SwiGLU FFN")


def solution_swiglu_d_ff() -> int:
    C = 576
    return 2 * C * (4 * C) // (3 * C)  # 2 matrices of C x 4C = 3 matrices of C x d_ff  ->  d_ff = 8C/3


# 4.3 ------------------------------------------------------------------------------------------------
def check_rms_norm(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None) -> Verdict:
    """A function ``rms_norm(x, g, eps)`` normalising the last dimension like LLaMA's RMSNorm."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for shape in ((3, 8), (2, 5, 16)):
        x = torch.randn(*shape, generator=g) * 3 + 1
        norm = RMSNorm(shape[-1], eps=1e-5)
        with torch.no_grad():
            norm.weight.copy_(torch.rand(shape[-1], generator=g) + 0.5)
            cases.append(((x, norm.weight.detach().clone(), 1e-5), norm(x).detach()))
    return check_function(answer, cases, "your rms_norm",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-5))


def solution_rms_norm(x: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


# 4.4 ------------------------------------------------------------------------------------------------
def check_tanh_saturation(answer: float | None) -> Verdict:
    """The fraction of inputs x ~ N(0, 3²) where the derivative of tanh is below 0.01 (to 2 %)."""
    edge = math.atanh(math.sqrt(1 - 0.01))  # tanh'(x) = 1 - tanh(x)^2 < 0.01  <=>  |x| > edge
    expected = 2 * (1 - 0.5 * (1 + math.erf(edge / 3 / math.sqrt(2))))
    return check_number(answer, expected, "fraction of saturated tanh inputs", rel_tol=0.02)


def solution_tanh_saturation() -> float:
    x = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0)) * 3
    grad = 1 - torch.tanh(x) ** 2
    return (grad < 0.01).float().mean().item()


# 4.5 ------------------------------------------------------------------------------------------------
def sample_tokens() -> torch.Tensor:
    """Four tokens of 16 channels, the input of exercise 4.5."""
    return torch.randn(4, 16, generator=torch.Generator().manual_seed(5))


def check_rms_shift(answer: float | None) -> Verdict:
    """max |RMSNorm(x + 1) - RMSNorm(x)| over :func:`sample_tokens` (unit gain, eps 1e-6)."""
    x, norm = sample_tokens(), RMSNorm(16)
    with torch.no_grad():
        expected = (norm(x + 1) - norm(x)).abs().max().item()
    return check_number(answer, expected, "largest change of RMSNorm's output", rel_tol=1e-4)


def solution_rms_shift() -> float:
    x = sample_tokens()

    def rms(v: torch.Tensor) -> torch.Tensor:
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)

    return (rms(x + 1) - rms(x)).abs().max().item()

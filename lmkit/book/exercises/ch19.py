"""Exercises of chapter 19 (Mamba). Expected answers come from :mod:`lmkit.ssm` and
:mod:`lmkit.efficient.cost` at call time."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.efficient.cost import kv_cache_bytes
from lmkit.ssm.compare import state_bytes
from lmkit.ssm.mamba import MambaConfig
from lmkit.ssm.scan import selective_scan

MAMBA_130M = MambaConfig(vocab_size=50280, d_model=768, n_layers=24)  # state-spaces/mamba-130m: N=16, E=2·768
GPT2_SMALL = dict(n_layer=12, n_kv_heads=12, head_dim=64)  # a transformer of about the same size


# 19.1 -----------------------------------------------------------------------------------------------
def check_cache_bytes(answer: int | None) -> Verdict:
    """Bytes of mamba-130m's generation cache (fp16, one sequence)."""
    return check_number(answer, state_bytes(MAMBA_130M, bytes_per_element=2), "bytes of the Mamba cache")


def solution_cache_bytes() -> int:
    layers, d_inner, d_state, d_conv = 24, 2 * 768, 16, 4
    per_layer = d_inner * (d_conv - 1) + d_inner * d_state  # last 3 conv inputs + the (E, N) SSM state
    return layers * per_layer * 2  # fp16


# 19.2 -----------------------------------------------------------------------------------------------
def check_break_even_tokens(answer: int | None) -> Verdict:
    """Smallest context at which GPT-2 small's KV cache (fp16) is larger than mamba-130m's fixed cache."""
    per_token = kv_cache_bytes(**GPT2_SMALL)
    expected = state_bytes(MAMBA_130M) // per_token + 1
    return check_number(answer, expected, "tokens until the KV cache is larger")


def solution_break_even_tokens() -> int:
    kv_per_token = 2 * 12 * 12 * 64 * 2  # K and V · layers · heads · head dim · fp16 bytes
    mamba = 24 * 1536 * (3 + 16) * 2
    return mamba // kv_per_token + 1


# 19.3 -----------------------------------------------------------------------------------------------
def check_decay_steps(answer: int | None) -> Verdict:
    """With A = -1 and a constant Δ = 0.05 (and no new input), after how many steps has the state fallen below
    1% of its value?"""
    steps = 400
    zeros, ones = torch.zeros(1, steps, 1, dtype=torch.float64), torch.ones(1, steps, 1, dtype=torch.float64)
    # one channel, state size 1, C = 1: y_t is the state after t steps of lmkit's scan, starting from h_0 = 1
    y, _ = selective_scan(zeros, 0.05 * ones, -torch.ones(1, 1, dtype=torch.float64), zeros, ones,
                          h0=torch.ones(1, 1, 1, dtype=torch.float64), method="sequential")
    expected = int((y[0, :, 0] < 0.01).nonzero()[0]) + 1
    return check_number(answer, expected, "steps until exp(ΔA)^k < 0.01")


def solution_decay_steps() -> int:
    # exp(Δ·A)^k = exp(-0.05 k) < 0.01  ⇔  k > ln(100) / 0.05 = 92.1
    return math.floor(math.log(100) / 0.05) + 1


# 19.4 -----------------------------------------------------------------------------------------------
def check_ssm_step(answer: Callable | None) -> Verdict:
    """``step(h, x, delta, A, B, C) -> (h_new, y)``: one token of a selective SSM for one channel group:
    ``h`` ``(E, N)``, ``x`` and ``delta`` ``(E,)``, ``A`` ``(E, N)``, ``B`` and ``C`` ``(N,)``; Mamba's
    discretisation (``Ā = exp(ΔA)``, ``B̄ = ΔB``), ``y = C·h_new`` ``(E,)``."""
    g = torch.Generator().manual_seed(19)
    cases = []
    for E, N in ((3, 4), (1, 1), (5, 2)):
        h = torch.randn(E, N, generator=g, dtype=torch.float64)
        x, delta = torch.randn(E, generator=g, dtype=torch.float64), torch.rand(E, generator=g, dtype=torch.float64)
        A = -torch.rand(E, N, generator=g, dtype=torch.float64)
        B, C = torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)
        y, h_new = selective_scan(x[None, None], delta[None, None], A, B[None, None], C[None, None], h0=h[None],
                                  method="sequential")
        cases.append(((h, x, delta, A, B, C), (h_new[0], y[0, 0])))

    def same(got, expected) -> bool:
        if not (isinstance(got, tuple) and len(got) == 2):
            return False
        pairs = zip(got, expected, strict=True)
        return all(torch.allclose(torch.as_tensor(a, dtype=torch.float64), b) for a, b in pairs)

    return check_function(answer, cases, "step", same)


def solution_ssm_step(h, x, delta, A, B, C):
    h_new = torch.exp(delta[:, None] * A) * h + (delta * x)[:, None] * B[None, :]
    return h_new, h_new @ C

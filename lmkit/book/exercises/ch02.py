"""Exercises of chapter 02 (embeddings and positions). Expected answers come from :mod:`lmkit.transformer.positions`
and the book's SmolLM2 GGUF file at call time."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number, smollm2_reader
from lmkit.transformer import positions


def _numel(t) -> int:
    return int(np.prod([int(n) for n in t.shape]))


# 2.1 ------------------------------------------------------------------------------------------------
def check_tied_share(answer: float | None) -> Verdict:
    """The fraction of SmolLM2's parameters held by its (tied) token embedding, counted from the GGUF file."""
    tensors = smollm2_reader().tensors
    emb = next(_numel(t) for t in tensors if t.name == "token_embd.weight")
    return check_number(answer, emb / sum(_numel(t) for t in tensors), "share of the embedding", rel_tol=1e-3)


def solution_tied_share() -> float:
    tensors = smollm2_reader().tensors
    sizes = {t.name: int(np.prod([int(n) for n in t.shape])) for t in tensors}
    return sizes["token_embd.weight"] / sum(sizes.values())


# 2.2 ------------------------------------------------------------------------------------------------
def check_sinusoidal_entry(answer: float | None) -> Verdict:
    """The sinusoidal table's entry at position 3, channel 5, for width 16 (base 10000)."""
    return check_number(answer, positions.sinusoidal_table(4, 16)[3, 5].item(), "PE[3, 5]", rel_tol=1e-5)


def solution_sinusoidal_entry() -> float:
    p, channel, C = 3, 5, 16
    i = channel // 2  # channel 5 = 2i + 1 with i = 2: a cosine
    return math.cos(p / 10000 ** (2 * i / C))


# 2.3 ------------------------------------------------------------------------------------------------
def check_rope_interleaved(answer: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None) -> Verdict:
    """A function ``rope(x, pos, base)`` rotating adjacent channel pairs (0,1), (2,3)… of ``x`` ``(T, D)``,
    the pair i of the row at position ``pos[t]`` by the angle ``pos[t] * base^(-2i/D)``."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for T, D, base in ((3, 8, 10000.0), (5, 16, 100000.0)):
        x, pos = torch.randn(T, D, generator=g), torch.randint(0, 50, (T,), generator=g)
        cos, sin = positions.rope_angles(pos[None], positions.rope_inv_freq(D, base))
        expected = positions.apply_rope(x[None, None], cos, sin, "interleaved")[0, 0]
        cases.append(((x, pos, base), expected))
    return check_function(answer, cases, "your rope",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-4))


def solution_rope_interleaved(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    angle = (pos[:, None].double() * theta).float()  # (T, D/2)
    a, b = x[:, 0::2], x[:, 1::2]  # the two members of each pair
    out = torch.empty_like(x)
    out[:, 0::2] = a * angle.cos() - b * angle.sin()
    out[:, 1::2] = a * angle.sin() + b * angle.cos()
    return out


# 2.4 ------------------------------------------------------------------------------------------------
def check_ntk_base(answer: float | None) -> Verdict:
    """The RoPE base NTK-aware scaling uses for head size 64, base 10000 and stretch factor 4."""
    inv_freq = positions.rope_inv_freq(64, 10000.0, "ntk", 4.0).double()
    expected = (1 / inv_freq[1]).item() ** (64 / 2)  # theta_1 = base^(-2/64)
    return check_number(answer, expected, "the NTK-aware base", rel_tol=1e-4)


def solution_ntk_base() -> float:
    d, base, factor = 64, 10000.0, 4.0
    return base * factor ** (d / (d - 2))


# 2.5 ------------------------------------------------------------------------------------------------
def check_alibi_slope(answer: float | None) -> Verdict:
    """ALiBi's slope for head 3 (counting from 0) of 8 heads."""
    return check_number(answer, positions.alibi_slopes(8)[3].item(), "slope of head 3", rel_tol=1e-6)


def solution_alibi_slope() -> float:
    h, H = 3, 8
    return 2 ** (-8 * (h + 1) / H)  # slopes 2^(-8/H), 2^(-16/H), ... for heads 0, 1, ...

"""Exercises of chapter 01 (architecture). Expected answers come from :mod:`lmkit.transformer` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.quant.formats import FP16
from lmkit.transformer import masks
from lmkit.transformer.model import EncoderDecoder, Transformer, TransformerConfig


# 1.1 ------------------------------------------------------------------------------------------------
def check_causal_pairs(answer: int | None) -> Verdict:
    """Allowed (query, key) pairs of a causal mask over 10 tokens."""
    return check_number(answer, int(masks.causal_mask(10).sum()), "allowed pairs")


def solution_causal_pairs() -> int:
    n = 10
    return n * (n + 1) // 2  # query i sees keys 0..i: 1 + 2 + ... + n


# 1.2 ------------------------------------------------------------------------------------------------
def check_prefix_pairs(answer: int | None) -> Verdict:
    """Allowed pairs of a prefix-LM mask over 10 tokens with a prefix of 4."""
    return check_number(answer, int(masks.prefix_lm_mask(10, 4).sum()), "allowed pairs")


def solution_prefix_pairs() -> int:
    n, p = 10, 4
    prefix_rows = p * p  # the prefix sees itself fully
    target_rows = sum(i + 1 for i in range(p, n))  # target i sees everything up to i
    return prefix_rows + target_rows


# 1.3 ------------------------------------------------------------------------------------------------
def check_prefix_mask(answer: Callable[[int, int], torch.Tensor] | None) -> Verdict:
    """A function ``prefix_mask(n, p)`` returning the boolean (n, n) prefix-LM mask."""
    cases = [((n, p), masks.prefix_lm_mask(n, p)) for n, p in ((5, 0), (6, 2), (7, 7), (1, 1))]
    return check_function(answer, cases, "your prefix_mask",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.equal(got.bool(), exp))


def solution_prefix_mask(n: int, p: int) -> torch.Tensor:
    mask = torch.ones(n, n, dtype=torch.bool).tril()  # causal ...
    mask[:, :p] = True  # ... plus every query sees the whole prefix
    return mask


# 1.4 ------------------------------------------------------------------------------------------------
def check_fp16_adders(answer: int | None) -> Verdict:
    """The largest number of ``-10000`` mask adders that can be summed in float16 without overflowing."""
    k = 0
    while torch.tensor(-10000.0 * (k + 1), dtype=torch.float16).isfinite() and 10000.0 * (k + 1) <= FP16.max:
        k += 1
    return check_number(answer, k, "number of adders")


def solution_fp16_adders() -> int:
    return int(65504 // 10000)  # float16's largest value is 65504


# 1.5 ------------------------------------------------------------------------------------------------
CFG = TransformerConfig(vocab_size=1000, d_model=64, n_layers=2, n_heads=4, d_ff=256)


def _n(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_encdec_ratio(answer: float | None) -> Verdict:
    """Parameters of an encoder–decoder with L layers on each side, divided by those of a decoder-only model with
    L layers (``CFG``: vocabulary 1000, width 64, L = 2, 4 heads, d_ff 256)."""
    return check_number(answer, _n(EncoderDecoder(CFG)) / _n(Transformer(CFG)), "parameter ratio", rel_tol=1e-4)


def solution_encdec_ratio() -> float:
    return _n(EncoderDecoder(CFG)) / _n(Transformer(CFG))

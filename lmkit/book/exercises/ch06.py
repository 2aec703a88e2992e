"""Exercises of chapter 06 (decoding). Expected answers come from :mod:`lmkit.decoding.processors` at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number, check_tensor
from lmkit.decoding.processors import RepetitionPenalty, Temperature, TopK, TopP

LOGITS = torch.tensor([[3.0, 2.0, 1.0, 0.5, 0.0, -1.0]])
NO_INPUT = torch.zeros(1, 0, dtype=torch.long)


# 6.1 ------------------------------------------------------------------------------------------------
def check_tempered_top_prob(answer: float | None) -> Verdict:
    """The probability of the most likely token of ``LOGITS`` at temperature 0.5."""
    p = Temperature(0.5)(NO_INPUT, LOGITS.clone()).softmax(-1)
    return check_number(answer, p.max().item(), "top probability at T = 0.5", rel_tol=1e-5)


def solution_tempered_top_prob() -> float:
    return torch.softmax(LOGITS[0] / 0.5, -1).max().item()


# 6.2 ------------------------------------------------------------------------------------------------
def check_nucleus_size(answer: int | None) -> Verdict:
    """How many tokens of ``LOGITS`` (at T = 1) top-p keeps with p = 0.9."""
    kept = (TopP(0.9)(NO_INPUT, LOGITS.clone()) > -1e30).sum().item()
    return check_number(answer, kept, "tokens in the nucleus")


def solution_nucleus_size() -> int:
    p = torch.softmax(LOGITS[0], -1).sort(descending=True).values
    before = p.cumsum(0) - p  # probability mass of the tokens ranked above each one
    return int((before < 0.9).sum())  # keep a token while the mass above it is still below p


# 6.3 ------------------------------------------------------------------------------------------------
def check_top_k(answer: Callable[[torch.Tensor, int], torch.Tensor] | None) -> Verdict:
    """A function ``top_k(logits, k)`` that sets all but the k largest logits of each row to -inf."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for shape, k in (((1, 10), 3), ((2, 50), 1), ((3, 7), 7)):
        x = torch.randn(*shape, generator=g)
        cases.append(((x.clone(), k), TopK(k)(torch.zeros(shape[0], 0, dtype=torch.long), x.clone())))
    def same(got, exp) -> bool:  # the same tokens kept, with their logits unchanged; removed = -inf (or below -1e30)
        if not (isinstance(got, torch.Tensor) and got.shape == exp.shape):
            return False
        kept_got, kept_exp = got > -1e30, exp > -1e30
        return torch.equal(kept_got, kept_exp) and torch.allclose(got[kept_got], exp[kept_exp])

    return check_function(answer, cases, "your top_k", same)


def solution_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = logits.topk(k, dim=-1).values[..., -1:]  # the k-th largest of each row
    return logits.masked_fill(logits < kth, float("-inf"))


# 6.4 ------------------------------------------------------------------------------------------------
def check_repetition_penalty(answer: list[float] | None) -> Verdict:
    """The two logits [2.0, -1.0] of tokens already in the text after a repetition penalty of 1.3."""
    scores = torch.tensor([[2.0, -1.0, 0.5]])
    expected = RepetitionPenalty(1.3)(torch.tensor([[0, 1]]), scores.clone())[0, :2]
    return check_tensor(None if answer is None else torch.as_tensor(answer, dtype=torch.float32), expected,
                        "the penalised logits", atol=1e-6)


def solution_repetition_penalty() -> list[float]:
    theta = 1.3
    return [2.0 / theta, -1.0 * theta]  # positive logits are divided, negative ones multiplied: both become less likely

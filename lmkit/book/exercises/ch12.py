"""Exercises of chapter 12 (pre-training objectives). Expected answers come from :mod:`lmkit.training.objectives`
at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.training import objectives as obj


# 12.1 -----------------------------------------------------------------------------------------------
def check_mask_tokens(answer: float | None) -> Verdict:
    """The expected number of ``[MASK]`` tokens BERT's corruption puts into a batch of 400 × 128 tokens (to 3 %:
    measure it with ``bert_mlm_mask`` or derive it from the 15 % and 80 %). The check averages 8 seeded runs."""
    ids = torch.randint(5, 1000, (400, 128), generator=torch.Generator().manual_seed(0))
    counts = []
    for seed in range(8):
        inputs, _ = obj.bert_mlm_mask(ids, mask_id=0, vocab_size=1000, generator=torch.Generator().manual_seed(seed))
        counts.append((inputs == 0).sum().item())
    return check_number(answer, sum(counts) / len(counts), "number of [MASK] tokens", rel_tol=0.03)


def solution_mask_tokens() -> float:
    return 400 * 128 * 0.15 * 0.8  # selected with p = 0.15, of which 80 % become [MASK]


# 12.2 -----------------------------------------------------------------------------------------------
def check_replace_target_length(answer: int | None) -> Verdict:
    """The target length of T5's replace-spans style for a 512-token sequence, rate 0.15, mean span 3."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 1000, (512,), generator=g)
    ex = obj.t5_denoise(tokens, "replace_spans", 0.15, 3.0, sentinel_ids=list(range(2000, 2100)), generator=g)
    return check_number(answer, len(ex.targets), "target tokens")


def solution_replace_target_length() -> int:
    n_noise, n_spans = obj.span_counts(512, 0.15, 3.0)  # round(0.15 * 512) noise tokens in round(n / 3) spans
    return n_noise + n_spans  # each span: its sentinel, then its tokens


# 12.3 -----------------------------------------------------------------------------------------------
def check_inverse_sigmoid(answer: float | None) -> Verdict:
    """Scheduled sampling's probability of the gold token at step 1000, inverse-sigmoid schedule with k = 250."""
    expected = obj.teacher_forcing_probability(1000, schedule="inverse_sigmoid", k=250.0)
    return check_number(answer, expected, "epsilon at step 1000", rel_tol=1e-6)


def solution_inverse_sigmoid() -> float:
    import math

    k, i = 250.0, 1000
    return k / (k + math.exp(i / k))


# 12.4 -----------------------------------------------------------------------------------------------
def check_next_token_pairs(answer: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None) -> Verdict:
    """A function ``pairs(ids)`` returning (inputs, targets) for next-token prediction of a (B, T) batch."""
    g = torch.Generator().manual_seed(0)
    cases = [((ids,), obj.next_token_pairs(ids)) for ids in (torch.randint(0, 50, (2, 6), generator=g),
                                                                torch.randint(0, 50, (1, 2), generator=g))]

    def same(got, exp) -> bool:
        return (isinstance(got, tuple) and len(got) == 2
                and all(isinstance(a, torch.Tensor) and torch.equal(a, b) for a, b in zip(got, exp, strict=True)))

    return check_function(answer, cases, "your pairs", same)


def solution_next_token_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ids[..., :-1], ids[..., 1:]  # position t reads tokens <= t and predicts token t + 1

"""Exercises of chapter 13 (training recipe). Expected answers come from :mod:`lmkit.training` and PyTorch's AdamW
at call time."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.training import objectives
from lmkit.training import recipe as training

PEAK, WARMUP, TOTAL = 3e-4, 2000, 250_000  # LLaMA-7B's schedule (Touvron et al., 2023)


# 13.1 -----------------------------------------------------------------------------------------------
def check_warmup_lr(answer: float | None) -> Verdict:
    """The learning rate at step 1000 of LLaMA-7B's schedule (peak 3e-4, 2000 warmup steps, 250k steps)."""
    return check_number(answer, training.lr_at(1000, PEAK, WARMUP, TOTAL), "learning rate at step 1000")


def solution_warmup_lr() -> float:
    return 3e-4 * 1000 / 2000  # linear warmup from 0


# 13.2 -----------------------------------------------------------------------------------------------
def check_midway_lr(answer: float | None) -> Verdict:
    """The learning rate half-way through the cosine part of the same schedule (step 2000 + 124,000)."""
    step = WARMUP + (TOTAL - WARMUP) // 2
    return check_number(answer, training.lr_at(step, PEAK, WARMUP, TOTAL), "learning rate half-way", rel_tol=1e-6)


def solution_midway_lr() -> float:
    peak, floor = 3e-4, 0.1 * 3e-4
    return floor + (peak - floor) * 0.5 * (1 + 0)  # cos(pi / 2) = 0: the middle of the two


# 13.3 -----------------------------------------------------------------------------------------------
def check_uniform_perplexity(answer: float | None) -> Verdict:
    """The perplexity of a model that gives each of 104 characters the same probability."""
    V, T = 104, 50
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(0))
    loss = objectives.causal_lm_loss(torch.zeros(1, T, V), ids)
    return check_number(answer, loss.exp().item(), "perplexity of the uniform model", rel_tol=1e-5)


def solution_uniform_perplexity() -> float:
    return 104.0  # exp(-log(1/104)): perplexity is the effective number of equally likely choices


# 13.4 -----------------------------------------------------------------------------------------------
def check_clip(answer: Callable[[list[torch.Tensor], float], list[torch.Tensor]] | None) -> Verdict:
    """A function ``clip(grads, max_norm)`` returning the gradients scaled by min(1, max_norm / global norm)."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for scale, max_norm in ((10.0, 1.0), (0.01, 1.0), (3.0, 0.5)):
        grads = [torch.randn(4, 3, generator=g) * scale, torch.randn(5, generator=g) * scale]
        params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
        for p, x in zip(params, grads, strict=True):
            p.grad = x.clone()
        training.clip_grad_norm(params, max_norm)
        cases.append((([x.clone() for x in grads], max_norm), [p.grad for p in params]))

    def same(got, exp) -> bool:
        return (isinstance(got, list | tuple) and len(got) == len(exp)
                and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, exp, strict=True)))

    return check_function(answer, cases, "your clip", same)


def solution_clip(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    total = torch.sqrt(sum((x.float() ** 2).sum() for x in grads))  # the norm of all gradients joined
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return [x * scale for x in grads]


# 13.5 -----------------------------------------------------------------------------------------------
def check_decay_left(answer: float | None) -> Verdict:
    """The fraction of a weight that gets no gradient left after 500 AdamW steps at lr 1e-2, weight decay 0.1."""
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.AdamW([w], lr=1e-2, weight_decay=0.1)
    for _ in range(500):
        w.grad = torch.zeros(1)
        opt.step()
    return check_number(answer, w.item(), "fraction left", rel_tol=1e-4)


def solution_decay_left() -> float:
    return (1 - 1e-2 * 0.1) ** 500  # decoupled decay: w <- w (1 - lr * wd) each step

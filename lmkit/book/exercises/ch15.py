"""Exercises of chapter 15 (the papers' timeline). Expected answers come from :mod:`lmkit.transformer.counting` at
call time, from the papers' published configurations."""

from __future__ import annotations

from lmkit.book.exercises.framework import Verdict, check_number
from lmkit.transformer import counting


def _count(name: str) -> dict[str, int]:
    return counting.parameter_count(counting.PUBLISHED[name])


# 15.1 -----------------------------------------------------------------------------------------------
def check_gpt3_ffn_share(answer: float | None) -> Verdict:
    """The fraction of GPT-3 175B's parameters that sit in its FFNs (a number between 0 and 1)."""
    p = _count("gpt3-175b")
    if answer is not None and isinstance(answer, int | float) and 1 < answer <= 100:
        return Verdict(False, f"{answer:g} looks like a percentage: give the fraction, between 0 and 1")
    return check_number(answer, p["ffn"] / p["total"], "FFN share of GPT-3 175B", rel_tol=1e-3)


def solution_gpt3_ffn_share() -> float:
    L, d, f = 96, 12288, 4 * 12288
    ffn = L * (2 * d * f + f + d)  # two matrices with biases per layer
    return ffn / counting.parameter_count(counting.PUBLISHED["gpt3-175b"])["total"]


# 15.2 -----------------------------------------------------------------------------------------------
def check_gpt2_non_embedding(answer: int | None) -> Verdict:
    """GPT-2 small's parameters without its token and position embeddings (Kaplan et al.'s "non-embedding" N)."""
    return check_number(answer, _count("gpt2-small")["non_embedding"], "non-embedding parameters of GPT-2 small")


def solution_gpt2_non_embedding() -> int:
    L, d, f = 12, 768, 3072
    attention = 4 * d * d + 3 * d + d  # Q, K, V, output projections with biases
    ffn = 2 * d * f + f + d
    norms = 2 * 2 * d  # two LayerNorms (gain and shift) per layer
    return L * (attention + ffn + norms) + 2 * d  # + the final LayerNorm


# 15.3 -----------------------------------------------------------------------------------------------
def check_t5_11b_ffn(answer: int | None) -> Verdict:
    """Parameters in T5-11B's FFNs (24 encoder + 24 decoder layers, d_model 1024, d_ff 65,536, no biases)."""
    return check_number(answer, _count("t5-11b")["ffn"], "FFN parameters of T5-11B")


def solution_t5_11b_ffn() -> int:
    layers, d, f = 24 + 24, 1024, 65536
    return layers * 2 * d * f  # two bias-free matrices per layer, in both stacks


# 15.4 -----------------------------------------------------------------------------------------------
def check_gpt3_training_flops(answer: float | None) -> Verdict:
    """GPT-3 175B's training compute on its 300B tokens, estimated as 6·N·D (to 5 %: the estimate neglects
    attention, which :func:`lmkit.transformer.counting.training_flops` counts)."""
    expected = counting.training_flops(counting.PUBLISHED["gpt3-175b"], 300e9)
    return check_number(answer, expected, "training FLOPs of GPT-3 175B", rel_tol=0.05)


def solution_gpt3_training_flops() -> float:
    n = counting.parameter_count(counting.PUBLISHED["gpt3-175b"])["total"]
    return 6 * n * 300e9

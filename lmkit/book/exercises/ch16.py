"""Exercises of chapter 16 (perplexity and knowledge). Expected answers come from SmolLM2's tokenizer, the book's
standard evaluation slice and :func:`lmkit.training.evaluation.bits_per_byte` at call time (no model is loaded)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

from lmkit.book.exercises.framework import Verdict, check_function, check_number
from lmkit.training.evaluation import bits_per_byte, evaluation_tokens


@lru_cache(maxsize=1)
def standard_slice() -> tuple[int, int, int]:
    """``(vocab_size, predicted_tokens, utf8_bytes)`` of SmolLM2's tokenizer on the book's standard evaluation slice
    (the first 2048 held-out tokens; the first token is not predicted)."""
    from lmkit.tokenizers import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    ids = evaluation_tokens(tok.encode)
    return tok.vocab_size, len(ids) - 1, len(tok.decode(ids.tolist()).encode("utf-8"))


# 16.1 -----------------------------------------------------------------------------------------------
def check_uniform_perplexity(answer: float | None) -> Verdict:
    """Perplexity of a model that gives every one of SmolLM2's tokens the same probability."""
    vocab, _, _ = standard_slice()
    return check_number(answer, math.exp(math.log(vocab)), "perplexity of the uniform model", rel_tol=1e-6)


def solution_uniform_perplexity() -> float:
    vocab = standard_slice()[0]  # 49,152
    nll = -math.log(1 / vocab)  # the same cross-entropy for every token
    return math.exp(nll)


# 16.2 -----------------------------------------------------------------------------------------------
def check_uniform_bits_per_byte(answer: float | None) -> Verdict:
    """Bits per byte of the uniform model on the standard slice (see :func:`standard_slice`)."""
    vocab, n_pred, n_bytes = standard_slice()
    return check_number(answer, bits_per_byte(n_pred * math.log(vocab), n_bytes), "bits per byte of the uniform model",
                        rel_tol=1e-6)


def solution_uniform_bits_per_byte() -> float:
    vocab, n_pred, n_bytes = standard_slice()
    return n_pred * math.log2(vocab) / n_bytes  # log2(V) bits for each predicted token, spread over the bytes


# 16.3 -----------------------------------------------------------------------------------------------
def check_ppl_to_bpb(answer: Callable[[float, int, int], float] | None) -> Verdict:
    """A function ``ppl_to_bpb(ppl, n_pred, n_bytes)``: the bits per byte of a perplexity ``ppl`` measured over
    ``n_pred`` predicted tokens that cover ``n_bytes`` bytes."""
    cases = [((ppl, n_pred, n_bytes), bits_per_byte(n_pred * math.log(ppl), n_bytes))
             for ppl, n_pred, n_bytes in ((6.69, 2047, 7716), (1.0, 10, 3), (49152.0, 100, 100), (2.5, 512, 1900))]
    return check_function(answer, cases, "your ppl_to_bpb",
                          lambda got, exp: isinstance(got, int | float) and math.isclose(got, exp, rel_tol=1e-6,
                                                                                         abs_tol=1e-12))


def solution_ppl_to_bpb(ppl: float, n_pred: int, n_bytes: int) -> float:
    return n_pred / n_bytes * math.log2(ppl)  # total bits = n_pred · log2(ppl)

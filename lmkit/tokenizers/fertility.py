"""Fertility: how many tokens a tokenizer spends on a text — the cost of a language it saw little of.

A vocabulary learned mostly from English splits English words into one or two tokens and other scripts into many
(down to single bytes for a byte-level BPE). More tokens per word means a shorter effective context, more compute per
sentence, and a model that must assemble words from fragments. mT5 (Xue et al., 2021) answers with a 250,000-entry
SentencePiece vocabulary sampled across 101 languages.

>>> fertility(lambda s: list(s.encode()), "héllo wörld")["bytes_per_token"]
1.0
"""

from __future__ import annotations

from collections.abc import Callable


def fertility(encode: Callable[[str], list[int]], text: str) -> dict[str, float]:
    """``tokens``, ``tokens_per_word`` (words split on whitespace), ``bytes_per_token`` (UTF-8) and
    ``chars_per_token`` of ``encode(text)``. Scripts written without spaces (Chinese, Japanese, Thai) have one
    "word" per run of text, so compare them by bytes or characters per token."""
    if not text.strip():
        raise ValueError("text must contain something other than whitespace")
    n = len(encode(text))
    if n == 0:
        raise ValueError("the tokenizer produced no tokens for this text")
    return {
        "tokens": float(n),
        "tokens_per_word": n / len(text.split()),
        "bytes_per_token": len(text.encode("utf-8")) / n,
        "chars_per_token": len(text) / n,
    }

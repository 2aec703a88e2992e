"""Pre-tokenization: cut text into pieces before any subword algorithm runs, and GPT-2's byte alphabet.

A BPE merge never crosses a piece boundary, so the regex decides, for example, that " the" (with
its leading space) can become one token while "the." cannot. The patterns below are the published
ones (GPT-2's ``encoder.py``, tiktoken's ``cl100k_base`` for GPT-4, llama.cpp's ``smollm`` pre-type).
"""

from __future__ import annotations

from functools import cache, lru_cache

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's split: contractions, letters with one optional leading space, numbers, other symbols, whitespace."""

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
"""GPT-4's (``cl100k_base``) split: case-insensitive contractions, numbers in groups of at most three digits."""

SMOLLM_PATTERNS = (r"\p{N}", GPT2_PATTERN)
"""SmolLM2 (llama.cpp pre-type ``smollm``, HF ``Digits(individual_digits=True)`` then ``ByteLevel``): first
isolate every digit, then apply GPT-2's pattern to each remaining stretch separately."""

PATTERNS: dict[str, tuple[str, ...]] = {"gpt2": (GPT2_PATTERN,), "gpt4": (GPT4_PATTERN,), "smollm": SMOLLM_PATTERNS}


@cache
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


def split_pieces(text: str, patterns: tuple[str, ...]) -> list[str]:
    """Apply the split ``patterns`` one after the other; each later pattern cuts the pieces of the earlier ones.

    A pattern keeps what it matches as pieces and also keeps the unmatched stretches between
    matches (HF's ``Split(behavior="isolated")``), so no character is ever dropped:
    ``"".join(split_pieces(t, p)) == t``.
    """
    pieces = [text]
    for pattern in patterns:
        compiled = _compiled(pattern)
        out: list[str] = []
        for piece in pieces:
            start = 0
            for match in compiled.finditer(piece):
                if match.start() > start:
                    out.append(piece[start : match.start()])
                if match.end() > match.start():
                    out.append(match.group())
                start = match.end()
            if start < len(piece):
                out.append(piece[start:])
        pieces = out
    return pieces


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable Unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 (control bytes, space, ...) are shifted
    to code points 256 and up, so a space becomes ``"Ġ"`` (U+0120) and a newline ``"Ċ"``. Vocabulary
    files store tokens in this alphabet so that every byte string is a printable, whitespace-free word.
    """
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of :func:`bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}

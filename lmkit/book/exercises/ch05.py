"""Exercises of chapter 05 (tokenizers). Expected answers come from :mod:`lmkit.tokenizers` at call time."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from lmkit import data
from lmkit.book.exercises.framework import Verdict, check_function, check_number, not_answered

CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
WORD = "unbelievably"


@lru_cache(maxsize=1)
def _texts() -> tuple[str, str]:
    return data.split_text(data.pydoc_text())


# 5.1 ------------------------------------------------------------------------------------------------
def check_smollm2_count(answer: int | None) -> Verdict:
    """How many tokens SmolLM2's tokenizer makes of ``CHAT`` (the chat-formatted question, special tokens included)."""
    if answer is None:
        return not_answered("a number of tokens")
    from lmkit.tokenizers import load_smollm2_tokenizer

    return check_number(answer, len(load_smollm2_tokenizer().encode(CHAT)), "tokens")


def solution_smollm2_count() -> int:
    from lmkit.tokenizers import load_smollm2_tokenizer

    return len(load_smollm2_tokenizer().encode(CHAT))


# 5.2 ------------------------------------------------------------------------------------------------
def check_unknown_rate(answer: float | None) -> Verdict:
    """The share of held-out words that a word tokenizer with a vocabulary of 1000 (trained on the book's
    training text) maps to ``<unk>`` (to 1e-6)."""
    if answer is None:
        return not_answered("a fraction between 0 and 1")
    from lmkit.tokenizers.word import WordTokenizer

    train, held_out = _texts()
    return check_number(answer, WordTokenizer.train(train, 1000).unknown_rate(held_out), "unknown rate")


def solution_unknown_rate() -> float:
    from lmkit.tokenizers.word import WordTokenizer

    train, held_out = data.split_text(data.pydoc_text())
    return WordTokenizer.train(train, 1000).unknown_rate(held_out)


# 5.3 ------------------------------------------------------------------------------------------------
def check_wordpiece_pieces(answer: list[str] | None) -> Verdict:
    """The WordPiece pieces MiniLM's tokenizer cuts ``"unbelievably"`` into (without [CLS]/[SEP])."""
    if answer is None:
        return not_answered('a list of strings, e.g. ["un", "##believ", ...]')
    from lmkit.tokenizers import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    expected = [tok.id_to_token(i) for i in tok.encode(WORD, add_special_tokens=False)]
    if list(answer) == expected:
        return Verdict(True, f"{expected}")
    if "".join(p.removeprefix("##") for p in answer) != WORD:
        return Verdict(False, "the pieces (without their ## marks) must spell the word")
    return Verdict(False, f"{len(answer)} pieces; WordPiece takes the longest vocabulary entry first — "
                          "look the candidates up with tok.token_to_id or print tok.encode")


def solution_wordpiece_pieces() -> list[str]:
    from lmkit.tokenizers import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    return [tok.id_to_token(i) for i in tok.encode(WORD, add_special_tokens=False)]


# 5.4 ------------------------------------------------------------------------------------------------
def check_merge(answer: Callable[[list[int], tuple[int, int], int], list[int]] | None) -> Verdict:
    """A function ``merge(ids, pair, new_id)`` replacing each occurrence of ``pair``, left to right and without
    overlaps, by ``new_id`` — one step of BPE training and of BPE encoding."""
    t, h, e, space, m = b"the m"
    cases = [(([1, 2, 3, 1, 2], (1, 2), 9), [9, 3, 9]),
             (([5, 5, 5], (5, 5), 7), [7, 5]),  # left to right: the first two 5s merge, the third is left alone
             (([4], (4, 4), 8), [4]),
             ((list(b"the theme"), (t, h), 256), [256, e, space, 256, e, m, e])]
    return check_function(answer, cases, "your merge", lambda got, exp: list(got) == exp)


def solution_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if ids[i : i + 2] == list(pair):  # a match: emit the new symbol and skip both
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out

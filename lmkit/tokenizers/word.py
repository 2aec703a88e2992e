"""Word-level tokenizer: one id per word or punctuation mark.

Sequences are short, but the vocabulary must stop somewhere: every word outside it (a rare name, a
typo, a new inflection such as "tokenizers" when only "tokenizer" was kept) becomes ``<unk>`` and its
meaning is gone. This *out-of-vocabulary problem* is what subword tokenizers (BPE, WordPiece,
Unigram) solve: a rare word is spelled with several known pieces instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import regex

from lmkit.tokenizers.base import VocabListTokenizer, check_text, check_vocab_size

UNK = "<unk>"
WORD_PATTERN = regex.compile(r"\w+|[^\w\s]+")
"""A word is a run of letters/digits/underscore or a run of other non-space characters (HF's ``Whitespace``)."""


def split_words(text: str) -> list[str]:
    """Words and punctuation marks of ``text``; whitespace is dropped (so decoding cannot restore it)."""
    return WORD_PATTERN.findall(text)


class WordTokenizer(VocabListTokenizer):
    """Maps each word to an id; ``vocab[0]`` is ``<unk>``."""

    def __init__(self, vocab: Sequence[str]) -> None:
        if not vocab or vocab[0] != UNK:
            raise ValueError(f"a WordTokenizer vocabulary starts with {UNK!r}")
        self.set_vocab(vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> WordTokenizer:
        """Keep the ``vocab_size - 1`` most frequent words of ``text`` (ties: alphabetical)."""
        check_vocab_size(vocab_size, 2, "minimum of <unk> plus one word")
        counts = Counter(split_words(check_text(text)))
        return cls([UNK, *sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - 1]])

    def encode(self, text: str) -> list[int]:
        return [self._index.get(w, 0) for w in split_words(check_text(text))]

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by single spaces: the original spacing is lost, and so is every ``<unk>`` word."""
        return " ".join(self.id_to_token(i) for i in ids)

    def unknown_rate(self, text: str) -> float:
        """Fraction of the words of ``text`` that become ``<unk>``."""
        words = split_words(text)
        return sum(w not in self._index for w in words) / max(len(words), 1)

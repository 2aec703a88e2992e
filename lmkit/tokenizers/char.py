"""Character-level tokenizer: one id per Unicode character.

The vocabulary is tiny and sequences are long. Any character never seen in training has no id and
becomes ``<unk>``: with a vocabulary built from English text, "日本" or "😀" are lost. Byte-level
BPE removes that problem by starting from the 256 byte values instead of characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from lmkit.tokenizers.base import VocabListTokenizer, check_text, check_vocab_size

UNK = "<unk>"


class CharTokenizer(VocabListTokenizer):
    """Maps each character to an id; ``vocab[0]`` is ``<unk>`` for characters outside the vocabulary."""

    def __init__(self, vocab: Sequence[str]) -> None:
        if not vocab or vocab[0] != UNK:
            raise ValueError(f"a CharTokenizer vocabulary starts with {UNK!r}")
        if any(len(c) != 1 for c in vocab[1:]):
            raise ValueError("a CharTokenizer vocabulary holds single characters after <unk>")
        self.set_vocab(vocab)

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> CharTokenizer:
        """Keep the ``vocab_size - 1`` most frequent characters of ``text`` (all of them when ``None``)."""
        counts = Counter(check_text(text))
        if vocab_size is None:
            vocab_size = len(counts) + 1
        check_vocab_size(vocab_size, 2, "minimum of <unk> plus one character")
        kept = sorted(counts, key=lambda c: (-counts[c], c))[: vocab_size - 1]
        return cls([UNK, *sorted(kept)])

    def encode(self, text: str) -> list[int]:
        return [self._index.get(c, 0) for c in check_text(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.id_to_token(i) for i in ids)

    def unknown_rate(self, text: str) -> float:
        """Fraction of the characters of ``text`` that become ``<unk>``."""
        return sum(c not in self._index for c in text) / max(len(text), 1)

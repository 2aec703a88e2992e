"""WordPiece (BERT): BERT's basic text cleanup, greedy longest-match-first encoding, and training.

Encoding one word: take the longest vocabulary entry that starts the word, then the longest entry
``"##..."`` (continuation) that starts the rest, and so on; if some position matches nothing, the
*whole* word becomes ``[UNK]``. Training is BPE's loop (:mod:`lmkit.tokenizers.pair_merges`) with another score:
it merges the pair that increases the likelihood of the training data most, instead of the most frequent pair.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmkit.tokenizers.base import (
    VocabListTokenizer,
    check_special_tokens,
    check_text,
    check_vocab_size,
    split_on_special,
)
from lmkit.tokenizers.pair_merges import PairCounts, learn_merges

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_chinese_char(cp: int) -> bool:
    """CJK ideographs (not Hiragana/Katakana/Hangul): BERT makes each one a word of its own."""
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or c.isspace()


def _is_punctuation(c: str) -> bool:
    """ASCII symbols such as ``$``, ``^`` count as punctuation too, as in BERT."""
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def bert_normalize(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> str:
    """BERT's normalizer: drop control characters, whitespace → space, pad CJK ideographs, strip accents, lowercase.

    ``strip_accents=None`` follows ``lowercase`` (uncased BERT strips accents: "café" → "cafe").
    """
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or (c not in "\t\n\r" and unicodedata.category(c).startswith("C")):
            continue
        if _is_whitespace(c):
            out.append(" ")
        elif _is_chinese_char(cp):
            out.append(f" {c} ")
        else:
            out.append(c)
    text = "".join(out)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    if lowercase:  # character by character, like HF `tokenizers` (so no Greek final-sigma rule)
        text = "".join(c.lower() for c in text)
    return text


def bert_pre_tokenize(text: str) -> list[str]:
    """Split normalized text on whitespace and make every punctuation character a word of its own."""
    words: list[str] = []
    current: list[str] = []
    for c in text:
        if _is_whitespace(c) or _is_punctuation(c):
            if current:
                words.append("".join(current))
                current = []
            if not _is_whitespace(c):
                words.append(c)
        else:
            current.append(c)
    if current:
        words.append("".join(current))
    return words


def _word_alphabet(words: Iterable[str], prefix: str) -> set[str]:
    """Every character as a word start, and as a continuation ``prefix + c`` where it occurs inside a word."""
    alphabet: set[str] = set()
    for w in words:
        alphabet.add(w[0])
        alphabet.update(prefix + c for c in w[1:])
    return alphabet


def _xlogx(c: float) -> float:
    return c * math.log(c) if c > 0 else 0.0


def likelihood_gain(c_ab: int, c_a: int, c_b: int, total: int, same: bool) -> float:
    """Increase of the corpus log-likelihood ``Σ_x c(x) log(c(x) / T)`` under a unigram model of the symbols
    when the ``c_ab`` occurrences of the pair ``(a, b)`` become one new symbol ``ab``.

    ``Σ c log(c/T) = Σ c log c - T log T``, and only ``c(a)``, ``c(b)``, ``c(ab)`` and ``T`` change, so the
    gain is a handful of terms. For small ``c_ab`` it is about ``c_ab · log(c_ab T / (c_a c_b))``: the
    often-quoted ratio ``c_ab / (c_a c_b)`` *weighted by how often the pair occurs*.
    """
    if same:  # (a, a): both halves come out of the same count
        before, after = _xlogx(c_a), _xlogx(max(c_a - 2 * c_ab, 0))
    else:
        before, after = _xlogx(c_a) + _xlogx(c_b), _xlogx(c_a - c_ab) + _xlogx(c_b - c_ab)
    return after + _xlogx(c_ab) - before - (_xlogx(total - c_ab) - _xlogx(total))


def likelihood_score(counts: PairCounts, pair: tuple[str, str]) -> float:
    """WordPiece's score (Schuster & Nakajima): the likelihood gain of merging ``pair``, :func:`likelihood_gain`."""
    a, b = pair
    return likelihood_gain(counts.pairs[pair], counts.symbols[a], counts.symbols[b], counts.total, a == b)


def ratio_score(counts: PairCounts, pair: tuple[str, str]) -> float:
    """The often-quoted WordPiece score ``count(ab) / (count(a) count(b))``, without the weight ``count(ab)``."""
    return counts.pairs[pair] / (counts.symbols[pair[0]] * counts.symbols[pair[1]])


SCORES = {"likelihood": likelihood_score, "ratio": ratio_score}


def train_wordpiece_vocab(
    word_counts: Counter[str],
    vocab_size: int,
    prefix: str = "##",
    criterion: str = "likelihood",
    min_frequency: int = 2,
) -> list[str]:
    """Learn WordPiece entries (without special tokens): BPE's training loop with another score.

    Each word starts as its characters, ``prefix`` marking those inside a word (``"hug"`` → ``h ##u ##g``), and
    merging ``(h, ##u)`` makes ``hu``. ``criterion="likelihood"`` merges the pair whose merge increases the training
    likelihood most (Schuster & Nakajima's rule, :func:`likelihood_score`); ``"ratio"`` uses the bare score
    ``count(ab) / (count(a) count(b))`` (:func:`ratio_score`), which favours pairs of rare symbols and so spends a
    small vocabulary on junk. Only pairs seen at least ``min_frequency`` times compete; ties go to the
    lexicographically smallest pair, so training is deterministic. The loop is
    :func:`lmkit.tokenizers.pair_merges.learn_merges`; unlike BPE's count, these scores change for every pair
    whose symbols' counts change, so the best pair is found by a scan rather than a heap.
    """
    if criterion not in SCORES:
        raise ValueError(f"criterion must be 'likelihood' or 'ratio', got {criterion!r}")
    alphabet = _word_alphabet(word_counts, prefix)
    check_vocab_size(vocab_size, len(alphabet), "character alphabet of the corpus")
    vocab = sorted(alphabet)
    known = set(vocab)
    words = [[w[0]] + [prefix + c for c in w[1:]] for w in word_counts]

    def join(a: str, b: str) -> str:
        merged = a + b[len(prefix) :]
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        return merged

    trainer = learn_merges(words, list(word_counts.values()), join, SCORES[criterion], min_frequency)
    while len(vocab) < vocab_size and next(trainer, None) is not None:
        pass
    return vocab


class WordPiece(VocabListTokenizer):
    """BERT's WordPiece tokenizer.

    Args:
        vocab: the entries, ``vocab[i]`` being id ``i`` (continuations start with ``prefix``).
        lowercase: uncased model (lowercases and strips accents before splitting).
        unk_token, cls_token, sep_token: special entries, which must be in ``vocab``.
        special_tokens: strings matched in raw text before normalization (BERT's ``[CLS]``, ``[MASK]``, ...).
        prefix: continuation marker. max_input_chars_per_word: longer words become ``[UNK]`` directly.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        lowercase: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        special_tokens: Iterable[str] = BERT_SPECIAL_TOKENS,
        prefix: str = "##",
        max_input_chars_per_word: int = 100,
    ) -> None:
        self.set_vocab(vocab)
        special_tokens = check_special_tokens(special_tokens)
        for s in (unk_token, cls_token, sep_token, *special_tokens):
            if s not in self._index:
                raise ValueError(f"special token {s!r} is not in the vocabulary")
        self.lowercase = lowercase
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.special_tokens = {s: self._index[s] for s in special_tokens}
        self.prefix = prefix
        self.max_input_chars_per_word = max_input_chars_per_word

    @classmethod
    def from_vocab_file(cls, path: str | Path, lowercase: bool = True) -> WordPiece:
        """Read a BERT ``vocab.txt`` (UTF-8): one entry per line, the line number is the id."""
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text (byte {err.start} is {err.object[err.start:err.start + 1]!r}):"
                             " a vocab.txt is UTF-8, one token per line; re-encode it") from err
        if lines and lines[-1] == "":
            lines.pop()
        specials = [s for s in BERT_SPECIAL_TOKENS if s in lines]
        return cls(lines, lowercase=lowercase, special_tokens=specials)

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        lowercase: bool = True,
        special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
        criterion: str = "likelihood",
        min_frequency: int = 2,
    ) -> WordPiece:
        """Learn a vocabulary of ``vocab_size`` entries (special tokens first) from ``text``
        (see :func:`train_wordpiece_vocab` for ``criterion`` and ``min_frequency``)."""
        special_tokens = check_special_tokens(special_tokens)
        words = Counter(bert_pre_tokenize(bert_normalize(check_text(text), lowercase)))
        size = vocab_size - len(special_tokens)
        vocab = list(special_tokens) + train_wordpiece_vocab(words, size, "##", criterion, min_frequency)
        return cls(vocab, lowercase=lowercase, special_tokens=special_tokens)

    def _encode_word(self, word: str) -> list[int]:
        """Greedy longest-match-first; the whole word is ``[UNK]`` as soon as one position has no match."""
        if len(word) > self.max_input_chars_per_word:
            return [self._index[self.unk_token]]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self._index:
                    ids.append(self._index[piece])
                    start = end
                    break
            else:
                return [self._index[self.unk_token]]
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of ``text``, wrapped as ``[CLS] ... [SEP]`` when ``add_special_tokens``."""
        check_text(text)
        ids: list[int] = []
        for chunk, is_special in split_on_special(text, set(self.special_tokens)):
            if is_special:
                ids.append(self.special_tokens[chunk])
                continue
            for word in bert_pre_tokenize(bert_normalize(chunk, self.lowercase)):
                ids.extend(self._encode_word(word))
        if add_special_tokens:
            ids = [self._index[self.cls_token], *ids, self._index[self.sep_token]]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Join the pieces: continuations glue to the previous piece, others get a space before them.

        As in HF ``tokenizers``' WordPiece decoder, a piece that is just `` .``, `` ,``, `` ?`` or `` !``
        loses its space. Lowercasing and accent stripping cannot be undone.
        """
        ids = self.check_ids(ids)  # before the special-id test: 2.0 == 2 would pass it
        special = set(self.special_tokens.values())
        tokens = [self.id_to_token(i) for i in ids if not (skip_special_tokens and i in special)]
        pieces = []
        for k, token in enumerate(tokens):
            if token.startswith(self.prefix):
                pieces.append(token[len(self.prefix) :])
            elif k > 0 and token not in {".", ",", "?", "!"}:
                pieces.append(" " + token)
            else:
                pieces.append(token)
        return "".join(pieces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": self.vocab,
            "lowercase": self.lowercase,
            "unk_token": self.unk_token,
            "cls_token": self.cls_token,
            "sep_token": self.sep_token,
            "special_tokens": list(self.special_tokens),
            "prefix": self.prefix,
            "max_input_chars_per_word": self.max_input_chars_per_word,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordPiece:
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"corrupted WordPiece data: {err}") from err

"""The small interface every lmkit tokenizer shares (in the spirit of Karpathy's minbpe).

``train`` builds a vocabulary from text, ``encode`` maps text to ids, ``decode`` maps ids back,
``save``/``load`` write and read one JSON file. Subclasses implement the algorithm; the JSON
wrapper, the special-token splitting and the error messages live here once.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import regex


class Tokenizer(ABC):
    """Abstract tokenizer: text ↔ list of integer ids."""

    @classmethod
    @abstractmethod
    def train(cls, text: str, vocab_size: int, **kwargs: Any) -> Tokenizer:
        """Learn a vocabulary of ``vocab_size`` entries from ``text``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of token ``ids``."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the embedding table of a model using this tokenizer has this many rows)."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """The vocabulary entry (a string as stored in vocabulary files) of id ``i``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the tokenizer, as JSON-serialisable data."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Inverse of :meth:`to_dict`."""

    def tokens(self, text: str) -> list[str]:
        """The vocabulary entries ``text`` is split into (for display)."""
        return [self.id_to_token(i) for i in self.encode(text)]

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to one JSON file."""
        data = {"type": type(self).__name__, **self.to_dict()}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by :meth:`save` (of this same class)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a tokenizer file written by {cls.__name__}.save: {err}") from err
        if not isinstance(data, dict) or data.get("type") != cls.__name__:
            found = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path} holds a {found!r} tokenizer, not a {cls.__name__}")
        data.pop("type")
        return cls.from_dict(data)


class VocabListTokenizer(Tokenizer):
    """A :class:`Tokenizer` whose vocabulary is the list ``self.vocab``: id ``i`` is the entry ``self.vocab[i]``.

    Every lmkit tokenizer is one (char, word, WordPiece, byte-level BPE, Unigram): a subclass calls
    :meth:`set_vocab` in ``__init__`` and gets ``vocab_size``, ``id_to_token``, ``token_to_id`` and
    :meth:`check_ids` — the one place where ids coming back to be decoded are checked. By default the vocabulary is
    all there is to save (``{"vocab": [...]}``); a subclass with more settings overrides :meth:`to_dict` and
    :meth:`from_dict`.
    """

    vocab: list[str]

    def set_vocab(self, vocab: Iterable[str]) -> None:
        """Store the entries (``vocab[i]`` is id ``i``) and their index; an entry listed twice is an error."""
        self.vocab = list(vocab)
        self._index = {t: i for i, t in enumerate(self.vocab)}
        if len(self._index) != len(self.vocab):
            dup = next(t for t, n in Counter(self.vocab).items() if n > 1)
            raise ValueError(f"the vocabulary lists {dup!r} twice")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def check_ids(self, ids: Iterable[int]) -> list[int]:
        """``ids`` as a list, each checked to be an int in ``[0, vocab_size)`` (a negative id would silently index
        from the end of the vocabulary)."""
        ids = list(ids)
        n = len(self.vocab)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
                raise ValueError(f"token id {i!r} is outside [0, {n}): token ids are ints below the vocabulary size")
        return ids

    def id_to_token(self, i: int) -> str:
        return self.vocab[self.check_ids([i])[0]]

    def token_to_id(self, token: str) -> int:
        """Id of a vocabulary entry (as stored: ``"Ġthe"`` in byte-level BPE, ``"##ing"`` in WordPiece)."""
        if token not in self._index:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return self._index[token]

    def to_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        if "vocab" not in data:
            raise ValueError(f"corrupted {cls.__name__} data: no 'vocab'")
        return cls(data["vocab"])  # type: ignore[call-arg]


def check_text(text: Any, what: str = "text") -> str:
    """``text`` if it is a ``str`` of valid Unicode; bytes, other types and lone surrogates are clear errors.

    A lone surrogate (``"\\ud800"``, what a broken UTF-16 decode leaves) is a ``str`` but not text: it has no
    UTF-8 bytes, so a byte-level tokenizer could only fail deep inside, or drop it silently.
    """
    if isinstance(text, bytes | bytearray):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}: decode it first, e.g. data.decode('utf-8')")
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} holds a lone surrogate {text[err.start]!r} at index {err.start}: it is not valid "
                         "Unicode (decode the source with errors='replace' to get U+FFFD instead)") from None
    return text


def check_special_tokens(tokens: Iterable[Any]) -> list[str]:
    """Special tokens as a list of distinct non-empty strings (an empty one would match between every character)."""
    tokens = list(tokens)
    for t in tokens:
        if not isinstance(t, str) or not t:
            raise ValueError(f"special tokens must be non-empty strings, got {t!r}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"a special token is listed twice in {tokens}")
    return tokens


def check_vocab_size(vocab_size: int, minimum: int, what: str) -> None:
    """Raise a clear error when ``vocab_size`` cannot even hold the base alphabet."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the {what} ({minimum} entries)")


def resolve_allowed_special(allowed_special: str | set[str] | frozenset[str], special: dict[str, int]) -> set[str]:
    """Turn ``"all"``, ``"none"`` or a set of special-token strings into the set to recognise in text.

    A name outside the tokenizer's special tokens is an error, not something silently ignored.
    """
    if allowed_special == "all":
        return set(special)
    if allowed_special == "none":
        return set()
    if isinstance(allowed_special, str) or not isinstance(allowed_special, set | frozenset):
        raise TypeError(f"allowed_special must be 'all', 'none' or a set of strings, got {allowed_special!r}")
    unknown = sorted(allowed_special - set(special))
    if unknown:
        known = ", ".join(sorted(special)) or "none"
        raise ValueError(f"unknown special token(s) {unknown}; this tokenizer's special tokens are: {known}")
    return set(allowed_special)


def split_on_special(text: str, allowed: set[str]) -> list[tuple[str, bool]]:
    """Cut ``text`` around occurrences of the ``allowed`` special tokens.

    Returns ``(chunk, is_special)`` pairs in order. Longer special tokens win over their prefixes,
    as in HF ``tokenizers`` and tiktoken.
    """
    if not allowed:
        return [(text, False)] if text else []
    check_special_tokens(allowed)
    pattern = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
    out: list[tuple[str, bool]] = []
    start = 0
    for match in regex.finditer(pattern, text):
        if match.start() > start:
            out.append((text[start : match.start()], False))
        out.append((match.group(), True))
        start = match.end()
    if start < len(text):
        out.append((text[start:], False))
    return out

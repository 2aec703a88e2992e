"""Byte-level BPE (GPT-2, LLaMA-3, SmolLM2): training, encoding, GGUF loading.

Text is first cut into pieces by a regex (:mod:`lmkit.tokenizers.pretokenize`); each piece becomes
its UTF-8 bytes, so any string can be encoded with a base alphabet of only 256 symbols and there is
never an unknown token. Training repeatedly merges the most frequent adjacent pair of symbols into a
new symbol (:func:`lmkit.tokenizers.pair_merges.learn_merges`, with the pair's count as the score); encoding
replays the learned merges, lowest rank (earliest learned) first.

Vocabulary entries are stored, as in GPT-2's files and HF ``tokenizers``, in GPT-2's printable byte
alphabet: ``"Ġthe"`` is the bytes ``b" the"``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmkit.tokenizers.base import (
    VocabListTokenizer,
    check_special_tokens,
    check_text,
    check_vocab_size,
    resolve_allowed_special,
    split_on_special,
)
from lmkit.tokenizers.pair_merges import learn_merges
from lmkit.tokenizers.pretokenize import PATTERNS, bytes_to_unicode, split_pieces, unicode_to_bytes

Pair = tuple[int, int]


def _patterns(pattern: str | Sequence[str]) -> tuple[str, ...]:
    """A named pattern (``"gpt2"``, ``"gpt4"``, ``"smollm"``) or an explicit sequence of regexes."""
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise ValueError(f"unknown pre-tokenizer {pattern!r}; known: {sorted(PATTERNS)} (or pass regexes)")
        return PATTERNS[pattern]
    return tuple(pattern)


class ByteLevelBPE(VocabListTokenizer):
    """Byte-level BPE tokenizer.

    Args:
        vocab: token strings in GPT-2's byte alphabet, ``vocab[i]`` being id ``i``; special tokens are
            stored as their literal text.
        merges: ordered merge rules ``(left, right)``; the first has the highest priority.
        special_tokens: strings (present in ``vocab``) matched before pre-tokenization and encoded as one id.
        pattern: the pre-tokenizer, a name in :data:`~lmkit.tokenizers.pretokenize.PATTERNS` or regexes.
        eos_token: the end-of-sequence special token, if any.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        merges: Iterable[tuple[str, str]],
        special_tokens: Iterable[str] = (),
        pattern: str | Sequence[str] = "gpt2",
        eos_token: str | None = None,
    ) -> None:
        self.set_vocab(vocab)
        self.pattern = pattern if isinstance(pattern, str) else list(pattern)
        self._patterns = _patterns(pattern)
        self.special_tokens: dict[str, int] = {}
        for s in check_special_tokens(special_tokens):
            if s not in self._index:
                raise ValueError(f"special token {s!r} is not in the vocabulary")
            self.special_tokens[s] = self._index[s]
        if eos_token is not None and eos_token not in self.special_tokens:
            raise ValueError(f"eos_token {eos_token!r} is not one of the special tokens")
        self.eos_token = eos_token
        decoder = unicode_to_bytes()
        self._bytes: list[bytes] = []
        for i, token in enumerate(self.vocab):
            if token in self.special_tokens:
                self._bytes.append(token.encode("utf-8"))
            elif all(c in decoder for c in token):
                self._bytes.append(bytes(decoder[c] for c in token))
            else:
                raise ValueError(f"vocabulary entry {i} ({token!r}) is not written in GPT-2's byte alphabet")
        # A real vocabulary may lack some single bytes: SmolLM2 has 235 of the 256 (no 0xC0, 0xC1, 0xF5-0xFF,
        # which never occur in UTF-8, nor a few rare control bytes). Like llama.cpp and HF `tokenizers`
        # without an unknown token, encoding drops such a byte when no merge covers it.
        self._byte_ids = [self._index.get(bytes_to_unicode()[b], -1) for b in range(256)]
        self.missing_bytes = [b for b in range(256) if self._byte_ids[b] < 0]
        self.merges: list[tuple[str, str]] = []
        self._ranks: dict[Pair, tuple[int, int]] = {}  # (left id, right id) -> (rank, merged id)
        for rank, merge in enumerate(merges):
            if len(merge) != 2 or not all(isinstance(m, str) and m for m in merge):
                raise ValueError(f"corrupted merges: rule {rank} is {merge!r}, expected two non-empty strings")
            left, right = merge
            for part in (left, right, left + right):
                if part not in self._index:
                    raise ValueError(f"corrupted merges: rule {rank} ({left!r} {right!r}) uses {part!r}, not in vocab")
            self.merges.append((left, right))
            self._ranks.setdefault((self._index[left], self._index[right]), (rank, self._index[left + right]))
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str | Sequence[str] = "gpt2",
        special_tokens: Sequence[str] = (),
        eos_token: str | None = None,
    ) -> ByteLevelBPE:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges (or fewer, if the text runs out of pairs).

        Ids follow HF ``tokenizers``' BpeTrainer: special tokens first, then the 256 byte symbols in
        code-point order of their GPT-2 characters, then merged symbols in the order they were learned.
        """
        check_text(text)
        special_tokens = check_special_tokens(special_tokens)
        check_vocab_size(vocab_size, 256 + len(special_tokens), "byte alphabet plus the special tokens")
        patterns = _patterns(pattern)
        counts: Counter[str] = Counter()
        for chunk, is_special in split_on_special(text, set(special_tokens)):
            if not is_special:
                counts.update(split_pieces(chunk, patterns))
        vocab = list(special_tokens) + sorted(bytes_to_unicode().values())
        byte_ids = {unicode_to_bytes()[c]: i for i, c in enumerate(vocab) if i >= len(special_tokens)}
        words = [[byte_ids[b] for b in piece.encode("utf-8")] for piece in counts]
        index = {token: i for i, token in enumerate(vocab)}

        def join(a: int, b: int) -> int:  # two different pairs can spell the same string; the id is then shared
            token = vocab[a] + vocab[b]
            if token not in index:
                index[token] = len(vocab)
                vocab.append(token)
            return index[token]

        merges: list[tuple[str, str]] = []
        trainer = learn_merges(words, list(counts.values()), join)  # score: the pair's count
        while len(vocab) < vocab_size and (pair := next(trainer, None)) is not None:
            merges.append((vocab[pair[0]], vocab[pair[1]]))
        return cls(vocab, merges, special_tokens, pattern, eos_token)

    # ------------------------------------------------------------------ encoding
    def _encode_piece(self, piece: str) -> list[int]:
        """Apply the merges to one pre-token: always merge the adjacent pair of lowest rank (leftmost first).

        As in HF ``tokenizers`` (``Word::merge_all``), the symbols form a linked list and the mergeable pairs sit in
        a priority queue keyed by ``(rank, position)``: each merge unlinks one symbol and pushes at most the two new
        pairs it creates, so a word of ``n`` bytes costs ``O(n log n)`` instead of ``O(n²)`` for rescanning it after
        every merge. Queue entries whose pair changed since they were pushed are skipped when they surface.
        """
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        sym = [self._byte_ids[b] for b in piece.encode("utf-8")]
        if self.missing_bytes:
            sym = [i for i in sym if i >= 0]
        ranks, n = self._ranks, len(sym)
        nxt, prev = list(range(1, n + 1)), list(range(-1, n - 1))  # linked list over positions; n = the end
        heap = [(r[0], i, r[1]) for i in range(n - 1) if (r := ranks.get((sym[i], sym[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i, new = heapq.heappop(heap)
            j = nxt[i]
            if sym[i] < 0 or j >= n or ranks.get((sym[i], sym[j]), (-1,))[0] != rank:
                continue  # stale: position i was merged away, or its pair has changed
            sym[i], sym[j] = new, -1  # merge the right symbol into the left one and unlink it
            nxt[i] = nxt[j]
            if nxt[i] < n:
                prev[nxt[i]] = i
                if (r := ranks.get((new, sym[nxt[i]]))) is not None:
                    heapq.heappush(heap, (r[0], i, r[1]))
            if prev[i] >= 0 and (r := ranks.get((sym[prev[i]], new))) is not None:
                heapq.heappush(heap, (r[0], prev[i], r[1]))
        ids = [s for s in sym if s >= 0]
        if len(self._cache) < 200_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str, allowed_special: str | set[str] = "all") -> list[int]:
        """Token ids of ``text``.

        ``allowed_special`` is ``"all"``, ``"none"`` or a set of special-token strings: those are
        recognised in the text and each becomes its single id; other occurrences are encoded as
        ordinary text. Naming a token that is not special raises ``ValueError``.
        """
        check_text(text)
        allowed = resolve_allowed_special(allowed_special, self.special_tokens)
        ids: list[int] = []
        for chunk, is_special in split_on_special(text, allowed):
            if is_special:
                ids.append(self.special_tokens[chunk])
            else:
                for piece in split_pieces(chunk, self._patterns):
                    ids.extend(self._encode_piece(piece))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids`` (a single token may hold part of a UTF-8 character)."""
        return b"".join(self._bytes[i] for i in self.check_ids(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ vocabulary
    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-sequence token (``None`` when the tokenizer has none)."""
        return None if self.eos_token is None else self.special_tokens[self.eos_token]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab": self.vocab,
            "merges": [f"{a} {b}" for a, b in self.merges],
            "special_tokens": list(self.special_tokens),
            "pattern": self.pattern,
            "eos_token": self.eos_token,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ByteLevelBPE:
        try:
            merges = [tuple(line.split(" ")) for line in data["merges"]]
            return cls(data["vocab"], merges, data["special_tokens"], data["pattern"], data["eos_token"])
        except (KeyError, AttributeError) as err:
            raise ValueError(f"corrupted ByteLevelBPE data: {err!r}") from err

    @classmethod
    def from_gguf(cls, path: str | Path) -> ByteLevelBPE:
        """Load the tokenizer stored in a GGUF file's metadata (``tokenizer.ggml.*``), e.g. SmolLM2's.

        GGUF keeps the tokens (already in GPT-2's byte alphabet), the merges as ``"left right"``
        strings, a type per token (3 = control, 4 = user-defined: both matched as special tokens)
        and the name of the pre-tokenizer (``tokenizer.ggml.pre``), which selects the split regexes.
        """
        from lmkit.loaders.gguf_file import GGUFError, metadata, open_gguf

        reader = open_gguf(path)  # the file is checked whole; errors name it

        def strings(key: str) -> list[str]:
            value = metadata(reader, key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise GGUFError(f"GGUF file {path}: metadata {key!r} should be a list of strings")
            return value

        model = metadata(reader, "tokenizer.ggml.model", str)
        if model != "gpt2":
            raise ValueError(f"{path} holds a {model!r} tokenizer, not byte-level BPE (gpt2)")
        pre = metadata(reader, "tokenizer.ggml.pre", str)
        pattern = {"default": "gpt2", "gpt-2": "gpt2"}.get(pre, pre)
        tokens = strings("tokenizer.ggml.tokens")
        types = metadata(reader, "tokenizer.ggml.token_type")
        if not isinstance(types, list) or len(types) != len(tokens):
            raise GGUFError(f"GGUF file {path}: tokenizer.ggml.token_type must list one type per token "
                            f"({len(tokens)} tokens)")
        merges = []
        for rank, line in enumerate(strings("tokenizer.ggml.merges")):
            parts = tuple(line.split(" "))
            if len(parts) != 2:
                raise GGUFError(f"GGUF file {path}: merge {rank} is {line!r}, expected 'left right'")
            merges.append(parts)
        special = [t for t, kind in zip(tokens, types, strict=True) if kind in (3, 4)]
        eos_id = metadata(reader, "tokenizer.ggml.eos_token_id", int)
        if not 0 <= eos_id < len(tokens):
            raise GGUFError(f"GGUF file {path}: tokenizer.ggml.eos_token_id {eos_id} is outside the "
                            f"{len(tokens)} tokens")
        eos = tokens[eos_id]
        return cls(tokens, merges, special, pattern, eos if eos in special else None)

"""Unigram language-model tokenizer (Kudo 2018), as in SentencePiece: T5, ALBERT, XLNet, mBART.

The model is a set of pieces with log-probabilities ``score(x)``; a segmentation ``x_1 ... x_k`` of a
word has probability ``∏ p(x_i)``. Encoding picks the most probable segmentation with the Viterbi
algorithm. Training starts from a large seed vocabulary (all characters plus frequent substrings) and
alternates

1. EM: the E-step computes, with forward-backward over each word's lattice, the expected number of
   times each piece is used; the M-step sets ``score(x) = log(count(x) / Σ count)``;
2. pruning: for each piece, estimate how much the corpus log-likelihood would drop if it were removed
   (its occurrences re-spelled with its best alternative segmentation) and keep the pieces whose
   removal would cost most, shrinking the vocabulary by a constant factor per round.

Spaces become the visible character ``"▁"`` glued to the start of the next word (SentencePiece's
convention, HF's ``Metaspace``), so decoding is lossless.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import regex

from lmkit.tokenizers.base import VocabListTokenizer, check_text, check_vocab_size

SPACE = "▁"
UNK = "<unk>"
UNK_PENALTY = 10.0
"""An unknown character costs ``min(score) - 10``, SentencePiece's (and HF's) ``kUnkPenalty``."""
_WORD = regex.compile(f"{SPACE}[^{SPACE}]*|[^{SPACE}]+")


def metaspace_split(text: str) -> list[str]:
    """Replace spaces by ``▁``, prepend one ``▁``, and cut before every ``▁``: "a  b" → ["▁a", "▁", "▁b"]."""
    if not text:
        return []
    text = text.replace(" ", SPACE)
    if not text.startswith(SPACE):
        text = SPACE + text
    return _WORD.findall(text)


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def viterbi(word: str, scores: dict[str, float], max_len: int, unk_score: float) -> list[tuple[str, bool]]:
    """Most probable segmentation of ``word``: ``best[e]`` is the best log-probability of ``word[:e]``.

    Returns ``(piece, known)`` pairs; a character that is not a piece becomes an unknown piece
    (``known=False``) with ``unk_score``. Ties keep the candidate found first (earliest start), as HF does.
    """
    n = len(word)
    best = [-math.inf] * (n + 1)
    back: list[tuple[int, bool]] = [(0, True)] * (n + 1)
    best[0] = 0.0
    for start in range(n):
        if best[start] == -math.inf:
            continue
        single = False
        for end in range(start + 1, min(n, start + max_len) + 1):
            score = scores.get(word[start:end])
            if score is None:
                continue
            single |= end == start + 1
            if best[start] + score > best[end]:
                best[end], back[end] = best[start] + score, (start, True)
        if not single and best[start] + unk_score > best[start + 1]:
            best[start + 1], back[start + 1] = best[start] + unk_score, (start, False)
    pieces, end = [], n
    while end > 0:
        start, known = back[end]
        pieces.append((word[start:end], known))
        end = start
    return pieces[::-1]


def expected_counts(words: Counter[str], scores: dict[str, float], max_len: int) -> tuple[dict[str, float], float]:
    """E-step: expected piece counts under the current model, and the corpus log-likelihood.

    For each word, forward ``alpha[e] = log Σ_{x = word[s:e]} exp(alpha[s] + score(x))`` and backward
    ``beta`` give the posterior of every lattice edge ``exp(alpha[s] + score(x) + beta[e] - alpha[n])``.
    """
    counts: dict[str, float] = defaultdict(float)
    loglik = 0.0
    for word, freq in words.items():
        n = len(word)
        edges = [
            (s, e, word[s:e]) for s in range(n) for e in range(s + 1, min(n, s + max_len) + 1) if word[s:e] in scores
        ]
        alpha = [-math.inf] * (n + 1)
        alpha[0] = 0.0
        for s, e, piece in edges:  # edges are sorted by start, so alpha[s] is final when used
            alpha[e] = _logaddexp(alpha[e], alpha[s] + scores[piece])
        beta = [-math.inf] * (n + 1)
        beta[n] = 0.0
        for s, e, piece in reversed(edges):
            beta[s] = _logaddexp(beta[s], scores[piece] + beta[e])
        z = alpha[n]
        loglik += freq * z
        for s, e, piece in edges:
            counts[piece] += freq * math.exp(alpha[s] + scores[piece] + beta[e] - z)
    return counts, loglik


def seed_pieces(words: Counter[str], seed_size: int, max_len: int) -> dict[str, int]:
    """All characters, plus the ``seed_size`` substrings (length ≥ 2, seen at least twice) with the
    largest ``frequency × length``: SentencePiece's seed criterion (it finds them with a suffix array)."""
    chars: Counter[str] = Counter()
    subs: Counter[str] = Counter()
    for w, f in words.items():
        for i in range(len(w)):
            chars[w[i]] += f
            for j in range(i + 2, min(len(w), i + max_len) + 1):
                subs[w[i:j]] += f
    frequent = [s for s, c in subs.items() if c >= 2]
    frequent.sort(key=lambda s: (-subs[s] * len(s), s))
    return {**chars, **{s: subs[s] for s in frequent[:seed_size]}}


def prune(words: Counter[str], scores: dict[str, float], keep: int, max_len: int) -> dict[str, float]:
    """Keep ``keep`` pieces (characters always stay), dropping those whose removal costs least likelihood.

    As in SentencePiece: ``freq(x)`` counts uses of ``x`` in the Viterbi segmentations. Removing ``x``
    re-spells each use with ``x``'s own second-best segmentation ``y_1..y_m``; the loss is
    ``freq(x) * (log p(x) - Σ log p'(y_i))`` where ``p'`` adds ``freq(x)`` to each ``y_i`` and
    renormalises. Pieces never used, or never chosen even for their own string, go first.
    """
    freq: Counter[str] = Counter()
    for w, f in words.items():
        for piece, _ in viterbi(w, scores, max_len, -math.inf):
            freq[piece] += f
    total = sum(freq.values())
    chars = {p: s for p, s in scores.items() if len(p) == 1}
    candidates: list[tuple[float, str]] = []
    for piece in scores:
        if len(piece) == 1 or freq[piece] == 0:
            continue
        others = dict(scores)
        del others[piece]
        alternative = [p for p, _ in viterbi(piece, others, max_len, -math.inf)]
        logprob = math.log(freq[piece]) - math.log(total)
        log_total_alt = math.log(total + freq[piece] * (len(alternative) - 1))
        logprob_alt = sum(math.log(freq[p] + freq[piece]) - log_total_alt for p in alternative)
        candidates.append((freq[piece] / total * (logprob - logprob_alt), piece))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    kept = {p: scores[p] for _, p in candidates[: max(keep - len(chars), 0)]}
    return {**chars, **kept}


def m_step(counts: dict[str, float], chars: Iterable[str], min_count: float = 0.5) -> dict[str, float]:
    """``score(x) = log(count(x) / Σ count)``; pieces expected less than ``min_count`` times are dropped
    (characters stay, with a floor count, so every string keeps a segmentation)."""
    kept = {p: c for p, c in counts.items() if c >= min_count}
    for c in chars:
        kept[c] = max(counts.get(c, 0.0), min_count)
    log_total = math.log(sum(kept.values()))
    return {p: math.log(c) - log_total for p, c in kept.items()}


class Unigram(VocabListTokenizer):
    """Unigram-LM tokenizer: pieces with scores, Viterbi encoding. ``pieces[0]`` is ``<unk>``."""

    def __init__(self, pieces: Sequence[tuple[str, float]]) -> None:
        if not pieces or pieces[0][0] != UNK:
            raise ValueError(f"a Unigram vocabulary starts with the unknown piece {UNK!r}")
        self.pieces = [(str(p), float(s)) for p, s in pieces]
        self.set_vocab(p for p, _ in self.pieces)
        self._scores = {p: s for p, s in self.pieces[1:]}
        self._max_len = max((len(p) for p in self._scores), default=1)
        self.unk_score = min(s for _, s in self.pieces) - UNK_PENALTY

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        seed_size: int | None = None,
        max_piece_length: int = 16,
        shrinking_factor: float = 0.75,
        em_iterations: int = 2,
    ) -> Unigram:
        """Train on ``text``: seed, then rounds of EM + pruning until about ``vocab_size`` pieces remain.

        Like SentencePiece, pruning stops at 10% above the target and the final vocabulary is the
        ``vocab_size - 1`` best-scoring pieces (all characters kept) plus ``<unk>``.
        """
        words = Counter(metaspace_split(check_text(text)))
        chars = {c for w in words for c in w}
        check_vocab_size(vocab_size, len(chars) + 1, "character alphabet of the corpus plus <unk>")
        seed = seed_pieces(words, seed_size or 10 * vocab_size, max_piece_length)
        log_total = math.log(sum(seed.values()))
        scores = {p: math.log(c) - log_total for p, c in seed.items()}
        target = vocab_size - 1
        while True:
            for _ in range(em_iterations):
                counts, _ = expected_counts(words, scores, max_piece_length)
                scores = m_step(counts, chars)
            if len(scores) <= int(1.1 * target):
                break
            scores = prune(words, scores, max(int(1.1 * target), int(shrinking_factor * len(scores))), max_piece_length)
        ranked = sorted((p for p in scores if len(p) > 1), key=lambda p: (-scores[p], p))
        kept = chars | set(ranked[: max(target - len(chars), 0)])
        return cls([(UNK, 0.0), *sorted(((p, scores[p]) for p in kept), key=lambda ps: (-ps[1], ps[0]))])

    def segment(self, text: str) -> list[str]:
        """The pieces of ``text`` (unknown characters as themselves)."""
        return [p for w in metaspace_split(text) for p, _ in viterbi(w, self._scores, self._max_len, self.unk_score)]

    def encode(self, text: str) -> list[int]:
        """Viterbi pieces of each ``▁``-word; a run of unknown characters becomes one ``<unk>`` (as HF does)."""
        check_text(text)
        ids: list[int] = []
        for w in metaspace_split(text):
            for piece, known in viterbi(w, self._scores, self._max_len, self.unk_score):
                if known:
                    ids.append(self._index[piece])
                elif not ids or ids[-1] != 0:
                    ids.append(0)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Concatenate the pieces, ``▁`` → space, and drop the space added in front of the text.

        As with HF's ``Metaspace``, a text that already started with a space loses that one space.
        """
        text = "".join(self.vocab[i] for i in self.check_ids(ids)).replace(SPACE, " ")
        return text[1:] if text.startswith(" ") else text

    def to_dict(self) -> dict[str, Any]:
        return {"pieces": [list(p) for p in self.pieces]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unigram:
        try:
            return cls([(p, s) for p, s in data["pieces"]])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"corrupted Unigram data: {err}") from err

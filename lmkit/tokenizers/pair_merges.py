"""The training loop BPE and WordPiece share: count adjacent pairs, merge the best one, update the counts, repeat.

The two differ only in what "best" means, the ``score`` of :func:`learn_merges`:

* BPE (Sennrich et al.) merges the most frequent pair, score :func:`pair_count`;
* WordPiece (Schuster & Nakajima; BERT) merges the pair that raises the training likelihood most, a score built from
  the pair's count and the counts of its two symbols (:mod:`lmkit.tokenizers.wordpiece`).

Symbols are ints (BPE's ids) or strings (WordPiece's entries); ties go to the smallest pair, which for BPE's ids is
the rule of HF ``tokenizers``' BpeTrainer. Left out: HF's ``limit_alphabet`` and parallel counting.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

S = TypeVar("S", int, str)  # a symbol


class PairCounts(Generic[S]):
    """Weighted counts of the symbols and adjacent pairs of ``words``, kept exact merge after merge.

    ``words[k]`` is the symbol sequence of a distinct pre-token seen ``freqs[k]`` times. ``pairs`` maps each
    pair to its count (pairs that no longer occur are dropped), ``symbols`` each symbol to its count, ``total`` is
    the number of symbols, and ``where`` maps a pair to the words that may contain it (a superset: :meth:`merge`
    rescans them).

    Example: the words ``a b a b`` (seen 2 times) and ``b a`` (once) give ``pairs = {(a, b): 4, (b, a): 3}``,
    ``symbols = {a: 5, b: 5}`` and ``total = 10``.
    """

    def __init__(self, words: list[list[S]], freqs: list[int]) -> None:
        self.words, self.freqs = words, freqs
        self.pairs: dict[tuple[S, S], int] = defaultdict(int)
        self.symbols: dict[S, int] = defaultdict(int)
        self.where: dict[tuple[S, S], set[int]] = defaultdict(set)
        self.total = 0
        for k, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            self.total += freq * len(word)
            for symbol in word:
                self.symbols[symbol] += freq
            for pair in zip(word, word[1:], strict=False):
                self.pairs[pair] += freq
                self.where[pair].add(k)

    def merge(self, pair: tuple[S, S], new: S) -> list[tuple[S, S]]:
        """Replace each occurrence of ``pair`` by ``new`` (left to right, without overlaps) and update the counts;
        returns the pairs whose count went up.

        Only the words in ``where[pair]`` are touched, and in each occurrence ``x a b y`` only four pair counts
        change: ``(x, a)`` and ``(b, y)`` lose the word's frequency, ``(x, ab)`` and ``(ab, y)`` gain it. That is
        what makes training incremental: the cost of a merge is the size of the words it touches, not of the corpus.
        """
        a, b = pair
        delta: dict[tuple[S, S], int] = defaultdict(int)
        gained: dict[tuple[S, S], set[int]] = defaultdict(set)
        words, freqs, pairs, where = self.words, self.freqs, self.pairs, self.where
        merged = 0  # occurrences replaced, weighted (not the pair's count: "a a a" holds (a, a) twice, merges once)
        for k in where.pop(pair):
            word, freq = words[k], freqs[k]
            out: list[S] = []  # the word rebuilt in one pass: splicing it in place is quadratic in its length
            i, n = 0, len(word)
            while i < n:
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    if out:  # the left neighbour as already rewritten (it may be a fresh `new`)
                        delta[(out[-1], a)] -= freq
                        delta[(out[-1], new)] += freq
                        gained[(out[-1], new)].add(k)
                    if i + 2 < n:
                        delta[(b, word[i + 2])] -= freq
                        delta[(new, word[i + 2])] += freq
                        gained[(new, word[i + 2])].add(k)
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[k] = out
            merged += freq * (n - len(out))
        del pairs[pair]
        delta.pop(pair, None)  # the merged pair itself may be in delta: (a, a) in "a a a a"
        for p, d in delta.items():
            if (count := pairs.get(p, 0) + d) > 0:
                pairs[p] = count
            else:  # the pair is gone: forget it
                pairs.pop(p, None)
                where.pop(p, None)
        for p, ks in gained.items():
            if p in pairs:
                where[p] |= ks
        self.symbols[a] -= merged
        self.symbols[b] -= merged
        self.symbols[new] += merged
        self.total -= merged
        return [p for p in gained if p in pairs]


def pair_count(counts: PairCounts, pair: tuple[S, S]) -> int:
    """BPE's score: how often the pair occurs."""
    return counts.pairs[pair]


def learn_merges(
    words: list[list[S]],
    freqs: list[int],
    join: Callable[[S, S], S],
    score: Callable[[PairCounts, tuple[S, S]], float] = pair_count,
    min_count: int = 1,
) -> Iterator[tuple[S, S]]:
    """Yield merges, best-scoring pair first, rewriting ``words`` in place; stop when no pair is seen ``min_count``
    times. ``join(a, b)`` names the symbol that replaces ``a b`` (a new one, or an existing one that is spelled
    the same); the caller stops pulling merges when its vocabulary is full.

    The textbook loop recounts every pair of the corpus after each merge; here :class:`PairCounts` updates the
    counts locally. Finding the best pair: a merge raises only the counts of pairs holding its new symbol, which
    are pushed again, and every other count can only fall; so for BPE's :func:`pair_count` (tested by identity,
    ``score is pair_count``) a max-heap keyed by ``(-count, pair)`` works, an entry whose count went stale being
    re-pushed with its current count when it surfaces. Any other score (such as WordPiece's, which rises for every
    pair of a symbol whose count falls) is found by a scan over the pairs.
    """
    counts = PairCounts(words, freqs)
    heap = [(-c, p) for p, c in counts.pairs.items()] if score is pair_count else None
    if heap is not None:
        heapq.heapify(heap)
    while True:
        if heap is not None:
            pair = _most_frequent(heap, counts.pairs, min_count)
        else:
            pair = _best_scored(counts, score, min_count)
        if pair is None:
            return
        gained = counts.merge(pair, join(*pair))
        if heap is not None:
            for p in gained:
                heapq.heappush(heap, (-counts.pairs[p], p))
        yield pair


def _most_frequent(
    heap: list[tuple[int, tuple[S, S]]], pairs: dict[tuple[S, S], int], min_count: int
) -> tuple[S, S] | None:
    """Pop the most frequent pair (smallest on a tie) off the heap, or ``None`` below ``min_count``."""
    while heap:
        neg_count, pair = heapq.heappop(heap)
        count = pairs.get(pair, 0)
        if count <= 0:  # the pair is gone
            continue
        if -neg_count != count:  # stale entry: put it back with its current count
            heapq.heappush(heap, (-count, pair))
            continue
        return pair if count >= min_count else None
    return None


def _best_scored(
    counts: PairCounts, score: Callable[[PairCounts, tuple[S, S]], float], min_count: int
) -> tuple[S, S] | None:
    """The pair of highest ``score`` among those seen at least ``min_count`` times (smallest on a tie), or ``None``."""
    candidates = [p for p, c in counts.pairs.items() if c >= min_count]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (-score(counts, p), p))

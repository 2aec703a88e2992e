"""Chunking: cut documents into overlapping word windows that an embedding model can read whole.

A sentence embedder has a context limit (all-MiniLM-L6-v2 was trained on 128 tokens and truncates at 256) and
averages everything it reads into one vector, so a retrieval corpus is cut into **chunks**. The simplest robust rule,
used here, is a fixed-size window of ``size`` words that advances by ``size - overlap`` words: the overlap keeps a
sentence that straddles a boundary whole in at least one chunk. Each :class:`Chunk` remembers its document and word
span, so relevance can be judged by position (:func:`covers`) instead of by string matching of the chunk text.

Left out: sentence- or heading-aware splitting and token-exact windows. Word windows are predictable (a chunk of
``size`` words is about ``1.3 * size`` WordPiece tokens of English prose) and make the chunk-size experiment clean.

>>> docs = {"a": "one two three four five six seven"}
>>> [c.text for c in chunk_documents(docs, size=4, overlap=1)]
['one two three four', 'four five six seven']
"""

from __future__ import annotations

from dataclasses import dataclass

from lmkit.checks import check_int


@dataclass(frozen=True)
class Chunk:
    """Words ``[start, end)`` of document ``doc``; ``text`` is those words joined by single spaces."""

    doc: str
    start: int
    end: int
    text: str


def normalize(text: str) -> str:
    """Collapse every run of whitespace to one space (the form chunks and evidence are compared in)."""
    return " ".join(text.split())


def chunk_words(words: list[str], size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Word spans ``[(start, end), ...]`` of windows of ``size`` words with ``overlap`` words shared by neighbours.

    The last window ends at the last word (it may be shorter); a text of at most ``size`` words is one chunk.
    """
    check_int("size (words per chunk)", size, minimum=1)
    check_int("overlap (words shared by neighbours, below size)", overlap, minimum=0, maximum=size - 1)
    step, spans = size - overlap, []
    for start in range(0, max(len(words), 1), step):
        spans.append((start, min(start + size, len(words))))
        if start + size >= len(words):
            break
    return spans if words else []


def chunk_documents(docs: dict[str, str], size: int = 128, overlap: int = 16) -> list[Chunk]:
    """Cut every document of ``docs`` (name -> text) into :class:`Chunk` s, in document order."""
    if not isinstance(docs, dict) or not docs:
        raise ValueError("docs must be a non-empty dict of name -> text")
    chunks = []
    for name, text in docs.items():
        words = text.split()
        chunks += [Chunk(name, a, b, " ".join(words[a:b])) for a, b in chunk_words(words, size, overlap)]
    return chunks


def evidence_spans(docs: dict[str, str], evidence: str) -> list[tuple[str, int, int]]:
    """Every place ``(doc, start_word, end_word)`` where ``evidence`` occurs in ``docs``, whitespace-normalised.

    The evidence may begin or end inside a word of the document (a clause copied without its final period): the
    span is then every word the match touches.
    """
    target = normalize(evidence)
    if not target:
        raise ValueError("evidence must contain at least one word")
    found = []
    for name, text in docs.items():
        flat = normalize(text)  # words joined by single spaces: word i starts after the i-th space
        pos = flat.find(target)
        while pos >= 0:
            found.append((name, flat.count(" ", 0, pos), flat.count(" ", 0, pos + len(target)) + 1))
            pos = flat.find(target, pos + 1)
    return found


def covers(chunk: Chunk, spans: list[tuple[str, int, int]], fraction: float = 0.5) -> bool:
    """True when ``chunk`` holds at least ``fraction`` of the words of one of the evidence ``spans``."""
    for doc, a, b in spans:
        if doc == chunk.doc and min(b, chunk.end) - max(a, chunk.start) >= fraction * (b - a):
            return True
    return False


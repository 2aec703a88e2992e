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
from typing import Any

from lmkit.checks import check_int, check_number


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


def _check_docs(docs: Any) -> dict[str, str]:
    """``docs`` if it is a non-empty dict of name (``str``) -> text (``str``), else a ``ValueError`` (not such a dict)
    or a ``TypeError`` naming the first entry of another type."""
    if not isinstance(docs, dict) or not docs:
        got = "an empty dict" if isinstance(docs, dict) else type(docs).__name__
        raise ValueError(f"docs must be a non-empty dict of name -> text, got {got}")
    for name, text in docs.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise TypeError(f"docs must map str names to str texts, got {name!r} -> {type(text).__name__}")
    return docs


def chunk_words(words: list[str], size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Word spans ``[(start, end), ...]`` of windows of ``size`` words with ``overlap`` words shared by neighbours.

    The last window ends at the last word (it may be shorter); a text of at most ``size`` words is one chunk.
    ``words`` must be a list (or tuple) of ``str`` — a text is split first (a ``str`` would be cut into characters).
    """
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        got = type(words).__name__ if not isinstance(words, (list, tuple)) else "an element that is not a str"
        raise TypeError(f"words must be a list of str (a text's .split()), got {got}")
    check_int("size (words per chunk)", size, minimum=1)
    check_int("overlap (words shared by neighbours, below size)", overlap, minimum=0, maximum=size - 1)
    step, spans = size - overlap, []
    for start in range(0, max(len(words), 1), step):
        spans.append((start, min(start + size, len(words))))
        if start + size >= len(words):
            break
    return spans if words else []


def chunk_documents(docs: dict[str, str], size: int = 128, overlap: int = 16) -> list[Chunk]:
    """Cut every document of ``docs`` (a non-empty dict of name -> text, both ``str``) into :class:`Chunk` s, in
    document order."""
    chunks = []
    for name, text in _check_docs(docs).items():
        words = text.split()
        chunks += [Chunk(name, a, b, " ".join(words[a:b])) for a, b in chunk_words(words, size, overlap)]
    return chunks


def evidence_spans(docs: dict[str, str], evidence: str) -> list[tuple[str, int, int]]:
    """Every place ``(doc, start_word, end_word)`` where ``evidence`` occurs in ``docs``, whitespace-normalised.

    The evidence may begin or end inside a word of the document (a clause copied without its final period): the
    span is then every word the match touches. ``docs`` must be a non-empty dict of ``str`` name -> ``str``
    text, ``evidence`` a ``str`` of at least one word.
    """
    if not isinstance(evidence, str):
        raise TypeError(f"evidence must be a str, got {type(evidence).__name__}")
    target = normalize(evidence)
    if not target:
        raise ValueError("evidence must contain at least one word")
    found = []
    for name, text in _check_docs(docs).items():
        flat = normalize(text)  # words joined by single spaces: word i starts after the i-th space
        pos = flat.find(target)
        while pos >= 0:
            found.append((name, flat.count(" ", 0, pos), flat.count(" ", 0, pos + len(target)) + 1))
            pos = flat.find(target, pos + 1)
    return found


def covers(chunk: Chunk, spans: list[tuple[str, int, int]], fraction: float = 0.5) -> bool:
    """True when ``chunk`` holds at least ``fraction`` of the words of one of the evidence ``spans``.

    Checked: ``chunk`` is a :class:`Chunk`, ``fraction`` a number in ``(0, 1]`` (at 0 a chunk that merely touches a
    span would count, above 1 none ever could), and every span a ``(doc, start, end)`` with ``0 <= start < end``, as
    :func:`evidence_spans` gives them.
    """
    if not isinstance(chunk, Chunk):
        raise TypeError(f"chunk must be a Chunk, got {type(chunk).__name__}")
    check_number("fraction", fraction, above=0.0, maximum=1.0)
    if not isinstance(spans, (list, tuple)):
        raise TypeError(f"spans must be a list of (doc, start, end), got {type(spans).__name__}")
    for span in spans:
        if not _is_span(span):
            raise ValueError(f"spans must be (doc, start, end) with 0 <= start < end, got {span!r}")
    for doc, a, b in spans:
        if doc == chunk.doc and min(b, chunk.end) - max(a, chunk.start) >= fraction * (b - a):
            return True
    return False


def _is_span(span: Any) -> bool:
    return (isinstance(span, (tuple, list)) and len(span) == 3 and isinstance(span[0], str)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in span[1:]) and 0 <= span[1] < span[2])

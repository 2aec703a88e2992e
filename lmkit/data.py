"""Offline text the book trains and evaluates on.

``pydoc_data.topics`` ships with every CPython: about 700 KB of English technical prose (the
``help()`` topics), so perplexity numbers in the book are reproducible on any machine, offline.
"""

from __future__ import annotations

from lmkit.checks import check_number


def pydoc_topics(max_chars: int | None = None) -> dict[str, str]:
    """The ``pydoc_data.topics`` entries as name -> text (stripped), in sorted key order.

    ``max_chars`` keeps only the topics shorter than that many characters (4000 keeps 53 of the 79 topics, 63 KB of
    465 KB on Python 3.11: the retrieval chapter's corpus); ``None`` keeps all of them.
    """
    from pydoc_data.topics import topics

    return {key: topics[key].strip() for key in sorted(topics) if max_chars is None or len(topics[key]) < max_chars}


def pydoc_text() -> str:
    """All ``pydoc_data.topics`` entries, in sorted key order, separated by blank lines."""
    return "\n\n".join(pydoc_topics().values())


def split_text(text: str, held_out_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into a (train/calibration, held-out evaluation) pair at a paragraph boundary.

    The evaluation part is the *end* of the text, so the two never overlap.
    """
    check_number("held_out_fraction", held_out_fraction, above=0.0, below=1.0)
    cut = text.rfind("\n\n", 0, int(len(text) * (1.0 - held_out_fraction)))
    if cut <= 0:
        raise ValueError("text has no paragraph boundary to split at")
    return text[:cut], text[cut + 2 :]

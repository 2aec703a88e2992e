"""Offline text the book trains and evaluates on.

``pydoc_data.topics`` ships with every CPython: about 700 KB of English technical prose (the
``help()`` topics), so perplexity numbers in the book are reproducible on any machine, offline.
"""

from __future__ import annotations


def pydoc_text() -> str:
    """All ``pydoc_data.topics`` entries, in sorted key order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def split_text(text: str, held_out_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` into a (train/calibration, held-out evaluation) pair at a paragraph boundary.

    The evaluation part is the *end* of the text, so the two never overlap.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    cut = text.rfind("\n\n", 0, int(len(text) * (1.0 - held_out_fraction)))
    if cut <= 0:
        raise ValueError("text has no paragraph boundary to split at")
    return text[:cut], text[cut + 2 :]

"""Draw token boundaries as colored boxes (matplotlib), so segmentations show in the static book too."""

from __future__ import annotations

from typing import Any

from lmkit.tokenizers.base import Tokenizer
from lmkit.tokenizers.bpe import ByteLevelBPE
from lmkit.tokenizers.wordpiece import WordPiece

VISIBLE = {" ": "·", "\n": "⏎", "\t": "→", "▁": "·"}
"""How whitespace (and SentencePiece's ``▁``) is drawn, so a token's leading space can be seen."""


def token_pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The piece of text each token of ``text`` stands for.

    Byte-level BPE pieces are the decoded bytes of each token (a token holding part of a multi-byte
    character shows as ``�``); other tokenizers show their vocabulary entries (``##ing``, ``▁the``).
    WordPiece's ``[CLS]``/``[SEP]`` wrapper is left out.
    """
    if isinstance(tokenizer, WordPiece):
        ids = tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = tokenizer.encode(text)
    if isinstance(tokenizer, ByteLevelBPE):
        return [tokenizer.decode([i]) for i in ids]
    return [tokenizer.id_to_token(i) for i in ids]


def draw_tokens(rows: list[tuple[str, list[str]]], width: int = 64, title: str | None = None, ax: Any = None) -> Any:
    """Draw each ``(label, pieces)`` row as a line of colored boxes, one box per token, wrapping at ``width`` chars."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    lines: list[tuple[str, list[str]]] = []  # (label, pieces) after wrapping
    for label, pieces in rows:
        current: list[str] = []
        used = 0
        for p in pieces:
            shown = "".join(VISIBLE.get(c, c) for c in p) or "∅"
            if current and used + len(shown) > width:
                lines.append((label, current))
                label, current, used = "", [], 0
            current.append(shown)
            used += len(shown)
        lines.append((label, current))
    if ax is None:
        _, ax = plt.subplots(figsize=(0.15 * width + 1.6, 0.42 * len(lines) + (0.5 if title else 0.2)))
    colors = plt.get_cmap("Set3").colors
    for row, (label, pieces) in enumerate(lines):
        y = -row
        ax.text(-0.8, y, label, ha="right", va="center", fontsize=10)
        x = 0.0
        for k, shown in enumerate(pieces):
            ax.add_patch(
                Rectangle((x, y - 0.38), len(shown), 0.76, facecolor=colors[k % len(colors)], edgecolor="white")
            )
            ax.text(x + len(shown) / 2, y, shown, ha="center", va="center", family="monospace", fontsize=10)
            x += len(shown)
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-len(lines) + 0.5, 0.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    return ax

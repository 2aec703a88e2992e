"""Pooling: one vector per sequence from the hidden states of its tokens.

Sentence-transformers models such as all-MiniLM-L6-v2 embed a sentence as the **mean of the last hidden states over
its real tokens** (padding excluded), then L2-normalise it; BERT's classifier instead reads the ``[CLS]`` position.
Example::

    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])            # (B=1, T=3, C=1); the last token is padding
    >>> mean_pool(h, torch.tensor([[True, True, False]]))
    tensor([[2.]])
"""

from __future__ import annotations

import torch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T, C)`` hidden states -> ``(B, C)`` average over the positions where ``mask`` ``(B, T)`` is True."""
    m = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

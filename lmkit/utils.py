"""Small helpers the whole package shares: device choice, seeding, padding id lists, and evaluation mode.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.int().tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``cuda`` when a GPU is present, else ``cpu``. ``prefer`` forces a choice."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator seeded the same way.

    Notebooks call this once at the top so every run of the book shows the same numbers.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``(ids, attention_mask)``, both (B, T_max); right padding unless ``left``.

    ``attention_mask`` is True on real tokens. Left padding is what batched generation wants (every prompt ends at
    the last column); right padding is what encoders and training batches use.
    """
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("need a non-empty list of non-empty sequences")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.bool)
    for i, s in enumerate(sequences):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(list(s), dtype=torch.long)
        mask[i, span] = True
    return ids, mask


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode for a ``with`` block and restore the mode it had, even on an exception.

    >>> m = nn.Dropout(0.5)
    >>> with eval_mode(m):
    ...     m.training
    False
    >>> m.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)

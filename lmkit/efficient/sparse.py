"""Sparse attention: let each query see only a structured subset of the keys.

Full attention costs ``O(N²)`` per layer. Child et al. (2019), "Generating Long Sequences with Sparse
Transformers", factorise it into two patterns, each cheap, whose composition still connects every pair of
positions in two steps:

* **strided** (:func:`strided_mask`): part 1 is a local band (the previous ``l`` positions), part 2 every
  ``l``-th position back (``(i - j) mod l = 0``). Good for data with a period (images, audio).
* **fixed** (:func:`fixed_mask`): part 1 is the query's own block of ``l`` positions, part 2 the last ``c``
  positions of every block ("summary" cells that later blocks read). Good for text.

With ``l ≈ √N`` every query sees ``O(√N)`` keys, so a layer costs ``O(N √N)`` — not ``O(N log N)``.
The parts can be used by different heads (:func:`head_masks`) or merged into one mask (``part="both"``).

**Sliding-window attention** (Longformer, Mistral) keeps only the local band: query ``i`` sees keys
``i-w+1 .. i``, ``O(N w)`` work; stacking ``L`` layers gives a receptive field of ``L·(w-1)+1`` tokens.

All masks are boolean in the :mod:`lmkit.transformer.masks` convention (``True`` = may attend, rows = queries), so
they plug into any attention. :func:`sparse_attention` runs them through :func:`lmkit.efficient.flash.
flash_attention`, which skips every tile with nothing visible: the saving is real, not just masked-out.
"""

from __future__ import annotations

from typing import Literal

import torch

from lmkit.checks import check_choice, check_int, choices
from lmkit.efficient.flash import flash_attention, structural_mask

Part = Literal["local", "summary", "both"]
PARTS: tuple[str, ...] = choices(Part)
Pattern = Literal["strided", "fixed"]
PATTERNS: tuple[str, ...] = choices(Pattern)


def _positions(n: int, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    check_int("sequence length", n, minimum=1)
    idx = torch.arange(n, device=device)
    return idx[:, None], idx[None, :]  # (n, 1) queries, (1, n) keys


def _select(local: torch.Tensor, summary: torch.Tensor, part: Part) -> torch.Tensor:
    check_choice("part", part, PARTS)
    if part == "both":
        return local | summary
    return local if part == "local" else summary


def local_mask(n: int, window: int, causal: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` band: query ``i`` sees the ``window`` keys ``i-window+1 .. i`` (and, if not causal, up to
    ``i+window-1``). The same rule as :func:`lmkit.efficient.flash.structural_mask` with ``window``."""
    check_int("window", window, minimum=1)
    _positions(n, device)
    return structural_mask(n, n, is_causal=causal, window=window, device=device)


def strided_mask(
    n: int, stride: int, part: Part = "both", causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """Child et al.'s strided pattern with stride ``l``: local part ``i - l < j <= i``, summary part
    ``(i - j) mod l = 0`` (every ``l``-th earlier position). Without ``causal`` both parts are mirrored."""
    check_int("stride", stride, minimum=1)
    i, j = _positions(n, device)
    local = (i - j).abs() < stride
    summary = (i - j).remainder(stride) == 0
    mask = _select(local, summary, part)
    return mask & (j <= i) if causal else mask


def fixed_mask(
    n: int, stride: int, c: int = 1, part: Part = "both", causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """Child et al.'s fixed pattern: local part ``⌊j/l⌋ = ⌊i/l⌋`` (same block of ``l``), summary part
    ``j mod l ∈ {l-c, …, l-1}`` (the last ``c`` cells of every block; the paper uses ``c`` of 8–128)."""
    check_int("stride", stride, minimum=1)
    check_int("c", c, minimum=1, maximum=stride)
    i, j = _positions(n, device)
    local = torch.div(i, stride, rounding_mode="floor") == torch.div(j, stride, rounding_mode="floor")
    summary = (j.remainder(stride) >= stride - c).expand(n, n)
    mask = _select(local, summary, part)
    return mask & (j <= i) if causal else mask


def head_masks(pattern: Pattern, n: int, stride: int, n_heads: int, **kwargs) -> torch.Tensor:
    """``(n_heads, n, n)``: even heads use the local part, odd heads the summary part (the paper's
    "one pattern per head" factorisation); broadcast it as ``attn_mask`` over ``(B, H, N, N)``."""
    make = {"strided": strided_mask, "fixed": fixed_mask}[check_choice("pattern", pattern, PATTERNS)]
    parts = [make(n, stride, part="local", **kwargs), make(n, stride, part="summary", **kwargs)]
    return torch.stack([parts[h % 2] for h in range(n_heads)])


def attended_pairs(mask: torch.Tensor) -> int:
    """How many (query, key) pairs a mask lets through: the work of one head, in score computations."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean, got {mask.dtype}")
    return int(mask.sum())


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = True,
    scale: float | None = None,
    block_size: int = 64,
) -> torch.Tensor:
    """Attention where the query at (bottom-right aligned) position ``p`` sees keys ``p-window+1 .. p``.

    Same tensors as :func:`~lmkit.efficient.flash.flash_attention` (``(B, H, N, d)``); only the tiles that
    meet the band are computed, so time is ``O(N · window)`` and memory ``O(N d)``.
    """
    return flash_attention(
        q, k, v, attn_mask, is_causal=is_causal, scale=scale, window=window, block_q=block_size, block_k=block_size
    )


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float | None = None,
    block_size: int = 32,
) -> torch.Tensor:
    """Attention restricted to a boolean sparsity ``mask`` (e.g. :func:`strided_mask`, :func:`head_masks`),
    computed tile by tile; tiles where the mask is all ``False`` are skipped (block-sparse attention)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"a sparsity mask must be boolean, got {mask.dtype}")
    return flash_attention(q, k, v, mask, scale=scale, block_q=block_size, block_k=block_size)

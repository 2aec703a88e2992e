"""Attention masks: which positions may look at which.

Every mask here is a boolean tensor where ``True`` means "query i may attend to key j".
Rows are queries, columns are keys. The three transformer families differ *only* here:

* **encoder** (BERT): every token sees every token — :func:`bidirectional_mask`;
* **decoder** (GPT, LLaMA): token i sees tokens 0..i — :func:`causal_mask`;
* **prefix-LM** (UniLM, T5's prefix-LM variant, PaLI): the first ``prefix_len`` tokens see each other
  fully, the rest see the whole prefix plus the tokens before them — :func:`prefix_lm_mask`.

An encoder–decoder (T5) uses a bidirectional mask in the encoder, a causal mask in the decoder's
self-attention and an all-``True`` cross-attention mask (decoder queries × encoder keys).

Padding is a separate, per-sequence key mask (:func:`padding_mask`) combined with the above by
:func:`combine`. Attention implementations turn a boolean mask into numbers with
:func:`to_additive`.
"""

from __future__ import annotations

from typing import Literal

import torch

from lmkit.checks import check_int, choices

MaskKind = Literal["bidirectional", "causal", "prefix_lm"]
MASK_KINDS: tuple[str, ...] = choices(MaskKind)


def bidirectional_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` all ``True``: the encoder's mask (BERT)."""
    check_int("sequence length", n, minimum=1)
    return torch.ones(n, n, dtype=torch.bool, device=device)


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` lower-triangular: query i sees keys 0..i (GPT, LLaMA)."""
    check_int("sequence length", n, minimum=1)
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def prefix_lm_mask(n: int, prefix_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, n)`` prefix-LM mask: full attention inside the prefix, causal after it.

    ``prefix_len=0`` gives the causal mask and ``prefix_len=n`` the bidirectional one.
    """
    check_int("sequence length", n, minimum=1)
    if not 0 <= prefix_len <= n:
        raise ValueError(f"prefix_len must be in [0, {n}], got {prefix_len}")
    mask = causal_mask(n, device)
    mask[:, :prefix_len] = True  # every query sees the whole prefix ...
    return mask  # ... and the prefix rows therefore see each other fully, never the targets


def attention_mask(
    kind: MaskKind, n: int, prefix_len: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``(n, n)`` mask of a transformer family by name (see :data:`MASK_KINDS`)."""
    if kind == "bidirectional":
        return bidirectional_mask(n, device)
    if kind == "causal":
        return causal_mask(n, device)
    if kind == "prefix_lm":
        return prefix_lm_mask(n, prefix_len, device)
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")


def padding_mask(lengths: torch.Tensor | list[int], n: int | None = None) -> torch.Tensor:
    """``(batch, n)`` key mask from sequence lengths: ``True`` on real tokens, ``False`` on padding.

    Sequences are right-padded: sequence b has real tokens at positions ``0..lengths[b]-1``.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    if (lengths < 0).any():
        raise ValueError("lengths must be non-negative")
    n = int(lengths.max()) if n is None else n
    if (lengths > n).any():
        raise ValueError(f"a length exceeds n={n}")
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def combine(mask: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
    """Combine an ``(n, n)`` structural mask with a ``(batch, n)`` key padding mask.

    Returns ``(batch, 1, n, n)``, broadcastable over attention heads.
    """
    if mask.shape[-1] != key_padding.shape[-1]:
        raise ValueError(f"mask has {mask.shape[-1]} keys but padding mask has {key_padding.shape[-1]}")
    return mask[None, None, :, :] & key_padding[:, None, None, :]


def to_additive(
    mask: torch.Tensor, dtype: torch.dtype = torch.float32, style: Literal["-inf", "-10000"] = "-inf"
) -> torch.Tensor:
    """Turn a boolean mask into the numbers added to attention scores before the softmax.

    ``style="-inf"`` puts ``-inf`` on blocked positions: their softmax weight is exactly 0.
    ``style="-10000"`` is the ``(1 - mask) * -10000`` adder of the original BERT code: blocked
    weights are only *tiny* (``exp(-10000)`` underflows to 0 in float32, but the adder overflows
    float16's range of ±65504 if added twice, and a score already near -10000 is no longer
    separated from a blocked one). The ``-inf`` form needs care in one place: a row with no
    allowed key becomes all ``-inf`` and the softmax returns NaN, so callers must zero such rows.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean, got {mask.dtype}")
    if style == "-inf":
        fill = float("-inf")
    elif style == "-10000":
        fill = -10000.0
    else:
        raise ValueError(f"unknown style {style!r}; expected '-inf' or '-10000'")
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, fill)

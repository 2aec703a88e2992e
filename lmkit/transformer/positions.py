"""Positional information: how a transformer learns *where* each token is.

Attention is permutation-invariant — shuffle the tokens and each output is shuffled the same way — so order has to
be injected. The families in this book do it in four ways:

* **sinusoidal** (Vaswani et al., 2017): a fixed table added to the token embeddings, :func:`sinusoidal_table`;
* **learned** (BERT, GPT-2): an ``nn.Embedding`` of ``max_positions`` rows added the same way;
* **RoPE** (RoFormer; LLaMA, SmolLM2): queries and keys are *rotated* by an angle proportional to their position,
  so the score ``q_m · k_n`` depends only on ``m - n`` — :func:`rope_angles`, :func:`apply_rope`;
* **ALiBi** (Press et al., 2022): nothing is added to the embeddings; each head adds ``-slope · |m - n|`` to its
  attention scores — :func:`alibi_slopes`, :func:`alibi_bias`.

RoPE rotates *pairs* of channels, and two pairings exist in the wild: **interleaved** (channels ``(0,1), (2,3), …``,
the RoFormer paper, Meta's original LLaMA code and llama.cpp/GGUF) and **half-split** (channels ``(i, i + d/2)``,
Hugging Face ``transformers``). They are the same model up to a fixed permutation of the query/key rows, which is why
HF→GGUF conversion permutes ``W_q`` and ``W_k`` (:func:`half_to_interleaved_rows`). Using the wrong pairing with a
given set of weights silently ruins the model.

For contexts longer than the training length, RoPE's frequencies can be rescaled (:func:`rope_inv_freq`):
**position interpolation** divides every angle by the stretch factor; **NTK-aware** scaling raises the base instead,
so high frequencies (local order) are kept and only low frequencies are stretched; **YaRN** (Peng et al., 2023) keeps
the channels that turn many times over the training length, interpolates those that turn less than once, ramps
linearly in between, and sharpens attention by :func:`rope_attention_factor`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

RopePairing = Literal["interleaved", "half"]
RopeScaling = Literal["pi", "ntk", "yarn"]


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``(n_positions, dim)`` table of Vaswani et al.: ``PE[p, 2i] = sin(p / base^(2i/dim))``,
    ``PE[p, 2i+1] = cos(p / base^(2i/dim))``. Each channel pair is a clock ticking at its own frequency."""
    if n_positions < 1 or dim < 2 or dim % 2:
        raise ValueError(f"need n_positions >= 1 and an even dim >= 2, got {n_positions}, {dim}")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table.float()


def rope_inv_freq(
    head_dim: int,
    base: float = 10000.0,
    scaling: RopeScaling | None = None,
    factor: float = 1.0,
    original_max_positions: int | None = None,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> torch.Tensor:
    """``(head_dim/2,)`` rotation frequencies ``theta_i = base^(-2i/head_dim)`` of RoPE.

    ``scaling="pi"`` (position interpolation, Chen et al. 2023) divides every frequency by ``factor``: position
    ``factor·L`` gets the angles position ``L`` had in training. ``scaling="ntk"`` (NTK-aware, bloc97 2023) uses the
    base ``base · factor^(d/(d-2))`` instead: the fastest channel is unchanged and the slowest one is stretched by
    exactly ``factor``. ``scaling="yarn"`` needs the training length ``original_max_positions``:
    see :func:`yarn_inv_freq`.
    """
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be even and >= 2, got {head_dim}")
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    if scaling == "yarn":
        if original_max_positions is None:
            raise ValueError("YaRN needs original_max_positions, the context length the model was trained at")
        return yarn_inv_freq(head_dim, base, factor, original_max_positions, beta_fast, beta_slow)
    if scaling == "ntk":
        base = base * factor ** (head_dim / (head_dim - 2))
    elif scaling not in (None, "pi"):
        raise ValueError(f"unknown RoPE scaling {scaling!r}; expected None, 'pi', 'ntk' or 'yarn'")
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if scaling == "pi":
        inv_freq = inv_freq / factor
    return inv_freq.float()


def yarn_inv_freq(
    head_dim: int, base: float, factor: float, original_max_positions: int, beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> torch.Tensor:
    """YaRN's "NTK-by-parts" frequencies (Peng et al., 2023, Section 3.2): per channel, a blend of the original
    frequency (extrapolation) and the interpolated one ``theta_i / factor``.

    Channel ``i`` turns ``r_i = L / (2π / theta_i)`` times over the training length ``L``. Channels with
    ``r_i > beta_fast`` (32) keep their frequency: they have seen every angle many times, and they carry local order.
    Channels with ``r_i < beta_slow`` (1) never completed a turn in training and are interpolated. In between the
    weight ramps linearly in the channel index; the boundaries are rounded outwards to whole channels (the reference
    implementation's ``truncate``). Worked example: ``head_dim=64, base=10000, L=4096`` keeps frequencies 0–10
    (``floor(10.47)``) and interpolates frequencies 23 and up (``ceil(22.51)``).
    """
    if original_max_positions < 1:
        raise ValueError(f"original_max_positions must be >= 1, got {original_max_positions}")
    if not 0 < beta_slow < beta_fast:
        raise ValueError(f"need 0 < beta_slow < beta_fast, got {beta_slow}, {beta_fast}")

    def channel_of(turns: float) -> float:  # the (fractional) channel index that turns `turns` times over L
        return head_dim * math.log(original_max_positions / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(channel_of(beta_fast)), 0)
    high = min(math.ceil(channel_of(beta_slow)), head_dim - 1)
    extrapolated = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    interpolated = extrapolated / factor
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / max(high - low, 1e-3)).clamp(0, 1)
    return (extrapolated * (1 - ramp) + interpolated * ramp).float()  # ramp 0: keep; ramp 1: interpolate


def rope_attention_factor(scaling: RopeScaling | None, factor: float) -> float:
    """The factor YaRN multiplies ``cos`` and ``sin`` by, ``0.1 ln(factor) + 1`` (so the scores ``q·k`` by its
    square: the paper's temperature ``sqrt(1/t)``, Section 3.4). Stretched contexts flatten the softmax; this sharpens
    it back. 1 for every other scaling and for ``factor <= 1``."""
    if scaling != "yarn" or factor <= 1:
        return 1.0
    return 0.1 * math.log(factor) + 1.0


def rope_angles(
    position_ids: torch.Tensor, inv_freq: torch.Tensor, attention_factor: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of the angles ``position · theta_i``: each ``(B, 1, T, head_dim/2)`` for ``(B, T)`` ids
    (the singleton broadcasts over heads), both multiplied by ``attention_factor`` (:func:`rope_attention_factor`)."""
    angles = position_ids[:, None, :, None].float() * inv_freq.to(position_ids.device)  # (B, 1, T, D/2)
    if attention_factor == 1.0:
        return angles.cos(), angles.sin()
    return angles.cos() * attention_factor, angles.sin() * attention_factor


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairing: RopePairing = "half") -> torch.Tensor:
    """Rotate each channel pair of ``x`` ``(B, H, T, D)`` by its angle; ``cos``/``sin`` are ``(B, 1, T, D/2)``.

    A pair ``(a, b)`` becomes ``(a cos - b sin, a sin + b cos)``. ``pairing="interleaved"`` pairs channels
    ``(2i, 2i+1)``; ``pairing="half"`` pairs ``(i, i + D/2)`` (Hugging Face's ``rotate_half``).
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if pairing == "half":
        a, b = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    if pairing == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    raise ValueError(f"unknown RoPE pairing {pairing!r}; expected 'interleaved' or 'half'")


def half_to_interleaved_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the output rows of a query/key projection ``(n_heads·D, ...)`` so that a model using half-split RoPE
    gives identical scores with interleaved RoPE (the permutation llama.cpp's ``convert_hf_to_gguf.py`` applies)."""
    d = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def interleaved_to_half_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of :func:`half_to_interleaved_rows`: GGUF's query/key rows back to Hugging Face's layout."""
    d = w.shape[0] // n_heads
    return w.reshape(n_heads, d // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """``(n_heads,)`` ALiBi slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), …`` for ``n`` a power of two; other
    head counts take the slopes of the next-lower power of two plus every other slope of the next-higher one
    (the rule of the ALiBi paper's code)."""
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(closest)
    if closest < n_heads:
        slopes += power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(n_heads: int, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """``(1, H, T, S)`` additive ALiBi bias ``-slope_h · |m - n|`` for query positions ``(T,)`` and keys ``(S,)``."""
    distance = (query_pos[:, None] - key_pos[None, :]).abs().float()  # (T, S)
    return -alibi_slopes(n_heads).to(distance.device)[None, :, None, None] * distance


def positions_from_mask(mask: torch.Tensor, new_tokens: int | None = None) -> torch.Tensor:
    """Position ids from an attention mask ``(B, S)`` (True on real tokens): ``cumsum(mask) - 1``, so positions
    count real tokens only and a left-padded prompt gets the positions of the unpadded one. Padding gets 1, as in
    Hugging Face (its value never matters: no real token attends to a padding position). With ``new_tokens``, only
    the last ``new_tokens`` columns ``(B, new_tokens)`` — the tokens being fed after a KV cache.

        >>> positions_from_mask(torch.tensor([[False, False, True, True, True]]))
        tensor([[1, 1, 0, 1, 2]])
    """
    positions = (mask.long().cumsum(-1) - 1).masked_fill(~mask.bool(), 1)  # (B, S)
    return positions if new_tokens is None else positions[:, mask.shape[1] - new_tokens :]

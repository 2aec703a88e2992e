"""Absmax (symmetric) and zero-point (asymmetric) integer quantization, and group-wise round-to-nearest.

Symmetric / absmax, ``b`` bits, ``q_max = 2^{b-1} - 1`` (127 for int8, 7 for int4):

$$ s = \\frac{\\max|x|}{q_{max}}, \\quad q = \\mathrm{round}(x / s) \\in [-q_{max}, q_{max}], \\quad \\hat x = s\\,q $$

Asymmetric / zero-point (``q`` in ``[0, 2^b - 1]``; the range is widened to contain 0 so that
zero is exactly representable, the convention of GPTQ and of integer inference kernels):

$$ s = \\frac{\\max(x, 0) - \\min(x, 0)}{2^b - 1}, \\quad z = \\mathrm{round}(-\\min(x,0)/s), \\quad
   q = \\mathrm{clamp}(\\mathrm{round}(x/s) + z, 0, 2^b-1), \\quad \\hat x = s\\,(q - z) $$

*Granularity* is which elements share one ``(s, z)``: the whole tensor (``"tensor"``), each row
(``"row"``: per output channel of an ``(out, in)`` weight), each column (``"column"``) or each
consecutive block of ``block_size`` elements along a row (``"block"`` = group-wise). The per-group pieces
:func:`minmax_params`, :func:`quantize_to_grid` and :func:`dequantize_grid` are usable on their own: group-wise
round-to-nearest (RTN), the baseline GPTQ and AWQ improve on, is built from them in :mod:`lmkit.quant.rtn`. A
round-to-nearest error is at most half a step: ``|x - x̂| <= s / 2``.

Rows not divisible by ``block_size`` are *rejected* (``ValueError``), because a group must not
straddle two rows.
"""

from __future__ import annotations

from typing import Literal

import torch

from lmkit.checks import check_bits, check_choice, choices
from lmkit.quant.base import QuantizedTensor, check_finite, check_nonempty, pack_nibbles, register, unpack_nibbles

Granularity = Literal["tensor", "row", "column", "block"]
GRANULARITIES: tuple[str, ...] = choices(Granularity)


def minmax_params(x: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point for each group along the LAST dim of ``x`` (..., n) -> two (..., 1) tensors.

    Symmetric: ``zero = 0``. A group of all zeros gets scale 1 (any scale reconstructs zeros).
    """
    check_bits(bits)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = x.abs().amax(dim=-1, keepdim=True) / qmax
        zero = torch.zeros_like(scale)
    else:
        lo = x.amin(dim=-1, keepdim=True).clamp(max=0)
        hi = x.amax(dim=-1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def quantize_to_grid(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Integer codes (as float) of ``x`` on the grid ``(scale, zero)``: round to nearest, then clamp."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(x / scale), -qmax, qmax)
    return torch.clamp(torch.round(x / scale) + zero, 0, 2**bits - 1)


def dequantize_grid(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``x̂ = scale * (q - zero)``."""
    return scale * (q.float() - zero)


def _groups(w: torch.Tensor, granularity: Granularity, block_size: int) -> torch.Tensor:
    """View ``w`` as (n_groups, group_len): each row of the result shares one scale."""
    check_choice("granularity", granularity, GRANULARITIES)
    if granularity == "tensor":
        return w.reshape(1, -1)
    if w.dim() != 2:
        raise ValueError(f"granularity {granularity!r} needs a 2-D (out, in) tensor, got shape {tuple(w.shape)}")
    if granularity == "row":
        return w
    if granularity == "column":
        return w.t()
    if block_size < 1 or w.shape[1] % block_size:
        raise ValueError(
            f"row length {w.shape[1]} is not divisible by block_size {block_size}; pick a divisor "
            "(blocks never straddle rows)"
        )
    return w.reshape(-1, block_size)


def quantize_int(
    w: torch.Tensor,
    bits: int = 8,
    symmetric: bool = True,
    granularity: Granularity = "tensor",
    block_size: int = 64,
) -> QuantizedTensor:
    """Absmax (``symmetric=True``) or zero-point quantization of ``w`` at ``bits`` bits.

    Codes are stored as int8 (symmetric) / uint8 (asymmetric), two per byte when ``bits == 4``;
    one float32 scale and (asymmetric) one uint8 zero-point per group.
    """
    check_finite(w, "weight")
    check_nonempty(w, "weight")
    check_bits(bits)
    g = _groups(w.detach().float(), granularity, block_size)  # (G, n)
    scale, zero = minmax_params(g, bits, symmetric)
    q = quantize_to_grid(g, scale, zero, bits, symmetric)
    codes = q.to(torch.int8 if symmetric else torch.uint8)
    if bits == 4:  # two per byte; symmetric codes are offset by 8 into 0..15 first
        codes = pack_nibbles((q + 8 if symmetric else q).to(torch.uint8))
    tensors = {"codes": codes.reshape(-1), "scale": scale.reshape(-1)}
    if not symmetric:
        tensors["zero"] = zero.reshape(-1).to(torch.uint8)
    meta = {"bits": bits, "symmetric": symmetric, "granularity": granularity, "block_size": block_size}
    return QuantizedTensor("absmax", tuple(w.shape), tensors, meta)


def dequantize_int(q: QuantizedTensor) -> torch.Tensor:
    """Float32 tensor of ``q`` (from :func:`quantize_int`), original shape."""
    m = q.meta
    codes = q.tensors["codes"]
    if m["bits"] == 4:
        codes = unpack_nibbles(codes).float() - (8 if m["symmetric"] else 0)
    n_groups = q.tensors["scale"].numel()
    codes = codes.float().reshape(n_groups, -1)
    zero = q.tensors["zero"].float()[:, None] if "zero" in q.tensors else torch.zeros(n_groups, 1)
    w = dequantize_grid(codes, q.tensors["scale"][:, None], zero.to(codes.device))
    if m["granularity"] == "column":
        return w.t().contiguous().reshape(q.shape)
    return w.reshape(q.shape)


def quantize_absmax(
    w: torch.Tensor, bits: int = 8, granularity: Granularity = "tensor", block_size: int = 64
) -> QuantizedTensor:
    """Symmetric absmax quantization (see module docstring)."""
    return quantize_int(w, bits, True, granularity, block_size)


def quantize_zeropoint(
    w: torch.Tensor, bits: int = 8, granularity: Granularity = "tensor", block_size: int = 64
) -> QuantizedTensor:
    """Asymmetric zero-point quantization (see module docstring)."""
    return quantize_int(w, bits, False, granularity, block_size)


register("absmax", dequantize_int)

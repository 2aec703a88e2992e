"""NF4, the 4-bit NormalFloat of QLoRA (Dettmers et al., 2023), with double quantization.

**Code values.** Pretrained weights are close to normally distributed, so the 16 levels are put
at *quantiles* of N(0, 1): each level should receive the same share of weights. To have an exact
zero, the positive half takes 8 quantiles and the negative half 7 (16 = 8 + 7 + zero):

$$ q^+_i = \\Phi^{-1}\\big(p_i\\big),\\ p_i \\in \\mathrm{linspace}(\\delta, \\tfrac12, 9)_{0..7}, \\qquad
   q^-_j = -\\Phi^{-1}\\big(p_j\\big),\\ p_j \\in \\mathrm{linspace}(\\delta, \\tfrac12, 8)_{0..6} $$

with ``δ = 1 − ½(1/32 + 1/30) = 0.9677083`` (the paper's offset, so the outermost quantile is finite),
and all values divided by the largest so they lie in ``[-1, 1]``. :func:`nf4_code_values` derives
them; the tests compare them with the constants published in bitsandbytes / the QLoRA paper.

**Quantization.** The weight is flattened into blocks of 64; each block is divided by its absmax
and every value is stored as the 4-bit index of the nearest level (two per byte). The tail is
zero-padded to a whole block and dropped on dequantization.

**Double quantization.** One float32 absmax per 64 weights costs 32/64 = 0.5 bits per weight. QLoRA
quantizes these absmaxes again: subtract their mean, then 8-bit block-wise quantization in blocks
of 256 (we use the dynamic 8-bit map of :mod:`lmkit.quant.dynamic8`, as bitsandbytes does), leaving
8/64 + 32/(64·256) = 0.127 bits per weight: 4.127 bits in all instead of 4.5. The mean is a float32 sum, so
weights near float32's largest value (~1e38 and up, over a few blocks) overflow it: that is reported as an error
(``double_quant=False`` stores the absmaxes themselves and takes any finite tensor).
"""

from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist

import torch

from lmkit.checks import check_bits
from lmkit.quant.base import (
    QuantizedTensor,
    check_finite,
    nearest_code,
    pack_nibbles,
    pad_to_blocks,
    register,
    unpack_nibbles,
)
from lmkit.quant.dynamic8 import dequantize_blockwise, quantize_blockwise

BLOCK_SIZE = 64
DQ_BLOCK_SIZE = 256

# The 16 NF4 values as published (bitsandbytes `get_4bit_type("nf4")`, QLoRA appendix); used only by tests.
PUBLISHED_NF4 = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


@lru_cache(maxsize=8, typed=True)  # typed: nf_code_values(4.0) must reach the bits check, not hit 4
def nf_code_values(bits: int = 4) -> torch.Tensor:
    """The ``2^bits`` NormalFloat levels, ascending, from standard-normal quantiles (float32, in [-1, 1]).

    ``2^{bits-1}`` positive quantiles, ``2^{bits-1} - 1`` negative ones and an exact zero; the offset
    ``δ = 1 − ½(1/(2·2^b) + 1/(2·(2^b − 1)))`` keeps the outermost quantile finite (0.9677083 for 4 bits).
    """
    check_bits(bits)
    n = 2**bits
    offset = 1 - 0.5 * (1 / (2 * n) + 1 / (2 * (n - 1)))
    ppf = NormalDist().inv_cdf
    pos = [ppf(float(p)) for p in torch.linspace(offset, 0.5, n // 2 + 1)[:-1]]
    neg = [-ppf(float(p)) for p in torch.linspace(offset, 0.5, n // 2)[:-1]]
    values = torch.tensor(sorted(pos + [0.0] + neg), dtype=torch.float32)
    return values / values.max()


def nf4_code_values() -> torch.Tensor:
    """The 16 NF4 levels (see :func:`nf_code_values`)."""
    return nf_code_values(4)


def quantize_nf4(
    w: torch.Tensor, block_size: int = BLOCK_SIZE, double_quant: bool = True, dq_block_size: int = DQ_BLOCK_SIZE
) -> QuantizedTensor:
    """NF4-quantize any tensor: packed 4-bit indices + per-block absmax (itself 8-bit if ``double_quant``)."""
    check_finite(w, "weight")
    blocks, _ = pad_to_blocks(w.detach(), block_size)  # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    normed = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    idx = nearest_code(normed, nf4_code_values().to(w.device))
    tensors = {"codes": pack_nibbles(idx)}
    meta = {"block_size": block_size, "double_quant": double_quant}
    if double_quant:
        offset = absmax.mean()
        if not torch.isfinite(offset):  # a float32 sum of huge scales overflows (bitsandbytes sums in float32 too)
            raise ValueError(
                f"values up to {float(blocks.abs().max()):.4g} overflow NF4's double quantization: the mean of the "
                f"{absmax.numel()} block absmax values, subtracted before their 8-bit step, is not finite in float32 "
                f"(largest {torch.finfo(torch.float32).max:.4g}); use double_quant=False or rescale the tensor first"
            )
        q = quantize_blockwise(absmax - offset, dq_block_size, signed=True)
        tensors |= {"absmax_codes": q.tensors["codes"], "absmax_scale": q.tensors["absmax"]}
        meta |= {"absmax_offset": float(offset), "dq_block_size": dq_block_size}
    else:
        tensors["absmax"] = absmax
    return QuantizedTensor("nf4", tuple(w.shape), tensors, meta)


def nf4_absmax(q: QuantizedTensor) -> torch.Tensor:
    """The per-block scales of ``q`` (after undoing double quantization if it was used)."""
    if not q.meta["double_quant"]:
        return q.tensors["absmax"]
    n_blocks = -(-q.numel // q.meta["block_size"])
    inner = QuantizedTensor(
        "dynamic8", (n_blocks,), {"codes": q.tensors["absmax_codes"], "absmax": q.tensors["absmax_scale"]},
        {"block_size": q.meta["dq_block_size"], "signed": True},
    )
    return dequantize_blockwise(inner) + q.meta["absmax_offset"]


def dequantize_nf4(q: QuantizedTensor) -> torch.Tensor:
    """Float32 weight of an NF4 :class:`QuantizedTensor`, in its original shape."""
    code = nf4_code_values().to(q.tensors["codes"].device)
    vals = code[unpack_nibbles(q.tensors["codes"]).long()].reshape(-1, q.meta["block_size"])
    return (vals * nf4_absmax(q)[:, None]).reshape(-1)[: q.numel].reshape(q.shape)


register("nf4", dequantize_nf4)

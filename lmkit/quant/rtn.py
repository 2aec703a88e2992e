"""Group-wise round-to-nearest (RTN), the baseline GPTQ and AWQ improve on, and what the three share.

RTN gives every ``group_size`` consecutive inputs of a weight row their own grid (a scale, and a zero point when
asymmetric: :func:`lmkit.quant.absmax.minmax_params`) and rounds each weight to the nearest grid point. GPTQ keeps
the grid and chooses other grid points, compensating each rounding error with the weights not yet quantized; AWQ
rescales input channels before rounding. All three return a :class:`GroupQuantized`, and both calibrated methods
read the layer's inputs through :class:`InputStats`.

    >>> w = torch.tensor([[0.1, -0.4, 0.35, 0.8]])
    >>> r = rtn_groupwise(w, bits=2, group_size=2)        # two groups of two, asymmetric 2-bit grids
    >>> r.codes, r.group_index
    (tensor([[2, 0, 0, 3]], dtype=torch.uint8), tensor([0, 0, 1, 1]))

Left out: stochastic rounding and learned rounding (AdaRound), which need more than round-to-nearest's one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmkit.checks import check_int
from lmkit.quant.absmax import dequantize_grid, minmax_params, quantize_to_grid
from lmkit.quant.base import (
    QuantizedTensor,
    check_finite,
    check_matrix,
    check_nonempty,
    pack_nibbles,
    register,
    unpack_nibbles,
)


class InputStats:
    """Running statistics of a linear layer's inputs: the GPTQ Hessian and AWQ's mean magnitude per channel.

    ``hessian`` is ``2 / N * sum_n x_n x_n^T`` over the N rows seen so far (the mean keeps its scale independent of
    the amount of calibration data; a constant factor changes neither GPTQ's nor AWQ's answer). ``mean_abs`` is
    ``mean_n |x_n|``, AWQ's activation salience.
    """

    def __init__(self, d_in: int) -> None:
        self.d_in = d_in
        self.n = 0
        self.hessian = torch.zeros(d_in, d_in)  # (d_in, d_in)
        self.mean_abs = torch.zeros(d_in)  # (d_in,)

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of inputs ``x`` of shape (..., d_in)."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected inputs with last dimension {self.d_in}, got shape {tuple(x.shape)}")
        x = x.detach().reshape(-1, self.d_in).float().cpu()  # (m, d_in)
        check_finite(x, "calibration inputs")
        m = x.shape[0]
        if m == 0:
            raise ValueError("an empty batch of calibration inputs")
        total = self.n + m
        self.hessian.mul_(self.n / total).addmm_(x.T, x, alpha=2.0 / total)
        self.mean_abs.mul_(self.n / total).add_(x.abs().sum(0), alpha=1.0 / total)
        self.n = total


@dataclass
class GroupQuantized:
    """A weight on a group-wise integer grid: the result of GPTQ, of AWQ and of round-to-nearest here.

    ``weight`` is the dequantized matrix (what the layer computes with); ``codes``, ``scale``, ``zero`` and
    ``group_index`` are its compact form: ``weight[:, j] = scale[:, g] * (codes[:, j] - zero[:, g])`` with
    ``g = group_index[j]`` (the grid of :func:`lmkit.quant.absmax.minmax_params`). The last group may be shorter
    (576 inputs at group size 128), and with GPTQ's act-order the groups are not contiguous. For GPTQ, ``loss`` is
    ``sum_q (w_q - quant(w_q))^2 / (2 [H_F^-1]_qq)``, the increase of ``||WX - QX||^2 / N`` the OBS formula
    predicts at each step (with the dampened Hessian), and ``permutation`` the act-order column order.
    """

    weight: torch.Tensor  # (d_row, d_col) dequantized, original column order
    codes: torch.Tensor  # (d_row, d_col) uint8 in [0, 2^b - 1] (asymmetric) or int8 in [-q_max, q_max]
    scale: torch.Tensor  # (d_row, n_groups)
    zero: torch.Tensor  # (d_row, n_groups) (zeros when symmetric)
    group_index: torch.Tensor  # (d_col,) long: the group of each column
    bits: int
    symmetric: bool
    loss: float | None = None
    permutation: torch.Tensor | None = None  # (d_col,) processing order with act_order

    def to_quantized_tensor(self) -> QuantizedTensor:
        """The packed form (:class:`lmkit.quant.base.QuantizedTensor`, method ``"group"``): two 4-bit codes per byte."""
        codes = self.codes
        if self.symmetric:
            codes = (codes.to(torch.int16) + 2 ** (self.bits - 1)).to(torch.uint8)  # shift into 0..2^b - 1
        packed = pack_nibbles(codes) if self.bits == 4 and codes.numel() % 2 == 0 else codes.reshape(-1)
        tensors = {"codes": packed, "scale": self.scale.float(), "zero": self.zero.float(),
                   "group_index": self.group_index.to(torch.int32)}
        meta = {"bits": self.bits, "symmetric": self.symmetric, "nibbles": packed.numel() != codes.numel()}
        return QuantizedTensor("group", tuple(self.weight.shape), tensors, meta)


def dequantize_group(q: QuantizedTensor) -> torch.Tensor:
    """Float32 weight of a ``"group"`` :class:`QuantizedTensor` (see :meth:`GroupQuantized.to_quantized_tensor`)."""
    codes = q.tensors["codes"]
    codes = (unpack_nibbles(codes) if q.meta["nibbles"] else codes).reshape(q.shape).float()
    if q.meta["symmetric"]:
        codes = codes - 2 ** (q.meta["bits"] - 1)
    g = q.tensors["group_index"].long()
    return dequantize_grid(codes, q.tensors["scale"][:, g], q.tensors["zero"][:, g])


register("group", dequantize_group)


def group_width(d_col: int, group_size: int | None) -> int:
    """Columns per grid for a row of ``d_col`` inputs: ``group_size``, or the whole row when it is ``None``. Group
    ``g`` is columns ``g * width`` onwards, so column ``j`` belongs to group ``j // width``; the last may be shorter."""
    return d_col if group_size is None else check_int("group_size", group_size, minimum=1)


def code_dtype(symmetric: bool) -> torch.dtype:
    """How codes are stored: int8 for a symmetric grid (codes around 0), uint8 for an asymmetric one."""
    return torch.int8 if symmetric else torch.uint8


def rtn_groupwise(
    weight: torch.Tensor, bits: int = 4, group_size: int | None = 128, symmetric: bool = False
) -> GroupQuantized:
    """Round-to-nearest, ``group_size`` consecutive inputs of a row per grid; a shorter last group is allowed.

    The grid of :mod:`lmkit.quant.absmax` (:func:`~lmkit.quant.absmax.minmax_params` per group). Unlike that
    module's ``"block"`` granularity the row length need not be a multiple of the group size: SmolLM2's 576 inputs
    at group size 128 are not.
    """
    check_matrix(weight)
    check_nonempty(weight, "weight")
    d_col = weight.shape[1]
    group = group_width(d_col, group_size)
    w = weight.detach().float()
    scales, zeros, codes, deq = [], [], [], []
    for start in range(0, d_col, group):
        piece = w[:, start : start + group]  # (d_row, <= group)
        s, z = minmax_params(piece, bits, symmetric)  # (d_row, 1) each
        c = quantize_to_grid(piece, s, z, bits, symmetric)
        scales.append(s), zeros.append(z), codes.append(c), deq.append(dequantize_grid(c, s, z))
    return GroupQuantized(
        weight=torch.cat(deq, 1).to(weight.dtype),
        codes=torch.cat(codes, 1).to(code_dtype(symmetric)),
        scale=torch.cat(scales, 1),
        zero=torch.cat(zeros, 1),
        group_index=torch.arange(d_col) // group,
        bits=bits,
        symmetric=symmetric,
    )


def rtn_fake_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 128, symmetric: bool = False) -> torch.Tensor:
    """Quantize-then-dequantize ``w`` (out, in) group-wise: the float weight an RTN model really computes with."""
    return rtn_groupwise(w, bits, group_size, symmetric).weight


def rtn_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 128, symmetric: bool = False) -> QuantizedTensor:
    """Group-wise RTN in packed form (method ``"group"``): every ``group_size`` consecutive inputs of a row share a
    scale (and zero); 4-bit codes two per byte."""
    return rtn_groupwise(w, bits, group_size, symmetric).to_quantized_tensor()

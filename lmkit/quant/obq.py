"""Optimal Brain Quantization (OBQ): the greedy, one-weight-at-a-time ancestor of GPTQ.

Frantar and Alistarh, *Optimal Brain Compression* (arXiv 2208.11580), after Optimal Brain Surgeon (Hassibi & Stork).
Each row ``w`` of a linear layer is quantized on its own; the row's loss ``(w - w_hat) H (w - w_hat)^T / 2`` shares
the Hessian ``H = 2 X X^T / N`` of the layer's inputs. With ``F`` the set of still-unquantized weights of the row:

1. pick the weight whose rounding costs least, ``q = argmin_q (quant(w_q) - w_q)^2 / [H_F^-1]_qq``;
2. round it and move the free weights to compensate, ``delta_F = -(w_q - quant(w_q)) / [H_F^-1]_qq (H_F^-1)_{:,q}``;
3. drop ``q`` from the inverse Hessian with one Gaussian-elimination step,
   ``H_{F-q}^-1 = H_F^-1 - (H_F^-1)_{:,q} (H_F^-1)_{q,:} / [H_F^-1]_qq``, which costs O(d_col^2).

``d_col`` steps per row and ``d_row`` rows, each with its own sequence of inverse Hessians (every row picks its own
order): O(d_row * d_col^3) time and O(d_row * d_col^2) memory when rows are processed together, as here. That is why
:mod:`lmkit.quant.gptq` fixes one column order for all rows. This module is the step-by-step reference the GPTQ test
compares against on a small layer; grids are one per row (no groups), fitted on the original weights.
"""

from __future__ import annotations

import torch

from lmkit.checks import check_bits
from lmkit.quant.absmax import dequantize_grid, minmax_params, quantize_to_grid
from lmkit.quant.gptq import not_positive_definite, prepare_hessian


def obq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, symmetric: bool = False, damp: float = 0.01
) -> torch.Tensor:
    """Quantize ``weight`` (d_row, d_col) with greedy OBQ; return the dequantized matrix (same dtype).

    Uses the same dead-input handling and dampening as :func:`lmkit.quant.gptq.gptq_quantize`. Memory is
    ``d_row * d_col^2`` numbers: meant for small layers (a few hundred columns).
    """
    check_bits(bits)
    W, H = prepare_hessian(weight, hessian, damp)  # (d_row, d_col), (d_col, d_col)
    d_row, d_col = W.shape
    scale, zero = minmax_params(W, bits, symmetric)  # (d_row, 1) each: one grid per row
    if int(torch.linalg.cholesky_ex(H).info):  # not positive definite: its inverse would be garbage
        raise ValueError(not_positive_definite(damp))
    H_inv = torch.linalg.inv(H).expand(d_row, d_col, d_col).clone()  # (d_row, d_col, d_col) one per row
    free = torch.ones(d_row, d_col, dtype=torch.bool)
    Q = torch.zeros_like(W)
    rows = torch.arange(d_row)
    for _ in range(d_col):
        codes = quantize_to_grid(W, scale, zero, bits, symmetric)  # (d_row, d_col) where each weight would round to
        q = dequantize_grid(codes, scale, zero).to(W.dtype)
        diag = torch.diagonal(H_inv, dim1=1, dim2=2)  # (d_row, d_col)
        cost = torch.where(free, (q - W) ** 2 / diag, torch.inf)  # (d_row, d_col)
        pick = cost.argmin(dim=1)  # (d_row,) the cheapest weight of each row
        d = diag[rows, pick]  # (d_row,)
        err = (W[rows, pick] - q[rows, pick]) / d  # (d_row,)
        col = H_inv[rows, :, pick]  # (d_row, d_col) = (H_F^-1)_{:, q} for each row
        W -= err[:, None] * col  # compensate in the free weights
        Q[rows, pick] = q[rows, pick]
        W[rows, pick] = q[rows, pick]
        free[rows, pick] = False
        H_inv -= col[:, :, None] * col[:, None, :] / d[:, None, None]  # eliminate q (H_inv is symmetric)
    return Q.to(weight.dtype)

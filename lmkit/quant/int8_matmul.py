"""LLM.int8() (Dettmers et al., 2022): vector-wise int8 matmul with mixed-precision outlier decomposition.

For ``Y = X Wᵀ`` with ``X`` (tokens, d_in) and ``W`` (d_out, d_in):

1. **Vector-wise quantization.** Each row of ``X`` gets its own absmax scale ``c_x`` and each row of
   ``W`` (one output channel) its own ``c_w``; both are rounded to int8 (``q = round(127 x / c)``).
   The int8 product accumulates in int32 and is rescaled by the outer product of the scales:
   ``Y ≈ (c_x c_wᵀ / 127²) ⊙ (Q_x Q_wᵀ)``.
2. **Outlier decomposition.** In large transformers a few *feature dimensions* (columns of ``X``)
   hold values of magnitude 20–60 while the rest stay near 1. With one scale per row, such a
   column forces a huge step on every other element of that row. LLM.int8() splits the input
   dimensions: the set ``O`` of columns where any ``|x| ≥ threshold`` (6.0) is multiplied in
   higher precision, the rest in int8: ``Y = X_O W_Oᵀ + int8(X_{¬O}) int8(W_{¬O})ᵀ``.

Error bound of the int8 part (what the tests check): with ``x̂ = x + e_x``, ``|e_x| ≤ c_x / 254``
(half a step) and the same for ``w``,

$$ |y_{ij} - \\hat y_{ij}| \\le \\frac{c_{w,j}}{254} \\sum_k |x_{ik}|
   + \\frac{c_{x,i}}{254} \\sum_{k \\notin O} |w_{jk}|
   + (K - |O|) \\frac{c_{x,i} c_{w,j}}{254^2} $$

(the weight is stored in int8 for all columns; the activation is rounded only outside ``O``, and
``c_x`` is then the absmax over the non-outlier columns: that is the whole point).
"""

from __future__ import annotations

import torch

from lmkit.quant.base import QuantizedTensor, check_matrix, register

THRESHOLD = 6.0


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 per row: (R, C) float -> codes (R, C) int8 and scales ``c`` (R, 1) = row absmax."""
    if x.shape[-1] == 0:  # a shape test only: this runs on every decoding step
        raise ValueError(f"x has rows of length 0 (shape {tuple(x.shape)}): no absmax to scale them by")
    c = x.abs().amax(dim=-1, keepdim=True).float()
    q = torch.round(x.float() * (127.0 / torch.where(c > 0, c, 1.0)))  # an all-zero row gets scale 1
    return q.to(torch.int8), c


def int8_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer ``a @ bᵀ`` of int8 (M, K) and (N, K) matrices, as float64 (M, N).

    float64 represents every int32 accumulator exactly (|sum| ≤ K·127² < 2^53), so this is the
    same number an int8 GEMM with int32 accumulation returns, on any device.
    """
    return a.double() @ b.double().t()


def int8_vectorwise_matmul(x: torch.Tensor, qw: torch.Tensor, cw: torch.Tensor) -> torch.Tensor:
    """Plain vector-wise int8 ``x @ Wᵀ`` (no outlier handling). x (M, K) float; qw (N, K) int8; cw (N, 1)."""
    qx, cx = quantize_rowwise(x)
    return (int8_mm(qx, qw) * (cx.double() * cw.double().t()) / (127.0 * 127.0)).float()


def outlier_columns(x: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Boolean mask (K,) of feature dimensions where any |x| reaches ``threshold``."""
    return (x.abs() >= threshold).any(dim=0)


def llm_int8_matmul(
    x: torch.Tensor, qw: torch.Tensor, cw: torch.Tensor, threshold: float = THRESHOLD
) -> torch.Tensor:
    """LLM.int8() ``x @ Wᵀ`` from an int8 row-wise weight. x (..., K) -> (..., N).

    Outlier columns of ``x`` are multiplied in float32 with the (dequantized) matching weight
    columns; all other columns go through :func:`int8_vectorwise_matmul`.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).float()  # (M, K)
    cols = outlier_columns(x2, threshold) if threshold > 0 else torch.zeros(shape[-1], dtype=torch.bool)
    y = int8_vectorwise_matmul(x2 * (~cols).to(x2.dtype), qw, cw)
    if bool(cols.any()):
        w_out = qw[:, cols].float() * (cw / 127.0)  # (N, |O|)
        y = y + x2[:, cols] @ w_out.t()
    return y.reshape(*shape[:-1], qw.shape[0]).to(x.dtype)


def quantize_int8(w: torch.Tensor, threshold: float = THRESHOLD) -> QuantizedTensor:
    """An (out, in) weight as int8 rows + one scale per output row, for :class:`~lmkit.quant.base.QuantLinear`."""
    check_matrix(w)
    qw, cw = quantize_rowwise(w.detach())
    return QuantizedTensor("int8", tuple(w.shape), {"codes": qw, "scale": cw.reshape(-1)}, {"threshold": threshold})


def dequantize_int8(q: QuantizedTensor) -> torch.Tensor:
    return q.tensors["codes"].float() * (q.tensors["scale"][:, None] / 127.0)


def _matmul(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    return llm_int8_matmul(x, q.tensors["codes"], q.tensors["scale"][:, None], q.meta["threshold"])


def error_bound(x: torch.Tensor, w: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Elementwise bound (M, N) on ``|x Wᵀ − llm_int8_matmul(x, W)|`` (float64; see the module docstring).

    The weight's rounding error touches every column; the activation's only the int8 columns.
    A relative 1e-5 slack covers float32 rounding of the products.
    """
    x, w = x.double(), w.double()
    keep = ~outlier_columns(x, threshold) if threshold > 0 else torch.ones(x.shape[1], dtype=torch.bool)
    cx = x[:, keep].abs().amax(dim=1, keepdim=True) if bool(keep.any()) else x.new_zeros(x.shape[0], 1)
    cw = w.abs().amax(dim=1, keepdim=True)  # (N, 1)
    bound = cw.t() / 254 * x.abs().sum(1, keepdim=True)  # weight rounding, all columns
    bound = bound + cx / 254 * w[:, keep].abs().sum(1)[None, :]  # activation rounding, int8 columns
    bound = bound + int(keep.sum()) * cx * cw.t() / 254**2  # product of the two errors
    return bound + 1e-5 * (x.abs() @ w.abs().t())


register("int8", dequantize_int8, _matmul)

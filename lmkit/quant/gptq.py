"""GPTQ: post-training quantization of one linear layer using second-order information.

Frantar, Ashkboos, Hoefler and Alistarh, *GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers* (arXiv 2210.17323). For one layer with weight ``W`` (d_row, d_col) and calibration inputs ``X``
(d_col, N) the problem is

    argmin_Q ||W X - Q X||_F^2,   every entry of Q on the row's b-bit grid.

The loss is a quadratic form in each row with the same Hessian ``H = 2 X X^T`` (d_col, d_col). Optimal Brain
Quantization (OBQ, :mod:`lmkit.quant.obq`) quantizes one weight at a time, greedily picking the weight ``q`` of a row
whose rounding hurts least and moving the still-free weights ``F`` of that row to compensate,

    delta_F = -(w_q - quant(w_q)) / [H_F^-1]_qq * (H_F^-1)_{:, q},

then removes ``q`` from the inverse Hessian with one step of Gaussian elimination: O(d_row * d_col^3) per layer.
GPTQ makes three changes:

1. **Arbitrary order.** Quantize the columns in the same order for every row. All rows then share the sequence of
   inverse Hessians, which is computed once instead of d_row times: O(d_col^3 + d_row * d_col^2).
2. **Lazy batch updates.** Quantize a block of B = 128 columns, applying each column's correction only inside the
   block, and update the rest of the matrix once per block with one matrix product. The FLOPs are the same; the work
   becomes a few large matmuls instead of d_col memory-bound rank-1 updates (better use of memory bandwidth).
3. **Cholesky reformulation.** The rows of the successive inverse Hessians the algorithm needs are exactly the rows of
   the upper Cholesky factor of ``H^-1``, so one Cholesky decomposition replaces the repeated elimination steps, whose
   rounding errors accumulate on large layers. Dampening (``H + lambda I`` with lambda = 1% of the mean diagonal)
   keeps the factorisation stable.

Inputs that never fire (a zero on the Hessian's diagonal) carry no information: like the reference implementation we
set ``H_ii = 1`` and zero the matching weight column, which makes ``H`` invertible without changing ``W X``.

The grid (a scale and a zero point per row and per group of ``group_size`` columns) is the round-to-nearest grid of
:mod:`lmkit.quant.absmax`; GPTQ only decides which grid point each weight goes to and how the others compensate.
"""

from __future__ import annotations

import torch

from lmkit.checks import check_bits, check_int, check_number
from lmkit.quant.absmax import dequantize_grid, minmax_params, quantize_to_grid
from lmkit.quant.base import check_finite, check_matrix, check_nonempty
from lmkit.quant.rtn import GroupQuantized, code_dtype, group_width


def prepare_hessian(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, ...]:
    """Handle dead inputs and dampen: return ``(W, H)`` ready for the Cholesky factorisation.

    Columns whose input is always zero (``H_ii == 0``) get ``H_ii = 1`` and ``W[:, i] = 0`` (their value never
    reaches the output). Then ``lambda = damp * mean(diag H)`` is added to the diagonal.
    """
    check_matrix(weight)
    if hessian.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"hessian must be ({weight.shape[1]}, {weight.shape[1]}), got {tuple(hessian.shape)}")
    check_number("damp", damp, minimum=0.0, below=1.0)
    check_finite(hessian, "hessian (the calibration statistics)")
    check_nonempty(weight, "weight")
    if not bool((torch.diag(hessian) != 0).any()):
        raise ValueError("the hessian is all zero: no calibration data reached this layer (empty or all-zero "
                         "calibration inputs)")
    dtype = torch.promote_types(weight.dtype, torch.float32)
    W = weight.detach().to(dtype).clone()  # (d_row, d_col)
    H = hessian.detach().to(dtype).clone()  # (d_col, d_col)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * torch.diag(H).mean())
    return W, H


def not_positive_definite(damp: float) -> str:
    """The message for a dampened Hessian whose Cholesky factorisation failed."""
    return (f"the Cholesky factorisation of the dampened Hessian failed (it is not positive definite in floating "
            f"point): raise the dampening damp={damp} (e.g. to {min(10 * damp if damp else 0.01, 0.5):g}), or "
            "calibrate on more, more varied samples")


def inverse_hessian_cholesky(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), computed as GPTQ does.

    Row ``i`` of ``U`` (from column ``i`` on), times ``U_ii``, is row ``i`` of ``H_F^-1``, the inverse Hessian of the
    columns ``F = i..d_col-1`` still free after columns ``0..i-1`` were quantized, and ``U_ii^2 = [H_F^-1]_ii``; so the
    OBS update ``(w_i - q_i) / [H_F^-1]_ii * (H_F^-1)_{i,:}`` is ``(w_i - q_i) / U_ii * U[i, i:]``. GPTQ's third step.
    """
    L = torch.linalg.cholesky(H)  # (d, d) lower, H = L L^T
    H_inv = torch.cholesky_inverse(L)  # (d, d)
    return torch.linalg.cholesky(H_inv, upper=True)  # (d, d) upper


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    block_size: int = 128,
    act_order: bool = False,
    damp: float = 0.01,
) -> GroupQuantized:
    """Quantize ``weight`` (d_row, d_col) with GPTQ given the Hessian ``2 X X^T / N`` (d_col, d_col) of its inputs.

    ``group_size`` columns share a scale and zero point per row (``None``: one grid per row), chosen on the current
    (already error-compensated) weights when the group's first column is reached. ``act_order`` processes columns in
    order of decreasing ``H_ii`` (largest inputs first); groups are then formed in that order, so ``group_index`` is
    not monotone. ``block_size`` only changes the order of floating-point work, not the result. Deterministic.
    Computes in float32 (float64 if ``weight`` is float64); returns ``weight``'s dtype.
    """
    check_bits(bits)
    check_int("block_size", block_size, minimum=1)
    W, H = prepare_hessian(weight, hessian, damp)
    group = group_width(W.shape[1], group_size)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)  # (d_col,)
        W, H = W[:, perm], H[perm][:, perm]
    try:
        U = inverse_hessian_cholesky(H)  # (d_col, d_col)
    except torch.linalg.LinAlgError as err:
        raise ValueError(not_positive_definite(damp)) from err
    Q, scale, zero, loss = gptq_columns(W, U, bits, group, symmetric, block_size)
    group_index = torch.arange(W.shape[1]) // group  # (d_col,) in processing order
    codes = quantize_to_grid(Q, scale[:, group_index], zero[:, group_index], bits, symmetric).to(code_dtype(symmetric))
    if perm is not None:
        inverse = torch.argsort(perm)
        Q, codes, group_index = Q[:, inverse], codes[:, inverse], group_index[inverse]
    return GroupQuantized(Q.to(weight.dtype), codes, scale, zero, group_index, bits, symmetric, loss, perm)


def gptq_columns(
    W: torch.Tensor, U: torch.Tensor, bits: int, group: int, symmetric: bool, block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """GPTQ's column loop over ``W`` (d_row, d_col), in place, given the Cholesky factor ``U`` of ``H^-1``.

    Returns the dequantized ``Q`` (d_row, d_col), the grids ``scale`` and ``zero`` (d_row, n_groups) and the summed
    OBS loss. Columns are taken ``block_size`` at a time: inside a block each rounding error is spread over the
    block's later columns at once; the rest of ``W`` receives the block's errors in one matrix product at its end.
    """
    d_row, d_col = W.shape
    n_groups = -(-d_col // group)
    Q = torch.zeros_like(W)  # (d_row, d_col) dequantized, processing order
    scale = torch.zeros(d_row, n_groups, dtype=W.dtype)
    zero = torch.zeros(d_row, n_groups, dtype=W.dtype)
    loss = 0.0
    for i1 in range(0, d_col, block_size):
        i2 = min(i1 + block_size, d_col)
        W1 = W[:, i1:i2].clone()  # (d_row, b) the block, updated column by column
        E1 = torch.zeros_like(W1)  # (d_row, b) scaled errors, for the lazy update of the rest
        U1 = U[i1:i2, i1:i2]  # (b, b)
        for i in range(i2 - i1):
            j = i1 + i
            if j % group == 0:  # a new group starts: fit its grid on the current weights
                g_end = min(j + group, d_col)
                current = W1[:, i : i + g_end - j]  # (d_row, <= group) inside this block
                if g_end > i2:  # the group reaches past the block: add this block's pending updates
                    rest = W[:, i2:g_end] - E1[:, :i] @ U[i1:j, i2:g_end]
                    current = torch.cat([current, rest], dim=1)
                s, z = minmax_params(current, bits, symmetric)  # (d_row, 1) each
                scale[:, j // group], zero[:, j // group] = s[:, 0], z[:, 0]
                s, z = s[:, 0].to(W.dtype), z[:, 0].to(W.dtype)
            w = W1[:, i]  # (d_row,)
            q = dequantize_grid(quantize_to_grid(w, s, z, bits, symmetric), s, z).to(W.dtype)  # nearest grid point
            err = (w - q) / U1[i, i]  # (d_row,)
            W1[:, i:].addr_(err, U1[i, i:], alpha=-1.0)  # OBS update of the block's free columns
            Q[:, j], E1[:, i] = q, err
        loss += float((E1**2).sum()) / 2
        W[:, i2:] -= E1 @ U[i1:i2, i2:]  # lazy batch update of everything after the block
    return Q, scale, zero, loss


def layer_error(weight: torch.Tensor, quantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """``||W X - Q X||_F^2 / N`` computed from the Hessian ``2 X X^T / N``: ``tr(D H D^T) / 2`` with ``D = W - Q``."""
    D = (weight - quantized).to(hessian.dtype)  # (d_row, d_col)
    return float(((D @ hessian) * D).sum() / 2)

"""AWQ: activation-aware weight quantization (Lin et al., arXiv 2306.00978).

Observation: about 1% of a layer's input channels are *salient* — those with large activations — and keeping just
those weights in FP16 recovers most of the accuracy lost by round-to-nearest. That is the paper's motivating
experiment, not the method: mixed precision is awkward for kernels. Instead AWQ *scales* the salient channels up
before quantizing. For a linear layer ``y = W x`` and per-input-channel scales ``s > 0``:

    y = (W diag(s)) (diag(s)^-1 x)  ~  Q(W diag(s)) (x / s).

Scaling a column by ``s_i > 1`` leaves the group's step size nearly unchanged (the group's max barely moves) while the
column's relative rounding error shrinks by ``s_i``; the division ``x / s`` is folded into the previous operation
(an RMSNorm's weight, or the rows of the previous linear layer), so it costs nothing at inference. The scales come
from a grid search over one exponent per layer group:

    s = mean|x|^alpha  (normalised by sqrt(max s * min s)),  alpha in {0, 1/n, ..., (n-1)/n},

minimising the output error ``||Q(W diag(s)) diag(s)^-1 X - W X||^2`` (eq. 4 of the paper). We evaluate it without
running the calibration tokens again: it equals ``tr(D H D^T) / 2`` with ``D`` the weight error and ``H = 2 X X^T / N``,
the same Hessian GPTQ uses (:class:`lmkit.quant.rtn.InputStats`). Then a *clipping* search shrinks each group's range
(``max |w|`` times ``1, 0.95, ..., 0.55``), trading a little clipping error for a finer grid, again measured on the
group's output error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmkit.checks import check_int
from lmkit.quant.base import check_finite, check_matrix
from lmkit.quant.gptq import layer_error
from lmkit.quant.rtn import GroupQuantized, group_width, rtn_groupwise


def awq_scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s = mean|x|^alpha``, clamped away from 0 and normalised so that ``max(s) * min(s) = 1``. (d_in,) -> (d_in,)"""
    s = mean_abs.float().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


@dataclass
class ScaleSearch:
    """Result of :func:`search_scale`: the chosen scales and the whole loss curve (for plotting)."""

    scales: torch.Tensor  # (d_in,)
    alpha: float
    alphas: list[float]
    losses: list[float]  # output error summed over the group's layers, one per alpha


def search_scale(
    weights: list[torch.Tensor],
    hessian: torch.Tensor,
    mean_abs: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    n_grid: int = 20,
) -> ScaleSearch:
    """Grid-search AWQ's exponent ``alpha`` for layers that read the same input (e.g. q, k and v).

    ``weights``: the (d_out_k, d_in) matrices; ``hessian``: ``2 X X^T / N`` (d_in, d_in) of their common input;
    ``mean_abs``: ``mean |x|`` per input channel. ``alpha = 0`` (all scales 1) is plain round-to-nearest, so the
    chosen scales are never worse than RTN on the calibration data.
    """
    check_int("n_grid", n_grid, minimum=1)
    for w in weights:
        if w.ndim != 2 or w.shape[1] != hessian.shape[0]:
            raise ValueError(f"weights must be (d_out, {hessian.shape[0]}), got {tuple(w.shape)}")
    alphas = [i / n_grid for i in range(n_grid)]
    losses = []
    for alpha in alphas:
        s = awq_scales(mean_abs, alpha)  # (d_in,)
        loss = 0.0
        for w in weights:
            w_hat = rtn_groupwise(w.float() * s, bits, group_size, symmetric).weight / s  # Q(W diag(s)) diag(s)^-1
            loss += layer_error(w.float(), w_hat, hessian)
        losses.append(loss)
    best = min(range(n_grid), key=losses.__getitem__)
    return ScaleSearch(awq_scales(mean_abs, alphas[best]), alphas[best], alphas, losses)


def search_clip(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    max_shrink: float = 0.5,
    n_grid: int = 20,
) -> torch.Tensor:
    """Per row and group, the clipping threshold ``t`` minimising the group's output error; (d_row, n_groups).

    Candidates are ``max|w| * (1 - i / n_grid)`` for ``i < max_shrink * n_grid`` (the official code's grid). The error
    of group ``g`` of a row is ``d_g H_gg d_g^T / 2`` with ``d_g`` that group's weight error and ``H_gg`` its block of
    the Hessian (the other groups' errors are independent of this group's threshold).
    """
    d_row, d_col = weight.shape
    group = group_width(d_col, group_size)
    w = weight.float()
    thresholds = []
    for start in range(0, d_col, group):
        piece = w[:, start : start + group]  # (d_row, g)
        h = hessian[start : start + group, start : start + group].float()  # (g, g)
        top = piece.abs().amax(dim=1, keepdim=True)  # (d_row, 1)
        best_err = torch.full((d_row, 1), torch.inf)
        best_t = top.clone()
        for i in range(max(1, int(max_shrink * n_grid))):
            t = top * (1 - i / n_grid)
            d = rtn_groupwise(piece.clamp(-t, t), bits, None, symmetric).weight - piece  # (d_row, g)
            err = ((d @ h) * d).sum(dim=1, keepdim=True) / 2  # (d_row, 1)
            better = err < best_err
            best_err, best_t = torch.where(better, err, best_err), torch.where(better, t, best_t)
        thresholds.append(best_t)
    return torch.cat(thresholds, dim=1)


def apply_clip(weight: torch.Tensor, thresholds: torch.Tensor, group_size: int | None = 128) -> torch.Tensor:
    """Clamp each row's group ``g`` of ``weight`` to ``[-t, t]`` with ``t = thresholds[:, g]``."""
    d_col = weight.shape[1]
    t = thresholds[:, torch.arange(d_col) // group_width(d_col, group_size)]  # (d_row, d_col)
    return torch.maximum(torch.minimum(weight, t), -t)


def awq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scales: torch.Tensor,
    bits: int = 4,
    group_size: int | None = 128,
    symmetric: bool = False,
    clip: bool = True,
) -> GroupQuantized:
    """Quantize ``W diag(s)`` with round-to-nearest after the clipping search (the layer's input must be ``x / s``).

    The returned grid stores ``Q(W diag(s))``: the previous operation has to be divided by ``scales`` (see
    :mod:`lmkit.quant.driver`). ``hessian`` is that of the *unscaled* input; it is rescaled here.
    """
    check_matrix(weight)
    check_finite(hessian, "hessian (the calibration statistics)")
    check_finite(scales, "scales")
    if not bool((scales > 0).all()):
        raise ValueError("AWQ scales must be positive (a zero scale would divide the layer's input by zero)")
    w = weight.float() * scales  # (d_out, d_in)
    if clip:
        h = hessian / scales[:, None] / scales[None, :]  # Hessian of x / s
        w = apply_clip(w, search_clip(w, h, bits, group_size, symmetric), group_size)
    return rtn_groupwise(w, bits, group_size, symmetric)

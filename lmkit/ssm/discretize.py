"""Discretisation: from a continuous-time state space to a recurrence over tokens.

A (linear, time-invariant) state-space model maps an input signal ``x(t)`` to an output ``y(t)`` through a state
``h(t)`` of size ``N``::

    h'(t) = A h(t) + B x(t),        y(t) = C h(t)

Tokens arrive at discrete steps, so we sample with a step size ``Δ`` and hold the input constant over each step
(**zero-order hold**, ZOH). Integrating the ODE exactly over one step gives ``h_t = Ā h_{t-1} + B̄ x_t`` with::

    Ā = exp(ΔA),        B̄ = (ΔA)⁻¹ (exp(ΔA) − I) · ΔB

For a diagonal ``A`` (S4D and Mamba: ``A = diag(a_1 … a_N)``, all ``a_n < 0``) this is per-element:
``Ā = exp(Δa)``, ``B̄ = (exp(Δa) − 1) / a · B`` (:func:`zoh`). A dense ``A`` needs a matrix exponential
(:func:`zoh_matrix`).

**What Mamba's code actually uses.** The paper states ZOH, but the reference implementation
(``selective_scan_ref`` in ``state-spaces/mamba``) and Hugging Face's ``MambaMixer`` compute ``Ā = exp(ΔA)`` and the
simpler ``B̄ = ΔB`` (``deltaB_u = delta * B * u``) — :func:`zoh_simplified`. Since
``(exp(Δa) − 1)/(Δa) = 1 + Δa/2 + O(Δ²)``, the two ``B̄`` differ by a relative ``≈ |Δa|/2``: small for the small
steps Mamba initialises (``Δ ∈ [0.001, 0.1]``), and ``B`` is learned anyway, so the network absorbs the difference.

>>> import torch
>>> a_bar, b_bar = zoh(torch.tensor(0.1), torch.tensor([-1.0]), torch.tensor([1.0]))
>>> round(a_bar.item(), 4), round(b_bar.item(), 4)  # exp(-0.1), (1 - exp(-0.1)) / 1
(0.9048, 0.0952)
>>> zoh_simplified(torch.tensor(0.1), torch.tensor([-1.0]), torch.tensor([1.0]))[1].item()  # Δ·B
0.10000000149011612
"""

from __future__ import annotations

from typing import Any

import torch

from lmkit.checks import check_number, check_tensor


def _check_broadcast(delta: Any, A: torch.Tensor, B: torch.Tensor) -> None:
    """``delta`` a tensor or a real number, ``A`` and ``B`` tensors, and the three shapes broadcastable together."""
    if not isinstance(delta, torch.Tensor):
        check_number("delta", delta)
    check_tensor("A", A)
    check_tensor("B", B)
    shapes = [tuple(t.shape) for t in (delta, A, B) if isinstance(t, torch.Tensor)]
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(f"delta, A and B must broadcast together, got shapes {shapes}") from None


def zoh(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact zero-order-hold ``(Ā, B̄)`` for a **diagonal** ``A`` given as its diagonal (any broadcastable shapes).

    ``Ā = exp(ΔA)``, ``B̄ = expm1(ΔA) / (ΔA) · ΔB``; at ``ΔA = 0`` the limit ``B̄ = ΔB`` is used. Checked: ``delta``
    a tensor or a number, ``A`` and ``B`` tensors, all broadcastable together.
    """
    _check_broadcast(delta, A, B)
    dA = delta * A
    a_bar = torch.exp(dA)
    safe = torch.where(dA == 0, torch.ones_like(dA), dA)
    ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(dA) / safe)  # (exp(ΔA) − 1) / (ΔA)
    return a_bar, ratio * delta * B


def zoh_simplified(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's discretisation in code: ``Ā = exp(ΔA)`` (ZOH) but ``B̄ = ΔB`` (first order in ``Δ``); checked as
    :func:`zoh`."""
    _check_broadcast(delta, A, B)
    return torch.exp(delta * A), delta * B


def zoh_matrix(delta: float, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ZOH for a dense ``A`` ``(N, N)`` and ``B`` ``(N, M)``, also when ``A`` is singular.

    Uses the block-matrix identity (Van Loan, 1978)::

        exp(Δ [[A, B], [0, 0]]) = [[Ā, B̄], [0, I]]

    which equals ``Ā = exp(ΔA)``, ``B̄ = (ΔA)⁻¹(exp(ΔA) − I) ΔB`` whenever ``A`` is invertible, without inverting it.
    Checked: ``delta`` a finite step ``>= 0`` (a NaN or inf step makes every entry NaN), ``A`` a floating-point
    tensor (the block takes its dtype: an integer one would truncate ``B``) and ``B`` a tensor, of those shapes.
    """
    check_number("delta (the step size)", delta, minimum=0.0)
    check_tensor("A", A, floating=True)
    check_tensor("B", B)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0]:
        raise ValueError(f"expected A (N, N) and B (N, M), got {tuple(A.shape)} and {tuple(B.shape)}")
    n, m = B.shape
    block = torch.zeros(n + m, n + m, dtype=A.dtype, device=A.device)
    block[:n, :n], block[:n, n:] = A, B
    e = torch.linalg.matrix_exp(delta * block)
    return e[:n, :n], e[:n, n:]

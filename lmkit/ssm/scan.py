"""The selective scan: Mamba's sequence mixer, as a recurrence and as parallel scans.

After discretisation (:mod:`lmkit.ssm.discretize`) a state-space layer is the **linear recurrence**::

    h_t = a_t ⊙ h_{t-1} + b_t          (a_t = Ā_t, b_t = B̄_t x_t;  h_0 given, usually 0)
    y_t = C_t · h_t  (+ D x_t)

Three ways to compute all ``h_t`` (they agree to rounding; the tests check float64):

* :func:`scan_sequential` — the loop, ``L`` dependent steps: what decoding does one token at a time;
* :func:`scan_associative` — the pairs ``(a, b)`` compose associatively,
  ``(a_1, b_1) ∘ (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)``, so a Hillis–Steele scan needs only ``⌈log₂ L⌉`` steps
  (each one vectorised over the whole sequence; ``O(L log L)`` work);
* :func:`scan_chunked` — the blocked scan GPUs run (Blelloch's idea at two levels): scan every chunk of ``T``
  tokens at once from a zero state, scan the ``L/T`` chunk totals, then add each chunk's incoming state times the
  running product ``∏ a`` inside the chunk. ``T + L/T`` dependent steps (``2√L`` at ``T = √L``), ``O(L)`` work.

All are **linear in L** in memory and (up to the log) in work: the state has a fixed size ``N`` per channel,
however long the sequence — unlike attention's ``L × L`` scores.

**Selective vs time-invariant.** In S4 the parameters ``Δ, B, C`` are the same at every step, so the recurrence is
also a convolution ``y = K * x`` with the kernel ``K_k = C Ā^k B̄`` (:func:`lti_kernel`, :func:`causal_conv`), computed
with an FFT in ``O(L log L)``. Mamba makes ``Δ_t, B_t, C_t`` functions of the token: there is no fixed kernel any
more, only the scan — the price of being able to *choose*, token by token, what to keep and what to forget.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lmkit.checks import check_choice, check_int, check_tensor, choices
from lmkit.ssm.discretize import zoh, zoh_simplified

ScanMethod = Literal["sequential", "associative", "chunked"]
SCAN_METHODS: tuple[str, ...] = choices(ScanMethod)


def _check(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> None:
    """The scans' inputs: ``a`` and ``b`` tensors of one ``(batch, length >= 1, ...)`` shape (a scan of no steps has no
    state to return), ``h0`` None or a tensor ``(batch, ...)``."""
    check_tensor("a", a)
    check_tensor("b", b)
    if h0 is not None:
        check_tensor("h0", h0)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must have the same (batch, length, ...) shape, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    if a.shape[1] == 0:
        raise ValueError(f"a and b must hold at least one step (length >= 1), got shape {tuple(a.shape)}")
    if h0 is not None and h0.shape != (a.shape[0], *a.shape[2:]):
        raise ValueError(f"h0 must be (batch, ...) = {(a.shape[0], *a.shape[2:])}, got {tuple(h0.shape)}")


def scan_sequential(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states ``h`` ``(B, L, ...)`` of ``h_t = a_t h_{t-1} + b_t`` by the loop over ``t`` (dimension 1)."""
    _check(a, b, h0)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def scan_associative(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The same states by a Hillis–Steele inclusive scan: ``⌈log₂ L⌉`` vectorised steps.

    After the step with offset ``k``, position ``t`` holds the composition of the ``2k`` pairs ending at ``t``:
    ``b_t ← a_t b_{t-k} + b_t`` and ``a_t ← a_t a_{t-k}``. The initial state enters as ``b_1 += a_1 h_0``.
    """
    _check(a, b, h0)
    if h0 is not None:
        b = torch.cat([(b[:, 0] + a[:, 0] * h0)[:, None], b[:, 1:]], dim=1)
    offset, L = 1, a.shape[1]
    while offset < L:
        b = torch.cat([b[:, :offset], a[:, offset:] * b[:, :-offset] + b[:, offset:]], dim=1)
        a = torch.cat([a[:, :offset], a[:, offset:] * a[:, :-offset]], dim=1)
        offset *= 2
    return b


def scan_chunked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, chunk_size: int | None = None
                 ) -> torch.Tensor:
    """The same states by a two-level (chunked) scan with chunks of ``chunk_size`` (default ``⌈√L⌉``).

    1. every chunk is scanned from a zero state, all chunks at once (``T`` steps);
    2. the running products ``P = cumprod(a)`` inside each chunk give each chunk's total ``(P_T, h_T)``;
       scanning those totals (``L/T`` steps) gives the state entering every chunk, ``H``;
    3. ``h = h_local + P · H`` — the incoming state decays through the chunk by the product of the ``a``'s.
    """
    _check(a, b, h0)
    Bt, L, rest = a.shape[0], a.shape[1], a.shape[2:]
    T = check_int("chunk_size", chunk_size, minimum=1) if chunk_size is not None else max(1, int(L**0.5 + 0.5))
    n = -(-L // T)
    pad = n * T - L
    if pad:  # pad with the identity pair (a=1, b=0): it leaves the state unchanged
        a = torch.cat([a, a.new_ones(Bt, pad, *rest)], dim=1)
        b = torch.cat([b, b.new_zeros(Bt, pad, *rest)], dim=1)
    a_c, b_c = a.reshape(Bt * n, T, *rest), b.reshape(Bt * n, T, *rest)
    local = scan_sequential(a_c, b_c).reshape(Bt, n, T, *rest)  # 1. chunks from a zero state
    prod = torch.cumprod(a_c, dim=1).reshape(Bt, n, T, *rest)  # ∏ a over the chunk so far
    carry = scan_sequential(prod[:, :, -1], local[:, :, -1], h0)  # 2. state leaving each chunk
    first = torch.zeros_like(carry[:, :1]) if h0 is None else h0[:, None]
    incoming = torch.cat([first, carry[:, :-1]], dim=1)  # state entering each chunk
    h = local + prod * incoming[:, :, None]  # 3.
    return h.reshape(Bt, n * T, *rest)[:, :L]


def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, method: str, chunk_size: int | None
          ) -> torch.Tensor:
    if method == "sequential":
        return scan_sequential(a, b, h0)
    if method == "associative":
        return scan_associative(a, b, h0)
    if method == "chunked":
        return scan_chunked(a, b, h0, chunk_size)
    raise ValueError(f"unknown scan method {method!r}; expected one of {SCAN_METHODS}")


class _LinearScan(torch.autograd.Function):
    """The scan with its own backward, which is a scan too — run **backwards in time**::

        dh_t = g_t + a_{t+1} dh_{t+1}        (g = the gradient arriving at every state h_t)
        db_t = dh_t,   da_t = dh_t h_{t-1},   dh_0 = a_1 dh_1

    Autograd through the loop would record ``L`` small steps; this keeps only ``a`` and ``h``.
    """

    @staticmethod
    def forward(ctx, a, b, h0, method, chunk_size):  # noqa: D102
        h = _scan(a, b, h0, method, chunk_size)
        ctx.save_for_backward(a, h, h0)
        ctx.method, ctx.chunk_size = method, chunk_size
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: D102
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # a_{t+1}; nothing flows in after the end
        dh = _scan(a_next.flip(1), grad_h.flip(1), None, ctx.method, ctx.chunk_size).flip(1)
        h_prev = torch.cat([(torch.zeros_like(h[:, 0]) if h0 is None else h0)[:, None], h[:, :-1]], dim=1)
        dh0 = a[:, 0] * dh[:, 0] if h0 is not None else None
        return dh * h_prev, dh, dh0, None, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, method: ScanMethod = "chunked",
                chunk_size: int | None = None) -> torch.Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` by ``method`` (see the module docstring), differentiable through
    :class:`_LinearScan` (its backward is the same scan, reversed in time)."""
    if method not in SCAN_METHODS:
        raise ValueError(f"unknown scan method {method!r}; expected one of {SCAN_METHODS}")
    _check(a, b, h0)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, b, h0)):
        return _LinearScan.apply(a, b, h0, method, chunk_size)
    return _scan(a, b, h0, method, chunk_size)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    method: ScanMethod = "chunked",
    discretization: Literal["mamba", "zoh"] = "mamba",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective SSM ``y = SSM(Δ, A, B, C)(u)``, channel by channel; returns ``(y, last state)``.

    Shapes (batch ``Bt``, length ``L``, channels ``E``, state size ``N``): ``u``, ``delta`` (already positive,
    after softplus) and ``z`` ``(Bt, L, E)``; ``A`` ``(E, N)`` (the diagonal of each channel's ``A``, negative);
    ``B``, ``C`` ``(Bt, L, N)`` — shared by all channels, different at every token; ``D`` ``(E,)``; ``h0`` and the
    returned state ``(Bt, E, N)``. Per channel ``e`` and token ``t``::

        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t       (discretization="mamba"; "zoh" uses the exact B̄)
        y_t = C_t · h_t + D u_t,   then y_t · silu(z_t) when z is given

    This is ``selective_scan_ref`` of ``state-spaces/mamba`` in lmkit's ``(batch, length, channels)`` layout.
    Checked (shapes only): every argument a tensor of the shape above, ``L >= 1``; ``D`` and ``z`` are not broadcast.
    """
    _check_selective(u, delta, A, B, C, D, z)
    discretize = {"mamba": zoh_simplified, "zoh": zoh}.get(discretization)
    if discretize is None:
        raise ValueError(f"discretization must be 'mamba' or 'zoh', got {discretization!r}")
    a, b_bar = discretize(delta[..., None], A, B[:, :, None, :])  # (Bt, L, E, N) each
    h = linear_scan(a, b_bar * u[..., None], h0, method, chunk_size)  # (Bt, L, E, N)
    y = torch.einsum("blen,bln->ble", h, C)
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y, h[:, -1]


def _check_selective(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     D: torch.Tensor | None, z: torch.Tensor | None) -> None:
    """:func:`selective_scan`'s shapes (``h0`` is checked by the scan)."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z)):
        if t is not None or name not in ("D", "z"):
            check_tensor(name, t)
    if u.ndim != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, length, channels), got {tuple(u.shape)}, "
                         f"{tuple(delta.shape)}")
    Bt, L, E = u.shape
    if L == 0:
        raise ValueError(f"u must hold at least one step (length >= 1), got shape {tuple(u.shape)}")
    if A.ndim != 2 or A.shape[0] != E or B.shape != (Bt, L, A.shape[1]) or C.shape != B.shape:
        raise ValueError(f"expected A (E={E}, N), B and C (batch, length, N); got A {tuple(A.shape)}, "
                         f"B {tuple(B.shape)}, C {tuple(C.shape)}")
    if D is not None and D.shape != (E,):
        raise ValueError(f"D must be (channels,) = ({E},), got {tuple(D.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def lti_kernel(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int,
               discretization: Literal["mamba", "zoh"] = "mamba") -> torch.Tensor:
    """The convolution kernel ``K_k = Σ_n C_n Ā_n^k B̄_n`` ``(E, length)`` of a **time-invariant** diagonal SSM.

    ``delta`` ``(E,)``, ``A`` ``(E, N)``, ``B`` and ``C`` ``(N,)``. Unrolling ``h_t = Ā h_{t-1} + B̄ u_t`` from
    ``h_0 = 0`` gives ``y_t = Σ_k K_k u_{t-k}``: the whole layer is one causal convolution (S4's view).
    Checked: those shapes, ``length`` a positive int, ``discretization`` ``"mamba"`` or ``"zoh"``.
    """
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C)):
        check_tensor(name, t)
    if A.ndim != 2 or delta.shape != A.shape[:1] or B.shape != A.shape[1:] or C.shape != B.shape:
        raise ValueError(f"expected delta (E,), A (E, N), B and C (N,); got delta {tuple(delta.shape)}, "
                         f"A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}")
    check_int("length", length, minimum=1)
    check_choice("discretization", discretization, ("mamba", "zoh"))
    discretize = zoh if discretization == "zoh" else zoh_simplified
    a, b_bar = discretize(delta[:, None], A, B)  # (E, N)
    powers = a[:, None, :] ** torch.arange(length, device=a.device, dtype=a.dtype)[None, :, None]  # (E, L, N)
    return (powers * (b_bar * C)[:, None, :]).sum(-1)


def causal_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``y_t = Σ_{k ≤ t} K_k u_{t-k}`` for ``u`` ``(Bt, L, E)`` and ``kernel`` ``(E, K)``, by FFT in ``O(L log L)``
    (zero-padded to ``2L`` so the circular convolution does not wrap around).

    Checked: ``u`` has ``L >= 1`` steps, ``kernel`` one row per channel (not broadcast). A shorter kernel is
    zero-padded; taps ``K_k`` with ``k >= L`` reach no output and are dropped (left in, they would wrap around).
    """
    check_tensor("u", u, 3, "(batch, length, channels)")
    check_tensor("kernel", kernel, 2, "(channels, taps)")
    L = u.shape[1]
    if L == 0 or kernel.shape[0] != u.shape[2]:
        raise ValueError(f"u (batch, length >= 1, E) and kernel (E, taps) do not fit: u {tuple(u.shape)}, "
                         f"kernel {tuple(kernel.shape)}")
    n = 2 * L
    spectrum = torch.fft.rfft(u.transpose(1, 2), n=n) * torch.fft.rfft(kernel[:, :L], n=n)  # (Bt, E, n/2+1)
    return torch.fft.irfft(spectrum, n=n)[..., :L].transpose(1, 2)

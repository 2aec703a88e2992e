"""FlashAttention as Triton GPU kernels: the same algorithm as :mod:`lmkit.efficient.flash`, one program per tile row.

In :mod:`lmkit.efficient.flash` the tiles are PyTorch slices and the "SRAM" is only a way of speaking.
Here each Triton *program* really owns one block of ``BLOCK_M`` queries: it loads ``Q_i`` once into
registers/shared memory, streams ``K_j, V_j`` through in blocks of ``BLOCK_N`` with the online softmax,
and writes ``O_i`` and the log-sum-exp once. ``S`` and ``P`` never touch main memory (HBM).

* forward: grid ``(⌈N_q / BLOCK_M⌉, B·H)``;
* backward (FlashAttention-2): ``D = rowsum(dO ∘ O)``; one kernel per key block accumulates ``dK_j, dV_j``
  over the query blocks, another per query block accumulates ``dQ_i`` over the key blocks — both recompute
  ``P = exp(S - lse)`` instead of reading it.

Conventions are those of :func:`lmkit.efficient.flash.flash_attention` (``(B, H, N, d)`` tensors, boolean
``attn_mask`` with ``True`` = may attend or a float bias, bottom-right ``is_causal``, optional ``window``,
fully masked rows give zeros). On a machine without a GPU, set ``TRITON_INTERPRET=1`` *before* triton is
first imported: the kernels then run, slowly but exactly, on CPU tensors (that is how the tests run them).
Triton reads the variable when it decorates its functions, and torch itself imports triton on some paths
(e.g. entering a ``TorchDispatchMode``), so set it at the very top of a script or notebook.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from lmkit.efficient.flash import TiledAttentionFunction, check_attention_inputs, expand_kv_heads, resolve_scale


@triton.jit
def _scores(q, k, mask_ptrs, rows, cols, n_q, n_k, offset, scale, window,
            HAS_MASK: tl.constexpr, MASK_IS_BOOL: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Scores ``Q_i K_jᵀ · scale`` of one tile (BLOCK_M, BLOCK_N), -inf where hidden (shared by all kernels)."""
    s = tl.dot(q, tl.trans(k)) * scale
    valid = cols[None, :] < n_k
    if IS_CAUSAL:
        valid = valid & (cols[None, :] <= rows[:, None] + offset)
    if HAS_WINDOW:
        valid = valid & (cols[None, :] > rows[:, None] + offset - window)
        if not IS_CAUSAL:
            valid = valid & (cols[None, :] < rows[:, None] + offset + window)
    if HAS_MASK:  # rows < n_q: the last query block is partial, and the mask ends at row n_q - 1
        m = tl.load(mask_ptrs, mask=valid & (rows[:, None] < n_q), other=0)
        if MASK_IS_BOOL:
            valid = valid & (m != 0)
        else:
            s = s + m
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _load_tile(ptr, idx, n, offs, offs_mask, stride_n, stride_d):
    """Rows ``idx`` of a (N, d) slice starting at ``ptr``, columns ``offs``: zeros past row ``n`` or outside
    ``offs_mask`` (the partial last block, and the padding of d up to a power of two)."""
    return tl.load(ptr + idx[:, None] * stride_n + offs[None, :] * stride_d,
                   mask=(idx[:, None] < n) & offs_mask[None, :], other=0.0)


@triton.jit
def _key_range(pid_m, n_k, offset, window, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``(lo, hi)``: the keys query block ``pid_m`` may see, ``lo`` rounded down to a key block (the row of tiles
    that :func:`lmkit.efficient.flash.tile_schedule` keeps)."""
    lo, hi = 0, n_k
    if IS_CAUSAL:  # keys after the block's last query are never visible
        hi = tl.minimum(n_k, (pid_m + 1) * BLOCK_M + offset)
    if HAS_WINDOW:  # keys before the block's first query's window are never visible
        lo = tl.maximum(0, pid_m * BLOCK_M + offset - window + 1) // BLOCK_N * BLOCK_N
    return lo, hi


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, MASK,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod, smb, smh, smm, smn,
    H, n_q, n_k, d, d_v, offset, scale, window,
    HAS_MASK: tl.constexpr, MASK_IS_BOOL: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    dmask, dvmask = offs_d < d, offs_dv < d_v
    q = _load_tile(Q + b * sqb + h * sqh, rows, n_q, offs_d, dmask, sqm, sqd)  # Q_i stays on chip
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    lo, hi = _key_range(pid_m, n_k, offset, window, IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        k = _load_tile(K + b * skb + h * skh, cols, n_k, offs_d, dmask, skn, skd)  # (BLOCK_N, BLOCK_D)
        s = _scores(q, k, MASK + b * smb + h * smh + rows[:, None] * smm + cols[None, :] * smn,
                    rows, cols, n_q, n_k, offset, scale, window, HAS_MASK, MASK_IS_BOOL, IS_CAUSAL, HAS_WINDOW)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)  # online-softmax rescale of everything accumulated so far
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(V + b * svb + h * svh, cols, n_k, offs_dv, dvmask, svn, svd)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    seen = l_i != 0  # 0: no visible key (zeros); a NaN from NaN inputs stays NaN
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    tl.store(O + b * sob + h * soh + rows[:, None] * som + offs_dv[None, :] * sod, out.to(O.dtype.element_ty),
             mask=(rows[:, None] < n_q) & dvmask[None, :])
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("inf"))
    tl.store(LSE + pid_bh * n_q + rows, lse, mask=rows < n_q)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, MASK,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, smb, smh, smm, smn,
    H, n_q, n_k, d, d_v, offset, scale, window,
    HAS_MASK: tl.constexpr, MASK_IS_BOOL: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program per key block j: dV_j = Σ_i P_ijᵀ dO_i, dK_j = scale Σ_i dS_ijᵀ Q_i.

    ``DO``/``DK``/``DV`` are contiguous like ``Q``/``K``/``V`` would be: strides are passed for Q, K, V only,
    and the gradients use the (B, H, N, d) contiguous layout.
    """
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    dmask, dvmask = offs_d < d, offs_dv < d_v
    k = _load_tile(K + b * skb + h * skh, cols, n_k, offs_d, dmask, skn, skd)  # K_j, V_j stay on chip
    v = _load_tile(V + b * svb + h * svh, cols, n_k, offs_dv, dvmask, svn, svd)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), tl.float32)
    lo, hi = 0, n_q
    if IS_CAUSAL:  # queries before this block's first key (minus the offset) never see it
        lo = tl.maximum(0, pid_n * BLOCK_N - offset) // BLOCK_M * BLOCK_M
    if HAS_WINDOW:
        hi = tl.minimum(n_q, (pid_n + 1) * BLOCK_N - offset + window)
    for start in range(lo, hi, BLOCK_M):
        rows = start + offs_m
        q = _load_tile(Q + b * sqb + h * sqh, rows, n_q, offs_d, dmask, sqm, sqd)
        s = _scores(q, k, MASK + b * smb + h * smh + rows[:, None] * smm + cols[None, :] * smn,
                    rows, cols, n_q, n_k, offset, scale, window, HAS_MASK, MASK_IS_BOOL, IS_CAUSAL, HAS_WINDOW)
        lse = tl.load(LSE + pid_bh * n_q + rows, mask=rows < n_q, other=float("inf"))
        p = tl.exp(s - lse[:, None])  # (BLOCK_M, BLOCK_N), recomputed
        do = _load_tile(DO + pid_bh * n_q * d_v, rows, n_q, offs_dv, dvmask, d_v, 1)
        dv += tl.dot(tl.trans(p).to(do.dtype), do)
        dp = tl.dot(do, tl.trans(v))
        delta = tl.load(DELTA + pid_bh * n_q + rows, mask=rows < n_q, other=0.0)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q) * scale
    kv_rows = pid_bh * n_k + cols[:, None]
    tl.store(DK + kv_rows * d + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=(cols[:, None] < n_k) & dmask[None, :])
    tl.store(DV + kv_rows * d_v + offs_dv[None, :], dv.to(DV.dtype.element_ty),
             mask=(cols[:, None] < n_k) & dvmask[None, :])


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, MASK,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, smb, smh, smm, smn,
    H, n_q, n_k, d, d_v, offset, scale, window,
    HAS_MASK: tl.constexpr, MASK_IS_BOOL: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """One program per query block i: dQ_i = scale Σ_j dS_ij K_j."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    dmask, dvmask = offs_d < d, offs_dv < d_v
    q = _load_tile(Q + b * sqb + h * sqh, rows, n_q, offs_d, dmask, sqm, sqd)
    do = _load_tile(DO + pid_bh * n_q * d_v, rows, n_q, offs_dv, dvmask, d_v, 1)
    lse = tl.load(LSE + pid_bh * n_q + rows, mask=rows < n_q, other=float("inf"))
    delta = tl.load(DELTA + pid_bh * n_q + rows, mask=rows < n_q, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    lo, hi = _key_range(pid_m, n_k, offset, window, IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        k = _load_tile(K + b * skb + h * skh, cols, n_k, offs_d, dmask, skn, skd)  # (BLOCK_N, BLOCK_D)
        s = _scores(q, k, MASK + b * smb + h * smh + rows[:, None] * smm + cols[None, :] * smn,
                    rows, cols, n_q, n_k, offset, scale, window, HAS_MASK, MASK_IS_BOOL, IS_CAUSAL, HAS_WINDOW)
        p = tl.exp(s - lse[:, None])
        v = _load_tile(V + b * svb + h * svh, cols, n_k, offs_dv, dvmask, svn, svd)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k) * scale
    tl.store(DQ + (pid_bh * n_q + rows[:, None]) * d + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=(rows[:, None] < n_q) & dmask[None, :])


def _check_interpreter(device: torch.device) -> None:
    """CPU tensors only work in Triton's interpreter, which must have been on when triton was imported."""
    if device.type == "cuda":
        return
    if type(_fwd_kernel).__name__ != "InterpretedFunction" or type(tl.zeros).__name__ != "InterpretedFunction":
        raise RuntimeError(
            f"the Triton kernels got {device.type} tensors, which needs Triton's interpreter: set the environment "
            "variable TRITON_INTERPRET=1 before triton is first imported (at the top of the script or notebook; "
            "torch may import triton itself), or pass CUDA tensors"
        )


def _launch_args(q, k, v, mask, is_causal, window, scale, block_m, block_n):
    """Strides, sizes and compile-time flags shared by the three kernels."""
    B, H, n_q, d = q.shape
    n_k, d_v = k.shape[2], v.shape[-1]
    if mask is None:
        mask_arg, mask_strides, has_mask, is_bool = q, (0, 0, 0, 0), False, True  # dummy pointer, never read
    elif mask.dtype == torch.bool:
        mask_arg, mask_strides, has_mask, is_bool = mask.view(torch.uint8), mask.stride(), True, True
    else:
        mask_arg, mask_strides, has_mask, is_bool = mask.to(torch.float32), mask.stride(), True, False
    strides = (*q.stride(), *k.stride(), *v.stride())
    sizes = (H, n_q, n_k, d, d_v, n_k - n_q, scale, window or 0)
    meta = dict(HAS_MASK=has_mask, MASK_IS_BOOL=is_bool, IS_CAUSAL=bool(is_causal), HAS_WINDOW=window is not None,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(d)),
                BLOCK_DV=max(16, triton.next_power_of_2(d_v)))
    return mask_arg, mask_strides, strides, sizes, meta


def triton_flash_forward(q, k, v, mask, scale, is_causal, window, block_m, block_n):
    """Launch the forward kernel. Returns ``out`` (B, H, N_q, d_v) and ``lse`` (B, H, N_q) in float32."""
    B, H, n_q, _ = q.shape
    out = torch.empty(B, H, n_q, v.shape[-1], dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, n_q, dtype=torch.float32, device=q.device)
    mask_arg, mstr, strides, sizes, meta = _launch_args(q, k, v, mask, is_causal, window, scale, block_m, block_n)
    grid = (triton.cdiv(n_q, block_m), B * H)
    _fwd_kernel[grid](q, k, v, out, lse, mask_arg, *strides[:4], *strides[4:8], *strides[8:], *out.stride(), *mstr,
                      *sizes, **meta)
    return out, lse


def triton_flash_backward(grad_out, q, k, v, out, lse, mask, scale, is_causal, window, block_m, block_n):
    """Launch the two backward kernels. Returns ``(dq, dk, dv)``."""
    B, H, n_q, _ = q.shape
    n_k = k.shape[2]
    do = grad_out.contiguous()
    delta = (do.float() * out.float()).sum(-1).contiguous()  # (B, H, N_q): D = rowsum(dO ∘ O)
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    mask_arg, mstr, strides, sizes, meta = _launch_args(q, k, v, mask, is_causal, window, scale, block_m, block_n)
    _bwd_dkdv_kernel[(triton.cdiv(n_k, block_n), B * H)](q, k, v, do, lse, delta, dk, dv, mask_arg, *strides, *mstr,
                                                         *sizes, **meta)
    _bwd_dq_kernel[(triton.cdiv(n_q, block_m), B * H)](q, k, v, do, lse, delta, dq, mask_arg, *strides, *mstr,
                                                       *sizes, **meta)
    return dq, dk, dv


def triton_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    window: int | None = None,
    block_m: int = 32,
    block_n: int = 32,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """FlashAttention with Triton kernels; same call as :func:`lmkit.efficient.flash.flash_attention`.

    Block sizes must be powers of two ≥ 16 (``tl.dot``'s minimum); on a GPU 64 or 128 are typical.
    """
    k, v = expand_kv_heads(q, k, v, enable_gqa)
    mask = check_attention_inputs(q, k, v, attn_mask, window, is_causal)
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {size}")
    _check_interpreter(q.device)
    if q.dtype == torch.float64:
        raise TypeError("Triton's tl.dot has no float64 path: use float32, float16 or bfloat16")
    scale = resolve_scale(q, scale)
    kernels = (triton_flash_forward, triton_flash_backward)
    return TiledAttentionFunction.apply(kernels, q, k, v, mask, scale, is_causal, window, block_m, block_n)

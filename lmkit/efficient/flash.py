"""FlashAttention in plain PyTorch: exact attention computed tile by tile, never storing the N×N matrix.

Standard attention writes the whole score matrix ``S = QKᵀ/√d`` and the probabilities ``P = softmax(S)``
to main memory (``N²`` numbers each), then reads them back. FlashAttention (Dao et al., 2022; the
"FlashAttention-2" loop order of Dao, 2023) computes *the same* output block by block:

* take a block of ``block_q`` queries and walk over the keys in blocks of ``block_k``;
* for each tile compute the scores, and fold them into a running softmax (the **online softmax**):
  keep per query the running maximum ``m``, the running sum ``l = Σ exp(s - m)`` and the unnormalised
  output ``acc = Σ exp(s - m) v``. When a new tile raises the maximum from ``m`` to ``m'``, everything
  accumulated so far is rescaled by ``α = exp(m - m')`` — exact, because ``exp(s - m') = α · exp(s - m)``;
* at the end ``out = acc / l`` and the **log-sum-exp** ``lse = m + log l`` is saved (one number per query).

The backward pass recomputes each tile's probabilities from ``lse`` (``P = exp(S - lse)``) instead of
storing ``P``: it does *more* FLOPs than standard attention, but it reads and writes far fewer bytes,
which is where the speed comes from on a GPU (see :mod:`lmkit.efficient.cost`). Memory is ``O(N d)`` instead of
``O(N²)``: the saved tensors are Q, K, V, O and lse.

Conventions (the same as :func:`torch.nn.functional.scaled_dot_product_attention`):

* ``q`` is ``(B, H, N_q, d)``, ``k`` is ``(B, H, N_k, d)``, ``v`` is ``(B, H, N_k, d_v)``; output ``(B, H, N_q, d_v)``;
* ``attn_mask`` is boolean (``True`` = may attend, as in :mod:`lmkit.transformer.masks`) or a float bias added to the
  scores (e.g. ALiBi), broadcastable to ``(B, H, N_q, N_k)``;
* ``is_causal=True`` is **bottom-right aligned**: query ``i`` sees key ``j`` iff ``j <= i + (N_k - N_q)``.
  With ``N_q == N_k`` that is the usual lower triangle; with a KV cache (``N_k`` = cache + new tokens,
  ``N_q`` = new tokens) the last query sees every key, as decoding needs. (SDPA's own ``is_causal`` is
  top-left aligned when ``N_q != N_k``; :func:`torch.nn.attention.bias.causal_lower_right` is the
  bottom-right one.)
* a query with no visible key (a fully masked row) gets an output of **zeros**, not NaN;
* a NaN in the inputs (a diverged model) propagates as NaN, as in SDPA: it is never hidden as zeros.
"""

from __future__ import annotations

import math

import torch

from lmkit.checks import check_int, check_number

Tile = tuple[int, int, int, int]
"""``(i0, i1, j0, j1)``: queries ``i0:i1`` against keys ``j0:j1``."""


def _visible(rows: torch.Tensor, cols: torch.Tensor, offset: int, is_causal: bool, window: int | None) -> torch.Tensor:
    """Structural mask for query positions ``rows`` (R, 1) and key positions ``cols`` (1, C): ``True`` = visible.

    ``offset = N_k - N_q`` aligns the last query with the last key (bottom-right convention).
    """
    pos = rows + offset  # the key position "aligned" with each query
    allowed = torch.ones(rows.shape[0], cols.shape[1], dtype=torch.bool, device=rows.device)
    if is_causal:
        allowed &= cols <= pos
    if window is not None:
        allowed &= cols > pos - window  # keys pos-window+1 .. pos (Mistral / HF convention)
        if not is_causal:
            allowed &= cols < pos + window  # bidirectional window: |j - pos| < window
    return allowed


def structural_mask(
    n_q: int, n_k: int, is_causal: bool = False, window: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``(n_q, n_k)`` boolean mask that ``is_causal``/``window`` stand for (bottom-right aligned)."""
    rows = torch.arange(n_q, device=device)[:, None]
    cols = torch.arange(n_k, device=device)[None, :]
    return _visible(rows, cols, n_k - n_q, is_causal, window)


def tile_schedule(
    n_q: int, n_k: int, block_q: int, block_k: int, is_causal: bool = False, window: int | None = None
) -> list[Tile]:
    """The tiles a FlashAttention pass visits, query block by query block (the FlashAttention-2 order).

    Tiles that ``is_causal``/``window`` hide completely are skipped: for a causal ``N × N`` attention
    that is about half of them, for a sliding window of width ``w`` all but ``O(N w / block²)``.
    :mod:`lmkit.efficient.cost` counts bytes over exactly this schedule.
    """
    offset = n_k - n_q
    tiles = []
    for i0 in range(0, n_q, block_q):
        i1 = min(i0 + block_q, n_q)
        for j0 in range(0, n_k, block_k):
            j1 = min(j0 + block_k, n_k)
            if is_causal and j0 > i1 - 1 + offset:  # every key is after the last query's limit
                continue
            if window is not None:
                if j1 - 1 <= i0 + offset - window:  # every key is too old even for the first query
                    continue
                if not is_causal and j0 >= i1 - 1 + offset + window:  # too far ahead (bidirectional window)
                    continue
            tiles.append((i0, i1, j0, j1))
    return tiles


def _group(tiles: list[Tile], by: int) -> dict[int, list[Tile]]:
    """Tiles keyed by their query-block start (``by=0``) or key-block start (``by=2``)."""
    groups: dict[int, list[Tile]] = {}
    for tile in tiles:
        groups.setdefault(tile[by], []).append(tile)
    return groups


def expand_kv_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention: repeat each of the ``H_kv`` K/V heads ``H / H_kv`` times (SDPA's ``enable_gqa``).

    Query head ``h`` uses K/V head ``h // (H / H_kv)``. The copies cost ``O(N d H)`` memory, still linear in
    ``N``; autograd sums the gradients of the copies back onto the shared heads.
    """
    if not enable_gqa or k.ndim != 4 or q.ndim != 4 or k.shape[1] == q.shape[1]:
        return k, v
    if q.shape[1] % k.shape[1] or k.shape[1] != v.shape[1]:
        raise ValueError(f"enable_gqa needs the {q.shape[1]} query heads to be a multiple of the K/V heads, "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    group = q.shape[1] // k.shape[1]
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


def check_attention_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    window: int | None,
    is_causal: bool = False,
) -> torch.Tensor | None:
    """Validate shapes and return the mask as a broadcast view of shape (B, H, N_q, N_k) (no copy)."""
    if not isinstance(is_causal, bool):  # a mask passed positionally lands here; bool(tensor) would hide that
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}: pass a mask as attn_mask")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(f"{name} must be (B, H, N, d), got shape {tuple(t.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the head dim, got {q.shape[-1]} and {k.shape[-1]}")
    if q.shape[-1] == 0:
        raise ValueError(f"the head dim must be at least 1, got q of shape {tuple(q.shape)}")
    if window is not None:
        check_int("window", window, minimum=1)
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a tensor (bool: True = may attend, or a float bias), got "
                        f"{type(attn_mask).__name__}")
    if not (attn_mask.dtype == torch.bool or attn_mask.is_floating_point()):
        raise TypeError(f"attn_mask must be boolean (True = may attend) or a float bias, got {attn_mask.dtype}")
    if attn_mask.is_floating_point() and attn_mask.requires_grad:
        raise ValueError("a float attn_mask is treated as a constant bias; its gradient is not computed")
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    try:
        return torch.broadcast_to(attn_mask, shape)
    except RuntimeError as err:
        raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to {shape}") from err


def _tile_scores(
    q_i: torch.Tensor,
    k_j: torch.Tensor,
    tile: Tile,
    mask: torch.Tensor | None,
    scale: float,
    offset: int,
    is_causal: bool,
    window: int | None,
) -> torch.Tensor | None:
    """Scaled, masked scores of one tile (B, H, Br, Bc); ``None`` when the boolean mask hides the whole tile."""
    i0, i1, j0, j1 = tile
    s = q_i @ k_j.transpose(-2, -1) * scale  # (B, H, Br, Bc)
    blocked = None
    if mask is not None:
        m = mask[:, :, i0:i1, j0:j1]
        if m.dtype == torch.bool:
            if not m.any():
                return None  # block-sparse skip: nothing in this tile is visible
            blocked = ~m
        else:
            s = s + m.to(s.dtype)
    inside = (not is_causal or j1 - 1 <= i0 + offset) and (window is None or (
        j0 > i1 - 1 + offset - window and (is_causal or j1 - 1 < i0 + offset + window)))
    if not inside:  # the tile straddles the causal diagonal or the window edge
        rows = torch.arange(i0, i1, device=s.device)[:, None]
        cols = torch.arange(j0, j1, device=s.device)[None, :]
        hidden = ~_visible(rows, cols, offset, is_causal, window)
        blocked = hidden if blocked is None else blocked | hidden
    if blocked is not None:
        s = s.masked_fill(blocked, float("-inf"))
    return s


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate half-precision inputs in float32, like the GPU kernels do."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def online_softmax_update(
    m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, s: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one tile of scores into the running softmax: the heart of FlashAttention.

    State per query row: ``m`` (...,) the largest score so far, ``l`` (...,) ``Σ exp(s - m)`` so far, ``acc``
    (..., d_v) ``Σ exp(s - m) v`` so far. New tile: scores ``s`` (..., Bc) (``-inf`` where hidden), values
    ``v`` (..., Bc, d_v). With ``m' = max(m, max s)`` and ``α = exp(m - m')``::

        l'   = α l   + Σ exp(s - m')
        acc' = α acc + exp(s - m') v

    Returns ``(m', l', acc', α)``. After the last tile, ``acc / l`` is exactly ``softmax(all scores) @ V``.
    Rows that have seen only ``-inf`` so far keep ``m' = -inf`` and ``l' = 0`` (no NaN: the exponent is
    taken against 0 instead of ``-inf``).
    """
    m_new = torch.maximum(m, s.amax(dim=-1))
    m_safe = torch.where(torch.isinf(m_new), 0.0, m_new)  # rows with nothing visible yet stay at 0
    p = torch.exp(s - m_safe[..., None])  # hidden scores give exp(-inf) = 0
    alpha = torch.exp(m - m_safe)  # rescale factor for what was accumulated under the old max
    return m_new, alpha * l + p.sum(dim=-1), alpha[..., None] * acc + p @ v, alpha


def flash_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    is_causal: bool,
    window: int | None,
    block_q: int,
    block_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled forward with the online softmax. Returns ``out`` (B, H, N_q, d_v) and ``lse`` (B, H, N_q).

    ``lse`` is ``+inf`` on fully masked rows (``l = 0``; a NaN ``l`` from NaN inputs stays NaN), so that the
    backward's ``exp(S - lse)`` gives 0 there.
    ``mask`` is ``None`` or a view broadcast to (B, H, N_q, N_k).
    """
    B, H, n_q, _ = q.shape
    n_k, d_v = k.shape[2], v.shape[-1]
    offset = n_k - n_q
    acc_t = _acc_dtype(q.dtype)
    out = torch.zeros(B, H, n_q, d_v, dtype=q.dtype, device=q.device)
    lse = torch.full((B, H, n_q), float("inf"), dtype=acc_t, device=q.device)
    tiles = _group(tile_schedule(n_q, n_k, block_q, block_k, is_causal, window), by=0)
    for i0 in range(0, n_q, block_q):
        i1 = min(i0 + block_q, n_q)
        q_i = q[:, :, i0:i1].to(acc_t)  # (B, H, Br, d)   "load Q_i into SRAM"
        m = torch.full((B, H, i1 - i0), float("-inf"), dtype=acc_t, device=q.device)  # running max
        l = torch.zeros(B, H, i1 - i0, dtype=acc_t, device=q.device)  # running sum of exp(s - m)
        acc = torch.zeros(B, H, i1 - i0, d_v, dtype=acc_t, device=q.device)  # running Σ exp(s - m) v
        for tile in tiles.get(i0, []):
            j0, j1 = tile[2], tile[3]
            s = _tile_scores(q_i, k[:, :, j0:j1].to(acc_t), tile, mask, scale, offset, is_causal, window)
            if s is None:
                continue
            m, l, acc, _ = online_softmax_update(m, l, acc, s, v[:, :, j0:j1].to(acc_t))
        seen = l != 0  # l = 0: no visible key (zeros); NaN inputs make l NaN, which must stay NaN
        out[:, :, i0:i1] = torch.where(seen[..., None], acc / torch.where(seen, l, 1.0)[..., None], 0.0).to(q.dtype)
        lse[:, :, i0:i1] = torch.where(seen, m + torch.log(torch.where(seen, l, 1.0)), float("inf"))
    return out, lse


def flash_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    is_causal: bool,
    window: int | None,
    block_q: int,
    block_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiled backward (FlashAttention-2, Algorithm 2): recompute ``P = exp(S - lse)`` tile by tile.

    With ``dO`` the output gradient and ``D = rowsum(dO ∘ O)``: ``dV = Pᵀ dO``, ``dP = dO Vᵀ``,
    ``dS = P ∘ (dP - D)``, ``dQ = scale · dS K``, ``dK = scale · dSᵀ Q``. Returns ``(dq, dk, dv)``.
    """
    n_q, n_k = q.shape[2], k.shape[2]
    offset = n_k - n_q
    acc_t = _acc_dtype(q.dtype)
    do = grad_out.to(acc_t)
    D = (do * out.to(acc_t)).sum(dim=-1)  # (B, H, N_q)
    dq = torch.zeros(q.shape, dtype=acc_t, device=q.device)
    dk = torch.zeros(k.shape, dtype=acc_t, device=q.device)
    dv = torch.zeros(v.shape, dtype=acc_t, device=q.device)
    tiles = _group(tile_schedule(n_q, n_k, block_q, block_k, is_causal, window), by=2)
    for j0 in range(0, n_k, block_k):  # outer loop over key blocks: dK_j, dV_j stay "in SRAM"
        j1 = min(j0 + block_k, n_k)
        k_j, v_j = k[:, :, j0:j1].to(acc_t), v[:, :, j0:j1].to(acc_t)
        dk_j, dv_j = torch.zeros_like(k_j), torch.zeros_like(v_j)
        for tile in tiles.get(j0, []):
            i0, i1 = tile[0], tile[1]
            q_i = q[:, :, i0:i1].to(acc_t)
            s = _tile_scores(q_i, k_j, tile, mask, scale, offset, is_causal, window)
            if s is None:
                continue
            p = torch.exp(s - lse[:, :, i0:i1, None])  # (B, H, Br, Bc) recomputed, never stored
            do_i = do[:, :, i0:i1]
            dv_j += p.transpose(-2, -1) @ do_i
            dp = do_i @ v_j.transpose(-2, -1)
            ds = p * (dp - D[:, :, i0:i1, None])
            dq[:, :, i0:i1] += (ds @ k_j) * scale
            dk_j += (ds.transpose(-2, -1) @ q_i) * scale
        dk[:, :, j0:j1], dv[:, :, j0:j1] = dk_j, dv_j
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class TiledAttentionFunction(torch.autograd.Function):
    """Autograd wrapper around a tiled forward/backward pair: :func:`flash_forward`/:func:`flash_backward` here,
    or the Triton kernels of :mod:`lmkit.efficient.flash_triton`, passed in as ``kernels``.

    The forward saves only Q, K, V, O and the log-sum-exp (``O(N d)`` memory); the backward recomputes ``P``
    tile by tile from them. Both kernels take the trailing arguments ``(mask, scale, is_causal, window, block_q,
    block_k)``.
    """

    @staticmethod
    def forward(ctx, kernels, q, k, v, mask, scale, is_causal, window, block_q, block_k):  # type: ignore[override]
        forward_fn, ctx.backward_fn = kernels
        out, lse = forward_fn(q, k, v, mask, scale, is_causal, window, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.config = (scale, is_causal, window, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out, lse, mask = ctx.saved_tensors
        dq, dk, dv = ctx.backward_fn(grad_out, q, k, v, out, lse, mask, *ctx.config)
        return None, dq, dk, dv, None, None, None, None, None, None


def resolve_scale(q: torch.Tensor, scale: float | None) -> float:
    """The score scale: ``scale`` as a float (a finite number: a NaN or inf scale makes every score NaN), or SDPA's
    default ``1/√d`` when it is ``None``."""
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_number("scale", scale)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    window: int | None = None,
    block_q: int = 64,
    block_k: int = 64,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Exact attention, tiled: a drop-in for ``F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=...,
    scale=..., enable_gqa=...)`` on ``(B, H, N, d)`` tensors (no dropout), differentiable in ``q``, ``k``, ``v``.

    ``attn_mask`` and ``is_causal`` may be combined (both apply); ``is_causal`` is bottom-right aligned
    (see the module docstring). ``window=w`` adds a sliding window (query at aligned position ``p`` sees keys
    ``p-w+1 .. p``; without ``is_causal`` also ``.. p+w-1``), skipping the tiles outside it. Boolean-mask
    tiles with nothing visible are skipped too (block-sparse attention). ``enable_gqa=True`` accepts K/V with
    fewer heads than Q (grouped-query attention, see :func:`expand_kv_heads`).
    """
    k, v = expand_kv_heads(q, k, v, enable_gqa)
    mask = check_attention_inputs(q, k, v, attn_mask, window, is_causal)
    check_int("block_q", block_q, minimum=1)
    check_int("block_k", block_k, minimum=1)
    scale = resolve_scale(q, scale)
    kernels = (flash_forward, flash_backward)
    return TiledAttentionFunction.apply(kernels, q, k, v, mask, scale, is_causal, window, block_q, block_k)


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    window: int | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Standard attention (the paper's Algorithm 0): materialise ``S`` and ``P`` (N_q × N_k each), then ``P V``.

    Same arguments and conventions as :func:`flash_attention`; the baseline it is measured against.
    """
    k, v = expand_kv_heads(q, k, v, enable_gqa)
    mask = check_attention_inputs(q, k, v, attn_mask, window, is_causal)
    scale = resolve_scale(q, scale)
    n_q, n_k = q.shape[2], k.shape[2]
    s = q @ k.transpose(-2, -1) * scale  # (B, H, N_q, N_k): the N² matrix
    visible = structural_mask(n_q, n_k, is_causal, window, q.device)
    if mask is not None:
        if mask.dtype == torch.bool:
            visible = visible & mask
        else:
            s = s + mask.to(s.dtype)
    s = s.masked_fill(~visible, float("-inf"))
    hidden_row = torch.isneginf(s).all(dim=-1, keepdim=True)  # fully masked: softmax of all -inf is NaN → 0
    p = torch.softmax(s, dim=-1).masked_fill(hidden_row, 0.0)  # NaN from NaN inputs stays NaN
    return p @ v


TRITON_MIN_CAPABILITY = (7, 0)
"""The oldest NVIDIA GPU Triton compiles for (Volta; PyTorch's own Triton check asks the same)."""
TRITON_BF16_CAPABILITY = (8, 0)
"""bf16 arithmetic in PTX needs Ampere (``ptxas``: "Feature '.bf16' requires .target sm_80 or higher"): a T4 (7.5)
runs the kernels in float32 and float16 only."""


def triton_unsupported(device: torch.device | str, dtype: torch.dtype = torch.float32) -> str | None:
    """Why :mod:`lmkit.efficient.flash_triton`'s kernels cannot run on ``device`` in ``dtype`` here, or ``None``.

    A chapter asks this before it runs the Triton kernel and falls back to :func:`flash_attention` (the same algorithm
    in PyTorch) with the reason printed. On the CPU the kernels run only in Triton's interpreter
    (``TRITON_INTERPRET=1``, set before Triton is first imported); on a GPU they need Triton and a compute capability
    of at least :data:`TRITON_MIN_CAPABILITY`, and :data:`TRITON_BF16_CAPABILITY` for bf16.

    >>> triton_unsupported("cpu") in (None, "the CPU runs Triton only in its interpreter (TRITON_INTERPRET=1)")
    True
    """
    import importlib.util
    import os

    device = torch.device(device)
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if device.type == "cpu":
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        return None if interpreted else "the CPU runs Triton only in its interpreter (TRITON_INTERPRET=1)"
    if device.type != "cuda":
        return f"Triton's kernels here are written for NVIDIA GPUs, not {device.type}"
    capability = torch.cuda.get_device_capability(device)
    name = f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]})"
    if capability < TRITON_MIN_CAPABILITY:
        return f"{name} is older than Triton supports"
    if dtype == torch.bfloat16 and capability < TRITON_BF16_CAPABILITY:
        return f"{name} has no bf16 arithmetic (Ampere, 8.0, is the first)"
    return None

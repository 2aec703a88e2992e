"""What a transformer costs: memory traffic of attention, FLOPs of a forward pass, KV-cache memory.

**Memory traffic (I/O).** A GPU computes in a small on-chip SRAM (``M`` bytes per streaming multiprocessor,
~100–200 KB) and keeps tensors in the large, ~10× slower HBM. Attention is *memory bound*: its time is
mostly spent moving data. Following Dao et al. (2022), "FlashAttention", for one head with sequence
length ``N`` and head dim ``d``:

* standard attention (their Algorithm 0) writes ``S = QKᵀ`` to HBM, reads it for the softmax, writes
  ``P``, reads it for ``PV``: ``Θ(N d + N²)`` element accesses (:func:`naive_attention_io`);
* FlashAttention keeps each tile in SRAM and never writes ``S`` or ``P``: with blocks sized to fill the
  SRAM (``B_c = ⌈M / 4d⌉``, ``B_r = min(B_c, d)``) it makes ``Θ(N² d² / M)`` accesses
  (Theorem 2; :func:`flash_attention_io`), many times fewer for typical ``d`` (64–128) and ``M`` (~100K).

The FLOPs go the other way: FlashAttention does the same forward matmuls and *more* in the backward
(it recomputes ``S``), yet runs 2–4× faster — the speed comes from the bytes, not from the arithmetic.

**FLOPs.** :func:`transformer_forward_flops` counts the multiply-adds of a forward pass (2 FLOPs each),
per layer ``O(N² d + N d²)``: the attention scores and weighted sums (``N² d``) and the projections and
FFN (``N d²``). Counting matmuls only, it equals what :class:`torch.utils.flop_counter.FlopCounterMode`
reports.

**KV cache.** :func:`kv_cache_bytes`: decoding keeps K and V of every past token in every layer.

**Measured memory.** :class:`TensorMemoryTracker` measures, rather than models, the peak bytes of live
tensors that PyTorch ops allocate while a function runs (on any device, including the CPU where
``torch.cuda.max_memory_allocated`` has no counterpart).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lmkit.checks import check_choice, check_int, choices
from lmkit.efficient.flash import tile_schedule

Loop = Literal["fa1", "fa2"]
Pass = Literal["forward", "backward"]


def _positive(**values: int) -> None:
    for name, value in values.items():
        check_int(name, value, minimum=1)


@dataclass(frozen=True)
class IOCount:
    """Elements read from and written to main memory (HBM) by one attention head."""

    reads: int
    writes: int
    bytes_per_element: int = 2

    @property
    def accesses(self) -> int:
        """Reads plus writes, in elements (the paper's "HBM accesses")."""
        return self.reads + self.writes

    @property
    def bytes(self) -> int:
        """Total traffic in bytes."""
        return self.accesses * self.bytes_per_element


def naive_attention_io(n: int, d: int, n_k: int | None = None, bytes_per_element: int = 2) -> IOCount:
    """HBM traffic of standard attention (Algorithm 0 of the FlashAttention paper), one head, forward.

    1. read Q, K, write ``S = QKᵀ``; 2. read S, write ``P = softmax(S)``; 3. read P and V, write ``O = PV``.
    Reads ``N_q d + N_k d + 2 N_q N_k + N_k d``, writes ``2 N_q N_k + N_q d``: ``Θ(N d + N²)``.
    """
    n_k = n if n_k is None else n_k
    _positive(n=n, d=d, n_k=n_k, bytes_per_element=bytes_per_element)
    reads = (n * d + n_k * d) + n * n_k + (n * n_k + n_k * d)
    writes = n * n_k + n * n_k + n * d
    return IOCount(reads, writes, bytes_per_element)


def paper_block_sizes(d: int, sram_elements: int) -> tuple[int, int]:
    """The FlashAttention paper's block sizes for an SRAM of ``M`` elements: ``(B_r, B_c) = (min(⌈M/4d⌉, d), ⌈M/4d⌉)``.

    Four ``B × d`` tiles (Q_i, K_j, V_j, O_i) then fit in SRAM at once.
    """
    _positive(d=d, sram_elements=sram_elements)
    block_c = math.ceil(sram_elements / (4 * d))
    return min(block_c, d), block_c


def flash_attention_io(
    n: int,
    d: int,
    block_q: int,
    block_k: int,
    n_k: int | None = None,
    is_causal: bool = False,
    window: int | None = None,
    loop: Loop = "fa2",
    bytes_per_element: int = 2,
) -> IOCount:
    """HBM traffic of tiled attention, one head, forward, over the tiles it actually visits.

    ``loop="fa2"`` (FlashAttention-2, what :func:`lmkit.efficient.flash.flash_attention` does): the outer
    loop is over query blocks; each ``Q_i`` is read once, ``K_j, V_j`` once per visited tile, ``O_i`` and
    the log-sum-exp written once. ``loop="fa1"`` (Algorithm 1 of FlashAttention): the outer loop is over
    key blocks; ``O, l, m`` are initialised in HBM, then each visited tile reads ``Q_i, O_i, l_i, m_i``
    and writes ``O_i, l_i, m_i`` back — the ``T_c = ⌈N/B_c⌉`` passes over Q and O of the paper's proof.
    """
    n_k = n if n_k is None else n_k
    _positive(n=n, d=d, n_k=n_k, block_q=block_q, block_k=block_k, bytes_per_element=bytes_per_element)
    check_choice("loop", loop, choices(Loop))
    tiles = tile_schedule(n, n_k, block_q, block_k, is_causal, window)
    if loop == "fa2":
        reads = n * d + sum(2 * (j1 - j0) * d for _, _, j0, j1 in tiles)
        writes = n * d + n  # O and lse
    else:
        reads = 2 * n_k * d + sum((i1 - i0) * (2 * d + 2) for i0, i1, _, _ in tiles)
        writes = (n * d + 2 * n) + sum((i1 - i0) * (d + 2) for i0, i1, _, _ in tiles)
    return IOCount(reads, writes, bytes_per_element)


def attention_flops(
    n_q: int, n_k: int, d: int, d_v: int | None = None, pass_: Pass = "forward",
    recompute: bool = False,
) -> int:
    """Matmul FLOPs of one attention head (softmax and masking are ``O(N²)`` and not counted).

    Forward: ``S = QKᵀ`` and ``O = PV``: ``2 N_q N_k (d + d_v)``. Backward: ``dV = PᵀdO``, ``dP = dO Vᵀ``,
    ``dQ = dS K``, ``dK = dSᵀQ``: twice the forward; ``recompute=True`` (FlashAttention) adds ``S`` again.
    """
    d_v = d if d_v is None else d_v
    _positive(n_q=n_q, n_k=n_k, d=d, d_v=d_v)
    check_choice("pass_", pass_, choices(Pass))
    forward = 2 * n_q * n_k * (d + d_v)
    if pass_ == "forward":
        return forward
    return 2 * forward + (2 * n_q * n_k * d if recompute else 0)


def transformer_forward_flops(
    n_layer: int,
    d_model: int,
    n_heads: int,
    seq_len: int,
    d_ff: int,
    vocab_size: int = 0,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    gated_ffn: bool = False,
    batch: int = 1,
) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) of a decoder forward pass over ``seq_len`` tokens, by part.

    Per layer, with ``N = seq_len``, ``d = d_model``, ``h_d`` the head dim and ``H``/``H_kv`` the query/KV heads:

    * ``qkv``: ``2 N d (H + 2 H_kv) h_d`` and ``out_proj``: ``2 N H h_d d`` — the ``N d²`` terms;
    * ``scores`` (``QKᵀ``) and ``values`` (``PV``): ``2 N² H h_d`` each — the ``N² d`` terms (a causal model
      computes the full square in standard attention; a causal FlashAttention kernel skips about half);
    * ``ffn``: ``2 N d d_ff`` per matrix, 2 matrices (3 when gated, e.g. SwiGLU);
    * ``lm_head`` (once): ``2 N d V``. ``"total"`` sums everything, for the whole ``batch``.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    _positive(n_layer=n_layer, d_model=d_model, n_heads=n_heads, seq_len=seq_len, d_ff=d_ff, n_kv_heads=n_kv_heads,
              batch=batch)
    if head_dim is None:
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}; pass head_dim")
        head_dim = d_model // n_heads
    n, hd, t = seq_len, head_dim, batch * n_layer
    parts = {
        "qkv": t * 2 * n * d_model * (n_heads + 2 * n_kv_heads) * hd,
        "scores": t * 2 * n * n * n_heads * hd,
        "values": t * 2 * n * n * n_heads * hd,
        "out_proj": t * 2 * n * n_heads * hd * d_model,
        "ffn": t * 2 * n * d_model * d_ff * (3 if gated_ffn else 2),
        "lm_head": batch * 2 * n * d_model * vocab_size,
    }
    parts["total"] = sum(parts.values())
    return parts


def kv_cache_bytes(
    n_layer: int, n_kv_heads: int, head_dim: int, seq_len: int = 1, batch: int = 1, bytes_per_element: int = 2
) -> int:
    """Bytes of a KV cache: K and V (2) × layers × KV heads × head dim × tokens × sequences × bytes.

    ``seq_len=1, batch=1`` gives the cost per token. Grouped-query attention shrinks it by ``H / H_kv``.
    """
    _positive(n_layer=n_layer, n_kv_heads=n_kv_heads, head_dim=head_dim, seq_len=seq_len, batch=batch,
              bytes_per_element=bytes_per_element)
    return 2 * n_layer * n_kv_heads * head_dim * seq_len * batch * bytes_per_element


class TensorMemoryTracker(TorchDispatchMode):
    """Context manager measuring the peak memory of tensors allocated by PyTorch ops inside it.

    Every aten op's output is intercepted (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, like
    :class:`~torch.utils.flop_counter.FlopCounterMode`). An output whose storage is not one of the op's inputs'
    (so not a view or an in-place result) is a new allocation: its ``nbytes`` are added to ``current`` and
    subtracted again when the storage is freed (a :func:`weakref.finalize` on it). ``peak`` is the maximum of
    ``current``. Tensors created before the block (the inputs) are not counted; scratch buffers a kernel
    allocates internally and frees before returning are invisible to it (they are never aten outputs).

    >>> with TensorMemoryTracker() as mem:
    ...     y = torch.ones(1000) * 2
    >>> mem.peak
    8000
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in inputs or key in self._live:
                continue
            nbytes = storage.nbytes()
            self._live.add(key)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key, nbytes)
        return out

"""Measured cost of one sequence-mixing layer: Mamba's selective scan against causal self-attention, as ``L`` grows.

:func:`mixer_costs` runs both layers (same ``d_model``, random weights, no gradient) on a ``(1, L, d_model)`` input
and reports the best wall-clock time of a few repeats and the peak bytes of live tensors
(:class:`lmkit.efficient.cost.TensorMemoryTracker`). Attention builds ``H × L × L`` scores: its time and memory grow
like ``L²``. The Mamba layer keeps ``(L, E, N)`` discretised parameters and states: both grow like ``L`` (the fused
CUDA kernel of the paper does not even write those states to memory, which lmkit's PyTorch scan does).

:func:`state_bytes` is the other half of the story — what must be *kept* while generating: a KV cache grows by
``2 · layers · kv_heads · head_dim`` numbers per token; a Mamba cache is ``layers · E · (d_conv − 1 + N)`` numbers,
whatever the length.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import torch

from lmkit.efficient.cost import TensorMemoryTracker
from lmkit.ssm.mamba import MambaConfig, MambaMixer
from lmkit.transformer import masks
from lmkit.transformer.attention import MultiHeadAttention


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _peak_bytes(fn: Callable[[], object]) -> int:
    with TensorMemoryTracker() as mem:
        fn()
    return mem.peak


@torch.no_grad()
def mixer_costs(
    lengths: Sequence[int], d_model: int = 64, n_heads: int = 4, d_state: int = 16, repeats: int = 3, seed: int = 0
) -> list[dict[str, float]]:
    """One row per length ``L``: ``mamba_ms``, ``attention_ms``, ``mamba_peak_mb``, ``attention_peak_mb``."""
    torch.manual_seed(seed)
    mamba = MambaMixer(MambaConfig(vocab_size=1, d_model=d_model, n_layers=1, d_state=d_state)).eval()
    attention = MultiHeadAttention(d_model, n_heads, bias=False).eval()
    rows = []
    for n in lengths:
        x = torch.randn(1, n, d_model)
        run_mamba = partial(mamba, x)
        run_attention = partial(attention, x, bias=masks.to_additive(masks.causal_mask(n), x.dtype))
        rows.append({
            "L": n,
            "mamba_ms": 1e3 * _best_time(run_mamba, repeats),
            "attention_ms": 1e3 * _best_time(run_attention, repeats),
            "mamba_peak_mb": _peak_bytes(run_mamba) / 2**20,
            "attention_peak_mb": _peak_bytes(run_attention) / 2**20,
        })
    return rows


def state_bytes(cfg: MambaConfig, batch: int = 1, bytes_per_element: int = 2) -> int:
    """Bytes of a Mamba generation cache: per layer ``E · (d_conv − 1)`` conv inputs and ``E · N`` SSM states.
    (Compare :func:`lmkit.efficient.cost.kv_cache_bytes`, which grows with the sequence length.)"""
    return cfg.n_layers * batch * cfg.d_inner * (cfg.d_conv - 1 + cfg.d_state) * bytes_per_element

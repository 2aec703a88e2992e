"""Diagrams the chapters draw at build time with matplotlib — from lmkit's own objects wherever there is one.

Nothing here is a pasted picture: the masks come from :mod:`lmkit.transformer.masks`, the byte layouts of the
GGUF blocks are checked against :data:`lmkit.quant.ggml.TYPES` (the sizes llama.cpp and ``gguf`` use), the
KV-cache bytes are :func:`lmkit.efficient.cost.kv_cache_bytes`' and GPTQ's column order is the ``act_order`` rule of
:func:`lmkit.quant.gptq.gptq_quantize`. Each function draws one figure and returns it.

    >>> from lmkit.book import diagrams
    >>> fig = diagrams.gguf_block("Q4_0")   # 18 bytes: fp16 scale + 16 bytes of nibbles
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from lmkit.efficient.cost import kv_cache_bytes
from lmkit.quant import ggml
from lmkit.transformer import masks

__all__ = ["attention_flows", "gguf_block", "gguf_fields", "gptq_column_order", "kv_cache_growth", "transformer_block"]


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: int = 9) -> None:
    ax.add_patch(Rectangle((x - w / 2, y - h / 2), w, h, facecolor=color, edgecolor="0.2", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, x0: float, y0: float, x1: float, y1: float, **kw) -> None:
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, lw=1, color="0.2",
                                 shrinkA=0, shrinkB=0, **kw))


def transformer_block() -> Figure:
    """One block drawn both ways: post-norm ``x = Norm(x + f(x))`` and pre-norm ``x = x + f(Norm(x))``.

    The residual path is drawn in red: in pre-norm it runs from the input to the output untouched by any norm.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 5.2))
    for ax, placement in zip(axes, ("post", "pre"), strict=True):
        ax.set(xlim=(0, 4), ylim=(0, 11), title=f"{placement}-norm" + (" (2017, BERT, MiniLM)" if placement == "post"
                                                                        else " (GPT-2, LLaMA, SmolLM2)"))
        ax.axis("off")
        y = 0.6
        _box(ax, 2, y, 2.4, 0.7, "x (residual stream)", "0.95")
        for sub, color in (("attention", "#cfe2f3"), ("feed-forward", "#d9ead3")):
            if placement == "post":
                _arrow(ax, 2, y + 0.35, 2, y + 1.45)
                _box(ax, 2, y + 1.8, 2.4, 0.7, sub, color)
                _arrow(ax, 2, y + 2.15, 2, y + 2.85)
                _box(ax, 2, y + 3.1, 0.5, 0.5, "+", "white", 11)
                ax.plot([2, 3.5, 3.5, 2.25], [y + 0.9, y + 0.9, y + 3.1, y + 3.1], color="C3", lw=1.5)
                _arrow(ax, 2, y + 3.35, 2, y + 3.85)
                _box(ax, 2, y + 4.2, 2.4, 0.7, "Norm", "#fde9c9")
                y += 4.2
            else:
                _arrow(ax, 2, y + 0.35, 2, y + 0.85)
                _box(ax, 2, y + 1.2, 2.4, 0.7, "Norm", "#fde9c9")
                _arrow(ax, 2, y + 1.55, 2, y + 2.05)
                _box(ax, 2, y + 2.4, 2.4, 0.7, sub, color)
                _arrow(ax, 2, y + 2.75, 2, y + 3.25)
                _box(ax, 2, y + 3.5, 0.5, 0.5, "+", "white", 11)
                ax.plot([2, 3.5, 3.5, 2.25], [y + 0.6, y + 0.6, y + 3.5, y + 3.5], color="C3", lw=1.5)
                y += 3.5 - 0.1  # the next arrow starts at the top of the "+" box
        if placement == "pre":
            _arrow(ax, 2, y + 0.35, 2, y + 0.85)
            _box(ax, 2, y + 1.2, 2.4, 0.7, "final Norm (once)", "#fde9c9")
        ax.text(3.6, 5.5, "residual", color="C3", rotation=90, va="center", fontsize=8)
    fig.tight_layout()
    return fig


def attention_flows(n: int = 6, prefix_len: int = 3) -> Figure:
    """Who may attend to whom in an encoder, a decoder, a prefix LM and an encoder–decoder (masks from lmkit).

    Row = query position, column = key position, dark = allowed. The encoder–decoder panel stacks the decoder's
    causal self-attention and its cross-attention, which sees every encoder position.
    """
    panels = [
        ("encoder (BERT): bidirectional", masks.bidirectional_mask(n)),
        ("decoder (GPT, LLaMA): causal", masks.causal_mask(n)),
        (f"prefix LM: first {prefix_len} see each other", masks.prefix_lm_mask(n, prefix_len)),
        ("encoder–decoder (T5): decoder self | cross",
         torch.cat([masks.causal_mask(n), masks.bidirectional_mask(n)], dim=1)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), gridspec_kw={"width_ratios": [1, 1, 1, 2]})
    for ax, (title, m) in zip(axes, panels, strict=True):
        ax.imshow(m.numpy(), cmap="Blues", vmin=-0.3, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    axes[2].axvline(prefix_len - 0.5, color="C3", lw=1)
    axes[2].axhline(prefix_len - 0.5, color="C3", lw=1)
    axes[3].axvline(n - 0.5, color="k", lw=2)
    axes[3].set_xticks(range(2 * n), [f"d{i}" for i in range(n)] + [f"e{i}" for i in range(n)], fontsize=7)
    fig.tight_layout()
    return fig


def kv_cache_growth(steps: int = 6, prompt: int = 3, n_layer: int = 30, n_kv_heads: int = 3, head_dim: int = 64,
                    bytes_per_element: int = 2) -> Figure:
    """The cache during decoding: the prompt fills it at once, then each step appends one key and one value.

    Left: one row per forward call; grey = read from the cache, orange = computed in this call. Right: the cache's
    bytes after each call for the given model shape (default SmolLM2-135M in fp16), from ``kv_cache_bytes``.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.4, 1]})
    total = prompt + steps
    for row in range(steps + 1):
        length = prompt + row
        for col in range(length):
            new = col >= prompt + row - 1 if row else True
            a.add_patch(Rectangle((col, steps - row), 0.9, 0.8, facecolor="C1" if new else "0.8", edgecolor="0.3"))
    a.set(xlim=(-0.2, total + 0.2), ylim=(-0.2, steps + 1), xlabel="cached position (K and V, every layer)")
    a.set_yticks([steps - r + 0.4 for r in range(steps + 1)], ["prefill"] + [f"step {r}" for r in range(1, steps + 1)])
    a.set_title("grey: read from the cache; orange: computed now", fontsize=9)
    lengths = np.arange(prompt, total + 1)
    sizes = [kv_cache_bytes(n_layer, n_kv_heads, head_dim, int(t), 1, bytes_per_element) / 1024 for t in lengths]
    b.plot(lengths, sizes, "o-")
    b.set(xlabel="tokens in the cache", ylabel="KiB", title=f"{n_layer} layers × {n_kv_heads} KV heads × {head_dim}"
          f" dims × {bytes_per_element} B × 2 (K, V)")
    b.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def gguf_fields(qtype: str) -> list[tuple[str, int]]:
    """The byte fields of one ggml block, in storage order, as ``(name, bytes)``.

    The sizes follow from the block's element count (32, or 256 for K-quants) and the bits each field holds; the
    total is checked against :data:`lmkit.quant.ggml.TYPES`, the block size the decoder itself uses.
    """
    _, n, block_bytes = ggml.TYPES[qtype]
    fp16 = 2
    layouts = {
        "Q4_0": [("d (fp16 scale)", fp16), ("4-bit codes, 2 per byte", n // 2)],
        "Q4_1": [("d (fp16 scale)", fp16), ("m (fp16 min)", fp16), ("4-bit codes, 2 per byte", n // 2)],
        "Q5_0": [("d (fp16 scale)", fp16), ("5th bits", n // 8), ("low 4 bits, 2 per byte", n // 2)],
        "Q5_1": [("d (fp16 scale)", fp16), ("m (fp16 min)", fp16), ("5th bits", n // 8),
                 ("low 4 bits, 2 per byte", n // 2)],
        "Q8_0": [("d (fp16 scale)", fp16), ("int8 codes", n)],
        "Q4_K": [("d (fp16 super-scale)", fp16), ("dmin (fp16 super-min)", fp16),
                 ("6-bit scales and mins, 8 each", 8 * 12 // 8), ("4-bit codes, 2 per byte", n // 2)],
        "Q6_K": [("low 4 bits, 2 per byte", n // 2), ("high 2 bits, 4 per byte", n // 4),
                 ("16 int8 sub-block scales", n // 16), ("d (fp16 super-scale)", fp16)],
    }
    if qtype not in layouts:
        raise ValueError(f"no byte layout for {qtype!r}; choose one of {sorted(layouts)}")
    fields = layouts[qtype]
    total = sum(size for _, size in fields)
    if total != block_bytes:  # the drawing must never disagree with the real format
        raise AssertionError(f"{qtype}: fields add up to {total} bytes, ggml.TYPES says {block_bytes}")
    return fields


def gguf_block(*qtypes: str) -> Figure:
    """Each block drawn as a row of its bytes, coloured by field, with bits per weight from ``ggml``."""
    qtypes = qtypes or ("Q4_0", "Q8_0")
    colors = ["#f4cccc", "#fce5cd", "#d9ead3", "#cfe2f3", "#d9d2e9"]
    widest = max(ggml.TYPES[q][2] for q in qtypes)
    fig, axes = plt.subplots(len(qtypes), 1, figsize=(11, 1.1 * len(qtypes) + 0.4), squeeze=False)
    for ax, q in zip(axes[:, 0], qtypes, strict=True):
        _, n, nbytes = ggml.TYPES[q]
        x, handles = 0, []
        for k, (name, size) in enumerate(gguf_fields(q)):
            ax.add_patch(Rectangle((x, 0), size, 1, facecolor=colors[k % len(colors)], edgecolor="0.3"))
            for byte in range(x, x + size):  # byte ticks
                ax.plot([byte, byte], [0, 0.12], color="0.4", lw=0.5)
            ax.text(x + size / 2, 0.55, f"{size} B", ha="center", va="center", fontsize=7)
            handles.append(Rectangle((0, 0), 1, 1, facecolor=colors[k % len(colors)], edgecolor="0.3",
                                     label=f"{name}: {size} B"))
            x += size
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
        ax.set(xlim=(0, widest), ylim=(0, 1))
        ax.set_yticks([])
        ax.set_title(f"{q}: {n} weights in {nbytes} bytes = {ggml.bits_per_weight(q):g} bits/weight",
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("byte offset in the block")
    fig.tight_layout()
    return fig


def gptq_column_order(hessian_diag: torch.Tensor, block_size: int = 4, act_order: bool = True) -> Figure:
    """GPTQ's order of columns and its lazy batches.

    Top: the columns of ``W`` in storage order, shaded by ``H_ii`` (the input energy of each column). Bottom: the
    order GPTQ quantizes them — all rows at once, one column at a time, largest ``H_ii`` first with ``act_order``
    (the rule ``gptq_quantize`` uses) — cut into blocks of ``block_size``. Inside a block each quantized column
    updates the block's remaining columns at once; the rest of the matrix is updated only once per block.
    """
    h = hessian_diag.detach().float().cpu()
    d = h.numel()
    order = torch.argsort(h, descending=True, stable=True) if act_order else torch.arange(d)
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 3.6))
    shade = (h / h.max()).numpy()
    for j in range(d):
        a.add_patch(Rectangle((j, 0), 0.95, 1, facecolor=plt.cm.Oranges(0.15 + 0.8 * shade[j]), edgecolor="0.4"))
        a.text(j + 0.47, 0.5, str(j), ha="center", va="center", fontsize=7)
    a.set(xlim=(0, d), ylim=(0, 1), yticks=[], title="columns of W in storage order (shade: H_ii)")
    a.title.set_fontsize(9)
    for k, j in enumerate(order.tolist()):
        blk = k // block_size
        b.add_patch(Rectangle((k, 0), 0.95, 1, facecolor=plt.cm.tab10(blk % 10), alpha=0.45, edgecolor="0.4"))
        b.text(k + 0.47, 0.5, str(j), ha="center", va="center", fontsize=7)
    for k in range(block_size, d, block_size):
        b.axvline(k - 0.03, color="k", lw=2)
    b.set(xlim=(0, d), ylim=(0, 1), yticks=[], xlabel="step")
    b.set_title(f"quantization order ({'act_order: largest H_ii first' if act_order else 'storage order'}); "
                f"lazy batches of {block_size} columns (thick lines: the rest of W is updated here)", fontsize=9)
    fig.tight_layout()
    return fig

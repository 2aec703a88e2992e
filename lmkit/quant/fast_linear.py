"""Fast decoding paths: LLM.int8()'s vector-wise int8 on ``torch._int_mm``, and bfloat16.

Decoding one token at batch 1 multiplies a ``(1, K)`` activation by every weight matrix once: each weight byte is
read from memory for two floating-point operations. The step is bound by *bytes moved* (and by per-op overhead on
a small model), not by arithmetic — so storing the weights in fewer bytes makes it faster, provided the matmul
reads those bytes directly instead of first expanding them back to float32.

:class:`Int8Linear` does exactly that with LLM.int8()'s *vector-wise* scheme (:mod:`lmkit.quant.int8_matmul`):
each output channel of the weight keeps one absmax scale ``c_w`` (rounded to int8 once, at conversion), each
token of the activation gets its own ``c_x`` (rounded at every call), and the int8 × int8 product accumulates
exactly in int32 inside ``torch._int_mm``::

    Y = (c_x c_wᵀ / 127²) ⊙ (Q_x Q_wᵀ)        Q_x = round(127 X / c_x),  Q_w = round(127 W / c_w)

With ``threshold > 0`` the outlier feature dimensions of ``X`` (any ``|x| ≥ threshold``) are multiplied in float
instead, as in the paper (:func:`~lmkit.quant.int8_matmul.llm_int8_matmul` is the reference; this layer returns the
same numbers up to float32 rounding). That decomposition costs a detection pass and a data-dependent column gather
at every call — the slowness the notes cite — and ``threshold=0`` turns it off (see :func:`to_int8`).

:func:`to_int8` and :func:`to_bf16` convert a loaded lmkit model in place — every linear layer including a tied LM
head (the embedding table keeps its float rows for the lookup). Float32 stays the reference.

What is left out: int8 *activations* of attention (scores and the KV cache stay float), and 4-bit kernels — on a
CPU without a fast int4 GEMM (``torch._weight_int4pack_mm_for_cpu`` is slower than float32 here) unpacking 4-bit
codes costs more time than the bytes it saves; ``bench/bench_generate.py`` measures it.
"""

from __future__ import annotations

import torch
from torch import nn

from lmkit.quant.int8_matmul import THRESHOLD, outlier_columns, quantize_rowwise
from lmkit.transformer.attention import MultiHeadAttention
from lmkit.transformer.model import Block

CUDA_MIN_ROWS = 17
"""``torch._int_mm`` on CUDA needs more than 16 rows in its first operand; decoding has 1 (rows are zero-padded)."""


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``a @ bᵀ`` of int8 ``a`` (M, K) and ``b`` (N, K) with ``torch._int_mm``.

    On CUDA, ``_int_mm`` needs ``M > 16`` and ``K``, ``N`` multiples of 8: short inputs get zero rows appended
    (their products are dropped). On CPU it takes any shape.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"int_mm needs int8 operands, got {a.dtype} and {b.dtype}")
    if a.device.type == "cuda":
        M, K = a.shape
        if K % 8 or b.shape[0] % 8:
            raise ValueError(f"torch._int_mm on CUDA needs K and N multiples of 8, got K={K}, N={b.shape[0]}")
        if M < CUDA_MIN_ROWS:
            a = torch.cat([a, a.new_zeros(CUDA_MIN_ROWS - M, K)])
            return torch._int_mm(a, b.t())[:M]
    return torch._int_mm(a, b.t())  # (M, N) int32; b.t() is a view: the (N, K) rows are read as stored


class Int8Linear(nn.Module):
    """A linear layer stored as int8 rows + one float scale per output channel, multiplied on ``torch._int_mm``.

    >>> lin = nn.Linear(64, 32, bias=False)
    >>> q = Int8Linear.from_linear(lin)
    >>> x = torch.randn(4, 64)
    >>> bool((q(x) - lin(x)).abs().max() < 0.05)
    True

    ``codes`` ``(N, K)`` int8 and ``scale`` ``(N,)`` (the row absmax ``c_w``) are buffers: the layer holds
    ``N·K + 4N`` bytes instead of ``4·N·K``. ``threshold`` > 0 turns on LLM.int8()'s outlier decomposition.
    """

    def __init__(
        self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, threshold: float = 0.0
    ) -> None:
        super().__init__()
        if codes.dtype != torch.int8 or codes.dim() != 2:
            raise ValueError(f"codes must be a 2-D int8 (out, in) tensor, got {codes.dtype} {tuple(codes.shape)}")
        if scale.numel() != codes.shape[0]:
            raise ValueError(f"need one scale per output row: {codes.shape[0]} rows, {scale.numel()} scales")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (0 = no outlier columns), got {threshold}")
        self.out_features, self.in_features = codes.shape
        self.threshold = float(threshold)
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scale", scale.reshape(-1).float())  # c_w
        self.register_buffer("step", self.scale / 127.0, persistent=False)  # c_w / 127: the value of one weight code
        self.register_buffer("out_scale", self.step / 127.0, persistent=False)  # c_w / 127², used per call
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_weight(cls, w: torch.Tensor, bias: torch.Tensor | None = None, threshold: float = 0.0) -> Int8Linear:
        """Quantize a float ``(out, in)`` weight row-wise with LLM.int8()'s quantizer."""
        if w.dim() != 2:
            raise ValueError(f"need a 2-D (out, in) weight, got shape {tuple(w.shape)}")
        codes, c = quantize_rowwise(w.detach())
        return cls(codes, c, bias, threshold)

    @classmethod
    def from_linear(cls, linear: nn.Linear, threshold: float = 0.0) -> Int8Linear:
        return cls.from_weight(linear.weight, linear.bias, threshold)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 ``(out, in)`` weight this layer computes with: ``Q_w c_w / 127``."""
        return self.codes.float() * self.step[:, None]

    def weight_nbytes(self) -> int:
        """Bytes read per call: the int8 codes and the float32 scales (and bias)."""
        tensors = [self.codes, self.scale] + ([] if self.bias is None else [self.bias])
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        x2 = x.reshape(-1, self.in_features).float()  # (M, K)
        outliers = None
        if self.threshold > 0:
            cols = outlier_columns(x2, self.threshold).nonzero().squeeze(1)  # LLM.int8()'s outlier dimensions
            if cols.numel():
                # X_O Q_O^T in float (the weight's scale c_w / 127 is applied below, with the int8 part's)
                outliers = x2.index_select(1, cols) @ self.codes.index_select(1, cols).t().float()  # (M, N)
                x2 = x2.index_fill(1, cols, 0.0)
        qx, cx = quantize_rowwise(x2)  # (M, K) int8, (M, 1) = c_x
        acc = int_mm(qx, self.codes)  # (M, N) int32: the exact int8 x int8 sum
        if outliers is None:
            y = acc * (cx * self.out_scale)  # (c_x c_w / 127²) ⊙ (Q_x Q_wᵀ)
        else:
            y = (acc * (cx / 127.0) + outliers) * self.step
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, threshold={self.threshold}"


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """``(parent, attribute, layer)`` for every ``nn.Linear`` of ``model`` (a tied LM head included)."""
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            out.append((model.get_submodule(parent_name) if parent_name else model, child, mod))
    return out


@torch.no_grad()
def to_int8(model: nn.Module, threshold: float = THRESHOLD, head_threshold: float | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`Int8Linear`; return ``model``.

    ``threshold`` > 0 keeps LLM.int8()'s outlier columns in float; the default is the paper's 6.0, and 0 gives plain
    vector-wise int8. The LM head (the module named ``lm_head``) may get its own ``head_threshold`` (default: the
    same). On SmolLM2 the outliers matter most in the head: the final norm's output has a few feature dimensions far
    above the rest (|x| up to ~50), and with one scale per token they set the int8 step for all 576 inputs.
    A tied LM head gets its own int8 copy of the embedding matrix (the embedding keeps its float rows, read one
    row per token).
    """
    head_threshold = threshold if head_threshold is None else head_threshold
    for parent, child, linear in _linears(model):
        setattr(parent, child, Int8Linear.from_linear(linear, head_threshold if child == "lm_head" else threshold))
    return model


@torch.no_grad()
def to_bf16(model: nn.Module) -> nn.Module:
    """Cast ``model`` to bfloat16 in place (weights, embeddings, norms); return it.

    lmkit's norms and softmax compute in float32 internally, so only the storage and the matmuls are bfloat16.
    """
    return model.to(torch.bfloat16)


FORMATS = ("float32", "bfloat16", "int8")


@torch.no_grad()
def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse every block's self-attention ``q/k/v`` and SwiGLU ``gate/up`` projections in place; return ``model``.

    The fused layers compute the same numbers (their weights are the old ones stacked) in 4 matmuls per block
    instead of 7. Fuse *before* :func:`to_int8`: int8 scales are per output row, so fusing after would be the same
    but needs float weights to stack.
    """
    for block in model.modules():
        if isinstance(block, Block):
            block.attn.fuse_qkv()
            if block.ffn.gate_proj is not None:
                block.ffn.fuse_gate_up()
    return model


def prepare_for_decoding(
    model: nn.Module, fmt: str = "int8", threshold: float = THRESHOLD, head_threshold: float | None = None
) -> nn.Module:
    """lmkit's fast decoding path for ``model`` (in place): fused projections, PyTorch's fused attention op
    (``attention_impl="sdpa"``), then the weights in ``fmt`` (``"float32"``, ``"bfloat16"`` or ``"int8"``; the
    thresholds as in :func:`to_int8`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    fuse_projections(model)
    for mod in model.modules():
        if isinstance(mod, MultiHeadAttention):
            mod.impl = "sdpa"
    if hasattr(model, "config"):
        model.config.attention_impl = "sdpa"
    if fmt == "int8":
        return to_int8(model, threshold, head_threshold)
    return to_bf16(model) if fmt == "bfloat16" else model


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every linear layer's storage plus one embedding row.

    (Norm weights are included; the KV cache, which grows with the context, is not.)
    """
    total = 0
    for mod in model.modules():
        if isinstance(mod, Int8Linear):
            total += mod.weight_nbytes()
        elif isinstance(mod, nn.Linear):
            total += sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
        elif isinstance(mod, nn.Embedding):
            total += mod.weight[0].numel() * mod.weight.element_size()
        elif not list(mod.children()):
            total += sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
    return total


__all__ = [
    "CUDA_MIN_ROWS", "FORMATS", "Int8Linear", "fuse_projections", "int_mm", "prepare_for_decoding", "to_bf16",
    "to_int8", "weight_bytes_per_token",
]
